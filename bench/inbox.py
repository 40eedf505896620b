"""Row 9, the inbox's lookup of a stored seq (issue 13 item 8): every chunk that arrives asks
"is this seq already stored?". Measured on stores of many artifacts, against the baseline of
how it was done before: listing the device's folder for the seq's names (a glob)."""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

from doorstep.bench.report import Line, Row, Stat
from doorstep.owner.store import InboxStore
from doorstep.protocol.keys import SigningKey


def _fill(device_dir: Path, count: int) -> None:
    """``count`` stored artifacts' names (empty files: the lookup reads names, not data)."""
    kinds = ("event", "snapshot", "clip")
    for seq in range(1, count + 1):
        fd = os.open(device_dir / f"{seq:010d}.{kinds[seq % 3]}.age",
                     os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


def _per_lookup_ms(lookup: object, seqs: list[int]) -> float:
    assert callable(lookup)
    start = time.perf_counter()
    for seq in seqs:
        lookup(seq)
    return (time.perf_counter() - start) * 1000 / len(seqs)


def inbox_lookup(work: Path, sizes: tuple[int, ...], lookups: int) -> Row:
    lines = []
    for count in sizes:
        root = work / f"store-{count}"
        shutil.rmtree(root, ignore_errors=True)
        store = InboxStore(root, {"door": SigningKey.generate().public_key})
        device_dir = root / "door"
        _fill(device_dir, count)
        rng = random.Random(count)
        seqs = [rng.randint(1, count * 2) for _ in range(lookups)]    # half present
        baseline_seqs = seqs[: max(3, lookups // 50)]                 # the slow way, fewer

        def listing(seq: int, folder: Path = device_dir) -> Path | None:
            matches = sorted(folder.glob(f"{seq:010d}.*.age"))
            return matches[0] if matches else None

        def finding(seq: int, inbox: InboxStore = store) -> Path | None:
            return inbox.find("door", seq)

        figure = [_per_lookup_ms(finding, seqs) for _ in range(3)]
        base = [_per_lookup_ms(listing, baseline_seqs) for _ in range(3)]
        lines.append(Line(f"{count:,} stored", "ms", Stat.of(figure), Stat.of(base)))
        shutil.rmtree(root, ignore_errors=True)
    return Row(9, "Inbox lookup of a seq", "listing the device's folder, as before issue 13",
               f"stores of {', '.join(f'{n:,}' for n in sizes)} artifacts in one device "
               f"folder; {lookups} lookups of random seqs, half of them stored", tuple(lines))
