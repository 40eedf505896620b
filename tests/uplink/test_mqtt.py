"""The MQTT uplink against a real Mosquitto: MQTT 5 and 3.1.1, TLS with a client certificate and
a password file, a refused password, the retained status with its offline last will, the
priority lane, and the jittered backoff."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import random
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.broker import BrokerTls, Mosquitto
from doorstep.protocol.seal import identity_of, pad_size
from doorstep.protocol.wire import open_sealed_status, unpack_head
from doorstep.uplink.mqtt import Backoff
from tests.faults.harness import (
    DEVICE,
    Party,
    check_store,
    device_outbox,
    device_uplink,
    make_party,
    put_clip,
    put_event,
    running_inbox,
    wait_for,
)


# -- backoff -----------------------------------------------------------------------------------
def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    for n, delay in enumerate(delays):
        assert 0.5 <= delay <= min(8.0, 0.5 * 2 ** n)
    assert delays[0] == 0.5                          # the first retry is quick
    assert max(delays[6:]) > 4.0                     # later ones spread up towards the cap
    assert len({round(d, 6) for d in delays[4:]}) == len(delays[4:])   # jittered, not in step
    backoff.reset()
    assert backoff.next() == 0.5
    spread = [Backoff(0.5, 8.0, random.Random(seed)) for seed in range(20)]
    for b in spread:
        for _ in range(5):
            b.next()
    assert len({round(b.next(), 6) for b in spread}) == 20   # devices do not reconnect together


# -- protocols -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_upload_and_receipts_over_each_protocol(tmp_path: Path, broker: Mosquitto,
                                                protocol: str) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    put_event(box, party)
    put_clip(box, party, 200_000)
    put_event(box, party, "motion", priority=1)
    store = tmp_path / "store"
    with running_inbox(store, party, broker.port, protocol=protocol) as inbox:
        assert inbox.topics()[0].startswith("$share/") == (protocol == "5")
        uplink = device_uplink(box, party, broker.port, protocol=protocol)
        assert uplink.client.protocol == (mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
        uplink.start()
        wait_for(lambda: box.depth == 0, 30, "receipts for everything")
        uplink.stop()
    assert check_store(store, party, last_seq=3, decode=False) == {"event": 2, "clip": 1}


# -- TLS and passwords ---------------------------------------------------------------------------
def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.with_suffix(".key").chmod(0o600)
    return path.with_suffix(".pem")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    """A throwaway CA, a server and a client certificate, and Mosquitto on a TLS listener that
    requires a client certificate and a password (user "porch", password "open sesame")."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doorstep test CA")])
    ca = _cert("doorstep test CA", ca_key, ca_name, ca_key, ca=True)
    _write(pki / "ca", ca, ca_key)
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(pki / name, _cert(name, key, ca_name, ca_key, ca=False, server=server), key)
    passwd = pki / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "porch", "open sesame"],
                   check=True, capture_output=True)
    tls = BrokerTls(pki / "ca.pem", pki / "server.pem", pki / "server.key",
                    require_certificate=True)
    with Mosquitto(tls=tls, password_file=passwd) as broker:
        yield broker, pki


@pytest.mark.slow
def test_tls_with_client_certificate_and_password_file(tmp_path: Path, tls_broker: Any) -> None:
    broker, pki = tls_broker
    (tmp_path / "mqtt-password").write_text("open sesame\n")
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    ring = put_event(box, party)
    sealed = ring.path.read_bytes()
    received: list[bytes] = []

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.tls_set(ca_certs=str(pki / "ca.pem"), certfile=str(pki / "client.pem"),
                    keyfile=str(pki / "client.key"))
    watcher.username_pw_set("porch", "open sesame")
    watcher.on_message = lambda c, u, msg: received.append(bytes(msg.payload))
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(f"doorstep/{DEVICE}/a/+/m", qos=1)
    watcher.loop_start()
    uplink = device_uplink(box, party, broker.port, receipts=False, tls=True,
                           ca_file=str(pki / "ca.pem"), cert_file=str(pki / "client.pem"),
                           key_file=str(pki / "client.key"), username="porch",
                           password_file=str(tmp_path / "mqtt-password"))
    try:
        uplink.start()
        assert uplink.wait_connected(10)
        wait_for(lambda: received and box.depth == 0, 10, "the event over TLS")
    finally:
        uplink.stop()
        watcher.loop_stop()
        watcher.disconnect()
    envelope, _, inline = unpack_head(received[0], identity_of(party.inbox))
    assert envelope == ring.envelope and inline == sealed + bytes(pad_size(len(sealed)) -
                                                                  len(sealed))


