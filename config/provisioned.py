"""The marker first boot leaves in the data dir (`provisioned.json`): first boot writes it,
the agent reads it for its status. It sits here, below both, so neither imports the other."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROVISIONED_FILE = "provisioned.json"


@dataclass(frozen=True)
class Provisioned:
    """What first boot leaves in the data dir for the agent to publish in its status."""

    device_id: str
    fingerprint: str
    public_key: str
    provisioned_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1) + "\n"


def read_provisioned(data_dir: str | os.PathLike[str]) -> Provisioned | None:
    """The marker first boot left, or None if this device was never provisioned that way."""
    path = Path(data_dir) / PROVISIONED_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Provisioned(device_id=str(doc["device_id"]), fingerprint=str(doc["fingerprint"]),
                           public_key=str(doc["public_key"]),
                           provisioned_at=float(doc["provisioned_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable provisioning marker: %s", path, exc)
        return None
