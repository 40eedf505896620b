"""The motion detector on synthetic frames: light steps, sensor noise, objects that move and stay,
zones and the start-up, each checked through the trigger state a recording would follow."""

from __future__ import annotations

import cv2
import numpy as np

from doorstep.config.schema import MotionConfig
from doorstep.motion.detector import MotionDetector

W, H, FPS = 320, 240, 25.0


def scene(seed: int = 1) -> np.ndarray:
    """A textured, static background (float, grey levels around 120)."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.normal(0, 40, (H, W)).astype(np.float32), (0, 0), 3)
    return np.clip(120 + tex * 2, 10, 245).astype(np.float32)


def render(bg: np.ndarray, rng: np.random.Generator, noise: float = 2.0,
           blob: tuple[int, int] | None = None, gain: float = 1.0,
           offset: float = 0.0) -> np.ndarray:
    img = bg.copy()
    if blob is not None:
        x, y = blob
        img[y:y + 40, x:x + 24] = 30.0  # a dark, person-sized patch (about 1.25% of the frame)
    img = img * gain + offset + rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def run(frames: list[np.ndarray], cfg: MotionConfig | None = None) -> list[bool]:
    det = MotionDetector(cfg or MotionConfig(), (W, H), FPS)
    return [det.update(f, i / FPS).motion for i, f in enumerate(frames)]


def test_sensor_noise_alone_never_triggers() -> None:
    rng = np.random.default_rng(2)
    bg = scene()
    frames = [render(bg, rng, noise=6.0) for _ in range(200)]  # heavy, dark-like noise
    assert not any(run(frames))


def test_uniform_brightness_step_does_not_trigger() -> None:
    rng = np.random.default_rng(3)
    bg = scene()
    frames = [render(bg, rng) for _ in range(50)]
    frames += [render(bg, rng, gain=0.55, offset=-12.0) for _ in range(75)]  # light off
    frames += [render(bg, rng, gain=1.3, offset=8.0) for _ in range(75)]  # porch light on
    assert not any(run(frames))


def test_blob_moving_during_the_brightness_step_triggers() -> None:
    rng = np.random.default_rng(4)
    bg = scene()
    frames = [render(bg, rng) for _ in range(50)]
    on_from = len(frames)
    for k in range(25):  # the light drops on the first frame the visitor moves
        frames.append(render(bg, rng, blob=(60 + 6 * k, 100), gain=0.55, offset=-12.0))
    states = run(frames)
    assert not any(states[:on_from])
    assert any(states[on_from:on_from + 5]), "the visitor must be caught within a few frames"


def test_object_that_moves_then_stays_stops_triggering_within_the_hold_time() -> None:
    rng = np.random.default_rng(5)
    bg = scene()
    cfg = MotionConfig(hold_seconds=2.0)
    frames = [render(bg, rng) for _ in range(30)]
    for k in range(25):  # a bike wheeled in for a second ...
        frames.append(render(bg, rng, blob=(40 + 5 * k, 120)))
    stop = len(frames)
    frames += [render(bg, rng, blob=(40 + 5 * 24, 120)) for _ in range(250)]  # ... then parked
    states = run(frames, cfg)
    assert any(states[30:stop])
    off_by = stop + int((cfg.hold_seconds + 0.2) * FPS)
    assert not any(states[off_by:]), "a parked object must not hold motion on"


def test_first_frames_do_not_fire_without_a_background() -> None:
    rng = np.random.default_rng(6)
    bg = scene()
    frames = [render(bg, rng, blob=(100, 100)) for _ in range(40)]  # something already there
    assert not any(run(frames))


def test_motion_outside_the_zones_does_not_count() -> None:
    rng = np.random.default_rng(7)
    bg = scene()
    frames = [render(bg, rng) for _ in range(30)]
    frames += [render(bg, rng, blob=(10 + 4 * k, 20)) for k in range(30)]  # top-left corner
    zone = ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0))  # bottom-right quarter only
    assert any(run(frames))
    assert not any(run(frames, MotionConfig(zones=(zone,))))


def test_result_reports_score_boxes_and_cost_and_reset_forgets_the_scene() -> None:
    rng = np.random.default_rng(8)
    bg = scene()
    det = MotionDetector(MotionConfig(), (W, H), FPS)
    for i in range(30):
        det.update(render(bg, rng), i / FPS)
    results = [det.update(render(bg, rng, blob=(100 + 6 * k, 90)), (30 + k) / FPS)
               for k in range(10)]
    last = results[-1]
    assert last.motion and last.score > 0.5 and last.ms > 0
    x, y, w, h = max(last.boxes, key=lambda b: b[2] * b[3])
    assert x + w >= 100 and x <= 100 + 6 * 9 + 24 and y <= 90 + 40 and y + h >= 90
    det.reset()
    assert not det.update(render(bg, rng, blob=(10, 10)), 100.0).motion
