"""Labelled synthetic footage for the classes that break motion detectors, made deterministically
from the real clips of the shared data: screens with rolling bars, blinking lights and water,
a person sitting nearly still, slow daylight, small slow walkers far away, and at night IR noise,
headlight sweeps, insects and webs near the lens, rain and snow. Each class comes alone and with
visitors (a real person cut from wallflower-lightswitch, scaled and walked along a path), labelled
as ../shared/data/motion/README.md describes. Nothing is stored: `sequences()` renders frames on
demand, the same bytes on every run of the same OpenCV and numpy."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from doorstep.motion.evaluate import Labels
from doorstep.motion.footage import (
    SIZE,
    Sources,
    blob,
    load_sources,
    paste,
    pingpong,
    plate,
    rng_for,
)

__all__ = ["CLASSES", "FPS", "NIGHT", "SIZE", "VISITORS_ONLY", "Sequence", "build", "label",
           "render", "sequences"]

W, H = SIZE
FPS = 15.0
MARGIN = 5  # frames at each event boundary that count either way (as wallflower's at 15 fps)


@dataclass
class Visit:
    """A person on a path: keyframes (frame, x centre, y of the feet, height in px)."""

    keys: list[tuple[int, float, float, float]]
    fidget: bool = False  # when standing: the head and shoulders move a pixel or two
    bright: float = 1.0  # gain on the person's grey levels (IR light makes near people bright)

    def at(self, i: int) -> tuple[float, float, float, bool] | None:
        """Where the person is at frame i (x, y, height, walking), or None when not there."""
        k = self.keys
        if i < k[0][0] or i > k[-1][0]:
            return None
        for (f0, x0, y0, h0), (f1, x1, y1, h1) in itertools.pairwise(k):
            if f0 <= i <= f1:
                u = (i - f0) / max(1, f1 - f0)
                walking = abs(x1 - x0) + abs(y1 - y0) > 0.5
                return x0 + u * (x1 - x0), y0 + u * (y1 - y0), h0 + u * (h1 - h0), walking
        return None


@dataclass
class Scene:
    """One synthetic sequence: how to draw frame i, and who visits."""

    name: str
    kind: str
    frames: int
    base: Callable[[int], np.ndarray]  # the background at frame i (float32, a fresh array)
    visits: list[Visit] = field(default_factory=list)
    scene_fx: list[Callable[[np.ndarray, int], None]] = field(default_factory=list)  # in view
    light_fx: list[Callable[[np.ndarray, int], None]] = field(default_factory=list)  # lighting
    lens_fx: list[Callable[[np.ndarray, int], None]] = field(default_factory=list)  # on the lens
    noise: float = 2.0  # sensor noise sigma, grey levels
    extra_noise: Callable[[np.ndarray, int], None] | None = None


@dataclass(frozen=True)
class Sequence:
    """A rendered-on-demand labelled sequence: its labels and a frame iterator."""

    name: str
    kind: str
    labels: Labels
    render: Callable[[], Iterator[np.ndarray]]

    def frames(self) -> Iterator[np.ndarray]:
        return self.render()


# -- the classes -------------------------------------------------------------------------------

def _screen(src: Sources, name: str, n: int) -> Scene:
    """A monitor (where the real one stands) and a bigger screen, both with interference bars
    rolling down them, on all the time."""
    rects = [(222, 108, 46, 40, 1.3, 14.0), (20, 60, 90, 70, -2.1, 26.0)]
    rng = rng_for(name)
    jitter = rng.normal(0, 1.0, (n, H)).astype(np.float32)

    def bars(img: np.ndarray, i: int) -> None:
        for x, y, w, h, speed, period in rects:
            rows = np.arange(h, dtype=np.float32)
            phase = (rows - speed * i) / period
            band = ((rows - 0.7 * speed * i) % (h * 1.5)) - h * 0.6
            level = 140 + 45 * np.sin(2 * np.pi * phase) - 70 * np.exp(-(band / 4.0) ** 2)
            level += 6 * jitter[i, :h]
            img[y:y + h, x:x + w] = level[:, None] + 0.25 * (img[y:y + h, x:x + w] - 128)
    return Scene(name, "screen", n, plate(src.room), scene_fx=[bars])


def _flicker(src: Sources, name: str, n: int) -> Scene:
    """The real waving tree, plus a lamp blinking about once a second, a patch of rippling
    water and a TV whose picture cuts every second or two."""
    rng = rng_for(name)
    lamp = blob((H, W), 40, 150, 5, 5)  # on the building's dark wall
    halo = blob((H, W), 40, 150, 22, 22)
    blink = np.cumsum(rng.uniform(6, 10, n)).astype(int)
    cuts = np.cumsum(rng.uniform(10, 35, n)).astype(int)
    levels = rng.uniform(40, 200, n)
    yy, xx = np.mgrid[0:50, 0:120].astype(np.float32)

    def fx(img: np.ndarray, i: int) -> None:
        on = int(np.searchsorted(blink, i)) % 2 == 0
        if on:
            img += 130 * lamp + 25 * halo
        t = float(i)
        ripple = 14 * np.sin(0.35 * xx + 0.2 * yy - 0.9 * t) + 9 * np.sin(0.5 * xx - 0.3 * yy
                                                                         + 0.6 * t)
        img[185:235, 190:310] = 90 + ripple + 0.3 * (img[185:235, 190:310] - 90)
        shot = int(np.searchsorted(cuts, i))
        tv = levels[shot] + 30 * np.sin(0.2 * xx[:36, :48] + 0.4 * t + shot)
        img[20:56, 250:298] = tv
    return Scene(name, "flicker", n, pingpong(src.trees), scene_fx=[fx])


def _sitter(src: Sources, name: str, n: int) -> Scene:
    """A person sits at the desk the whole time, nearly still: the head drifts and turns a
    few pixels, the arms work at the keyboard in bursts, and every few seconds the whole body
    shifts in the chair and back."""
    rng = rng_for(name)
    head = np.clip(np.cumsum(rng.normal(0, 0.8, (n, 2)), axis=0), -6, 6)
    typing = np.repeat(rng.random(n // 15 + 1) < 0.5, 15)[:n]
    shift = np.zeros(n)
    for start in range(int(rng.integers(20, 60)), n - 30, 60):
        at = start + int(rng.integers(0, 20))
        shift[at:at + 15] = np.sin(np.linspace(0, np.pi, 15)) * rng.uniform(-9, 9)

    def fx(img: np.ndarray, i: int) -> None:
        arms = (round(4 * np.sin(i * 1.3)), 0) if typing[i] else (0, 0)
        paste(img, src.sitter, 170 + float(shift[i]), 240, 154,
              head=(round(head[i, 0]), round(head[i, 1])), arms=arms)
    return Scene(name, "sitter", n, plate(src.room), scene_fx=[fx])


def _daylight(src: Sources, name: str, n: int) -> Scene:
    """The plaza as a day goes by, sped up: exposure ramps through a gamma curve over the whole
    sequence, cloud shadows drift across, and the camera's auto-exposure nudges in small
    steps."""
    rng = rng_for(name)
    noise = rng.normal(0, 1, (H, W * 3)).astype(np.float32)
    blurred = np.asarray(cv2.GaussianBlur(noise, (0, 0), 45), np.float32)
    field_ = blurred / float(np.abs(blurred).max())

    def light(img: np.ndarray, i: int) -> None:
        u = i / max(1, n - 1)
        level = 0.45 + 0.8 * u if u < 0.6 else 0.93 - 0.5 * (u - 0.6)
        level *= 1.0 + 0.04 * ((i // 120) % 3 - 1)  # auto-exposure steps every 8 s
        off = int(0.6 * i) % (2 * W)
        shade = 1.0 + 0.35 * field_[:, off:off + W]
        lin = (np.clip(img, 0, 255) / 255.0) ** 2.2 * level * shade
        img[:] = 255.0 * np.clip(lin, 0, 1) ** (1 / 2.2)
    return Scene(name, "daylight", n, plate(src.plaza), light_fx=[light])


def _night_base(src: Sources) -> Callable[[int], np.ndarray]:
    return pingpong(src.dark)


def _ir_noise(src: Sources, name: str, n: int) -> Scene:
    """The real dark room under heavy IR sensor noise: grain whose level pumps, row banding,
    hot pixels, and the gain control breathing."""
    rng = rng_for(name)
    hot = rng.random((H, W)) < 0.0008
    level = 5.0 + 2.0 * np.sin(np.arange(n) / 17.0)

    def noise(img: np.ndarray, i: int) -> None:
        r = np.random.default_rng(i + 7)
        img *= 1.0 + 0.06 * np.sin(i / 23.0)
        img += r.normal(0, level[i], img.shape).astype(np.float32)
        img += r.normal(0, 2.0, (H, 1)).astype(np.float32)
        img[hot] = 230
        img[r.random((H, W)) < 0.0005] = 255
    return Scene(name, "ir-noise", n, _night_base(src), noise=0.0, extra_noise=noise)


def _headlights(src: Sources, name: str, n: int) -> Scene:
    """The dark room swept by car headlights through the window: a bright soft cone crosses the
    frame in about a second, every five to eight seconds, from either side."""
    rng = rng_for(name)
    starts = np.cumsum(rng.uniform(75, 120, n // 60 + 2)).astype(int) - 60
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)

    def light(img: np.ndarray, i: int) -> None:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        if k < 0 or i - starts[k] >= 18:
            return
        u = (i - starts[k]) / 17.0
        cx = -80 + u * (W + 160) if k % 2 == 0 else W + 80 - u * (W + 160)
        cone = np.exp(-((xx - cx) / 70.0) ** 2 - ((yy - 150 + 0.25 * (xx - cx)) / 60.0) ** 2)
        img *= 1.0 + 3.0 * cone
        img += 45.0 * cone
    return Scene(name, "headlights", n, _night_base(src), light_fx=[light], noise=3.0)


def _insects(src: Sources, name: str, n: int) -> Scene:
    """Near the lens, lit by the IR lamp: a moth (a large, very blurred bright blob) darting
    about in bursts, and a spider web in the corner swaying in the air."""
    rng = rng_for(name)
    pos = np.zeros((n, 2), np.float32)
    p, v = np.array([160.0, 120.0]), np.zeros(2)
    for i in range(n):
        v = 0.7 * v + rng.normal(0, 7.0, 2)
        p = np.clip(p + v, [-20, -20], [W + 20, H + 20])
        pos[i] = p
    present = np.repeat(rng.random(n // 20 + 1) < 0.5, 20)[:n]
    size = 22 + 14 * rng.random(n)
    web = np.zeros((H, W), np.float32)
    for a in np.linspace(0.1, 1.4, 6):
        cv2.line(web, (0, 0), (int(150 * np.cos(a)), int(150 * np.sin(a))), 1.0, 2)
    for r in (40, 70, 100):
        cv2.ellipse(web, (0, 0), (r, r), 0, 5, 85, 1.0, 1)
    glow = np.asarray(cv2.GaussianBlur(web, (0, 0), 2.5), np.float32) * 45
    sway = 4 * np.sin(np.arange(n) / 5.0) + np.cumsum(rng.normal(0, 0.3, n)) % 3

    def lens(img: np.ndarray, i: int) -> None:
        m = np.array([[1, 0, sway[i]], [0, 1, 0.5 * sway[i]]], np.float32)
        img += cv2.warpAffine(glow, m, (W, H))
        if present[i]:
            s = float(size[i])
            img += 120 * blob((H, W), float(pos[i, 0]), float(pos[i, 1]), s, s * 0.8)
    return Scene(name, "insects", n, _night_base(src), lens_fx=[lens], noise=3.0)


def _rain(src: Sources, name: str, n: int) -> Scene:
    """Rain at night in the IR lamp's light: a hundred short bright streaks a frame, each drop
    seen once, and a few large out-of-focus drops right in front of the lens."""
    def lens(img: np.ndarray, i: int) -> None:
        r = np.random.default_rng(1000 + i)
        layer = np.zeros((H, W), np.float32)
        for x, y, ln, b in zip(r.integers(0, W, 120), r.integers(0, H, 120),
                               r.integers(8, 24, 120), r.uniform(25, 60, 120), strict=True):
            cv2.line(layer, (int(x), int(y)), (int(x + 0.2 * ln), int(y + ln)), float(b), 1)
        big = np.zeros((H, W), np.float32)
        for x, y in zip(r.integers(0, W, 3), r.integers(-60, H, 3), strict=True):
            cv2.line(big, (int(x), int(y)), (int(x + 15), int(y + 90)), 35.0, 5)
        img += cv2.GaussianBlur(layer, (3, 3), 0) + cv2.GaussianBlur(big, (0, 0), 3)
    return Scene(name, "rain", n, _night_base(src), lens_fx=[lens], noise=3.0)


def _snow(src: Sources, name: str, n: int) -> Scene:
    """Snow at night: two hundred flakes drifting down on the wind, and now and then a large
    blurred flake falling fast right in front of the lens."""
    rng = rng_for(name)
    m = 200
    x0, y0 = rng.uniform(0, W, m), rng.uniform(0, H, m)
    vy, rad = rng.uniform(1.0, 3.5, m), rng.uniform(0.8, 2.2, m)
    bright, phase = rng.uniform(40, 100, m), rng.uniform(0, 6.28, m)
    near = rng.uniform(0, W, (n // 10 + 1, 2))

    def lens(img: np.ndarray, i: int) -> None:
        layer = np.zeros((H, W), np.float32)
        xs = (x0 + 8 * np.sin(i / 20.0 + phase) + 0.8 * i) % W
        ys = (y0 + vy * i) % H
        for x, y, r_, b in zip(xs, ys, rad, bright, strict=True):
            cv2.circle(layer, (int(x), int(y)), max(1, round(r_)), float(b), -1)
        k, u = divmod(i, 10)
        if k % 3 == 0:
            cx, _ = near[k]
            cv2.circle(layer, (int(cx + 2 * u), int(-20 + 28 * u)), 14, 40.0, -1)
        img += cv2.GaussianBlur(layer, (0, 0), 1.2)
    return Scene(name, "snow", n, _night_base(src), lens_fx=[lens], noise=3.0)


def _small_walkers(src: Sources, name: str, n: int) -> Scene:
    """The plaza from high up: one after another, small people (18 to 50 px tall, 0.1 to 0.8%
    of the frame) stroll at a third to two thirds of a metre a second (a fifth to a half of a
    pixel a frame for the smallest). Most step out of a doorway and walk out of view at the
    edge; one walks in from the edge and goes in at a doorway."""
    rng = rng_for(name)
    scene = Scene(name, "small-walkers", n, plate(src.plaza))
    t, k = 30, 0
    while t < n - 60:
        h = float(rng.uniform(18, 50))
        speed = h / 1.7 * float(rng.uniform(0.33, 0.66)) / FPS  # px a frame: h px is 1.7 m
        y = float(rng.uniform(100, 230))
        dur = int(rng.integers(100, 150))
        sign = 1.0 if k % 2 == 0 else -1.0
        edge = W + 0.3 * h if sign > 0 else -0.3 * h  # fully out of view
        if k == 1:  # in from the edge, into a doorway
            a, b = -edge + W if sign < 0 else -0.3 * h, 0.0
            b = a + sign * speed * dur
        else:  # out of a doorway, out at the edge
            b = edge
            a = b - sign * speed * dur
        scene.visits.append(Visit([(t, a, y, h), (t + dur, b, y + 0.2 * speed * dur, h)]))
        t += dur + int(rng.integers(30, 60))
        k += 1
    return scene


def _still_visitor(src: Sources, name: str, n: int) -> Scene:
    """A visitor walks up, then stands nearly still at the door for ten seconds (the head
    drifts a pixel or two) and walks away: one visit, one event from arrival to exit."""
    scene = Scene(name, "still-visitor", n, plate(src.room))
    scene.visits.append(Visit([(45, -30, 236, 190), (80, 120, 236, 185), (230, 120, 236, 185),
                               (270, 350, 236, 190)], fidget=True))
    return scene


CLASSES: dict[str, Callable[[Sources, str, int], Scene]] = {
    "screen": _screen, "flicker": _flicker, "sitter": _sitter, "daylight": _daylight,
    "small-walkers": _small_walkers, "still-visitor": _still_visitor, "ir-noise": _ir_noise,
    "headlights": _headlights, "insects": _insects, "rain": _rain, "snow": _snow,
}
NIGHT = {"ir-noise", "headlights", "insects", "rain", "snow"}
VISITORS_ONLY = {"small-walkers", "still-visitor"}  # the visit is the point of the class


def _visitors(scene: Scene, rng: np.random.Generator) -> None:
    """Two visits at door scale: one crossing the frame, one walking up, pausing and leaving;
    brighter at night (the IR lamp lights whoever is near)."""
    night = scene.kind in NIGHT
    bright = 2.2 if night else 1.0
    k = 0.45 if scene.kind == "daylight" else 1.0  # the plaza is seen from further away
    n = scene.frames
    a = int(rng.integers(40, 70))
    left = rng.random() < 0.5
    xa, xb = (-40.0, W + 40.0) if left else (W + 40.0, -40.0)
    scene.visits.append(Visit([(a, xa, 236, 180 * k), (a + 60, xb, 236, 180 * k)],
                              bright=bright))
    b = max(a + 120, n - 200)
    scene.visits.append(Visit([(b, W + 40.0, 238, 170 * k), (b + 40, 200, 238, 185 * k),
                               (b + 70, 200, 238, 185 * k), (b + 110, -40.0, 238, 175 * k)],
                              fidget=True, bright=bright))


def build(src: Sources, kind: str, visitors: bool, seconds: float = 30.0) -> Scene:
    """The scene of class ``kind``, with or without visitors."""
    n = round(seconds * FPS)
    name = f"{kind}+visitors" if visitors and kind not in VISITORS_ONLY else kind
    scene = CLASSES[kind](src, name, n)
    if visitors and kind not in VISITORS_ONLY:
        _visitors(scene, rng_for(name + "/visits"))
    return scene


def render(scene: Scene, src: Sources) -> Iterator[np.ndarray]:
    """The scene's frames, uint8 (h, w)."""
    gait = src.walker
    for i in range(scene.frames):
        img = scene.base(i)
        for fx in scene.scene_fx:
            fx(img, i)
        for v in scene.visits:
            where = v.at(i)
            if where is None:
                continue
            x, y, h, walking = where
            sprite = gait[(i // 3) % len(gait)] if walking else gait[0]
            head = (0, 0)
            if v.fidget and not walking:
                head = (round(1.5 * np.sin(i / 9.0)), round(np.sin(i / 13.0 + 1)))
            paste(img, sprite, x, y, h, v.bright, head)
        for fx in scene.light_fx:
            fx(img, i)
        for fx in scene.lens_fx:
            fx(img, i)
        if scene.noise > 0:
            r = np.random.default_rng(10_000 + i)
            img += r.normal(0, scene.noise, img.shape).astype(np.float32)
        if scene.extra_noise is not None:
            scene.extra_noise(img, i)
        yield np.clip(img + 0.5, 0, 255).astype(np.uint8)


def label(scene: Scene, src: Sources) -> Labels:
    """Events: the frames where a visitor shows at least 0.2% of the frame (or half of
    themselves, when smaller), as the real set's masks are labelled. A visitor who stands
    nearly still stays in the event: the visit is one event from arrival to exit."""
    seen = [False] * scene.frames
    probe = np.zeros((H, W), np.float32)
    sprite = src.walker[0]
    per_px = float(sprite.alpha.sum()) / sprite.alpha.shape[0] ** 2
    for v in scene.visits:
        for i in range(scene.frames):
            where = v.at(i)
            if where is None:
                continue
            x, y, h, _ = where
            area = paste(probe, sprite, x, y, h)
            if area >= min(0.002 * W * H, 0.5 * per_px * h * h):
                seen[i] = True
    events: list[tuple[int, int]] = []
    for i, s in enumerate(seen):
        if not s:
            continue
        if events and i - events[-1][1] <= 3:
            events[-1] = (events[-1][0], i)
        else:
            events.append((i, i))
    return Labels(scene.name, "", FPS, scene.frames, tuple(events), MARGIN)


def sequences(motion_dir: Path, plaza_video: Path, kinds: tuple[str, ...] | None = None,
              seconds: float = 30.0) -> Iterator[Sequence]:
    """Every class (or ``kinds``), alone and with visitors, as labelled sequences."""
    src = load_sources(motion_dir, plaza_video)
    for kind in kinds or tuple(CLASSES):
        for visitors in (False, True):
            if not visitors and kind in VISITORS_ONLY:
                continue
            scene = build(src, kind, visitors, seconds)
            yield Sequence(scene.name, kind, label(scene, src),
                           functools.partial(render, scene, src))
