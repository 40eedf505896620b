"""`doorstep doctor`: the self-check an installer runs at the door. Every check prints PASS or
FAIL (with the fix) as it finishes, or SKIP with the reason; the exit status is 1 if any check
failed; --json gives the same report to a fleet tool on stdout (the button prompt then goes to
stderr)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doorstep import __version__
from doorstep.config.load import load_config
from doorstep.config.schema import Config
from doorstep.core.errors import ConfigError
from doorstep.doctor import camera, gpio, system
from doorstep.doctor.report import (
    Result,
    failed,
    ok,
    passed,
    print_result,
    skipped,
    summary,
    to_json,
)

DEFAULT_CONFIG = "/etc/doorstep/doorstep.toml"
NEEDS_CONFIG = ("camera", "encoder", "gpio", "button", "broker", "disk", "keys", "recipients")


@dataclass
class Doctor:
    """One run of the checks. ``pin_factory``: gpiozero's (None: this machine's default);
    ``prompt``: how to ask for the button press; ``opener``: how to open the frame source."""

    config_path: Path
    credentials: Path = Path(system.CREDENTIALS)
    pin_factory: Any = None
    skip_button: bool = False
    button_timeout: float = 30.0
    events_per_day: int = 50
    prompt: Callable[[str], None] = print
    opener: camera.OpenSource = camera.open_source
    python: str = sys.executable
    root: Path = Path("/")          # where the clock's sync marker is looked for
    device: str = field(default="", init=False)

    def checks(self) -> Iterator[Result]:
        """Each check's result, in order, as soon as it is known."""
        try:
            cfg = load_config(self.config_path)
        except ConfigError as exc:
            yield failed("config", f"{self.config_path}:\n" + "\n".join(exc.problems),
                         f"fix the file (`doorstep check-config {self.config_path}` lists the "
                         f"same problems); first boot installs it from the boot partition")
            yield from system.check_modules(Config(), python=self.python)
            yield system.check_clock(self.root)
            for name in NEEDS_CONFIG:
                yield skipped(name, "needs a valid config")
            return
        self.device = cfg.device.id
        cam = cfg.camera
        yield passed("config", f"{self.config_path}: device {cfg.device.id}, camera "
                     f"{cam.source} {cam.width}x{cam.height} at {cam.fps:g} fps",
                     device=cfg.device.id)
        yield from camera.check_camera_and_encoder(cfg, opener=self.opener)
        yield gpio.check_pins(cfg, self.pin_factory)
        yield gpio.check_button(cfg, self.pin_factory, timeout=self.button_timeout,
                                prompt=self.prompt, skip=self.skip_button)
        yield system.check_broker(cfg, credentials=self.credentials)
        yield system.check_clock(self.root)
        yield system.check_disk(cfg, events_per_day=self.events_per_day)
        yield system.check_keys(cfg, credentials=self.credentials)
        yield system.check_recipients(cfg)
        yield from system.check_modules(cfg, python=self.python)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `doctor` to the doorstep CLI; it sets `func` to the handler."""
    p = sub.add_parser("doctor", help="check this doorbell at the door (camera, encoder, GPIO, "
                       "broker, clock, disk, keys, modules)",
                       description="Run every check an installer needs at the door and print "
                       "PASS or FAIL with the fix for each. Stop the agent first (systemctl "
                       "stop doorstep-agent): the camera and the pins take one user at a time. "
                       "Exit status 1 if any check failed.")
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"the device's config (default {DEFAULT_CONFIG})")
    p.add_argument("--credentials", default=system.CREDENTIALS, metavar="DIR",
                   help=f"where the device key and MQTT password are (default "
                   f"{system.CREDENTIALS})")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--no-button", action="store_true",
                   help="do not ask for a button press (the check is then skipped)")
    p.add_argument("--button-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the press (default 30)")
    p.add_argument("--events-per-day", type=int, default=50, metavar="N",
                   help="the load the card-wear estimate assumes (default 50 events a day)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, *, pin_factory: Any = None) -> int:
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.WARNING)  # the report, not the stages' chatter
    out = sys.stdout

    def prompt(text: str) -> None:
        print(f"..... {'button':<17} {text}", file=sys.stderr if args.json else out,
              flush=True)

    doctor = Doctor(Path(args.config), credentials=Path(args.credentials),
                    pin_factory=pin_factory, skip_button=args.no_button,
                    button_timeout=args.button_timeout, events_per_day=args.events_per_day,
                    prompt=prompt)
    if not args.json:
        print(f"doorstep doctor {__version__}: {args.config}", file=out, flush=True)
    results = []
    for result in doctor.checks():
        results.append(result)
        if not args.json:
            print_result(result, out)
    if args.json:
        print(to_json(results, version=__version__, config=args.config,
                      device=doctor.device), file=out)
    else:
        print(summary(results), file=out)
    return 0 if ok(results) else 1


def load_report(text: str) -> dict[str, Any]:
    """The --json report read back (for fleet tools and tests)."""
    report: dict[str, Any] = json.loads(text)
    return report
