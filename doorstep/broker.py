"""A private Mosquitto on a free loopback port, for the demo, the tests and the benchmarks.
It is the real broker, started as a child process and stopped (or killed) on request."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from doorstep.core.errors import BrokerUnavailable, DoorstepError

MAX_PACKET_SIZE = 4 * 1024 * 1024 + 128 * 1024   # a 4 MiB chunk or event, its topic, headers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener: the CA that signed the client certificates (and the server's), the
    server's certificate and key, and whether a client certificate is required."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


class Mosquitto:
    """``with Mosquitto() as broker:`` starts it; ``broker.port`` is where it listens.
    ``tls``: listen with TLS instead of plain TCP. ``password_file``: a mosquitto password file
    (``mosquitto_passwd -b -c``); anonymous clients are then refused."""

    def __init__(self, port: int | None = None, *, persistence: bool = False,
                 workdir: Path | None = None, tls: BrokerTls | None = None,
                 password_file: Path | None = None) -> None:
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)
        if exe is None:
            raise DoorstepError("mosquitto is not installed (apt-get install mosquitto)")
        self.exe = exe
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="doorstep-broker-"))
        self.persistence = persistence
        self.tls = tls
        self.password_file = password_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "mosquitto.log"

    def _conf(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1"]
        if self.tls is not None:
            lines += [f"cafile {self._readable(self.tls.ca_file, 'ca.pem')}",
                      f"certfile {self._readable(self.tls.cert_file, 'server.pem')}",
                      f"keyfile {self._readable(self.tls.key_file, 'server.key')}",
                      f"require_certificate {str(self.tls.require_certificate).lower()}"]
        if self.password_file is not None:
            lines += ["allow_anonymous false",
                      f"password_file {self._readable(self.password_file, 'passwd')}"]
        else:
            lines += ["allow_anonymous true"]
        # the shipped config's limit (config/mosquitto.conf): nothing bigger is ever buffered
        lines += [f"max_packet_size {MAX_PACKET_SIZE}",
                  "max_inflight_messages 0", "max_queued_messages 100000",
                 f"persistence {'true' if self.persistence else 'false'}",
                 f"persistence_location {self.dir}/", "log_type error", "log_type warning",
                 f"log_dest file {self.log}"]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _readable(self, source: Path, name: str) -> Path:
        """A copy of ``source`` in the broker's directory that mosquitto can read after it
        drops root for its own user (test credentials only)."""
        copy = self.dir / name
        shutil.copyfile(source, copy)
        copy.chmod(0o644)
        self.dir.chmod(0o755)
        return copy

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen([self.exe, "-c", str(self._conf())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerUnavailable(f"mosquitto exited at start (code {self.proc.returncode});"
                                        f" see {self.log}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: the broker loses whatever it had not delivered (unless persistent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
