"""Fake Picamera2: configuration dicts, start/stop/close, capture_request, pre/post callbacks and
encoders, producing a moving synthetic scene with no threads (each capture makes the next frame).
"""

from __future__ import annotations

from concurrent.futures import TimeoutError
from typing import Any

import numpy as np

from ._fake import SYSTEM
from .request import CompletedRequest, _Request

_YUV_FORMATS = ("YUV420", "YVU420")
_FORMATS = ("XBGR8888", "XRGB8888", "BGR888", "RGB888", *_YUV_FORMATS)
_FIRST_TIMESTAMP_NS = 5_000_000_000_000  # sensor timestamps count from boot, not from zero
# Tuning files libcamera ships for Raspberry Pi (a subset): <sensor>.json and <sensor>_noir.json.
_TUNING_FILES = {f"{m}{v}.json" for m in ("imx708", "imx708_wide", "imx219", "imx477")
                 for v in ("", "_noir")}
_VIRTUAL_CONTROLS = ("FrameRate",)  # picamera2 turns FrameRate into FrameDurationLimits


def _controls_for(model: str, pisp: bool) -> dict[str, tuple[Any, Any, Any]]:
    """camera_controls as libcamera advertises them: (min, max, default) by name."""
    controls: dict[str, tuple[Any, Any, Any]] = {
        "FrameDurationLimits": (33333, 120000000, None), "ExposureTime": (26, 112015443, None),
        "AnalogueGain": (1.12, 16.0, None), "AeEnable": (False, True, None),
        "AeExposureMode": (0, 3, 0), "ExposureValue": (-8.0, 8.0, 0.0),
        "Saturation": (0.0, 32.0, 1.0), "NoiseReductionMode": (0, 4, 0),
    }
    if model.startswith("imx708"):  # Camera Module 3: a lens the autofocus moves
        controls.update({"AfMode": (0, 2, 0), "AfRange": (0, 2, 0), "AfSpeed": (0, 1, 0),
                         "LensPosition": (0.0, 15.0, 1.0)})
    if pisp:
        controls["HdrMode"] = (0, 4, 0)
    return controls


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _check_stream(name: str, stream: Any) -> None:
    """The same checks (and messages) as Picamera2's own configuration checks."""
    if not isinstance(stream, dict):
        raise RuntimeError(name + " stream should be a dictionary")
    if "format" not in stream:
        raise RuntimeError("format not found in " + name + " stream")
    if "size" not in stream:
        raise RuntimeError("size not found in " + name + " stream")
    if not isinstance(stream["format"], str):
        raise RuntimeError("format in " + name + " stream should be a string")
    if stream["format"] not in _FORMATS:
        raise RuntimeError("Bad format " + stream["format"] + " in stream " + name)
    size = stream["size"]
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise RuntimeError("size in " + name + " stream should be (width, height)")
    if size[0] % 2 or size[1] % 2:
        raise RuntimeError("width and height should be even")


