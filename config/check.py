"""`doorstep check-config FILE`: validate a config and list every problem at once."""

from __future__ import annotations

import argparse
import sys

from doorstep.config.load import load_config
from doorstep.core.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a config file",
                       description="Check doorstep.toml. Every problem is listed with its "
                       "dotted key, the value given and what is allowed.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.file}: OK (device {cfg.device.id!r}, camera {cfg.camera.source!r}, "
          f"{len(cfg.owner.recipients)} recipient(s))")
    return 0
