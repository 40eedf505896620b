"""The bench's real shaped link (bench/netns.py): a device namespace behind a veth pair with
tc tbf at 2 Mbit/s. A functional check of the rig, not a timing assertion of Doorstep's code:
bytes pushed as fast as a socket can, from inside the device's namespace, arrive at about
2 Mbit/s; the namespace and the pair are gone afterwards, also when set-up fails half-way."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from doorstep.bench.netns import NetnsUnavailable, Shape, ShapedLink, probe

WHY = probe()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"shaped link unavailable: {WHY}")


def _netns_names() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                          check=True).stdout


def _receive(server: socket.socket, got: list[tuple[float, int]]) -> None:
    conn, _ = server.accept()
    with conn:
        total = 0
        while True:
            data = conn.recv(65536)
            if not data:
                break
            total += len(data)
            got.append((time.monotonic(), total))


def test_the_link_carries_about_2_mbit_per_second_from_the_device() -> None:
    try:
        link = ShapedLink(Shape(rate=2_000_000)).__enter__()
    except NetnsUnavailable as exc:        # e.g. a container without CAP_SYS_ADMIN
        pytest.skip(f"shaped link unavailable: {exc}")
    try:
        server = socket.create_server((link.host, 0))
        port = server.getsockname()[1]
        got: list[tuple[float, int]] = []
        receiver = threading.Thread(target=_receive, args=(server, got))
        receiver.start()
        with link.device():
            client = socket.create_connection((link.host, port), timeout=5)
        stop = time.monotonic() + 4.0
        block = b"\0" * 65536
        client.settimeout(0.5)
        while time.monotonic() < stop:
            try:
                client.send(block)
            except TimeoutError:
                continue
        client.close()
        receiver.join(10)
        server.close()
        assert got, "nothing arrived through the shaped link"
        # from the first second on (past the bucket's burst and TCP's start) to the end
        t0, b0 = next((t, b) for t, b in got if t >= got[0][0] + 1.0)
        t1, b1 = got[-1]
        rate_bps = (b1 - b0) * 8 / (t1 - t0)
        assert 1.4e6 < rate_bps < 2.3e6, f"{rate_bps / 1e6:.2f} Mbit/s through a 2 Mbit/s link"
    finally:
        link.close()
    assert link.netns not in _netns_names()
    assert link.host_if not in _links()


def test_a_socket_opened_outside_the_device_namespace_is_not_shaped() -> None:
    with ShapedLink() as link:
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        with link.device(), pytest.raises(OSError):
            # the device's namespace has its own loopback: the root one's server is not there
            socket.create_connection(("127.0.0.1", port), timeout=2)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        server.close()


def test_a_failed_set_up_leaves_nothing_behind() -> None:
    link = ShapedLink(Shape(burst=0))        # tc refuses a zero bucket
    with pytest.raises(NetnsUnavailable, match="tc"):
        link.__enter__()
    assert link.netns not in _netns_names()
    assert link.host_if not in _links()


def test_parallel_links_do_not_collide() -> None:
    with ShapedLink() as a, ShapedLink() as b:
        assert a.netns != b.netns and a.host_if != b.host_if and a.host != b.host
        assert a.netns in _netns_names() and b.netns in _netns_names()
    names = _netns_names()
    assert a.netns not in names and b.netns not in names


def test_a_device_client_reaches_the_bench_broker_over_the_link() -> None:
    """Row 5's wiring: the broker listens on loopback and on the link's root end; a client made
    in the device's namespace goes over the veth pair, the subscriber on loopback does not."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from doorstep.bench.netns import LinkBroker
    from doorstep.bench.ring import LINK_BPS, Subscriber, via

    with ShapedLink() as link, LinkBroker(link.host) as broker:
        sub = Subscriber(broker.port, "bench/t")
        try:
            with via(broker.port, LINK_BPS, link) as path:
                assert (path.name, path.host, path.port) == ("tc tbf", link.host, broker.port)
                sent = path.bytes_up()
                with path.device():
                    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="netns-test")
                    client.connect(path.host, path.port)
                    client.loop_start()
                sock = client.socket()
                assert sock is not None and sock.getsockname()[0] == link.device_addr
                client.publish("bench/t", b"0123456789abcdef-over-the-link", qos=1)
                assert sub.wait_for(b"0123456789abcdef", 10) is not None
                client.loop_stop()
                client.disconnect()
                assert path.bytes_up() > sent
        finally:
            sub.close()
    with via(1883, LINK_BPS, None) as path:
        assert path.name == "token bucket" and path.host == "127.0.0.1" and path.port != 1883


def test_what_a_killed_run_left_behind_is_deleted_by_the_next() -> None:
    from doorstep.bench.netns import PREFIX, sweep_stale

    gone = subprocess.Popen(["true"])
    gone.wait()                                      # its process id is free now
    left = f"{PREFIX}-{gone.pid}-abc123"
    mine = f"{PREFIX}-{os.getpid()}-abc123"
    for name in (left, mine):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert left in sweep_stale()
        names = _netns_names()
        assert left not in names and mine in names      # a live run's namespace is kept
    finally:
        for name in (left, mine):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
