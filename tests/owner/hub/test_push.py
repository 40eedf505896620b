"""Web Push's pieces without a browser: what rides inside the RFC 8291 record, and quiet
hours across midnight in the browser's own time zone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from doorstep.owner.hub.push import MAX_INLINE, Vapid, payload, quiet_now, send
from tests.owner.hub.pushservice import PushService


def test_the_sealed_event_rides_inline_only_when_it_fits() -> None:
    small = json.loads(payload("porch", 7, "event", 0, 1.5, b'{"manifest":{}}', b"x" * 100))
    assert small["env"] and small["ct"] and small["s"] == 7
    big = payload("porch", 8, "event", 0, 1.5, b"{}", os.urandom(20_000))
    assert len(big) <= MAX_INLINE and "ct" not in json.loads(big)


def test_quiet_hours_wrap_midnight_in_local_time() -> None:
    # 22:00-07:00 for a browser at UTC+2 (tz_offset 120 minutes)
    assert quiet_now("22:00-07:00", 120, 21 * 60)         # 23:00 local
    assert quiet_now("22:00-07:00", 120, 3 * 60)          # 05:00 local
    assert not quiet_now("22:00-07:00", 120, 6 * 60)      # 08:00 local
    assert not quiet_now("", 0, 0) and not quiet_now("nonsense", 0, 0)
    assert quiet_now("09:00-17:00", 0, 12 * 60) and not quiet_now("09:00-17:00", 0, 18 * 60)


def test_an_unreachable_push_service_is_a_failed_push_not_a_crash(tmp_path: Path) -> None:
    """A browser whose push service is gone (closed, offline) must not stop the pushes to the
    other browsers: send() reports it as a failure instead of raising."""
    gone = PushService(lambda data: None)
    subscription = gone.subscription
    gone.close()                                   # nothing listens on its port any more
    assert send(subscription, b'{"d":"porch"}', Vapid(tmp_path / "vapid.pem")) == 0
    alive = PushService(lambda data: None)
    try:
        assert send(alive.subscription, b'{"d":"porch"}', Vapid(tmp_path / "vapid.pem")) == 201
        assert alive.received and alive.received[0]["plaintext"] == b'{"d":"porch"}'
    finally:
        alive.close()
