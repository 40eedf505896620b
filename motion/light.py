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
    both from samples()), robustly: start from an offset alone, fit on the better-matching half
    (what moves is left out), refit on the inliers. Where no fit explains at least half the
    samples, most of the frame moves: assume an offset."""
    d = xs - rs
    n = d.size
    half = n // 2
    resid = d - np.partition(d, half)[half]
    np.abs(resid, out=resid)
    keep = resid <= np.partition(resid, half)[half]
    gain, offset = _lsq(xs[keep], rs[keep])
    np.multiply(rs, gain, out=resid)
    resid += offset
    np.subtract(xs, resid, out=resid)
    np.abs(resid, out=resid)
    tenth = n // 10
    noise = float(np.partition(resid, tenth)[tenth]) / 0.1257  # half-normal lowest decile
    keep = resid <= 3.0 * noise + 2.0
    inliers = int(np.count_nonzero(keep))
    explained = inliers / n
    if explained < 0.5:
        offset = float(np.partition(d, half)[half])
        gain = 1.0
        explained = float(np.count_nonzero(np.abs(d - offset) <= 3.0 * noise + 2.0)) / n
    else:
        ri = rs[keep]
        gain, offset = _lsq(xs[keep], ri)
        # A gain the samples cannot tell from 1 (within three standard errors; a scene of
        # little contrast leaves it loose) is left at 1: applied frame after frame, its error
        # would pile up where the picture is far from the scene's mean grey.
        spread = float(ri.std()) * math.sqrt(ri.size)
        if abs(gain - 1.0) * spread < 3.0 * noise:
            gain = 1.0
            offset = float(d[keep].mean())
    mean = float(rs.sum(dtype=np.float64)) / n
    step = abs((gain - 1.0) * mean + offset) / max(mean, 16.0)
    return Light(gain, offset, noise, explained, step)


def _lsq(xs: np.ndarray, rs: np.ndarray) -> tuple[float, float]:
    """Least-squares gain and offset of xs = gain * rs + offset (sums in float64)."""
    n = rs.size
    if n == 0:
        return 1.0, 0.0
    sr, sx = float(rs.sum(dtype=np.float64)), float(xs.sum(dtype=np.float64))
    var = float(np.dot(rs, rs)) - sr * sr / n
    if var < 1.0 * n:
        return 1.0, (sx - sr) / n  # a nearly flat reference: only an offset can be told
    gain = (float(np.dot(rs, xs)) - sr * sx / n) / var
    gain = min(max(gain, 0.05), 20.0)
    return gain, (sx - gain * sr) / n
