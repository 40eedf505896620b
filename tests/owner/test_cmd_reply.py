"""`doorstep cmd reply_play|reply_delete --name REPLY` through the real command line, against
a real Mosquitto and the agent wired as `doorstep run` wires it (a file for its speaker): the
name travels in the signed command, and a missing or bad name is refused before anything is
sent, with a message that says what to give."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from doorstep.broker import Mosquitto
from doorstep.cli import main as cli_main
from tests.agent.rtcpeer import dominant_hz
from tests.agent.test_voice import Doorbell, Owner, decoded, doorbell, opus
from tests.faults.harness import DEVICE, wait_for


@pytest.fixture
def bell(tmp_path: Path, broker: Mosquitto) -> Iterator[Doorbell]:
    yield from doorbell(tmp_path, broker, "")


def cmd(bell: Doorbell, *args: str) -> int:
    return cli_main(["cmd", *args, "--key", str(bell.party.command_key_file),
                     "--device", DEVICE, "--device-key", bell.party.device.public_text(),
                     "--host", "127.0.0.1", "--no-tls", "--port", str(bell.broker.port),
                     "--counter-file", str(bell.counter_file)])


@pytest.mark.slow
def test_doorstep_cmd_plays_and_deletes_a_reply_by_name(
        bell: Doorbell, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    owner = Owner(bell)
    try:
        assert owner.answer(owner.put("hello", opus(tmp_path / "hello.ogg", 440, 1.0))).ok
    finally:
        owner.close()
    capsys.readouterr()
    assert cmd(bell, "reply_play", "--name", "hello") == 0
    assert f"{DEVICE} did reply_play" in capsys.readouterr().out
    wait_for(lambda: bell.voice.played == 1, 10, "the reply to finish playing")
    samples, _ = decoded(bell.speaker)
    assert abs(dominant_hz(samples) - 440) < 10          # it played at the door
    # a name the doorbell does not have: its signed refusal, and exit 1
    assert cmd(bell, "reply_play", "--name", "nope") == 1
    assert "refused reply_play: reply_play: no reply named 'nope'" in capsys.readouterr().err
    assert cmd(bell, "reply_delete", "--name", "hello") == 0
    assert bell.voice.store.path("hello") is None


@pytest.mark.parametrize(("args", "error"), [
    (["reply_play"], "reply_play needs --name REPLY: the quick reply to play"),
    (["reply_delete"], "reply_delete needs --name REPLY: the quick reply to delete"),
    (["reply_play", "--name", "Hello there"],
     "--name 'Hello there': a reply's name is 1-32 of a-z, 0-9, _ and -"),
    (["reply_play", "--name", "x" * 40], "a reply's name is 1-32 of"),
    (["arm", "--name", "hello"], "--name is only for reply_delete and reply_play, not arm"),
])
def test_a_missing_or_bad_name_is_refused_before_anything_is_sent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        error: str) -> None:
    from doorstep.protocol.keys import SigningKey

    key = tmp_path / "owner-command.key"
    SigningKey.generate().save(key)
    # port 1: nothing listens there, so a command that got past the check would fail to
    # connect and say so; these fail on the name instead
    code = cli_main(["cmd", *args, "--key", str(key), "--device", DEVICE, "--device-key",
                     SigningKey.generate().public_text(), "--host", "127.0.0.1", "--no-tls",
                     "--port", "1", "--no-wait"])
    err = capsys.readouterr().err
    assert code == 1 and error in err, err
    assert "Traceback" not in err and "broker" not in err


def test_reply_put_is_left_to_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    """Its audio follows the command in sealed parts, which the command line does not send."""
    with pytest.raises(SystemExit):
        cli_main(["cmd", "reply_put", "--device", DEVICE, "--device-key", "ed25519:x"])
    assert "invalid choice: 'reply_put'" in capsys.readouterr().err
