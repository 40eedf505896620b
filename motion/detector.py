"""The motion detector: lores grey frames in, motion on/off with a score and boxes out.

It models a lighting change as a gain plus an offset over the whole frame, gives each pixel its
own noise allowance, tolerates a shift of a pixel or two, counts change only where the frame also
differs from a moment ago, learns the places that flicker or cycle and discounts them, follows
moving regions so that a small slow walker counts once it has travelled and a visitor who stands
still keeps the event, tells light and lens blur from things, absorbs still change into the
background, and applies hysteresis to the trigger (DESIGN.md decision 7; docs/motion.md
explains it). All arithmetic is float32, never uint8.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from doorstep.capture.masks import rasterize
from doorstep.config.schema import MotionConfig
from doorstep.motion.light import fit_light, samples, shrunk_samples
from doorstep.motion.objects import Track, Tracker, regions_of
from doorstep.motion.photometric import hidden

# cv2.add with a scalar and a mask: OpenCV's stubs type it differently from one release to
# the next (4.x, 5.0, 5.1), so it is called through an untyped name
_cv2_add: Any = cv2.add

log = logging.getLogger(__name__)

WORK_WIDTH = 160  # the detector works on the lores image shrunk to about this width
NOISE_DECILE = 60  # the lowest tenth of light.samples()' 600


@dataclass(frozen=True)
class MotionResult:
    """The detector's verdict on one frame."""

    motion: bool  # the trigger state after hysteresis: what starts or extends a recording
    score: float  # percent of the watched area in the largest moving thing this frame
    boxes: tuple[tuple[int, int, int, int], ...]  # lores pixels x, y, w, h
    ms: float  # time this update took, milliseconds


@dataclass(frozen=True)
class Tuning:
    """The detector's numbers. A sensitivity preset picks one of these; see PRESETS."""

    noise_k: float = 4.0  # a pixel moves when it leaves the background by this many noise units
    spread_k: float = 2.0  # ... plus this many times its own learned allowance (leaves, edges)
    diff_k: float = 3.0  # and differs from a moment ago by this many noise units nearby
    min_area_pct: float = 0.5  # percent of the watched area a thing must cover to count at once
    shift_px: int = 2  # work pixels (about 4 lores pixels): jitter and sway this small is ignored
    density: float = 0.5  # share of a 3x3 neighbourhood that must move (drops scattered specks)
    learn_seconds: float = 0.6  # no background yet: learn this long before anything counts
    background_seconds: float = 1.0  # time constant of the background where nothing moves
    absorb_seconds: float = 1.5  # time constant at which still change joins the background
    moving_absorb_seconds: float = 8.0  # ... and change that keeps moving (so no ghost stays)
    lag_seconds: float = 0.2  # "differs from a moment ago": from the frame this long ago (a
    # slow walker has moved by then; a parked bike stops counting this soon after it stops)
    allowance_rise_seconds: float = 0.2  # a pixel's allowance grows this fast when it varies ...
    allowance_fall_seconds: float = 10.0  # ... and shrinks this slowly
    allowance_cap: float = 12.0  # grey levels: no pixel's allowance grows past this, so none
    # goes blind; a person in front of a tree still shows
    busy_activity: float = 3.0  # a place where motion starts this many times (each second it
    busy_moving_weight: float = 0.25  # ... keeps moving counting as this many starts) within
    busy_seconds: float = 10.0  # ... about this long flickers or cycles: it is busy
    small_area_pct: float = 0.04  # the least region followed as a possible small mover
    travel_px: float = 2.0  # work pixels a small region must travel, steadily, to count ...
    travel_seconds: float = 1.5  # ... within this long, at most, ...
    travel_least_seconds: float = 0.6  # ... and this long, at least
    pace: float = 2.0  # ... its own size a second (faster is a snowflake or an insect)
    linger_seconds: float = 20.0  # a visitor who arrived keeps counting this long while stirring
    thing_share: float = 0.35  # a large region is a thing (not light on the background, not a
    # blur in front of the lens) when this share of it hides the background's texture
    young_seconds: float = 1.0  # a large thing counts at once only this long after it is first
    # seen to be one, unless it travels: one that stirs in place longer (a tree's crown in a
    # gust) is scene; someone arriving is new, or has travelled by then
    exit_hold_seconds: float = 0.3  # the hold after the last moving frame when what moved was
    # walking out of view (touching the frame's edge and shrinking); else hold_seconds
    relight_step: float = 0.15  # a sudden change of this share of the brightness, that a gain and
    # offset explain over most of the frame, is light: the background re-baselines at once
    noise_seconds: float = 0.5  # time constant of the frame's noise estimate
    noise_floor: float = 1.0  # grey levels: the least noise assumed, even in a clean frame
    noise_ceiling: float = 8.0  # ... and the most: beyond it, what differs is the scene moving,
    # not the sensor (leaves across the whole frame), and it must not blind the detector


