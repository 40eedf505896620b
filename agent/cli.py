"""`doorstep run`: the doorbell agent as systemd runs it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from doorstep import __version__
from doorstep.agent import memory
from doorstep.agent.wiring import build
from doorstep.config import load_config
from doorstep.core.errors import DoorstepError
from doorstep.protocol.keys import fingerprint

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the doorbell agent",
                       description="Capture, detect motion, record sealed clips and upload "
                       "them. Stops on SIGTERM or when a file source ends.")
    p.add_argument("--config", required=True, metavar="FILE", help="doorstep.toml")
    p.add_argument("--drain", type=float, default=60.0, metavar="SECONDS",
                   help="when a file source ends, wait this long for the inbox to confirm "
                   "every upload before exiting (default 60; what is left stays in the outbox "
                   "for the next start)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    memory.set_up()  # before any codec allocates
    try:
        cfg = load_config(args.config)
        service = build(cfg)
    except DoorstepError as exc:
        print(f"doorstep run: {exc}", file=sys.stderr)
        return 2
    log.info("doorstep %s: device %s, key %s", __version__, cfg.device.id,
             fingerprint(service.device_key.public_key))
    signal.signal(signal.SIGTERM, lambda *_: service.stop_event.set())
    try:
        service.run(drain_timeout=args.drain, freeze_gc=True)
    except KeyboardInterrupt:
        service.stop_event.set()
    except DoorstepError as exc:
        log.error("doorstep run: %s", exc)
        return 1
    return 0
