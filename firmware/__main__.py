"""Command line: ``python -m firmware run [--config FILE]``, ``check-config FILE``."""

from __future__ import annotations

import argparse
import json
import sys

from firmware import config as cfgmod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="earshot", description="Earshot call-barge appliance")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the appliance")
    run.add_argument("--config", help="earshot.toml (default: $EARSHOT_CONFIG, /etc/earshot/earshot.toml, "
                                      "else the embedded default)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check-config", help="validate an earshot.toml and print what is wrong")
    check.add_argument("file")
    check.add_argument("--show", action="store_true", help="print the parsed config (secrets redacted)")
    audit = sub.add_parser("audit", help="print the eavesdrop audit log")
    audit.add_argument("file", nargs="?", help="audit log (default: [log] audit_file or <state dir>/audit.sqlite)")
    prov = sub.add_parser("provision", help="apply earshot.toml from a USB stick partition or a directory")
    prov.add_argument("target", help="a block device (/dev/sda1) or a directory holding earshot.toml")
    prov.add_argument("--config-dir", help="where to install it (default: $CONFIGURATION_DIRECTORY, "
                                           "else /etc/earshot)")
    prov.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the service (default 30)")
    args = parser.parse_args(argv)

    if args.cmd == "check-config":
        try:
            cfg = cfgmod.load(args.file)
        except cfgmod.ConfigError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            return 1
        if args.show:
            print(json.dumps(cfgmod.redacted(cfg), indent=2))
        print(f"{args.file}: OK ({len(cfg.users)} users, {len(cfg.gateways)} gateways)")
        return 0

    if args.cmd == "audit":
        from firmware import audit as auditmod
        return auditmod.main([args.file] if args.file else [])

    if args.cmd == "provision":
        from firmware import app, provision
        app.setup_logging("info")
        return provision.main(args.target, config_dir=provision.default_config_dir(args.config_dir),
                              timeout=args.timeout)

    from firmware import app
    return app.main(args.config, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
