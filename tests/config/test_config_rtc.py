"""The [rtc] section (docs/rtc.md): STUN/TURN servers, audio devices, a TURN password only in
a file; every bad key named with its dotted name, at once."""

from __future__ import annotations

import pytest

from doorstep.config import parse_config
from doorstep.core.errors import ConfigError
from doorstep.protocol.keys import SigningKey

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
OWNER = (f'[owner]\nrecipients = ["{RECIPIENT}"]\n'
         f'inbox_key = "{SigningKey.generate().public_text()}"\n')


def test_rtc_defaults_and_a_good_section() -> None:
    cfg = parse_config(OWNER)
    assert cfg.rtc.enabled and cfg.rtc.max_sessions == 2 and not cfg.rtc.ice_servers
    assert cfg.rtc.microphone == "" and cfg.rtc.speaker == ""      # no audio unless asked
    cfg = parse_config(OWNER + '[rtc]\nice_servers = ["stun:stun.example.net:3478", '
                       '"turn:turn.example.net:3478"]\nturn_username = "bell"\n'
                       'turn_password_file = "turn.pw"\nmicrophone = "alsa:hw:1,0"\n'
                       'speaker = "alsa:default"\nmax_sessions = 1\n')
    assert cfg.rtc.ice_servers[1] == "turn:turn.example.net:3478"


def test_bad_rtc_keys_are_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(OWNER + '[rtc]\nmax_sessions = 0\nturn_password = "secret"\n')
    problems = "\n".join(info.value.problems)
    assert "rtc.max_sessions: 0 is out of range (allowed: 1 to 8)" in problems
    assert "rtc.turn_password: unknown key" in problems


def test_bad_rtc_servers_and_devices_are_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(OWNER + '[rtc]\nice_servers = ["http://stun.example.net", '
                     '"turn:turn.example.net"]\nmicrophone = "hw:1,0"\nspeaker = "file:"\n')
    problems = "\n".join(info.value.problems)
    assert len(info.value.problems) == 4, problems
    assert "rtc.ice_servers[0]: 'http://stun.example.net' is not a STUN or TURN URL" in problems
    assert "rtc.ice_servers: a TURN server needs rtc.turn_username" in problems
    assert "rtc.microphone: 'hw:1,0' is not \"alsa:DEVICE\"" in problems
    assert "rtc.speaker: 'file:'" in problems
