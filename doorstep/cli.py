"""The `doorstep` command: one subcommand per job, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from doorstep import __version__

# Each command and the module that registers it, in the order `doorstep --help` lists them.
# Only the module of the command being run is imported: `doorstep run` then carries none of
# the owner's, the bench's or the installer's code (1.6 MB and 50 ms less at start-up).
COMMANDS: dict[str, str] = {
    "run": "doorstep.agent.cli", "inbox": "doorstep.owner.inbox",
    "open": "doorstep.owner.open", "keys": "doorstep.owner.keys",
    "share": "doorstep.owner.share", "verify-share": "doorstep.owner.share",
    "cmd": "doorstep.owner.command",
    "home": "doorstep.owner.hub.cli", "enroll": "doorstep.owner.hub.enroll",
    "check-config": "doorstep.config.check", "demo": "doorstep.demo",
    "detect": "doorstep.motion.cli", "eval": "doorstep.motion.cli",
    "synth": "doorstep.motion.cli",
    "install": "doorstep.provision.install", "firstboot": "doorstep.provision.firstboot",
    "identity": "doorstep.provision.identity", "doctor": "doorstep.doctor.cli",
    "update": "doorstep.provision.update", "bundle": "doorstep.provision.update",
    "bench": "doorstep.bench.cli",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with only the named command's module loaded when argv names
    one, with every command otherwise (for --help, or to report an unknown command)."""
    words = [a for a in (argv or ()) if not a.startswith("-")]
    wanted = [COMMANDS[words[0]]] if words and words[0] in COMMANDS else list(COMMANDS.values())
    parser = argparse.ArgumentParser(
        prog="doorstep", description="A private video doorbell: only the owner can see the "
        "footage.")
    parser.add_argument("--version", action="version", version=f"doorstep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in dict.fromkeys(wanted):  # once each, in order
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
