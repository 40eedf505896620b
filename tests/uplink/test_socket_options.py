"""The device's MQTT connection is tuned for a slow uplink (issue 13 item 13): TCP_NODELAY, and
TCP_NOTSENT_LOWAT so the kernel holds little unsent data ahead of a ring. Checked on the real
socket of a real connection to Mosquitto, and after a reconnect (a new socket)."""

from __future__ import annotations

import socket
from pathlib import Path

from doorstep.broker import Mosquitto
from doorstep.uplink.mqtt import NOTSENT_LOWAT, TCP_NOTSENT_LOWAT, tune_socket
from tests.faults.harness import device_outbox, device_uplink, make_party, wait_for


def _options(sock: socket.socket) -> tuple[int, int]:
    return (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT))


def test_the_uplink_socket_has_nodelay_and_a_small_unsent_limit(tmp_path: Path,
                                                                broker: Mosquitto) -> None:
    party = make_party(tmp_path)
    uplink = device_uplink(device_outbox(tmp_path / "outbox", party), party, broker.port,
                           receipts=False)
    uplink.start()
    try:
        wait_for(lambda: uplink.connected, 10, "the uplink to connect")
        sock = uplink.client.socket()
        assert isinstance(sock, socket.socket)
        assert _options(sock)[0] != 0
        assert _options(sock)[1] == NOTSENT_LOWAT
        # a new connection is a new socket: tuned again
        uplink.client.disconnect()
        wait_for(lambda: uplink.connected and uplink.client.socket() not in (None, sock), 15,
                 "the uplink to reconnect")
        again = uplink.client.socket()
        assert isinstance(again, socket.socket)
        assert _options(again)[0] != 0 and _options(again)[1] == NOTSENT_LOWAT
    finally:
        uplink.stop()


def test_a_socket_without_tcp_options_is_named_not_raised(tmp_path: Path) -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        failed = tune_socket(a)
    assert [f.split(":")[0] for f in failed] == ["TCP_NODELAY", "TCP_NOTSENT_LOWAT"]
    assert tune_socket(object()) == ["socket options: object has no setsockopt"]
