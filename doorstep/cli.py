"""The `doorstep` command: one subcommand per job, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from doorstep import __version__


def build_parser() -> argparse.ArgumentParser:
    import bench.cli as bench_cli
    import motion.cli as motion_cli
    from agent import firstboot, install, service
    from config import check
    from doorstep import demo
    from owner import command, inbox, keys, share
    from owner import open as open_cmd

    parser = argparse.ArgumentParser(
        prog="doorstep", description="A private video doorbell: only the owner can see the "
        "footage.")
    parser.add_argument("--version", action="version", version=f"doorstep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (service, inbox, open_cmd, keys, share, command, check, demo, motion_cli, install,
                   firstboot, bench_cli):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
