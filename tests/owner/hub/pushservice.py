"""A push service on loopback, for tests and the bench: it takes the hub's Web Push requests
(RFC 8030, VAPID-signed per RFC 8292), decrypts the RFC 8291 record with the subscription's
private key as the browser's push stack would (http_ece), and hands the plaintext to the
service worker through Chromium's DevTools (ServiceWorker.deliverPushMessage)."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushService:
    def __init__(self, deliver: Callable[[str], None]) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.deliver = deliver
        self.received: list[dict[str, Any]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.time()
                try:
                    plain = http_ece.decrypt(body, private_key=service.key,
                                             auth_secret=service.auth, version="aes128gcm")
                except Exception as exc:  # a push the browser could not read: refuse it
                    self.send_response(400)
                    self.end_headers()
                    service.received.append({"error": repr(exc)})
                    return
                service.received.append({"ciphertext": body, "plaintext": plain,
                                         "authorization": self.headers.get("Authorization"),
                                         "urgency": self.headers.get("Urgency"),
                                         "arrived": arrived})
                self.send_response(201)
                self.end_headers()
                service.deliver(plain.decode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def subscription(self) -> dict[str, Any]:
        raw = self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
        port = self.server.server_address[1]
        return {"endpoint": f"http://127.0.0.1:{port}/push/1",
                "keys": {"p256dh": b64url(raw), "auth": b64url(self.auth)}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def to_service_worker(driver: Any, origin: str) -> Callable[[str], None]:
    """Deliver a push message's plaintext to the page's service worker, as Chromium does when
    its push service hands one over."""
    lock = threading.Lock()

    def deliver(data: str) -> None:
        with lock:
            driver.execute_cdp_cmd("ServiceWorker.enable", {})
            driver.execute_cdp_cmd("ServiceWorker.deliverPushMessage", {
                "origin": origin.rstrip("/"), "registrationId": "0", "data": data})
    return deliver
