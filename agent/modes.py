"""The modes an owner sets and a restart must not forget: armed (motion records) and privacy
(camera off). Kept in ``modes.json`` in the data dir, written durably before the agent acts on
a change, and read before the first frame. If the file cannot be read, privacy stays ON (fail
closed) and the problem is reported in the status until the owner sets the modes again."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from doorstep.core.fsutil import write_atomic

log = logging.getLogger(__name__)

MODES_FILE = "modes.json"


@dataclass(frozen=True)
class Modes:
    armed: bool
    privacy: bool


class ModeStore:
    """``load()`` once at start-up; ``save()`` before every change takes effect."""

    def __init__(self, path: Path, default: Modes) -> None:
        self.path = path
        self.default = default
        self.problem: str | None = None    # why the stored modes could not be read

    def load(self) -> Modes:
        try:
            doc = json.loads(self.path.read_bytes())
            armed, privacy = doc["armed"], doc["privacy"]
            if not isinstance(armed, bool) or not isinstance(privacy, bool):
                raise ValueError("armed and privacy must be true or false")
            return Modes(armed=armed, privacy=privacy)
        except FileNotFoundError:
            return self.default        # never set: the config's defaults
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            self.problem = (f"{self.path}: the stored modes are unreadable "
                            f"({exc.__class__.__name__}: {str(exc)[:80]}); privacy mode stays "
                            "on until the owner sets it")
            log.error("%s", self.problem)
            return Modes(armed=self.default.armed, privacy=True)

    def save(self, modes: Modes) -> None:
        """Durably (tmp file, fsync, rename, directory fsync). Raises OSError."""
        write_atomic(self.path, json.dumps(asdict(modes), sort_keys=True).encode(), mode=0o600)
        self.problem = None
