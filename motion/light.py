"""Lighting as a gain plus an offset over the whole frame: the robust fit the motion detector
uses to keep its background in the current light (DESIGN.md decision 7)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Every 4th pixel of every 8th row: 600 samples at 160x120, plenty for two numbers, and few
# enough that the four partial sorts of the robust fit stay cheap.
ROW_STEP, COL_STEP = 8, 4


class Light(NamedTuple):
    """How one image relates to a reference: image = gain * reference + offset."""

    gain: float
    offset: float
    noise: float  # sigma of the residual, grey levels, from its lowest decile
    explained: float  # share of samples the model explains to within the noise
    step: float  # the change of mean brightness the model implies, relative to the reference's


def samples(image: np.ndarray) -> np.ndarray:
    """The grid of samples fit_light compares (float32, flat)."""
    return image[ROW_STEP // 2::ROW_STEP, ::COL_STEP].astype(np.float32).ravel()


def shrunk_samples(image: np.ndarray, factor: int) -> np.ndarray:
    """samples() of ``image`` shrunk ``factor`` times by area averaging, computed exactly (in
    float) from the full-size image: a work image shrunk in uint8 is rounded to whole grey
    levels, and the noise estimate needs the fractions."""
    rows, cols = slice(factor * (ROW_STEP // 2), None, factor * ROW_STEP), slice(
        0, None, factor * COL_STEP)
    acc = image[rows, cols].astype(np.float32)
    h, w = acc.shape
    for dy in range(factor):
        for dx in range(factor):
            if dy or dx:
                acc += image[factor * (ROW_STEP // 2) + dy::factor * ROW_STEP,
                             dx::factor * COL_STEP][:h, :w]
    acc *= 1.0 / (factor * factor)
    return acc.ravel()


def fit_light(xs: np.ndarray, rs: np.ndarray) -> Light:
    """Fit x = gain * ref + offset on samples (``xs`` of the image, ``rs`` of the reference,
    both from samples()), robustly. Most frames only drift: an offset alone (the median
    difference) explains most samples, and one least-squares fit on its inliers says whether
    a gain can be told from 1. When it cannot explain most samples, the light changed or
    most of the frame moves: fit on the better-matching half, then refit on the inliers; if
    that explains less than half, assume an offset."""
    d = xs - rs
    n = d.size
    half, tenth = n // 2, n // 10
    offset = float(np.sort(d)[half])
    resid = np.abs(d - offset)
    parts = np.sort(resid)
    noise = float(parts[tenth]) / 0.1257  # the lowest decile of a half-normal
    keep = resid <= 3.0 * noise + 2.0
    explained = int(np.count_nonzero(keep)) / n
    if explained < 0.8:  # a change of light (or a crowd): the full robust fit
        gain, offset, _ = _lsq(xs, rs, resid <= parts[half])
        resid = np.abs(xs - (rs * gain + offset))
        noise = float(np.partition(resid, tenth)[tenth]) / 0.1257
        keep = resid <= 3.0 * noise + 2.0
        explained = int(np.count_nonzero(keep)) / n
        if explained < 0.5:
            offset = float(np.partition(d, half)[half])
            gain = 1.0
            explained = float(np.count_nonzero(np.abs(d - offset) <= 3.0 * noise + 2.0)) / n
            return _light(1.0, offset, noise, explained, rs)
    gain, offset, spread = _lsq(xs, rs, keep)
    # A gain the samples cannot tell from 1 (within three standard errors; a scene of little
    # contrast leaves it loose) is left at 1: applied frame after frame, its error would pile
    # up where the picture is far from the scene's mean grey.
    if abs(gain - 1.0) * spread < 3.0 * noise:
        kept = d[keep]
        gain, offset = 1.0, float(kept.sum(dtype=np.float64)) / max(1, kept.size)
    return _light(gain, offset, noise, explained, rs)


def _light(gain: float, offset: float, noise: float, explained: float,
           rs: np.ndarray) -> Light:
    mean = float(rs.sum(dtype=np.float64)) / rs.size
    step = abs((gain - 1.0) * mean + offset) / max(mean, 16.0)
    return Light(gain, offset, noise, explained, step)


def _lsq(xs: np.ndarray, rs: np.ndarray, keep: np.ndarray) -> tuple[float, float, float]:
    """Least-squares gain and offset of xs = gain * rs + offset over the samples ``keep``
    marks (sums in float64), and the spread of those rs (sigma times root n: the gain's
    standard error is the noise over it)."""
    xs, rs = xs[keep], rs[keep]
    n = rs.size
    if n == 0:
        return 1.0, 0.0, 0.0
    sr, sx = float(rs.sum(dtype=np.float64)), float(xs.sum(dtype=np.float64))
    var = max(0.0, float(np.dot(rs, rs)) - sr * sr / n)
    if var < 1.0 * n:  # a nearly flat reference: only an offset can be told
        return 1.0, (sx - sr) / n, math.sqrt(var)
    gain = (float(np.dot(rs, xs)) - sr * sx / n) / var
    gain = min(max(gain, 0.05), 20.0)
    return gain, (sx - gain * sr) / n, math.sqrt(var)