@pytest.mark.slow
def test_wrong_password_is_a_permanent_refusal_not_a_retry_loop(
        tmp_path: Path, tls_broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    broker, pki = tls_broker
    caplog.set_level(logging.INFO)
    (tmp_path / "mqtt-password").write_text("not the password\n")
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    uplink = device_uplink(box, party, broker.port, tls=True, ca_file=str(pki / "ca.pem"),
                           cert_file=str(pki / "client.pem"),
                           key_file=str(pki / "client.key"), username="porch",
                           password_file=str(tmp_path / "mqtt-password"))
    attempts = {"n": 0}
    connect = uplink.client.connect

    def counting_connect(*args: Any, **kwargs: Any) -> Any:
        attempts["n"] += 1
        return connect(*args, **kwargs)

    uplink.client.connect = counting_connect  # type: ignore[method-assign]
    uplink.start()
    try:
        wait_for(lambda: "reconnecting in" in caplog.text
                 and "refused the connection" in caplog.text, 10, "the refusal to be handled")
        assert uplink.refused is not None and not uplink.connected
        refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
        assert refusals and refusals[0].levelno == logging.ERROR
        assert "bad credentials" in refusals[0].getMessage()
        retry = next(r.getMessage() for r in caplog.records if "reconnecting in" in r.getMessage())
        assert float(retry.rsplit("in ", 1)[1].split(" s")[0]) >= 30.0
        assert attempts["n"] == 1
        assert "not the password" not in caplog.text           # never log a secret
    finally:
        uplink.stop()


# -- status and last will ------------------------------------------------------------------------
@pytest.mark.slow
def test_status_is_retained_and_an_unclean_loss_publishes_offline(tmp_path: Path,
                                                                  broker: Mosquitto) -> None:
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party, quota_bytes=100_000)
    for _ in range(3):
        put_clip(box, party, 40_000)               # the third evicts the first
    assert box.evictions == 1
    uplink = device_uplink(box, party, broker.port, keepalive=5)
    uplink.start()
    assert uplink.wait_connected(10)
    statuses: list[dict[str, Any]] = []
    retained: list[bool] = []
    got = threading.Condition()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with got:
            statuses.append(_opened(party, msg.payload))
            retained.append(bool(msg.retain))
            got.notify_all()

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = on_message
    try:
        # subscribe only now: the broker hands over the retained status
        wait_for(lambda: _retained_status(broker.port, party) is not None, 10,
                 "a retained status")
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe(f"doorstep/{DEVICE}/status", qos=1)
        watcher.loop_start()
        wait_for(lambda: statuses, 10, "the retained status")
        assert retained[0] and statuses[0]["state"] == "online" and statuses[0]["v"] == 1
        assert statuses[0]["outbox"]["evictions"] == 1
        assert statuses[0]["outbox"]["depth"] == 2
        # the device's connection dies without a DISCONNECT (power cut, kill -9, cable)
        sock = uplink.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: any(s["state"] == "offline" for s in statuses), 20,
                 "the last will")
        # and it comes back by itself
        first_offline = next(i for i, s in enumerate(statuses) if s["state"] == "offline")
        wait_for(lambda: any(s["state"] == "online" for s in statuses[first_offline:]), 20,
                 "the reconnect")
    finally:
        uplink.stop()
        watcher.loop_stop()
        watcher.disconnect()
    # a clean stop leaves "offline" retained too
    wait_for(lambda: (_retained_status(broker.port, party) or {}).get("state") == "offline",
             10, "the retained offline status")


def _opened(party: Party, payload: bytes) -> dict[str, Any]:
    """A status as the owner's hub reads it: unsealed with the inbox key, the device's
    signature checked."""
    return open_sealed_status(bytes(payload), identity_of(party.inbox), party.device.public_key)


def _retained_status(port: int, party: Party) -> dict[str, Any] | None:
    msgs: list[mqtt.MQTTMessage] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        msgs.append(msg)
        done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"doorstep/{DEVICE}/status", qos=1)
    client.loop_start()
    done.wait(1.0)
    client.loop_stop()
    client.disconnect()
    return _opened(party, msgs[-1].payload) if msgs and msgs[-1].retain else None