PRESETS: dict[str, Tuning] = {
    "low": Tuning(noise_k=5.0, spread_k=2.5, diff_k=4.0, min_area_pct=1.0),
    "normal": Tuning(),
    "high": Tuning(noise_k=3.0, spread_k=1.5, diff_k=2.5, min_area_pct=0.25),
}


class MotionDetector:
    """Feed it every lores frame in order with its media time; it says whether motion is on.

    Most maps are kept at the work size (about 160 px wide); the ones that only say roughly
    where (the frame a moment ago, each pixel's allowance, the busy places) at half of that.
    """

    def __init__(self, cfg: MotionConfig, size: tuple[int, int], fps: float,
                 tuning: Tuning | None = None) -> None:
        self.cfg = cfg
        self.tuning = tu = tuning or PRESETS[cfg.sensitivity]
        self.size = size
        self.fps = float(fps) if fps > 0 else 25.0
        w, h = size
        self.factor = max(1, round(w / WORK_WIDTH))
        self.work = (max(2, w // self.factor) // 2 * 2, max(2, h // self.factor) // 2 * 2)
        ww, wh = self.work
        self.coarse = (ww // 2, wh // 2)
        zone = rasterize(cfg.zones, ww, wh) if cfg.zones else np.ones((wh, ww), bool)
        self._zone = zone.astype(np.uint8) * np.uint8(255)
        self._zoned = bool(cfg.zones)  # else every pixel is watched: no mask to apply
        self._zone_area = max(1, int(zone.sum()))
        self._kernel3 = np.ones((3, 3), np.uint8)
        side = 2 * tu.shift_px + 1
        self._kshift = np.ones((side, side), np.uint8)
        self._min_px = max(1, math.ceil(self._zone_area * tu.min_area_pct / 100.0))
        self._small_px = max(3, math.ceil(self._zone_area * tu.small_area_pct / 100.0))
        self._tracker = Tracker(tu.travel_px, self._small_px, tu.travel_seconds,
                                tu.linger_seconds, lost=0.7, pace=tu.pace,
                                least=tu.travel_least_seconds, frame=self.work,
                                large_px=self._min_px)
        self._rate = self._rates(tu, self.fps)
        self.reset()

    @staticmethod
    def _rates(tu: Tuning, fps: float) -> dict[str, float]:
        def alpha(seconds: float) -> float:
            return 1.0 - math.exp(-1.0 / max(1e-3, seconds * fps))

        return {"noise": alpha(tu.noise_seconds), "bg": alpha(tu.background_seconds),
                "absorb": alpha(tu.absorb_seconds), "moving": alpha(tu.moving_absorb_seconds),
                "busy": alpha(tu.busy_seconds), "rise": alpha(tu.allowance_rise_seconds),
                "fall": alpha(tu.allowance_fall_seconds)}

    def reset(self) -> None:
        """Forget the scene and the trigger state, e.g. when the camera resumes after privacy
        mode. The next frames are learnt before anything can count as motion."""
        ww, wh = self.work
        cw, ch = self.coarse
        self._bg = np.zeros((wh, ww), np.float32)
        self._x = self._bg  # the last work image
        self._range: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # hi, lo, limit
        lag = max(1, round(self.tuning.lag_seconds * self.fps))
        self._past = np.zeros((lag, ch, cw), np.float32)  # the last `lag` frames, a ring
        self._past_light = [(1.0, 0.0)] * lag  # each one's light -> this frame's light
        self._past_at = 0  # the oldest
        self._allow = np.zeros((ch, cw), np.float32)
        self._activity = np.zeros((ch, cw), np.float32)  # starts of motion here, decaying
        self._was = np.zeros((ch, cw), np.uint8)  # what moved last frame
        self._busy: np.ndarray = np.zeros((ch, cw), np.uint8)  # the busy places last frame
        self._tracker.reset()
        self._guarded: list[tuple[slice, slice]] = []  # half-size boxes the maps leave alone
        self._kept_bg: list[tuple[slice, slice]] = []  # where visitors linger (work size)
        self._seen: list[Track] = []
        self._noise = self.tuning.noise_floor
        self._prev_s: np.ndarray | None = None
        self._frames = 0
        self._t0: float | None = None
        self._on = False
        self._streak = 0
        self._last_raw = -math.inf
        self._hold = self.cfg.hold_seconds
        self._exiting = False  # what moved last was walking out of view
        self._on_since = 0.0
        self._proven = False  # a small track finished a stretch this frame

    # -- per frame -------------------------------------------------------------------------

    def update(self, lores: np.ndarray, t: float) -> MotionResult:
        """Take one lores grey frame (uint8, h x w) at media time ``t`` seconds."""
        start = time.perf_counter()
        score, raw = self._moving(lores, t)
        motion = self._trigger(raw, t)
        boxes = self._boxes() if raw else ()
        ms = (time.perf_counter() - start) * 1000.0
        return MotionResult(motion, score, boxes, ms)

    def _work_image(self, lores: np.ndarray) -> np.ndarray:
        """The lores image shrunk by area averaging, as float32."""
        if self.factor == 1 and lores.shape[::-1] == self.work:
            return lores.astype(np.float32)
        return cv2.resize(lores, self.work, interpolation=cv2.INTER_AREA).astype(np.float32)

    def _moving(self, lores: np.ndarray, t: float) -> tuple[float, bool]:
        tu, rate = self.tuning, self._rate
        x = self._work_image(lores)
        xc = cv2.resize(x, self.coarse, interpolation=cv2.INTER_AREA)
        bg = self._bg
        if self._t0 is None:
            self._t0 = t
            bg[:] = x
            self._past[:] = xc
        self._frames += 1
        learning = (t - self._t0) < tu.learn_seconds

        # Lighting: the frame against the background as gain * background + offset. The
        # background is kept in the current lighting; so are the past frames, as numbers.
        xs = shrunk_samples(lores, self.factor) if self.factor > 1 else samples(x)
        light = fit_light(xs, samples(bg))
        relight = light.step > tu.relight_step and light.explained > 0.7
        g, o = light.gain, light.offset
        if g != 1.0:
            bg *= g
        bg += o
        self._past_light = [(g * pg, g * po + o) for pg, po in self._past_light]
        noise = self._measure_noise(xs, g, o)

        # Change against the background beyond noise and the pixel's own allowance, tolerating
        # a small shift: x must leave the range of the background's neighbourhood. The range
        # and the allowance at full size change slowly: they are made afresh every other
        # frame, and in between only follow the light.
        if self._frames % 2 or self._range is None:
            limit = np.asarray(cv2.resize(self._allow, self.work,
                                          interpolation=cv2.INTER_NEAREST), np.float32)
            limit *= np.float32(tu.spread_k)
            limit += np.float32(tu.noise_k * noise)
            self._range = (cv2.dilate(bg, self._kshift), cv2.erode(bg, self._kshift), limit)
        else:
            for edge in self._range[:2]:
                if g != 1.0:
                    edge *= g
                edge += o
        hi, lo, limit = self._range
        dev = cv2.max(cv2.subtract(x, hi), cv2.subtract(lo, x))
        changed = cv2.compare(dev, limit, cv2.CMP_GT)

        # Change against the frame lag_seconds ago, at half size (averaging 2x2 halves the
        # noise), near this pixel. Over that time a slow walker has moved as far as a fast one
        # moves from one frame to the next.
        at = self._past_at
        pg, po = self._past_light[at]
        lag = self._past[at] * pg
        lag += po
        flux = cv2.absdiff(xc, lag)
        near = cv2.resize(cv2.dilate(_above(flux, tu.diff_k * noise / 2.0), self._kernel3),
                          self.work, interpolation=cv2.INTER_NEAREST)

        # What moves: changed, differing now, in a zone, and dense enough to be an object.
        stirring = cv2.bitwise_and(changed, near)
        moving = cv2.bitwise_and(stirring, self._zone) if self._zoned else stirring
        dense = _above(cv2.blur(moving, (3, 3)), 255.0 * tu.density)
        mask = cv2.bitwise_and(moving, dense)
        mask_c = _above(cv2.resize(mask, self.coarse, interpolation=cv2.INTER_AREA), 0.0)

        # Busy places: where motion keeps starting (a screen's bars, a blinking light, leaves)
        # without anything travelling through. Moving pixels there do not count on their own.
        busy = self._learn_busy(mask_c, t)
        score_px, raw = self._objects(x, mask, mask_c, busy, t, learning)
        score = 0.0 if learning else 100.0 * score_px / self._zone_area
        raw = raw and not learning

        # Learn the background (still change is absorbed, moving change hardly) and each
        # pixel's allowance (how much it varies from a moment ago while nothing moves there).
        np.minimum(flux, tu.allowance_cap, out=flux)
        allow = self._allow
        held = [allow[box].copy() for box in self._guarded]  # a visitor stirring is no flicker
        # ... nor part of the background: one who arrived is not absorbed while they linger
        # (when they go, what they stood in front of is still the background, with no ghost)
        kept = [bg[box].copy() for box in self._kept_bg]
        if learning:
            a = 1.0 / self._frames
            cv2.accumulateWeighted(x, bg, a)
            cv2.accumulateWeighted(flux, allow, a)
        else:
            quiet = cv2.bitwise_not(changed)
            still = cv2.subtract(changed, near)  # changed and not near (masks are 0 or 255)
            cv2.accumulateWeighted(x, bg, rate["bg"], mask=quiet)
            cv2.accumulateWeighted(x, bg, rate["absorb"], mask=still)
            cv2.accumulateWeighted(x, bg, rate["moving"], mask=stirring)
            # calm: nothing moves nearby; rise where the pixel varies more than its allowance,
            # fall elsewhere (one saturating subtract is an and-not of two 0/255 masks)
            moved = cv2.dilate(mask_c, self._kernel3)
            more = cv2.compare(flux, allow, cv2.CMP_GT)
            rise = cv2.subtract(more, moved)
            fall = cv2.bitwise_not(cv2.bitwise_or(more, moved))
            cv2.accumulateWeighted(flux, allow, rate["rise"], mask=rise)
            cv2.accumulateWeighted(flux, allow, rate["fall"], mask=fall)
        for box, before in zip(self._guarded, held, strict=True):
            allow[box] = before
        for box, before in zip(self._kept_bg, kept, strict=True):
            bg[box] = before
        if relight:
            log.debug("lighting step (gain %.2f, offset %.1f): re-baselining", g, o)
            bg[:] = x
            self._range = None
        self._x = x
        self._past[at] = xc
        self._past_light[at] = (1.0, 0.0)
        self._past_at = (at + 1) % len(self._past_light)
        return score, raw

    def _measure_noise(self, xs: np.ndarray, gain: float, offset: float) -> float:
        """The sigma of the difference to the previous frame, in this frame's light, from its
        lowest decile (a scene moving over up to 90% of the frame does not raise it), smoothed
        and kept between noise_floor and noise_ceiling. Every threshold is a multiple of it."""
        tu = self.tuning
        if self._prev_s is not None:
            d = self._prev_s * gain
            d += offset
            np.subtract(xs, d, out=d)
            np.abs(d, out=d)
            level = float(np.partition(d, NOISE_DECILE)[NOISE_DECILE]) / 0.1257
            level = min(max(tu.noise_floor, level), tu.noise_ceiling)
            self._noise += self._rate["noise"] * (level - self._noise)
        self._prev_s = xs
        return self._noise

    def _learn_busy(self, mask_c: np.ndarray, t: float) -> np.ndarray:
        """Count, per place (half size), how often motion started there (and a little for how
        long it kept moving), over the last busy_seconds or so, except inside objects that
        travel: a place that adds up to busy_activity flickers or cycles (a screen's bars, a
        blinking light, leaves), where someone walking past starts it once or twice. Returns
        the busy places at the work size (u8)."""
        tu, act = self.tuning, self._activity
        starts = cv2.subtract(mask_c, self._was)  # moving now, not last frame
        self._was = mask_c
        found = self._tracker.boxes(t)
        # a small track half way through its first stretch out in quiet ground: its own steps
        # (a gait starts and stops the pixels at its edges) must not make that ground busy
        found += [(tr.x0, tr.y0, tr.x1, tr.y1) for tr in self._tracker.tracks
                  if self._tracker.making_way(tr, t) and _quiet_around(self._busy, tr)]
        self._guarded = boxes = [
            (slice(max(0, y0 // 2 - 1), y1 // 2 + 2), slice(max(0, x0 // 2 - 1), x1 // 2 + 2))
            for x0, y0, x1, y1 in found]
        self._kept_bg = [(slice(y0, y1), slice(x0, x1)) for x0, y0, x1, y1 in
                         self._tracker.lingering(t)]
        kept = [act[box].copy() for box in boxes]
        act *= 1.0 - self._rate["busy"]
        _cv2_add(act, tu.busy_moving_weight / self.fps, dst=act, mask=mask_c)
        _cv2_add(act, 1.0, dst=act, mask=starts)
        for box, before in zip(boxes, kept, strict=True):
            act[box] = before  # what travels here neither teaches nor unteaches the place
        self._busy = cv2.dilate(_above(act, tu.busy_activity), self._kernel3)
        return self._busy

    def _objects(self, x: np.ndarray, mask: np.ndarray, mask_c: np.ndarray, busy: np.ndarray,
                 t: float, learning: bool) -> tuple[int, bool]:
        """The largest moving thing's count outside busy places, and whether this frame counts:
        a thing that large moves (not light, not a blur at the lens), or a followed region has
        travelled (or travelled and now stirs in place)."""
        # Nothing outside busy places moves, and no visitor lingers: no regions to follow.
        outside = cv2.countNonZero(cv2.subtract(mask_c, busy))
        if 4 * outside < self._small_px and not self._kept_bg:
            self._seen = self._tracker.update([], t, learning)
            self._proven = False
            return 0, False
        n, labels, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
            mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
        # Each region's pixels outside busy places (busy is half size: each of its pixels
        # stands for four).
        real = stats[:, cv2.CC_STAT_AREA].copy()
        if cv2.countNonZero(mask_c) > outside:  # some of it moves in busy places
            real -= 4 * np.bincount(labels[::2, ::2][busy > 0], minlength=n)
            np.maximum(real, 0, out=real)
        keep = [(tr.x0, tr.y0, tr.x1, tr.y1) for tr in self._tracker.tracks if tr.arrived]
        regions = regions_of(stats, centroids, real, self._small_px, keep)
        self._seen = seen = self._tracker.update(regions, t, learning)
        largest = 0
        tu = self.tuning
        for tr in seen:
            if tr.real >= self._min_px and not tr.thing:
                tr.thing = self._hides(x, labels, tr)
                tr.since = t
                tr.settled = bool(tr.thing) and self._tracker.stirred_under(tr)
            if tr.thing and _shifts(tr) and (tr.stretches or (t - tr.since <= tu.young_seconds
                                                               and not tr.settled)):
                largest = max(largest, tr.real)
        small = [tr for tr in seen if self._tracker.counts(tr, t) and _quiet_around(busy, tr)]
        # a stretch travelled just now is already persistence: it took travel_least_seconds
        self._proven = any(tr.travelled == t for tr in small)
        return largest, largest >= self._min_px or bool(small)

    def _hides(self, x: np.ndarray, labels: np.ndarray, tr: Track) -> bool:
        """Whether a large track's regions hide the background (photometric.hidden)."""
        x0, y0, x1, y1 = tr.x0, tr.y0, tr.x1, tr.y1
        sub = labels[y0:y1, x0:x1]
        mask = np.zeros(labels.shape, np.uint8)
        for r in tr.regions:
            mask[y0:y1, x0:x1][sub == r.label] = 255
        share = hidden(x, self._bg, mask, self._noise, (x0, y0, x1, y1))
        return share >= self.tuning.thing_share

    def _trigger(self, raw: bool, t: float) -> bool:
        cfg = self.cfg
        self._streak = self._streak + 1 if raw else 0
        if raw and self._proven:
            self._streak = max(self._streak, cfg.start_frames)
        if raw:
            self._last_raw = t
            self._exiting = self._leaving()
            hold = self.tuning.exit_hold_seconds if self._exiting else cfg.hold_seconds
            self._hold = min(hold, cfg.hold_seconds)
        if self._on:
            if t - self._last_raw > self._hold:
                self._on = False
                log.debug("motion off at %.2f s", t)
            elif t - self._on_since >= cfg.max_seconds:
                self._on = False
                self._streak = 0
                self._bg[:] = self._x  # whatever still moves must start a new event
                self._range = None
                self._tracker.reset()
                log.info("motion event reached its maximum of %.0f s at %.2f s",
                         cfg.max_seconds, t)
        elif self._streak >= cfg.start_frames:
            self._on = True
            self._on_since = t
            log.debug("motion on at %.2f s", t)
        return self._on

    def _leaving(self) -> bool:
        """Whether what moves is walking out of view: the largest thing seen (outside busy
        places) touches the edge of the frame, is not growing and has lost a fifth of itself.
        Once it does, small leftovers (the last of its outline, a ghost where it stood) do not
        undo that; only something large moving does."""
        if not self._seen:
            return self._exiting
        tr = max(self._seen, key=lambda tr: tr.real)  # not a busy screen's bars
        ww, wh = self.work
        at_edge = tr.x0 <= 1 or tr.y0 <= 1 or tr.x1 >= ww - 1 or tr.y1 >= wh - 1
        if at_edge and tr.area <= tr.mean_area and tr.area < 0.8 * tr.peak:
            return True
        return self._exiting and tr.area < self._min_px

    def _boxes(self) -> tuple[tuple[int, int, int, int], ...]:
        f = self.factor
        return tuple((tr.x0 * f, tr.y0 * f, (tr.x1 - tr.x0) * f, (tr.y1 - tr.y0) * f)
                     for tr in self._seen if tr.thing or self._tracker.counts(tr, tr.seen))


def _shifts(tr: Track) -> bool:
    """Whether a large thing is new this frame or moved since the last: a TV cutting to the
    next picture changes a whole rectangle that then stays exactly where it is, while a person
    coming into view moves on at once."""
    if len(tr.path) < 2:
        return True
    (_, x0, y0), (_, x1, y1) = tr.path[-2], tr.path[-1]
    return abs(x1 - x0) + abs(y1 - y0) >= 0.5


def _quiet_around(busy: np.ndarray, tr: Track, margin: int = 2) -> bool:
    """Whether a small track is out in quiet ground: hardly anything busy (``busy`` is half
    size) around its box. A twig that sways at the edge of a busy tree is not a walker."""
    h, w = busy.shape
    near = busy[max(0, tr.y0 // 2 - margin):min(h, tr.y1 // 2 + margin),
                max(0, tr.x0 // 2 - margin):min(w, tr.x1 // 2 + margin)]
    return cv2.countNonZero(near) <= 0.05 * near.size


def _above(a: np.ndarray, level: float) -> np.ndarray:
    """255 where a > level, else 0 (uint8)."""
    return cv2.compare(a, level, cv2.CMP_GT)  # type: ignore[call-overload]
