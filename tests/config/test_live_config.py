"""`live.max_sessions`: live view sessions at once (issue 15); a bad value is named by its key."""

from __future__ import annotations

import pytest

from doorstep.config import parse_config
from doorstep.core.errors import ConfigError
from doorstep.protocol.keys import SigningKey

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
OWNER = (f'[owner]\nrecipients = ["{RECIPIENT}"]\n'
         f'inbox_key = "{SigningKey.generate().public_text()}"\n')


def test_max_sessions_defaults_to_two_and_zero_turns_live_view_off() -> None:
    assert parse_config(OWNER).live.max_sessions == 2
    assert parse_config(OWNER + "[live]\nmax_sessions = 0\n").live.max_sessions == 0


@pytest.mark.parametrize("value, said", [
    ("99", "live.max_sessions: 99 is out of range (allowed: 0 to 8)"),
    ('"many"', "live.max_sessions: expected a whole number, got 'many'"),
])
def test_a_bad_max_sessions_is_named_by_its_dotted_key(value: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(OWNER + f"[live]\nmax_sessions = {value}\nsessions = 3\n")
    problems = "\n".join(info.value.problems)
    assert said in problems
    assert "live.sessions: unknown key" in problems
