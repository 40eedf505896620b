"""The hub put together and run: the inbox worker (verified ciphertext into the store, signed
receipts), the relay (status, answers, commands), the web app, and notifications for what
arrives. ``HubServer`` runs it all on its own asyncio loop in a thread, so `doorstep home`,
the demo and the tests start it the same way."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from doorstep.core.fsutil import write_atomic
from doorstep.owner.hub import push
from doorstep.owner.hub.app import Hub, make_app
from doorstep.owner.hub.enrol import Codes
from doorstep.owner.hub.live import Relay
from doorstep.owner.hub.members import Household
from doorstep.owner.hub.timeline import Entry, Timeline
from doorstep.owner.inbox import Inbox
from doorstep.owner.store import InboxStore, Stored
from doorstep.protocol.connect import Broker, make_client
from doorstep.protocol.keys import SigningKey
from doorstep.protocol.seal import identity_of

log = logging.getLogger(__name__)

DEFAULT_PORT = 8750


@dataclass
class HubConfig:
    home: Path
    devices: dict[str, Ed25519PublicKey]
    inbox_key: SigningKey
    broker: Broker | None = None        # None: no MQTT (serve a store as it is)
    listen: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    public_hosts: list[str] = field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    base: str = "doorstep"
    prefix: str = "doorstep/{device}/"


class HubServer:
    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        home = cfg.home
        (home / "hub").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = InboxStore(home / "store", cfg.devices)
        self.hub = Hub(home=home, store=home / "store",
                       household=Household(home / "hub" / "browsers.json"),
                       codes=Codes(home / "hub" / "enrol"),
                       timeline=Timeline(home / "store"),
                       vapid=push.Vapid(home / "hub" / "vapid.pem"),
                       tls=cfg.tls_cert is not None)
        self.loop = asyncio.new_event_loop()
        self.inbox: Inbox | None = None
        self.port = cfg.port
        self.fingerprint = ""
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self.pushes = 0          # push messages handed to push services (for the bench)

    @property
    def url(self) -> str:
        host = self.cfg.public_hosts[0] if self.cfg.public_hosts else (
            "127.0.0.1" if self.cfg.listen in ("127.0.0.1", "0.0.0.0", "::") else
            self.cfg.listen)
        return f"{'https' if self.hub.tls else 'http'}://{host}:{self.port}/"

    def start(self, timeout: float = 30.0) -> HubServer:
        self._thread = threading.Thread(target=self._run, name="hub", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the hub did not start")
        if self.cfg.broker is not None:
            b = self.cfg.broker
            self.hub.relay = Relay(b, self.loop, devices=self.cfg.devices,
                                   identity=identity_of(self.cfg.inbox_key), base=self.cfg.base,
                                   prefix=self.cfg.prefix,
                                   on_status=self._status)
            self.hub.relay.on_live = self.hub.feeds.publish
            self.hub.relay.start()
            client = make_client(b, f"doorstep-hub-inbox-{int(time.time() * 1000)}",
                                 reconnect_on_failure=True)
            self.inbox = Inbox(self.store, self.cfg.inbox_key, host=b.host, port=b.port,
                               base=self.cfg.base, protocol=b.protocol, client=client,
                               on_stored=self._stored_threadsafe)
            self.inbox.start()
        write_atomic(self.cfg.home / "hub" / "url", json.dumps(
            {"url": self.url, "fingerprint": self.fingerprint}).encode())
        return self

    def stop(self) -> None:
        if self.inbox is not None:
            self.inbox.stop()
        if self.hub.relay is not None:
            self.hub.relay.stop()
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)

    def serve_until(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set or Ctrl-C, then stop."""
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        cfg = self.cfg
        context = None
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            self.fingerprint = cert_fingerprint(cfg.tls_cert)
        self._runner = web.AppRunner(make_app(self.hub), access_log=None,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.listen, cfg.port, ssl_context=context)
        await site.start()
        if self.port == 0 and self._runner.addresses:
            self.port = int(self._runner.addresses[0][1])
        names = {"127.0.0.1", "localhost", "[::1]", *cfg.public_hosts}
        if cfg.listen not in ("0.0.0.0", "::"):
            names.add(cfg.listen)
        self.hub.hosts = {f"{n}:{self.port}" for n in names}
        self._ready.set()
        sweep = self.loop.create_task(self._sweep())
        await self._stop.wait()
        sweep.cancel()
        await self._runner.cleanup()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(30)
            self.hub.codes.sweep()

    # -- what arrives ---------------------------------------------------------------------------
    def _status(self, device: str, body: dict[str, object]) -> None:
        self.hub.bus.publish({"type": "status", "device": device, "status": body})

    def _stored_threadsafe(self, stored: Stored) -> None:
        self.loop.call_soon_threadsafe(self.stored, stored.device)

    def stored(self, device: str) -> None:
        """New artifacts of ``device`` are in the store: tell the open apps, and push
        events, and then their thumbnails, to the browsers that want them. A ring's event
        fits inside its push message and shows at once; its picture is fetched from the hub
        by the service worker when the thumbnail's push comes, and added to the same
        notification. A visitor's voicemail is pushed too (the push says which sealed file to
        fetch; the worker verifies and decrypts it before it says "Voicemail")."""
        for entry in self.hub.timeline.refresh(device):
            self.hub.bus.publish({"type": "stored", **entry.json()})
            if entry.kind in ("event", "thumbnail", "voicemail") and entry.priority <= 1:
                self.loop.create_task(self._push(entry))

    async def _push(self, entry: Entry) -> None:
        ring = entry.priority == 0
        now = datetime.datetime.now(datetime.UTC)
        minutes = now.hour * 60 + now.minute
        targets = [b for b in self.hub.household.browsers.values() if b.push and (
            ring or (entry.device in b.motion
                     and not push.quiet_now(b.quiet, b.tz_offset, minutes)))]
        if not targets:
            return
        folder = self.hub.store / entry.device
        data = push.payload(entry.device, entry.seq, entry.kind, entry.priority,
                            entry.created, (folder / f"{entry.name}.env").read_bytes(),
                            (folder / f"{entry.name}.age").read_bytes())
        for browser in targets:
            assert browser.push is not None
            status = await self.loop.run_in_executor(
                None, push.send, browser.push, data, self.hub.vapid)
            self.pushes += 1
            if status in (404, 410):
                log.info("hub: %s's push subscription is gone", browser.label)
                self.hub.household.update(browser.id, push=None)


def cert_fingerprint(cert: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def self_signed(folder: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A certificate for the hub's LAN names, made once (its fingerprint is what enrolment
    pins); the key stays in the hub's folder, 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert, key_path = folder / "cert.pem", folder / "key.pem"
    if cert.exists() and key_path.exists():
        return cert, key_path
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in ["localhost", "127.0.0.1", *hosts]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doorstep hub")])
    built = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=3650))
             .add_extension(x509.SubjectAlternativeName(names), critical=False)
             .sign(key, hashes.SHA256()))
    write_atomic(key_path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=0o600)
    write_atomic(cert, built.public_bytes(serialization.Encoding.PEM))
    return cert, key_path
