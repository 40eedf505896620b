"""The device's retained status is signed and sealed (issue 13 item 2): a status put on the
broker in the device's name by anyone else (a forged "privacy on") is refused by readers, and
the broker reads nothing of a real one."""

from __future__ import annotations

import json

import pytest

from doorstep.core.errors import SealError
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.seal import identity_of, recipient_of
from doorstep.protocol.wire import Ack, open_sealed_status, open_status, seal_status, sign_status

DEVICE = SigningKey.generate()
INBOX = SigningKey.generate()


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


def sealed(body: dict[str, object], key: SigningKey = DEVICE,
           to: SigningKey = INBOX) -> bytes:
    return seal_status(key, body, recipient_of(to.public_key))


def test_a_sealed_status_opens_only_with_the_inbox_key_and_shows_the_broker_nothing() -> None:
    on = sealed({"state": "online", "privacy": True, "armed": False, "time": 1.0})
    off = sealed({"state": "online", "privacy": False, "armed": True, "time": 1.0})
    body = open_sealed_status(on, identity_of(INBOX), DEVICE.public_key)
    assert (body["privacy"], body["armed"]) == (True, False)
    for payload in (on, off):
        assert b"privacy" not in payload and b"online" not in payload and b"armed" not in payload
    assert len(on) == len(off)                 # the same bucket: the length says nothing
    with pytest.raises(SealError, match="cannot be opened"):
        open_sealed_status(on, identity_of(SigningKey.generate()), DEVICE.public_key)


@pytest.mark.parametrize("forged", [
    sign_status(DEVICE, {"state": "online", "privacy": True}),           # signed, not sealed
    sealed({"state": "online", "privacy": True}, key=SigningKey.generate()),  # another signer
    sealed({"state": "online"}, to=SigningKey.generate()),               # sealed to another
    b"DS2S" + b"[" * 10_000,
    b"",
])
def test_a_forged_or_unsealed_status_is_refused(forged: bytes) -> None:
    with pytest.raises(SealError):
        open_sealed_status(forged, identity_of(INBOX), DEVICE.public_key)
