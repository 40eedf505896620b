"""The device's retained status is signed (issue 13 item 2, in part): a status put on the
broker in the device's name by anyone else (a forged "privacy on") is refused by readers."""

from __future__ import annotations

import json

import pytest

from doorstep.core.errors import SealError
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.wire import Ack, open_status, sign_status

DEVICE = SigningKey.generate()


def test_a_signed_status_opens_with_the_device_key() -> None:
    body = open_status(sign_status(DEVICE, {"state": "online", "privacy": False, "time": 1.0}),
                       DEVICE.public_key)
    assert (body["state"], body["privacy"], body["type"]) == ("online", False, "status")


@pytest.mark.parametrize("forged", [
    json.dumps({"v": 1, "state": "online", "privacy": True}).encode(),      # unsigned
    sign_status(SigningKey.generate(), {"state": "online", "privacy": True}),  # another key
    Ack("door", 1, True, "", 1.0).sign(DEVICE),       # the device's signature on another kind
    b"[" * 10_000,
])
def test_an_unsigned_or_forged_status_is_refused(forged: bytes) -> None:
    with pytest.raises(SealError):
        open_status(forged, DEVICE.public_key)
