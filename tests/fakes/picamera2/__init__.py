"""A fake of picamera2 for tests, honouring the parts of its documented API Doorstep uses.

Import it by putting tests/fakes on sys.path. The real package exists only on a Pi (Raspberry Pi
OS's python3-picamera2). Failures are driven through ``SYSTEM`` (see picamera2._fake), which is
not part of the real API.
"""

from concurrent.futures import TimeoutError

from ._fake import SYSTEM, FakeCameraSystem
from .picamera2 import Picamera2
from .request import CompletedRequest, MappedArray

__all__ = ["SYSTEM", "CompletedRequest", "FakeCameraSystem", "MappedArray", "Picamera2",
           "TimeoutError"]
