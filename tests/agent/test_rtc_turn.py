"""WebRTC through a real TURN relay (coturn's turnserver) on loopback: the doorbell takes its
TURN server from `[rtc]`, the viewer may use relay candidates only, and the media flows through
the relay while each side's DTLS fingerprint still travels signed (docs/rtc.md, "STUN and
TURN"). Skipped where coturn is not installed (a dev-only dependency: `apt-get install
coturn`)."""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from doorstep.agent.rtc import fingerprints
from doorstep.broker import Mosquitto, free_port
from tests.agent.rtcpeer import Viewer
from tests.agent.test_rtc import Doorbell, doorbell
from tests.faults.harness import wait_for

TURNSERVER = shutil.which("turnserver")
REALM = "doorstep.test"

pytestmark = pytest.mark.skipif(TURNSERVER is None, reason="coturn's turnserver is not "
                                "installed (apt-get install coturn): no TURN server to relay "
                                "through")


@dataclass
class Turn:
    port: int
    users: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}"

    def allocations(self, user: str) -> int:
        """Relay allocations coturn made for ``user`` so far (its log's own lines)."""
        text = self.log.read_text(errors="replace")
        return sum(1 for line in text.splitlines()
                   if f"user <{user}>" in line and "ALLOCATE processed, success" in line)


@contextlib.contextmanager
def coturn(root: Path, users: dict[str, str]) -> Iterator[Turn]:
    """A real turnserver on a free loopback port, long-term credentials for ``users``, relaying
    on loopback only."""
    assert TURNSERVER is not None
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    low = random.randrange(40000, 59000, 100)
    log = root / "turn.log"
    args = [TURNSERVER, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
            "--relay-ip=127.0.0.1", f"--min-port={low}", f"--max-port={low + 99}",
            "--lt-cred-mech", f"--realm={REALM}", "--no-tls", "--no-dtls", "--no-cli",
            "--allow-loopback-peers", f"--db={root / 'turndb'}", "--log-file=stdout",
            "--simple-log", "--verbose", f"--pidfile={root / 'turn.pid'}",
            *[f"--user={u}:{p}" for u, p in users.items()]]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Total General servers" in log.read_text(errors="replace")
                 or proc.poll() is not None, 15, "turnserver to start")
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        time.sleep(0.3)            # its auth thread comes up just after
        yield Turn(port, users, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def relayed(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Doorbell, Turn]]:
    with coturn(tmp_path / "turn", {"doorbell": "door-pass", "viewer": "view-pass"}) as turn:
        secret = tmp_path / "turn-password"
        secret.write_text("door-pass\n")
        rtc = (f'max_sessions = 2\nice_servers = ["{turn.url}"]\n'
               f'turn_username = "doorbell"\nturn_password_file = "{secret}"')
        for bell in doorbell(tmp_path, broker, rtc):
            yield bell, turn


def nominated(pc: Any) -> Any:
    """The candidate pair ICE selected for this peer's (bundled) media."""
    transport = pc.getTransceivers()[0].receiver.transport.transport
    return transport._connection._nominated[1]      # aioice: component 1


@pytest.mark.slow
def test_media_flows_through_turn_with_the_signed_fingerprints(
        relayed: tuple[Doorbell, Turn]) -> None:
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy

    bell, turn = relayed
    rtc = bell.service.rtc
    assert rtc is not None
    viewer = Viewer(config=RTCConfiguration(
        iceServers=[RTCIceServer(urls=turn.url, username="viewer", credential="view-pass")],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    try:
        sdp, fp = viewer.offer()
        # the viewer offers relay candidates only
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" typ relay" in c for c in candidates), candidates
        cmd, ack = bell.call("rtc_offer", {"sdp": sdp, "fingerprint": fp})
        assert ack.ok, ack.reason
        # the doorbell gathered a relay candidate of its own from [rtc]'s TURN server
        assert " typ relay" in ack.data
        session = rtc.sessions[cmd.counter]
        own = session.pc.getTransceivers()[0].sender.transport.getLocalParameters()
        assert fingerprints(ack.data) == {f"{f.algorithm} {f.value.upper()}"
                                          for f in own.fingerprints}
        viewer.accept(ack.data)
        wait_for(lambda: viewer.video_frames >= 30, 60, "30 video frames through the relay")
        assert viewer.states[-1] == "connected"
        pair = viewer.run(_pair(viewer))
        assert pair[0] == "relay", pair             # the viewer's side of the pair is TURN's
        assert turn.allocations("viewer") >= 1 and turn.allocations("doorbell") >= 1
        # and the DTLS peer through the relay holds the certificate the signed answer named
        signed = next(f for f in fingerprints(ack.data) if f.startswith("sha-256 "))
        assert viewer.run(_peer_fingerprint(viewer)) == signed
    finally:
        viewer.close()


async def _pair(viewer: Viewer) -> tuple[str, str]:
    pair = nominated(viewer.pc)
    return pair.local_candidate.type, pair.remote_candidate.type


async def _peer_fingerprint(viewer: Viewer) -> str:
    """sha-256 of the certificate the viewer's DTLS peer presented."""
    from aiortc.rtcdtlstransport import certificate_digest

    assert viewer.pc is not None
    dtls = viewer.pc.getTransceivers()[0].receiver.transport
    assert dtls.state == "connected"
    cert = dtls._ssl.get_peer_certificate(as_cryptography=True)
    return f"sha-256 {certificate_digest(cert, 'sha-256')}"


@pytest.mark.slow
def test_a_turn_server_that_refuses_the_doorbell_is_named_and_the_lan_still_works(
        tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with coturn(tmp_path / "turn", {"doorbell": "door-pass"}) as turn:
        secret = tmp_path / "turn-password"
        secret.write_text("not-the-password\n")
        rtc = (f'ice_servers = ["{turn.url}"]\nturn_username = "doorbell"\n'
               f'turn_password_file = "{secret}"')
        bells = doorbell(tmp_path, broker, rtc)
        bell = next(bells)
        viewer = Viewer()
        try:
            sdp, fp = viewer.offer()
            cmd, ack = bell.call("rtc_offer", {"sdp": sdp, "fingerprint": fp})
            assert ack.ok, ack.reason
            assert " typ relay" not in ack.data
            viewer.accept(ack.data)
            wait_for(lambda: viewer.video_frames >= 5, 30, "video over the LAN")
        finally:
            viewer.close()
            bells.close()
    warned = [r.message for r in caplog.records if r.levelno == logging.WARNING
              and f"session {cmd.counter}: no relay candidate" in r.message]
    assert len(warned) == 1 and turn.url in warned[0]
    assert "rtc.turn_password_file" in warned[0]
