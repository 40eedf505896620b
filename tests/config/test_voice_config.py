"""The [voice] section (docs/talk.md): off by default, and every bad key named."""

from __future__ import annotations

import pytest

from doorstep.config import parse_config
from doorstep.core.errors import ConfigError
from tests.config.test_config import OWNER, problems_of


def test_voice_is_off_by_default() -> None:
    cfg = parse_config(OWNER)
    assert cfg.voice.answer_seconds == 0 and cfg.voice.voicemail_seconds == 0
    assert cfg.voice.reply_max_kb == 256 and cfg.voice.max_replies == 8
    assert cfg.clip.audio is False


def test_a_whole_voice_section_is_accepted() -> None:
    cfg = parse_config(f'{OWNER}[voice]\nanswer_seconds = 20\nvoicemail_seconds = 30\n'
                       'speaker = "alsa:default"\nmicrophone = "alsa:hw:1,0"\n')
    assert cfg.voice.answer_seconds == 20 and cfg.voice.speaker == "alsa:default"


@pytest.mark.parametrize(("extra", "message"), [
    ('[voice]\nspeaker = "hw:0"\n', 'voice.speaker: \'hw:0\' is not "alsa:DEVICE"'),
    ('[voice]\nmicrophone = "file:"\n', "voice.microphone:"),
    ("[voice]\nanswer_seconds = 10\n", "voice.answer_seconds: set, but there is no speaker"),
    ('[voice]\nspeaker = "alsa:default"\nvoicemail_seconds = 10\n',
     "voice.voicemail_seconds: voicemail follows the automatic reply"),
    ('[voice]\nspeaker = "alsa:default"\nanswer_seconds = 5\nvoicemail_seconds = 10\n',
     "voice.voicemail_seconds: set, but there is no microphone"),
    ("[voice]\nreply_max_kb = 1024\n", "voice.reply_max_kb: 1024 is out of range"),
    ("[voice]\nvoicemail_seconds = 600\n", "voice.voicemail_seconds: 600.0 is out of range"),
    ("[voice]\nspeak = 1\n", "voice.speak: unknown key"),
    ("[clip]\naudio = true\n", "clip.audio: true, but there is no microphone"),
    ("[clip]\naudio = true\nsegment_seconds = 2\n",
     "clip.audio: true, but there is no microphone"),
])
def test_voice_problems_name_their_keys(extra: str, message: str) -> None:
    found = problems_of(extra)
    assert any(message in p for p in found), found


def test_sound_is_recorded_in_segmented_clips_too() -> None:
    """clip.audio with clips as segments (the default segment_seconds = 2) and with one-file
    clips: both accepted, and sound stays off unless asked for."""
    for seconds in (2, 0.5, 0):
        cfg = parse_config(f'{OWNER}[clip]\naudio = true\nsegment_seconds = {seconds}\n'
                           '[voice]\nmicrophone = "alsa:hw:1,0"\n')
        assert cfg.clip.audio and cfg.clip.segment_seconds == seconds
    cfg = parse_config(f'{OWNER}[voice]\nmicrophone = "alsa:hw:1,0"\n')
    assert cfg.clip.audio is False and cfg.clip.segment_seconds == 2


def test_rtcs_speaker_serves_voice_too() -> None:
    cfg = parse_config(f'{OWNER}[rtc]\nspeaker = "alsa:default"\nmicrophone = "alsa:hw:1"\n'
                       '[voice]\nanswer_seconds = 5\nvoicemail_seconds = 10\n')
    assert cfg.voice.voicemail_seconds == 10
    with pytest.raises(ConfigError):
        parse_config(f'{OWNER}[voice]\nanswer_seconds = 5\n')
