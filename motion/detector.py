"""The motion detector: lores grey frames in, motion on/off with a score and boxes out.

It models a lighting change as a gain plus an offset over the whole frame, gives each pixel its
own noise allowance, tolerates a shift of a pixel, counts change only where consecutive frames
also differ, absorbs still change into the background, and applies hysteresis to the trigger
(DESIGN.md decision 7; docs/motion.md explains it). All arithmetic is float32, never uint8.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from doorstep.capture.masks import rasterize
from doorstep.config.schema import MotionConfig

log = logging.getLogger(__name__)

WORK_WIDTH = 160  # the detector works on the lores image shrunk to about this width
_NO_BLOBS: np.ndarray = np.zeros((0, 5), np.int32)


@dataclass(frozen=True)
class MotionResult:
    """The detector's verdict on one frame."""

    motion: bool  # the trigger state after hysteresis: what starts or extends a recording
    score: float  # percent of the watched area in the largest moving region this frame
    boxes: tuple[tuple[int, int, int, int], ...]  # lores pixels x, y, w, h
    ms: float  # time this update took, milliseconds


@dataclass(frozen=True)
class Tuning:
    """The detector's numbers. A sensitivity preset picks one of these; see PRESETS."""

    noise_k: float = 4.0  # a pixel moves when it leaves the background by this many noise units
    spread_k: float = 2.0  # ... plus this many times its own learned allowance (leaves, edges)
    diff_k: float = 3.0  # consecutive frames must differ by this many noise units nearby
    min_area_pct: float = 0.5  # percent of the watched area that must move to count
    shift_px: int = 2  # work pixels (about 4 lores pixels): jitter and sway this small is ignored
    density: float = 0.5  # share of a 5x5 neighbourhood that must move (drops scattered specks)
    learn_seconds: float = 0.6  # no background yet: learn this long before anything counts
    background_seconds: float = 1.0  # time constant of the background where nothing moves
    absorb_seconds: float = 1.5  # time constant at which still change joins the background
    allowance_rise_seconds: float = 0.2  # a pixel's allowance grows this fast when it varies ...
    allowance_fall_seconds: float = 10.0  # ... and shrinks this slowly
    allowance_cap: float = 12.0  # grey levels: no pixel's allowance grows past this, so none
    # goes blind; a person in front of a tree still shows
    relight_step: float = 0.15  # a sudden change of this share of the brightness, that a gain and
    # offset explain over most of the frame, is light: the background re-baselines at once
    noise_seconds: float = 0.5  # time constant of the frame's noise estimate
    noise_floor: float = 1.0  # grey levels: the least noise assumed, even in a clean frame


PRESETS: dict[str, Tuning] = {
    "low": Tuning(noise_k=5.0, spread_k=2.5, diff_k=4.0, min_area_pct=1.0),
    "normal": Tuning(),
    "high": Tuning(noise_k=3.0, spread_k=1.5, diff_k=2.5, min_area_pct=0.25),
}


