"""The fragmented-MP4 layout a clip's segments share (docs/capture.md, "Clips as segments"):
top-level boxes only, so the doorbell can cut its muxer's stream into segments and the owner
can join them back, without either side parsing what is inside a box.

A segment's plaintext is the clip's init segment (``ftyp`` + ``moov``) followed by one or more
fragments (``moof`` + ``mdat``). Joining a clip keeps the first segment's init and appends every
segment's fragments: the result is the muxer's own stream for the clip, byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from doorstep.core.errors import SealError

INIT_BOXES = (b"ftyp", b"moov")
FRAGMENT_BOXES = (b"moof", b"mdat")


@dataclass(frozen=True)
class Box:
    type: bytes
    start: int
    end: int


def boxes(data: bytes | bytearray | memoryview, *, complete: bool = True) -> Iterator[Box]:
    """The top-level boxes of ``data`` in order. ``complete``: the data must end on a box
    boundary (else a SealError names the offset); otherwise a box cut off at the end is
    simply not yielded (a stream still being written)."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if len(view) - pos < 8:
            if complete:
                raise SealError(f"fMP4: {len(view) - pos} stray bytes at offset {pos}")
            return
        size, kind = struct.unpack_from(">I4s", view, pos)
        header = 8
        if size == 1:                     # a 64-bit size follows the type
            if len(view) - pos < 16:
                if complete:
                    raise SealError(f"fMP4: box header cut off at offset {pos}")
                return
            size = struct.unpack_from(">Q", view, pos + 8)[0]
            header = 16
        if size < header or (size == 0 and complete):
            raise SealError(f"fMP4: box {kind!r} at offset {pos} has an invalid size {size}")
        if pos + size > len(view):
            if complete:
                raise SealError(f"fMP4: box {kind!r} at offset {pos} is cut off ({size} bytes "
                                f"declared, {len(view) - pos} present)")
            return
        yield Box(bytes(kind), pos, pos + size)
        pos += size


def split_init(data: bytes) -> tuple[bytes, bytes]:
    """A segment's plaintext as (init, fragments). Raises SealError if it is not an init
    segment followed by fragments."""
    found = list(boxes(data))
    init_end = 0
    for box in found:
        if box.type in INIT_BOXES and box.start == init_end:
            init_end = box.end
    if init_end == 0 or not any(b.type == b"moov" for b in found if b.end <= init_end):
        raise SealError("fMP4: the segment does not begin with its init segment (ftyp, moov)")
    for box in found:
        if box.start >= init_end and box.type not in FRAGMENT_BOXES:
            raise SealError(f"fMP4: unexpected box {box.type!r} after the init segment at "
                            f"offset {box.start}")
    return data[:init_end], data[init_end:]


def join(segments: Sequence[bytes]) -> bytes:
    """One MP4 from a clip's segments, in order: the first one's init, then every segment's
    fragments. A missing segment leaves a gap in time, never a broken file."""
    if not segments:
        raise SealError("fMP4: no segments to join")
    init, first = split_init(segments[0])
    parts = [init, first]
    for n, seg in enumerate(segments[1:], 2):
        other, fragments = split_init(seg)
        if other != init:
            raise SealError(f"fMP4: segment {n} has another init segment than the first "
                            "(not the same clip)")
        parts.append(fragments)
    return b"".join(parts)
