"""Moving regions followed from frame to frame, so the detector can tell something that travels
(a person, however small and slow) from something that stirs in place (a screen's bars,
leaves, a person fidgeting in a chair). The detector hands in each frame's regions; a track
whose centre has moved steadily one way far enough is *travelling*, and one that has arrived
keeps counting while it stirs in place. Pure Python over a handful of boxes per frame."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

MAX_TRACKS = 12
MAX_REGIONS = 12  # the largest regions of a frame that are followed
ENDS = 2  # centres averaged at each end of the window a stretch is measured over
UNPINNED = (False, False, False, False)
NO_CUT: tuple[float | None, float | None] = (None, None)


@dataclass
class Region:
    """One connected moving region of a frame, in work pixels."""

    x: int
    y: int
    w: int
    h: int
    area: int  # moving pixels
    real: int  # moving pixels outside busy places
    cx: float
    cy: float
    label: int = 0  # its label in the frame's connected components


@dataclass
class Track:
    """A region followed over frames."""

    x0: int
    y0: int
    x1: int
    y1: int  # the box last seen (exclusive ends)
    seen: float  # media time last seen
    area: int  # moving pixels this frame
    real: int  # of which outside busy places
    mean_area: float  # its area, averaged over recent frames
    peak: int  # the most pixels it has had
    scene: bool  # born while the scene was first learnt: part of the scene until it travels
    path: list[tuple[float, float, float]] = field(default_factory=list)  # (t, cx, cy)
    travelled: float = -math.inf  # media time it last travelled a stretch
    stretches: int = 0  # stretches travelled
    hull: tuple[int, int, int, int] | None = None  # all its boxes since it arrived, together
    thing: bool | None = None  # when it was large: did it hide the background (True), or was
    # it light on it or a blur in front of the lens (False)? None: never large
    regions: list[Region] = field(default_factory=list)  # matched this frame
    since: float = 0.0  # media time it was first judged a thing (see thing)
    centre: tuple[float, float] = (0.0, 0.0)  # of its regions last seen (path holds the
    # points it is measured by, which differ while it comes into view: Tracker._lead)
    halfway: bool = False  # its path is half way through a first stretch (see making_way)
    side: tuple[int, int] = (0, 0)  # the frame edges a small region coming into view touches
    # (-1 left or top, 1 right or bottom, 0 neither): see Tracker.entering
    born: float = 0.0  # media time first seen
    first: tuple[int, int, int, int] = (0, 0, 0, 0)  # its box when first seen ...
    first_area: int = 0  # ... and its area then
    pinned: tuple[bool, bool, bool, bool] = (True, True, True, True)  # which sides of its box
    # (x0, y0, x1, y1) have not moved since then ...
    smooth: tuple[bool, bool, bool, bool] = (True, True, True, True)  # ... and which moved at
    # most a pixel a frame (a region that fills in as it is first seen jumps)
    cut: tuple[float | None, float | None] = (None, None)  # an occluding edge inside the frame
    # it comes into view from behind (x, y), while one is: see Tracker._cut
    settled: bool = False  # when judged a thing, it lay where something had stirred in place
    # before, away from the frame's edge (Tracker.stirred_under): someone sitting there

    @property
    def arrived(self) -> bool:
        """It came from somewhere: a large thing that travelled, or a small one that travelled
        twice. Something already moving when the detector started (a screen's bars travel too)
        never arrives, nor does light or a blur at the lens."""
        if self.scene or self.thing is False:
            return False
        return self.stretches >= 2 or (self.stretches >= 1 and self.thing is True)


class Tracker:
    """Follows regions; says which tracks count as motion.

    A track travels a stretch when, within ``window`` seconds, the mean of its last few
    centres lies ``travel_px`` from the mean of its first few, and the centres in between
    made their way there without turning back by more than half of it: coherent displacement,
    integrated over time, rather than a lower threshold. Only a track that is mostly outside
    busy places can travel, and while it travels the busy map leaves its box alone. A track
    that has arrived counts for ``linger`` seconds after its last stretch while it stirs
    outside busy places: a visitor standing at the door keeps the clip going.
    """

    def __init__(self, travel_px: float, small_px: int, window: float, linger: float,
                 lost: float, pace: float, least: float,
                 frame: tuple[int, int] = (0, 0), large_px: int = 0) -> None:
        self.frame = frame  # work pixels (w, h); (0, 0): no edge is special
        self.large_px = large_px  # a region this large is judged as a thing, not measured so
        self.travel_px = travel_px
        self.least = least  # seconds: the shortest stretch (a twig's or a shrug's swing is
        # shorter, and turns back)
        self.pace = pace
        self.small_px = small_px
        self.window = window
        self.linger = linger
        self.lost = lost
        self.tracks: list[Track] = []
        self.stirs: list[tuple[float, int, int, int, int]] = []  # (t, box): see stirred_under

    def reset(self) -> None:
        self.tracks = []
        self.stirs = []

    def update(self, regions: list[Region], t: float, learning: bool = False) -> list[Track]:
        """Match this frame's regions to tracks; returns the tracks seen this frame."""
        for tr in self.tracks:
            tr.regions = []
        fresh: list[Region] = []
        best = self._match(regions)
        for r, k in zip(regions, best, strict=True):
            if k >= 0:
                self.tracks[k].regions.append(r)
            elif r.real >= self.small_px and len(self.tracks) + len(fresh) < MAX_TRACKS:
                fresh.append(r)
        seen: list[Track] = []
        for tr in self.tracks:
            if tr.regions:
                self._advance(tr, tr.regions, t)
                seen.append(tr)
        for r in fresh:
            tr = Track(r.x, r.y, r.x + r.w, r.y + r.h, t, r.area, r.real, float(r.area),
                       r.area, scene=learning, regions=[r], born=t,
                       first=(r.x, r.y, r.x + r.w, r.y + r.h), first_area=r.area)
            tr.centre, tr.side = (r.cx, r.cy), self._side(tr, r.area)
            tr.path = [(t, *self._lead(r.cx, r.cy, tr.side))]
            self.tracks.append(tr)
            seen.append(tr)
        # a visitor who arrived may pause between gestures for longer than a walker is lost
        kept = []
        for tr in self.tracks:
            if t - tr.seen <= (3.0 * self.lost if self.lingers(tr, t) else self.lost):
                kept.append(tr)
            elif (not tr.stretches and not tr.scene and tr.thing is not False
                  and tr.seen - tr.born >= self.least):
                # it stirred in place as long as a stretch takes, and went without travelling:
                # remember where, for a while
                self.stirs.append((tr.seen, tr.x0, tr.y0, tr.x1, tr.y1))
        self.tracks = kept
        if self.stirs and t - self.stirs[0][0] > self.linger:
            self.stirs = [s for s in self.stirs if t - s[0] <= self.linger]
        return seen

    def stirred_under(self, tr: Track) -> bool:
        """Whether a track that has not travelled covers the middle of a place where something
        stirred in place and went, within the last ``linger`` seconds, and is away from the
        frame's edge. A person sitting nearly still shows as fragments now and then in one
        place; when a posture shift joins them into one large region, that is the same person,
        not someone who came: it counts only once it travels. Someone arriving comes in at the
        edge, or travels."""
        w, h = self.frame
        if tr.stretches or tr.x0 <= 0 or tr.y0 <= 0 or (w and tr.x1 >= w) or (h and tr.y1 >= h):
            return False
        return any(tr.x0 <= (x0 + x1) // 2 < tr.x1 and tr.y0 <= (y0 + y1) // 2 < tr.y1
                   for _, x0, y0, x1, y1 in self.stirs)

    def _match(self, regions: list[Region]) -> list[int]:
        """For each region, the index of the track it belongs to (its box, widened by a
        slack, overlaps the region's; the nearest centre wins), or -1. A handful of boxes:
        plain Python is quicker than numpy here."""
        gates = [(tr.x0 - sl, tr.y0 - sl, tr.x1 + sl, tr.y1 + sl, *tr.centre)
                 for tr in self.tracks
                 for sl in (2 + (tr.x1 - tr.x0 + tr.y1 - tr.y0) // 8,)]
        found = []
        for r in regions:
            best, best_d = -1, math.inf
            for k, (x0, y0, x1, y1, cx, cy) in enumerate(gates):
                if r.x <= x1 and r.x + r.w >= x0 and r.y <= y1 and r.y + r.h >= y0:
                    d = (r.cx - cx) ** 2 + (r.cy - cy) ** 2
                    if d < best_d:
                        best, best_d = k, d
            found.append(best)
        return found

    def _advance(self, tr: Track, regions: list[Region], t: float) -> None:
        r = regions[0]
        area, real, sx, sy = r.area, r.real, r.cx * r.area, r.cy * r.area
        x0, y0, x1, y1 = r.x, r.y, r.x + r.w, r.y + r.h
        for r in regions[1:]:  # usually none: one pass, no generators
            area += r.area
            real += r.real
            sx += r.cx * r.area
            sy += r.cy * r.area
            x0, y0 = min(x0, r.x), min(y0, r.y)
            x1, y1 = max(x1, r.x + r.w), max(y1, r.y + r.h)
        cx, cy = sx / area, sy / area
        # once no side of its box is where it was first seen, it cannot be coming into view
        # from behind anything: skip the bookkeeping
        watch = tr.pinned != UNPINNED
        if watch:
            f, p, m = tr.first, tr.pinned, tr.smooth
            tr.pinned = (p[0] and x0 == f[0], p[1] and y0 == f[1], p[2] and x1 == f[2],
                         p[3] and y1 == f[3])
            tr.smooth = (m[0] and abs(x0 - tr.x0) <= 1, m[1] and abs(y0 - tr.y0) <= 1,
                         m[2] and abs(x1 - tr.x1) <= 1, m[3] and abs(y1 - tr.y1) <= 1)
        tr.x0, tr.y0, tr.x1, tr.y1 = x0, y0, x1, y1
        side = self._side(tr, area)
        steady = 0.5 * tr.mean_area <= area <= 2.0 * tr.mean_area
        cut = self._cut(tr, area) if watch and side == (0, 0) else NO_CUT
        if side != tr.side:  # it came into view, or is all in view now: measure afresh
            steady, tr.side = False, side
        elif cut != tr.cut:
            if cut != NO_CUT and tr.cut == NO_CUT:
                # its near side stayed put all along: what was measured so far by its centre
                # is measured by its leading edge from the start
                tr.path = [(ts, *self._across(px, py, cut)) for ts, px, py in tr.path]
                steady = area >= 0.5 * tr.mean_area
            else:  # it is all in view now, or is not coming into view after all
                steady = False
        elif (side != (0, 0) or cut != NO_CUT) and area >= 0.5 * tr.mean_area:
            steady = True  # coming into view grows it, step by step: that is no new shape
        tr.cut = cut
        if area > 3.0 * tr.mean_area + 4 * self.small_px:
            # something much larger swept over it (a headlight over where a visitor stood):
            # a new thing, judged afresh
            tr.thing, tr.stretches, tr.travelled, tr.hull = None, 0, -math.inf, None
        tr.mean_area += 0.3 * (area - tr.mean_area)
        tr.peak = max(tr.peak, area)
        if tr.arrived:
            h = tr.hull or (tr.x0, tr.y0, tr.x1, tr.y1)
            tr.hull = (min(h[0], tr.x0), min(h[1], tr.y0), max(h[2], tr.x1), max(h[3], tr.y1))
        tr.seen, tr.area, tr.real = t, area, real
        if not steady:  # it split, merged or changed shape: measure afresh from here
            tr.path = []
        tr.centre = (cx, cy)
        tr.path.append((t, *self._across(*self._lead(cx, cy, side), cut)))
        while tr.path[0][0] < t - self.window:
            tr.path.pop(0)
        if 2 * real >= area and self._stretch(tr.path, max(tr.y1 - tr.y0, tr.x1 - tr.x0)):
            tr.travelled = t
            tr.stretches += 1
            tr.path = tr.path[-ENDS:]  # the next stretch starts where this one ended
        # worked out once per sighting, not every frame it is asked
        tr.halfway = (tr.stretches == 0 and len(tr.path) >= 2 * ENDS
                      and self._stretch(tr.path, max(tr.y1 - tr.y0, tr.x1 - tr.x0), 0.5))

    def _side(self, tr: Track, area: int) -> tuple[int, int]:
        """The frame edges a small region touches (see Track.side), if it is coming into view
        there: never judged as a large thing, smaller than one, and not yet travelled."""
        w, h = self.frame
        if not w or tr.thing is not None or tr.stretches or area >= self.large_px:
            return (0, 0)
        sx = -1 if tr.x0 <= 0 else (1 if tr.x1 >= w else 0)
        sy = -1 if tr.y0 <= 0 else (1 if tr.y1 >= h else 0)
        if tr.x0 <= 0 and tr.x1 >= w:
            sx = 0
        if tr.y0 <= 0 and tr.y1 >= h:
            sy = 0
        return (sx, sy)

    def _cut(self, tr: Track, area: int) -> tuple[float | None, float | None]:
        """The occluding edge inside the frame a small region is coming into view from behind
        (a door frame, a pillar, a parked car), if it is: never judged as a large thing,
        smaller than one, not yet travelled, and since it was first seen one side of its box
        has not moved at all while the opposite side has advanced steadily (a pixel a frame at
        most) by travel_px or more, and it has grown. Someone stepping out of a doorway shows
        as the frame's edge shows them (Tracker._lead): the occluder cuts off the rest, and its
        edge stays put. A region that fills in as it is first seen, a sitter's fragments or a
        swaying branch move both sides, or jump."""
        if (tr.thing is not None or tr.stretches or area >= self.large_px
                or area <= tr.first_area):
            return (None, None)
        f, p, m = tr.first, tr.pinned, tr.smooth
        found: list[float | None] = [None, None]
        for k in (0, 1):  # x, then y
            lo, hi = (tr.x0, tr.x1) if k == 0 else (tr.y0, tr.y1)
            if p[k] and m[k + 2] and hi >= f[k + 2] + self.travel_px:
                found[k] = float(lo)  # the near side stays put, the far side advances
            elif p[k + 2] and m[k] and lo <= f[k] - self.travel_px:
                found[k] = float(hi - 1)
        return (found[0], found[1])

    @staticmethod
    def _across(x: float, y: float, cut: tuple[float | None, float | None]
                ) -> tuple[float, float]:
        """A point mirrored across an occluding edge (see _cut and _lead)."""
        cx, cy = cut
        return (x if cx is None else 2.0 * x - cx, y if cy is None else 2.0 * y - cy)

    def _lead(self, cx: float, cy: float, side: tuple[int, int]) -> tuple[float, float]:
        """The point a track is measured by. Someone walking in from the edge of the view
        shows more of themselves each frame while the edge cuts off the rest: the centre of
        what shows moves at half their pace. Its mirror across the edge (twice the centre's
        distance from it) is their leading edge, and moves at their pace; it is still an
        average over all their pixels, not a box's jumpy edge."""
        w, h = self.frame
        sx, sy = side
        if sx:
            cx = 2.0 * cx if sx < 0 else 2.0 * cx - (w - 1)
        if sy:
            cy = 2.0 * cy if sy < 0 else 2.0 * cy - (h - 1)
        return cx, cy

    def _stretch(self, path: list[tuple[float, float, float]], size: int,
                 part: float = 1.0) -> bool:
        """Whether the centres in ``path`` went travel_px one way without turning back, no
        faster than ``pace`` times the region's size a second (a person, however far away, moves
        about a body length a second; snowflakes and insects move many times their size).
        With ``part`` < 1: whether they went that share of the way in that share of the
        least time, so far."""
        if len(path) < 2 * ENDS or path[-1][0] - path[0][0] < part * self.least:
            return False
        ax = sum(p[1] for p in path[:ENDS]) / ENDS
        ay = sum(p[2] for p in path[:ENDS]) / ENDS
        bx = sum(p[1] for p in path[-ENDS:]) / ENDS
        by = sum(p[2] for p in path[-ENDS:]) / ENDS
        dx, dy = bx - ax, by - ay
        net = math.hypot(dx, dy)
        if net < part * self.travel_px:
            return False
        if net > self.pace * size * (path[-1][0] - path[0][0]):
            return False
        ux, uy = dx / net, dy / net
        best = -math.inf
        half = path[0][0] + 0.5 * (path[-1][0] - path[0][0])
        midway = 0.0
        for ts, x, y in path:
            along = (x - ax) * ux + (y - ay) * uy
            if best - along > 0.5 * net or abs((x - ax) * uy - (y - ay) * ux) > net:
                return False  # turned back, or wandered off sideways
            best = max(best, along)
            if ts <= half:
                midway = best
        # and it kept going the whole time: a shrug that bursts out at the end of a still
        # spell has made no way by halfway
        return midway >= 0.25 * net

    def counts(self, tr: Track, t: float) -> bool:
        """Whether a track seen this frame makes the frame count as motion: it travelled a
        stretch just now, or it arrived and still stirs outside busy places."""
        if tr.seen != t or tr.real < max(self.small_px, tr.area // 4):
            return False  # a busy place stirring where it stands is not it
        if t - tr.travelled <= self.lost:
            return not tr.scene and tr.thing is not False
        return tr.arrived and t - tr.travelled <= self.linger

    def making_way(self, tr: Track, t: float) -> bool:
        """Whether a small track followed last frame is half way through its first stretch:
        half the way, steadily, in half the least time. Its own steps (a gait starts and stops
        the pixels at its edges) must not teach its ground to be busy before it can count."""
        return (tr.stretches == 0 and not tr.scene and tr.thing is None
                and t - tr.seen <= 1.5 * self.least and tr.halfway)

    def lingers(self, tr: Track, t: float) -> bool:
        """Whether a track arrived and its last stretch is recent enough to keep it."""
        return tr.arrived and t - tr.travelled <= self.linger

    def lingering(self, t: float) -> list[tuple[int, int, int, int]]:
        """Boxes of the tracks that arrived and linger, as they are now."""
        return [(tr.x0, tr.y0, tr.x1, tr.y1) for tr in self.tracks if self.lingers(tr, t)]

    def boxes(self, t: float) -> list[tuple[int, int, int, int]]:
        """Boxes (x0, y0, x1, y1) of the tracks that count this frame, and all the ground that
        arrived tracks covered while they linger: the busy map leaves them alone (a visitor
        gesturing at the door must not become part of the scene)."""
        found = [(tr.x0, tr.y0, tr.x1, tr.y1) for tr in self.tracks if self.counts(tr, t)]
        found += [tr.hull for tr in self.tracks if tr.hull and self.lingers(tr, t)]
        return found


def regions_of(stats: np.ndarray, centroids: np.ndarray, real: np.ndarray, least: int,
               keep: list[tuple[int, int, int, int]]) -> list[Region]:
    """Regions from connectedComponentsWithStats output (label 0 is the background): those
    with at least ``least`` pixels outside busy places, and those overlapping a box in
    ``keep`` (x0, y0, x1, y1: where a visitor who arrived may stand in front of a busy place);
    the largest MAX_REGIONS of them. ``real`` holds each label's count outside busy places."""
    areas = stats[:, cv2.CC_STAT_AREA]
    big = np.flatnonzero(areas[1:] >= least) + 1
    if big.size > 4 * MAX_REGIONS:
        big = big[np.argsort(areas[big])[-4 * MAX_REGIONS:]]
    if not keep:  # only the count outside busy places decides: pick in numpy
        big = big[real[big] >= least]
    found = []
    for i, (x, y, w, h, a), (cx, cy) in zip(big.tolist(), stats[big].tolist(),
                                            centroids[big].tolist(), strict=True):
        r = int(real[i])
        if r >= least or any(x < x1 and x + w > x0 and y < y1 and y + h > y0
                             for x0, y0, x1, y1 in keep):
            found.append(Region(x, y, w, h, a, r, cx, cy, i))
    if len(found) > MAX_REGIONS:
        found = sorted(found, key=lambda reg: -reg.area)[:MAX_REGIONS]
    return found
