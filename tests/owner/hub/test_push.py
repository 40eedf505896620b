"""Web Push's pieces without a browser: what rides inside the RFC 8291 record, and quiet
hours across midnight in the browser's own time zone."""

from __future__ import annotations

import json
import os

from doorstep.owner.hub.push import MAX_INLINE, payload, quiet_now


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