# -- the priority lane ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_ring_event_overtakes_a_clip_upload(tmp_path: Path, broker: Mosquitto) -> None:
    """Events never queue behind clip chunks: at most the chunks already in flight arrive
    between the moment a ring is committed and the ring itself."""
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    clip = put_clip(box, party, 3_000_000)
    order: list[str] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, msg: order.append(msg.topic)
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(f"doorstep/{DEVICE}/#", qos=1)
    watcher.loop_start()
    in_flight = 2
    uplink = device_uplink(box, party, broker.port, receipts=False, chunk_bytes=8192,
                           chunks_in_flight=in_flight)
    # what the device hands to the broker, in order (the watcher's view lags behind it)
    published: list[str] = []
    real_publish = uplink.client.publish

    def spy(topic: str, *args: Any, **kwargs: Any) -> Any:
        published.append(topic)
        return real_publish(topic, *args, **kwargs)

    uplink.client.publish = spy  # type: ignore[method-assign]
    try:
        uplink.start()
        wait_for(lambda: len(order) > 20, 20, "the clip upload to be under way")
        marks: list[int] = []
        notify = box.on_commit
        assert notify is not None

        def committed(item: Any) -> None:
            marks.append(len(published))      # the moment the ring is committed
            notify(item)

        box.on_commit = committed
        ring = put_event(box, party)
        (mark,) = marks
        ring_topic = f"doorstep/{DEVICE}/a/{ring.seq}/m"
        wait_for(lambda: ring_topic in order, 20, "the ring event")
        ring_at = published.index(ring_topic)
        before = [t for t in published[:ring_at] if not t.endswith("/status")]
        assert len(before) >= 20 and all(t.startswith(f"doorstep/{DEVICE}/a/{clip.seq}/")
                                         for t in before)
        # after the commit, at most the chunks of the send round under way go out first
        assert ring_at - mark <= in_flight
        assert f"doorstep/{DEVICE}/a/{clip.seq}/m" in order
        # and the subscriber has the ring long before the clip's last chunk
        last = f"doorstep/{DEVICE}/a/{clip.seq}/8192/{(pad_size(clip.size) - 1) // 8192}"
        wait_for(lambda: last in order, 30, "the clip's last chunk")
        assert order.index(ring_topic) < order.index(last)
    finally:
        uplink.stop()
        watcher.loop_stop()
        watcher.disconnect()


# -- logs --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_clip_evicted_before_it_was_sent_is_logged_once_not_once_per_chunk(
        tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """The uplink knew a motion clip, then the outbox evicted it for a ring clip: no line per
    chunk that can no longer be read (the run in issue 18 logged 83)."""
    caplog.set_level(logging.INFO)
    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party, quota_bytes=300_000)
    motion = put_clip(box, party, 200_000)
    uplink = device_uplink(box, party, broker.port, receipts=False, chunk_bytes=8192,
                           chunks_in_flight=16)
    uplink.sender.add(motion)               # queued for upload, as start() does
    ring = put_clip(box, party, 200_000, priority=0)
    assert box.get(motion.seq) is None      # evicted for the ring clip
    try:
        uplink.start()
        wait_for(lambda: box.depth == 0 and uplink.sender.pending == 0, 20,
                 f"the ring clip (seq {ring.seq}) to be sent")
    finally:
        uplink.stop()
    vanished = [r for r in caplog.records if f"seq {motion.seq} vanished" in r.getMessage()]
    assert len(vanished) <= 1


# -- reconnecting --------------------------------------------------------------------------------
def test_a_fresh_ring_cuts_a_long_reconnect_wait_short(tmp_path: Path) -> None:
    """The broker has been down a while and the next attempt is far off; a visitor rings: the
    uplink tries again within RING_RETRY, where a motion event would wait its turn."""
    from doorstep.broker import free_port
    from doorstep.uplink.mqtt import RING_RETRY

    party = make_party(tmp_path / "home")
    box = device_outbox(tmp_path / "outbox", party)
    uplink = device_uplink(box, party, free_port())      # never started: only its wait
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (uplink._pause(1000.0), done.set()), daemon=True)
    waiter.start()
    put_event(box, party, "motion", priority=1)
    assert not done.wait(RING_RETRY + 0.5)
    put_event(box, party)
    assert done.wait(10), "a ring did not cut the reconnect wait short"
