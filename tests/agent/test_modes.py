"""Privacy mode and the armed state outlive a restart (issue 13, item 1): stored durably before
they take effect, restored before the first frame, and privacy stays on (fail closed) when the
stored modes cannot be read."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from doorstep.agent.modes import MODES_FILE
from doorstep.agent.service import Service
from doorstep.agent.wiring import build
from doorstep.config import parse_config
from doorstep.protocol.kinds import Action
from tests.agent.test_clips import config, synthetic_video
from tests.conftest import Keys


def start(tmp_path: Path, keys: Keys, video: Path) -> Service:
    return build(parse_config(config(tmp_path, keys, video, motion=True)),
                 pin_factory=MockFactory(), connect=False)


def request(service: Service, action: Action) -> str | None:
    """Carry ``action`` out on the next frame, as a verified owner command would be."""
    outcome: list[str | None] = []
    done = threading.Event()

    def told(refusal: str | None) -> None:
        outcome.append(refusal)
        done.set()
    service.agent.owner_request(action, told)
    frames = iter(service.source.frames())
    while not done.is_set():
        service.agent.process(next(frames))
    return outcome[0]


def test_privacy_and_disarm_survive_a_restart(tmp_path: Path, keys: Keys) -> None:
    video = tmp_path / "walk.mp4"
    synthetic_video(video, 4, (1.0, 3.0))
    first = start(tmp_path, keys, video)
    assert (first.agent.privacy, first.agent.armed) == (False, True)
    assert request(first, Action.DISARM) is None
    assert request(first, Action.PRIVACY_ON) is None
    stored = json.loads((tmp_path / "data" / MODES_FILE).read_text())
    assert stored == {"armed": False, "privacy": True}       # on disk before it took effect
    first.close()

    again = start(tmp_path, keys, video)                      # the restart
    assert (again.agent.privacy, again.agent.armed) == (True, False)
    assert again.status.body()["privacy"] is True
    assert again.doorbell is not None and again.doorbell.led_state.value == "privacy"
    again.run()                                               # the whole walk-by plays
    assert again.agent.frames == 0 and list(again.outbox.items()) == []


def test_unreadable_modes_fail_closed_and_the_owner_is_told(tmp_path: Path,
                                                            keys: Keys) -> None:
    video = tmp_path / "walk.mp4"
    synthetic_video(video, 3, (1.0, 2.5))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / MODES_FILE).write_text('{"armed": true, "privacy": "maybe"}')
    service = start(tmp_path, keys, video)
    assert service.agent.privacy is True
    problems = service.status.body()["problems"]
    assert any(MODES_FILE in p and "privacy mode stays on" in p for p in problems)
    # the owner turns privacy off: stored again, and the problem is gone
    assert request(service, Action.PRIVACY_OFF) is None
    assert service.agent.privacy is False and "problems" not in service.status.body()
    service.close()


def test_privacy_off_is_refused_when_it_cannot_be_stored(tmp_path: Path, keys: Keys) -> None:
    video = tmp_path / "walk.mp4"
    synthetic_video(video, 2, None)
    service = start(tmp_path, keys, video)
    assert request(service, Action.PRIVACY_ON) is None
    modes = tmp_path / "data" / MODES_FILE
    modes.unlink()
    modes.mkdir()                       # the file can no longer be replaced
    refusal = request(service, Action.PRIVACY_OFF)
    assert refusal is not None and "could not store" in refusal
    assert service.agent.privacy is True                # stays private
    service.close()