class Picamera2:
    """The fake camera. Raises IndexError when no camera is attached, like the real one."""

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [{"Model": SYSTEM.model, "Location": 2, "Rotation": 180, "Num": i,
                 "Id": f"/base/axi/pcie@120000/rp1/i2c@88000/{SYSTEM.model}@1a/{i}"}
                for i in range(SYSTEM.cameras)]

    @staticmethod
    def load_tuning_file(tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        if tuning_file not in _TUNING_FILES:
            raise RuntimeError("Tuning file not found")
        return {"version": 2.0, "target": "pisp" if SYSTEM.pisp else "bcm2835",
                "algorithms": [], "fake_file": tuning_file}

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None,
                 allocator: Any = None) -> None:
        self.is_open = False
        self.tuning = tuning
        if SYSTEM.missing_opens > 0:
            SYSTEM.missing_opens -= 1
            [][camera_num]  # the real one indexes global_camera_info(): IndexError
        if camera_num >= SYSTEM.cameras:
            [][camera_num]
        if SYSTEM.busy_opens > 0:
            SYSTEM.busy_opens -= 1
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera_idx = camera_num
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self.pre_callback: Any = None
        self.post_callback: Any = None
        self._encoders: set[Any] = set()
        self.outstanding = 0
        self.controls_set: dict[str, Any] = {}
        self.controls_history: list[dict[str, Any]] = []
        self.frames_delivered = 0
        self._sequence = 0
        SYSTEM.opened += 1
        SYSTEM.instances.append(self)

    def create_video_configuration(self, main: dict[str, Any] | None = None,
                                   lores: dict[str, Any] | None = None,
                                   raw: dict[str, Any] | None = None, transform: Any = None,
                                   colour_space: Any = None, buffer_count: int = 6,
                                   controls: dict[str, Any] | None = None, display: str = "main",
                                   encode: str = "main", queue: bool = True,
                                   sensor: dict[str, Any] | None = None,
                                   use_case: str = "video") -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        main_cfg = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        config: dict[str, Any] = {
            "use_case": use_case, "transform": transform, "colour_space": colour_space,
            "buffer_count": buffer_count, "queue": queue, "display": display, "encode": encode,
            "main": main_cfg, "lores": None, "raw": raw, "sensor": sensor or {},
            "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333),
                         **(controls or {})},
        }
        if lores is not None:
            config["lores"] = {"format": "YUV420", "size": (640, 480), **lores}
        return config

    def configure(self, camera_config: Any = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if not isinstance(camera_config, dict):
            raise RuntimeError(f"Invalid camera configuration: {camera_config}")
        config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in camera_config.items()}
        _check_stream("main", config["main"])
        if config.get("lores") is not None:
            _check_stream("lores", config["lores"])
            lw, lh = config["lores"]["size"]
            mw, mh = config["main"]["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if config["lores"]["format"] not in _YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is None:
                continue
            w = stream["size"][0]
            stream["stride"] = _align(w, 64) if stream["format"] in _YUV_FORMATS else w * 4
        self._check_controls(config["controls"])
        fps = config["controls"].get("FrameRate")
        limits = config["controls"].get("FrameDurationLimits")
        if fps:
            self._frame_ns = round(1e9 / fps)
        elif limits:  # a bright scene: the shortest frame the limits allow
            self._frame_ns = int(limits[0]) * 1000
        else:
            self._frame_ns = 33_333_333
        self.controls_set = dict(config["controls"])
        self.camera_config = config

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        return _controls_for(SYSTEM.model, SYSTEM.pisp)

    def _check_controls(self, controls: dict[str, Any]) -> None:
        """As picamera2's Controls: a control libcamera does not advertise is refused."""
        known = self.camera_controls
        for name in controls:
            if name not in known and name not in _VIRTUAL_CONTROLS:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")

    def set_controls(self, controls: dict[str, Any]) -> None:
        self._check_controls(controls)
        self.controls_set.update(controls)
        self.controls_history.append(dict(controls))

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        if self.started:
            self.stop()
        self.is_open = False

    # -- encoders ----------------------------------------------------------------------------
    def start_encoder(self, encoder: Any = None, output: Any = None, pts: Any = None,
                      quality: Any = None, name: str | None = None) -> None:
        if encoder is None:
            raise RuntimeError("No encoder specified")
        if output is not None:
            encoder.output = output
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        name = name or self.camera_config["encode"]
        stream = self.camera_config.get(name)
        if stream is None:
            raise RuntimeError(f"Encode stream {name} was not defined")
        encoder.name = name
        encoder.width, encoder.height = stream["size"]
        encoder.format = stream["format"]
        encoder.stride = stream["stride"]
        encoder.start(quality=quality)
        self._encoders.add(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        targets = list(self._encoders) if encoders is None else (
            list(encoders) if isinstance(encoders, (list, set)) else [encoders])
        for encoder in targets:
            encoder.stop()
            self._encoders.discard(encoder)

    @property
    def encoders(self) -> set[Any]:
        return self._encoders

    # -- capture -----------------------------------------------------------------------------
    def capture_request(self, wait: Any = None, signal_function: Any = None,
                        flush: Any = None) -> CompletedRequest:
        """The next frame. ``wait`` as a number of seconds times out with TimeoutError."""
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        hung = not self.started or (SYSTEM.hang_after is not None
                                    and self.frames_delivered >= SYSTEM.hang_after)
        if hung:
            if isinstance(wait, (int, float)) and not isinstance(wait, bool):
                raise TimeoutError()
            raise RuntimeError("fake picamera2: camera is hung and no wait timeout was given")
        assert self.camera_config is not None
        buffers = {name: self._render(self.camera_config[name])
                   for name in ("main", "lores") if self.camera_config.get(name)}
        ts = _FIRST_TIMESTAMP_NS + self._sequence * self._frame_ns
        metadata = {"SensorTimestamp": ts, "FrameDuration": self._frame_ns // 1000,
                    "ExposureTime": 10000, "AnalogueGain": 1.0, "Lux": float(SYSTEM.lux)}
        if "AfMode" in self.controls_set:
            metadata["AfState"] = 2 if self.controls_set["AfMode"] == 2 else 0
            metadata["LensPosition"] = float(self.controls_set.get("LensPosition", 1.0))
        request = CompletedRequest(_Request(buffers, metadata), self)
        self._sequence += 1
        self.frames_delivered += 1
        # Same order as Picamera2's event loop: pre_callback, jobs, post_callback, encoders.
        if self.pre_callback:
            self.pre_callback(request)
        if self.post_callback:
            self.post_callback(request)
        for encoder in list(self._encoders):
            encoder.encode(encoder.name, request)
        return request

    def _render(self, stream: dict[str, Any]) -> np.ndarray:
        """A grey gradient with a bright square sliding right by 2% of the width per frame."""
        w, h = stream["size"]
        stride = stream["stride"]
        buf = np.zeros((h * 3 // 2, stride), dtype=np.uint8)
        xs = np.linspace(40, 200, w, dtype=np.float32)
        buf[:h, :w] = xs[None, :].astype(np.uint8)
        side = max(2, h // 4)
        x0 = int((self._sequence * 0.02 * w) % max(1, w - side))
        buf[h // 3: h // 3 + side, x0: x0 + side] = 235
        buf[h:] = 128  # neutral chroma, padding included
        return buf
