"""Run the benchmarks: python -m tests.bench [--quick] [NAME…] (NAME: mix for bench_mix.py)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

USAGE = "usage: python -m tests.bench [--quick] [NAME…]"


def discover() -> list[str]:
    """The bench_*.py module names beside this file, in a stable order."""
    return sorted(p.stem for p in Path(__file__).resolve().parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if a != "--quick"]
    unknown = [a for a in names if a.startswith("-")]
    if unknown:
        print(f"unknown option {unknown[0]}\n{USAGE}", file=sys.stderr)
        return 2
    modules = discover()
    if names:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in names}
        missing = sorted(wanted - set(modules))
        if missing:
            print(f"no such benchmark: {', '.join(missing)} (have: {', '.join(modules)})",
                  file=sys.stderr)
            return 2
        modules = [m for m in modules if m in wanted]
    for name in modules:
        module = importlib.import_module(f"{__package__}.{name}")
        print(f"== {name}{' (quick)' if quick else ''} ==", flush=True)
        module.main(quick)
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
