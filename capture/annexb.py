"""H.264 Annex B byte-stream helpers: split an access unit into NAL units and pick out the
parameter sets (SPS/PPS) a muxer needs as extradata."""

from __future__ import annotations

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
START_CODE = b"\x00\x00\x00\x01"


def split_nals(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B buffer, without their start codes."""
    nals: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        # A 4-byte start code leaves one zero at the end of the previous unit; drop it.
        nal = data[start:end].rstrip(b"\x00") if nxt >= 0 else data[start:end]
        if nal:
            nals.append(nal)
        i = nxt
    return nals


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def parameter_sets(data: bytes) -> bytes | None:
    """The SPS and PPS of an access unit as an Annex B buffer, or None if it carries neither."""
    sets = [n for n in split_nals(data) if nal_type(n) in (NAL_SPS, NAL_PPS)]
    if not any(nal_type(n) == NAL_SPS for n in sets) or not any(nal_type(n) == NAL_PPS
                                                                for n in sets):
        return None
    return b"".join(START_CODE + n for n in sets)


def is_idr(data: bytes) -> bool:
    """True if the access unit holds an IDR slice."""
    return any(nal_type(n) == NAL_IDR for n in split_nals(data))