class MotionDetector:
    """Feed it every lores frame in order with its media time; it says whether motion is on."""

    def __init__(self, cfg: MotionConfig, size: tuple[int, int], fps: float,
                 tuning: Tuning | None = None) -> None:
        self.cfg = cfg
        self.tuning = tuning or PRESETS[cfg.sensitivity]
        self.size = size
        self.fps = float(fps) if fps > 0 else 25.0
        w, h = size
        self.factor = max(1, round(w / WORK_WIDTH))
        self.work = (max(1, w // self.factor), max(1, h // self.factor))
        ww, wh = self.work
        zone = rasterize(cfg.zones, ww, wh) if cfg.zones else np.ones((wh, ww), bool)
        self._zone = zone.astype(np.uint8) * np.uint8(255)
        self._zone_area = max(1, int(zone.sum()))
        self._kernel3 = np.ones((3, 3), np.uint8)
        self._kernel5 = np.ones((5, 5), np.uint8)
        side = 2 * self.tuning.shift_px + 1
        self._kshift = np.ones((side, side), np.uint8)
        self._min_px = max(1, math.ceil(self._zone_area * self.tuning.min_area_pct / 100.0))
        self._per_frame = self._rates(self.tuning, self.fps)
        self.reset()

    @staticmethod
    def _rates(tu: Tuning, fps: float) -> dict[str, float]:
        def alpha(seconds: float) -> float:
            return 1.0 - math.exp(-1.0 / max(1e-3, seconds * fps))

        return {"noise": alpha(tu.noise_seconds), "bg": alpha(tu.background_seconds),
                "absorb": alpha(tu.absorb_seconds),
                "rise": alpha(tu.allowance_rise_seconds), "fall": alpha(tu.allowance_fall_seconds)}

    def reset(self) -> None:
        """Forget the scene and the trigger state, e.g. when the camera resumes after privacy
        mode. The next frames are learnt before anything can count as motion."""
        ww, wh = self.work
        self._bg = np.zeros((wh, ww), np.float32)
        self._allow = np.zeros((wh, ww), np.float32)
        self._prev = np.zeros((wh, ww), np.float32)
        self._diff_prev = np.zeros((wh, ww), np.uint8)
        self._blobs = _NO_BLOBS
        self._noise = self.tuning.noise_floor
        self._seen = 0
        self._t0: float | None = None
        self._on = False
        self._streak = 0
        self._last_raw = -math.inf
        self._on_since = 0.0

    # -- per frame -------------------------------------------------------------------------

    def update(self, lores: np.ndarray, t: float) -> MotionResult:
        """Take one lores grey frame (uint8, h x w) at media time ``t`` seconds."""
        start = time.perf_counter()
        score = self._moving(lores, t)
        raw = score >= self.tuning.min_area_pct
        motion = self._trigger(raw, t)
        boxes = self._boxes() if raw else ()
        ms = (time.perf_counter() - start) * 1000.0
        return MotionResult(motion, score, boxes, ms)

    def _work_image(self, lores: np.ndarray) -> np.ndarray:
        """The lores image shrunk by area averaging, in float so the averaging keeps its
        fractions (the noise estimate needs them)."""
        x = lores.astype(np.float32)
        if self.factor == 1:
            return x
        return cv2.resize(x, self.work, interpolation=cv2.INTER_AREA)

    def _moving(self, lores: np.ndarray, t: float) -> float:
        tu, rate = self.tuning, self._per_frame
        x = self._work_image(lores)
        if self._t0 is None:
            self._t0 = t
            self._bg[:] = x
            self._prev[:] = x
        self._seen += 1
        learning = (t - self._t0) < tu.learn_seconds

        # Lighting: frame against the previous frame and against the background, each as
        # gain * reference + offset. The background is kept in the current lighting.
        xs = _samples(x)
        lp = _fit_light(xs, self._prev)
        self._noise += rate["noise"] * (max(tu.noise_floor, lp.noise) - self._noise)
        noise = self._noise
        lb = _fit_light(xs, self._bg)
        relight = any(fit.step > tu.relight_step and fit.explained > 0.7 for fit in (lp, lb))
        bg = self._bg
        bg *= lb.gain
        bg += lb.offset

        # Change against the background beyond noise and the pixel's own allowance, tolerating
        # a small shift: x must leave the range of the background's neighbourhood.
        dev = cv2.max(cv2.subtract(x, cv2.dilate(bg, self._kshift)),
                      cv2.subtract(cv2.erode(bg, self._kshift), x))
        np.maximum(dev, 0.0, out=dev)
        limit = self._allow * tu.spread_k
        limit += tu.noise_k * noise
        changed = cv2.compare(dev, limit, cv2.CMP_GT)

        # Change between consecutive frames, near this pixel, in this frame or the one before.
        prev = self._prev
        prev *= lp.gain
        prev += lp.offset
        # Averaged over 3x3, a difference of pure noise shrinks threefold; a moving edge does not.
        diff = _above(cv2.blur(cv2.absdiff(x, prev), (3, 3)), tu.diff_k * noise / 2.0)
        near = cv2.dilate(cv2.bitwise_or(diff, self._diff_prev), self._kernel5)
        self._diff_prev = diff

        # What moves: changed, recently differing, in a zone, and dense enough to be an object.
        moving = cv2.bitwise_and(cv2.bitwise_and(changed, near), self._zone)
        dense = _above(cv2.blur(moving, (5, 5)), 255.0 * tu.density)
        mask = cv2.bitwise_and(moving, dense)
        total = cv2.countNonZero(mask)
        if total >= self._min_px:
            n, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
                mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
            self._blobs = stats[1:n]
            largest = int(stats[1:n, cv2.CC_STAT_AREA].max()) if n > 1 else 0
        else:  # too little moves for any region to count: skip labelling
            self._blobs = _NO_BLOBS
            largest = total
        score = 0.0 if learning else 100.0 * largest / self._zone_area

        # Learn the background (still change is absorbed too, more slowly) and each pixel's
        # allowance (rises fast where a pixel outside any moving object varies, falls slowly).
        np.minimum(dev, tu.allowance_cap, out=dev)
        if learning:
            a = 1.0 / self._seen
            cv2.accumulateWeighted(x, bg, a)
            cv2.accumulateWeighted(dev, self._allow, a)
        else:
            quiet = cv2.bitwise_not(changed)
            cv2.accumulateWeighted(x, bg, rate["bg"], mask=quiet)
            cv2.accumulateWeighted(x, bg, rate["absorb"], mask=changed)
            calm = cv2.bitwise_not(cv2.dilate(mask, self._kernel3))
            rise = cv2.bitwise_and(cv2.compare(dev, self._allow, cv2.CMP_GT), calm)
            fall = cv2.bitwise_and(cv2.bitwise_not(rise), calm)
            cv2.accumulateWeighted(dev, self._allow, rate["rise"], mask=rise)
            cv2.accumulateWeighted(dev, self._allow, rate["fall"], mask=fall)
        if relight:
            log.debug("lighting step (gain %.2f, offset %.1f): re-baselining",
                      lb.gain, lb.offset)
            bg[:] = x
        prev[:] = x
        return score

    def _trigger(self, raw: bool, t: float) -> bool:
        cfg = self.cfg
        self._streak = self._streak + 1 if raw else 0
        if raw:
            self._last_raw = t
        if self._on:
            if t - self._last_raw > cfg.hold_seconds:
                self._on = False
                log.debug("motion off at %.2f s", t)
            elif t - self._on_since >= cfg.max_seconds:
                self._on = False
                self._streak = 0
                self._bg[:] = self._prev  # whatever still moves must start a new event
                log.info("motion event reached its maximum of %.0f s at %.2f s",
                         cfg.max_seconds, t)
        elif self._streak >= cfg.start_frames:
            self._on = True
            self._on_since = t
            log.debug("motion on at %.2f s", t)
        return self._on

    def _boxes(self) -> tuple[tuple[int, int, int, int], ...]:
        f = self.factor
        min_px = max(2, int(self._zone_area * self.tuning.min_area_pct / 400.0))
        return tuple((int(x) * f, int(y) * f, int(w) * f, int(h) * f)
                     for x, y, w, h, area in self._blobs if area >= min_px)


def _above(a: np.ndarray, level: float) -> np.ndarray:
    """255 where a > level, else 0 (uint8)."""
    return cv2.compare(a, level, cv2.CMP_GT)  # type: ignore[call-overload]


class _Light(NamedTuple):
    """How one image relates to a reference: image = gain * reference + offset."""

    gain: float
    offset: float
    noise: float  # sigma of the residual, grey levels, from its lowest decile
    explained: float  # share of samples the model explains to within the noise
    step: float  # the change of mean brightness the model implies, relative to the reference's


def _samples(image: np.ndarray) -> np.ndarray:
    """The grid of samples _fit_light compares: every 4th pixel of every 4th row, float64."""
    return image[::4, ::4].astype(np.float64).ravel()


def _fit_light(xs: np.ndarray, ref: np.ndarray) -> _Light:
    """Fit x = gain * ref + offset on a grid of samples (``xs`` = _samples(x)), robustly: start
    from an offset alone, fit on the better-matching half of the samples (what moves is left
    out), refit on inliers. Where no fit explains at least half the frame, most of the frame
    moves: assume an offset."""
    rs = _samples(ref)
    d = xs - rs
    half = d.size // 2
    resid = d - float(np.partition(d, half)[half])
    np.abs(resid, out=resid)
    keep = resid <= float(np.partition(resid, half)[half])
    gain, offset = _lsq(xs[keep], rs[keep])
    resid = rs * gain
    resid += offset
    np.subtract(xs, resid, out=resid)
    np.abs(resid, out=resid)
    tenth = resid.size // 10
    noise = float(np.partition(resid, tenth)[tenth]) / 0.1257  # half-normal lowest decile
    keep = resid <= 3.0 * noise + 2.0
    explained = float(np.count_nonzero(keep)) / resid.size
    if explained < 0.5:
        gain, offset = 1.0, float(np.median(d))
        explained = float(np.count_nonzero(np.abs(d - offset) <= 3.0 * noise + 2.0)) / d.size
    else:
        gain, offset = _lsq(xs[keep], rs[keep])
    mean = float(rs.sum()) / rs.size
    step = abs((gain - 1.0) * mean + offset) / max(mean, 16.0)
    return _Light(gain, offset, noise, explained, step)


def _lsq(xs: np.ndarray, rs: np.ndarray) -> tuple[float, float]:
    """Least-squares gain and offset of xs = gain * rs + offset (float64 samples)."""
    n = rs.size
    if n == 0:
        return 1.0, 0.0
    sr, sx = float(rs.sum()), float(xs.sum())
    var = float(np.dot(rs, rs)) - sr * sr / n
    if var < 1.0 * n:
        return 1.0, (sx - sr) / n  # a nearly flat reference: only an offset can be told
    gain = (float(np.dot(rs, xs)) - sr * sx / n) / var
    gain = min(max(gain, 0.05), 20.0)
    return gain, (sx - gain * sr) / n
