"""`doorstep check-config FILE`: validate a config and list every problem at once; warn when the
config asks for GPIO that this machine does not have."""

from __future__ import annotations

import argparse
import sys

from doorstep.config.load import load_config
from doorstep.config.schema import Config
from doorstep.core.errors import ConfigError
from doorstep.core.gpio import enabled_parts, gpio_problem, no_gpio_message


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a config file",
                       description="Check doorstep.toml. Every problem is listed with its "
                       "dotted key, the value given and what is allowed. A warning says when "
                       "the config asks for GPIO (button, chime, LED) that this machine lacks; "
                       "that is not an error, as the file may be meant for another machine.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=run)


def hardware_warnings(cfg: Config) -> list[str]:
    """What `doorstep run` would refuse on this machine, though the file itself is fine."""
    keys = enabled_parts(cfg.button.enabled, cfg.chime.enabled, cfg.led.enabled)
    problem = gpio_problem() if keys else None
    return [no_gpio_message(keys, problem)] if problem else []


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in hardware_warnings(cfg):
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    print(f"{args.file}: OK (device {cfg.device.id!r}, camera {cfg.camera.source!r}, "
          f"{len(cfg.owner.recipients)} recipient(s))")
    return 0
