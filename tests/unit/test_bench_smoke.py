"""The benchmarks keep working (their numbers are never judged here): the quick runs of the
in-process ones print their tables with ratios against baselines measured in the same run."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmarks_print_ratio_tables():
    r = subprocess.run([sys.executable, "-m", "tests.bench", "--quick", "mix", "dtmf", "tap"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for header in ("== bench_dtmf (quick) ==", "== bench_mix (quick) ==", "== bench_tap (quick) =="):
        assert header in out
    assert "audioop/cython" in out and "× spandsp" in out and "× earshot" in out


def test_unknown_benchmark_is_refused_with_the_list():
    r = subprocess.run([sys.executable, "-m", "tests.bench", "nosuch"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such benchmark: bench_nosuch" in r.stderr
