"""The doctor's tests: the fake picamera2 on sys.path (as for capture/), and the TLS broker
the uplink's tests start (a throwaway CA, a client certificate and a password)."""

from __future__ import annotations

from tests.capture.conftest import fake_camera as fake_camera
from tests.uplink.test_mqtt import tls_broker as tls_broker
