"""Benchmark inputs, built at bench time from the OpenCV sample clip and cached: 30 fps H.264
files at 1280x720 and 1920x1080, the 1080p one again as a camera sends it (no B-frames), and a
still 720p30 scene for the idle rows; and, for the memory row only, raw camera frames.
Nothing is downloaded."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import doorstep
from doorstep.bench import shared
from doorstep.core.errors import DoorstepError

log = logging.getLogger(__name__)

BUNDLED = Path(doorstep.__file__).resolve().parent / "data" / "vtest.mp4"
FPS = 30
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


@dataclass(frozen=True)
class Inputs:
    """Paths of the built inputs, and what they were made from."""

    video: dict[str, Path]
    still: Path
    camera: Path  # the 1080p input re-encoded as a camera sends it: no B-frames
    seconds: float
    origin: Path

    def describe(self, name: str) -> str:
        w, h = SIZES[name]
        return (f"{w}x{h} {FPS} fps H.264, {self.seconds:g} s ({int(self.seconds * FPS)} frames) "
                f"from {self.origin.name} sped up 3x")


def source_clip() -> Path:
    """The full 768x576 10 fps original from the shared data, else the bundled copy."""
    return shared.find("video", "vtest.avi").path or BUNDLED


def labelled_set() -> shared.Found:
    """The labelled motion set of the shared data (row 6), or why it is not here."""
    return shared.find("motion")


def _ffmpeg(args: list[str], target: Path) -> None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise DoorstepError("ffmpeg is not installed (apt-get install ffmpeg); the benchmark "
                            "builds its inputs with it")
    tmp = target.with_name(f"{target.stem}.tmp{target.suffix}")  # ffmpeg reads the suffix
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", *args, str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DoorstepError(f"building bench input {target.name} failed: {done.stderr.strip()}")
    tmp.replace(target)


def build_inputs(cache: Path, seconds: float) -> Inputs:
    """Make (or reuse) the inputs in ``cache``. The 10 fps sample is played 3x faster at
    30 fps, so every frame is a distinct picture (no duplicated frames for the encoder)."""
    cache.mkdir(parents=True, exist_ok=True)
    origin = source_clip()
    videos: dict[str, Path] = {}
    encode = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", str(FPS),
              "-pix_fmt", "yuv420p", "-an"]
    for name, (w, h) in SIZES.items():
        target = cache / f"vtest-{name}-{FPS}fps-{seconds:g}s.mp4"
        if not target.exists():
            log.info("bench: building %s", target)
            _ffmpeg(["-i", str(origin), "-vf", f"setpts=PTS/3,fps={FPS},scale={w}:{h}",
                     "-frames:v", str(int(seconds * FPS)), *encode], target)
        videos[name] = target
    still = cache / f"still-720p-{FPS}fps-{seconds:g}s.mp4"
    if not still.exists():
        log.info("bench: building %s", still)
        _ffmpeg(["-i", str(origin), "-vf",
                 f"trim=end_frame=1,loop=loop=-1:size=1,setpts=N/{FPS}/TB,scale=1280:720",
                 "-frames:v", str(int(seconds * FPS)), "-r", str(FPS), *encode], still)
    camera = cache / f"camera-1080p-{FPS}fps-{seconds:g}s.mp4"
    if not camera.exists():
        # IP and USB cameras send H.264 without B-frames (they add latency), so their decoder
        # keeps fewer reference pictures than a file made for storage does.
        log.info("bench: building %s", camera)
        _ffmpeg(["-i", str(videos["1080p"]), "-c:v", "libx264", "-preset", "veryfast", "-crf",
                 "20", "-g", str(FPS), "-bf", "0", "-pix_fmt", "yuv420p", "-an"], camera)
    return Inputs(videos, still, camera, seconds, origin)


def build_raw(inputs: Inputs, folder: Path) -> Path:
    """The camera-like input's pictures as raw I420 frames (YUV4MPEG2), as a Pi camera module
    hands them over: nothing to decode, so no decoder's reference pictures. 3 MB a frame (0.9
    GB for 10 s), so only the memory row makes it, and removes it when done."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"raw-1080p-{FPS}fps-{inputs.seconds:g}s.y4m"
    if not raw.exists():
        log.info("bench: building %s", raw)
        _ffmpeg(["-i", str(inputs.camera), "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe"], raw)
    return raw
