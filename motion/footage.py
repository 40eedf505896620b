"""The real material the synthetic motion classes (motion/synth.py) are made from, and drawing on
it: an empty office, the same office in the dark, a waving tree, a plaza seen from high up, and
real people cut out of the shared clips, pasted at any size with small fidgets."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from doorstep.core.errors import DoorstepError
from doorstep.motion.video import read_lores

SIZE = (320, 240)  # w, h: the lores size the detector sees
W, H = SIZE


@dataclass(frozen=True)
class Sprite:
    """A real person cut out of a frame: grey levels and an alpha mask (0..1), float32."""

    image: np.ndarray
    alpha: np.ndarray


@dataclass(frozen=True)
class Sources:
    """The real material every class is built from."""

    room: np.ndarray  # the lit office of wallflower-lightswitch, nobody in it (float32)
    dark: np.ndarray  # real frames of the same room in the dark (uint8 stack): night base
    trees: np.ndarray  # real frames of wallflower-wavingtrees before its visitor (uint8 stack)
    plaza: np.ndarray  # vtest.avi's plaza seen from high up, pedestrians removed (float32)
    walker: tuple[Sprite, ...]  # gait frames of one real person walking
    sitter: Sprite  # a real person sitting on an office chair


# -- sources -----------------------------------------------------------------------------------

def _fit(frame: np.ndarray, plate: np.ndarray) -> np.ndarray:
    """The plate in the frame's lighting (a robust least-squares gain and offset)."""
    a = np.stack([plate.ravel(), np.ones(plate.size, np.float32)], 1)
    f = frame.ravel()
    g = np.linalg.lstsq(a, f, rcond=None)[0]
    for _ in range(2):
        r = np.abs(f - a @ g)
        keep = r < np.percentile(r, 50)
        g = np.linalg.lstsq(a[keep], f[keep], rcond=None)[0]
    return (a @ g).reshape(plate.shape).astype(np.float32)


def cut_sprite(frame: np.ndarray, plate: np.ndarray, threshold: float = 30.0) -> Sprite:
    """The largest thing in ``frame`` that is not in ``plate``, filled, with a soft edge."""
    f = frame.astype(np.float32)
    d = (np.abs(f - _fit(f, plate)) > threshold).astype(np.uint8) * 255
    d = cv2.morphologyEx(d, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    d = cv2.morphologyEx(d, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(d)
    if n < 2:
        raise DoorstepError("synth: no person found to cut out")
    i = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[i, :4])
    comp = (lab == i).astype(np.uint8) * 255
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(comp, contours, -1, 255, -1)
    alpha = cv2.GaussianBlur(comp[y:y + h, x:x + w].astype(np.float32) / 255.0, (3, 3), 0)
    return Sprite(f[y:y + h, x:x + w].copy(), alpha)


def _frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    last = max(wanted)
    out: dict[int, np.ndarray] = {}
    for fr in read_lores(path, SIZE):
        if fr.index in wanted:
            out[fr.index] = fr.lores
        if fr.index >= last:
            break
    if len(out) < len(wanted):
        raise DoorstepError(f"{path}: has {len(out)} of the {len(wanted)} frames synth needs")
    return out


@functools.lru_cache(maxsize=2)
def load_sources(motion_dir: Path, plaza_video: Path) -> Sources:
    """Cut the real material out of wallflower-lightswitch, wallflower-wavingtrees (both in
    ``motion_dir``) and the plaza clip (vtest.avi)."""
    ls = motion_dir / "wallflower-lightswitch.mp4"
    wt = motion_dir / "wallflower-wavingtrees.mkv"
    for p in (ls, wt, plaza_video):
        if not p.is_file():
            raise DoorstepError(f"synth needs {p}, which is not there")
    empty = set(range(100, 780, 10))  # the lit room before anyone comes in
    walk = set(range(803, 809))  # a person walking away from the camera
    dark = set(range(1000, 1300))  # the room in the dark
    sit = {1950}  # a person at the desk
    got = _frames(ls, empty | walk | dark | sit)
    room = np.median(np.stack([got[i] for i in sorted(empty)]), axis=0).astype(np.float32)
    walker = tuple(cut_sprite(got[i], room) for i in sorted(walk))
    sitter = cut_sprite(got[1950], room)
    trees = np.stack(list(_frames(wt, set(range(0, 230))).values()))
    plaza_frames = [f.lores for i, f in enumerate(read_lores(plaza_video, SIZE)) if i % 8 == 0]
    plaza = np.median(np.stack(plaza_frames), axis=0).astype(np.float32)
    return Sources(room, np.stack([got[i] for i in sorted(dark)]), trees, plaza, walker, sitter)


# -- drawing -----------------------------------------------------------------------------------

def paste(img: np.ndarray, sprite: Sprite, cx: float, feet: float, height: float,
          gain: float = 1.0, head: tuple[int, int] = (0, 0),
          arms: tuple[int, int] = (0, 0)) -> float:
    """Draw ``sprite`` scaled to ``height`` px, feet at (cx, feet), its top third shifted by
    ``head`` px and its middle third by ``arms`` px (fidgets). Returns the visible area in
    pixels (alpha sum)."""
    sh, sw = sprite.image.shape
    h = max(2, round(height))
    w = max(1, round(sw * h / sh))
    im = cv2.resize(sprite.image, (w, h), interpolation=cv2.INTER_AREA) * gain
    al = cv2.resize(sprite.alpha, (w, h), interpolation=cv2.INTER_AREA)
    for (dx, dy), rows in ((head, slice(0, max(1, h // 3))),
                           (arms, slice(h // 3, max(h // 3 + 1, 2 * h // 3)))):
        if (dx, dy) != (0, 0):
            m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
            band = (rows.stop - rows.start)
            im[rows] = cv2.warpAffine(im[rows], m, (w, band), borderMode=cv2.BORDER_REPLICATE)
            al[rows] = cv2.warpAffine(al[rows], m, (w, band), borderMode=cv2.BORDER_REPLICATE)
    x0, y0 = round(cx - w / 2), round(feet - h)
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(img.shape[1], x0 + w), min(img.shape[0], y0 + h)
    if xa >= xb or ya >= yb:
        return 0.0
    a = al[ya - y0:yb - y0, xa - x0:xb - x0]
    region = img[ya:yb, xa:xb]
    region += a * (im[ya - y0:yb - y0, xa - x0:xb - x0] - region)
    return float(a.sum())


def blob(shape: tuple[int, int], cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """A Gaussian bump, peak 1, on a grid of ``shape`` (h, w)."""
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return np.exp(-((xx - cx) ** 2 / (2 * sx * sx) + (yy - cy) ** 2 / (2 * sy * sy))).astype(
        np.float32)


def pingpong(stack: np.ndarray) -> Callable[[int], np.ndarray]:
    n = len(stack)

    def base(i: int) -> np.ndarray:
        k = i % (2 * n - 2)
        return stack[k if k < n else 2 * n - 2 - k].astype(np.float32)
    return base


def plate(img: np.ndarray, gain: float = 1.0, offset: float = 0.0) -> Callable[[int], np.ndarray]:
    plate = (img * gain + offset).astype(np.float32)
    return lambda i: plate.copy()


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))
