"""The named values that cross modules and the wire: artifact kinds, event types, owner
command actions and priorities. They are str and int enums, so what is written to the wire and
to disk is exactly the text and numbers it was before they were typed."""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    """What an artifact holds (the manifest's ``kind``)."""

    EVENT = "event"              # sealed JSON (EventType below), with its thumbnail inside
    SNAPSHOT = "snapshot"        # sealed full-resolution JPEG
    THUMBNAIL = "thumbnail"
    CLIP = "clip"                # sealed fragmented MP4, a whole clip (clip.segment_seconds = 0)
    # sealed standalone fMP4: a clip's init segment and its next fragments (docs/capture.md);
    # ``parent`` is the seq of the clip's first stored segment ("" on that one)
    SEGMENT = "segment"
    CLIP_PARTIAL = "clip_partial"  # a clip cut short by a crash, trimmed to whole age chunks
    # sealed Ogg Opus: a visitor's message after an unanswered ring (docs/talk.md); ``parent``
    # is the seq of the ring's event
    VOICEMAIL = "voicemail"


class EventType(enum.StrEnum):
    """The ``type`` inside a sealed event's JSON body."""

    RING = "ring"
    MOTION = "motion"
    MOTION_END = "motion_end"
    SNAPSHOT = "snapshot"        # an owner's "take a snapshot"
    CLIP = "clip"                # a finished clip's metadata


class Action(enum.StrEnum):
    """What a signed owner command asks the doorbell to do."""

    SNAPSHOT = "snapshot"
    ARM = "arm"
    DISARM = "disarm"
    PRIVACY_ON = "privacy_on"
    PRIVACY_OFF = "privacy_off"
    # the household's devices (docs/design.md decision 24): only the owner's command key
    # may sign these; ``params`` name the age recipient and the member's command key
    ADD_RECIPIENT = "add_recipient"
    REMOVE_RECIPIENT = "remove_recipient"
    # live view through the broker (issue 15): start or renew the session named by the
    # ``session`` param (the viewer's random id); ``stop`` = "1" ends it
    LIVE = "live"
    # a WebRTC live view and talk session (docs/rtc.md): ``params`` carry the browser's SDP
    # offer and its DTLS fingerprint; the signed answer carries the doorbell's SDP
    RTC_OFFER = "rtc_offer"
    RTC_HANGUP = "rtc_hangup"     # ``params``: ``session``, the offer's counter
    # quick replies (docs/talk.md): ``reply_put`` names a reply's audio by size and SHA-256,
    # which follows in sealed parts (protocol/reply.py); ``reply_play`` and ``reply_delete``
    # name a stored reply
    REPLY_PUT = "reply_put"
    REPLY_PLAY = "reply_play"
    REPLY_DELETE = "reply_delete"


# Actions only the owner's own command key may sign (not an enrolled browser's key).
OWNER_ONLY = frozenset({Action.ADD_RECIPIENT, Action.REMOVE_RECIPIENT})


class Priority(enum.IntEnum):
    """Outbox priorities: lower numbers are sent first and evicted last (motion before ring)."""

    RING = 0
    EVENT = 1
    SNAPSHOT = 2
    CLIP = 3
