"""`doorstep home`: the owner's hub. The blind inbox and the household's web app, on loopback
by default, on the LAN over HTTPS when asked (docs/app.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from doorstep.core.errors import DoorstepError
from doorstep.owner.hub.server import DEFAULT_PORT, HubConfig, HubServer, self_signed
from doorstep.owner.inbox import load_devices
from doorstep.protocol.connect import Broker, plaintext_refusal
from doorstep.protocol.keys import SigningKey

DEFAULT_HOME = "~/.local/share/doorstep"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("home", help="the owner's hub: the blind inbox and the household's "
                       "web app", description="Receive, verify and store sealed artifacts "
                       "(no key that decrypts anything), and serve the web app to the "
                       "household's enrolled browsers, which decrypt. Loopback by default.")
    p.add_argument("--home", default=DEFAULT_HOME, metavar="DIR",
                   help=f"the hub's folder: store/ and hub/ (default {DEFAULT_HOME})")
    p.add_argument("--key", metavar="FILE",
                   help="the inbox's Ed25519 key for receipts (default HOME/inbox.key; made "
                   "if missing, and its public key printed for the doorbell's config)")
    p.add_argument("--device", action="append", default=[], metavar="ID=ed25519:...")
    p.add_argument("--devices", action="append", default=[], metavar="FILE",
                   help="a file of 'ID ed25519:...' lines")
    p.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                   help="where to listen (default loopback; any other needs --tls-*)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--public-host", action="append", default=[], metavar="NAME",
                   help="a name or address the household's browsers use for the hub")
    p.add_argument("--tls-cert", metavar="PEM", help="the owner's certificate (HTTPS)")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
    p.add_argument("--tls-self-signed", action="store_true",
                   help="make a certificate in HOME/hub/tls; enrolment shows its fingerprint")
    p.add_argument("--no-mqtt", action="store_true", help="serve the store only")
    p.add_argument("--host", default="localhost", help="MQTT broker")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    p.add_argument("--mqtt-tls", action="store_true",
                   help="connect to the broker with TLS (needed for a broker on another "
                   "machine, unless --insecure-no-tls)")
    p.add_argument("--insecure-no-tls", action="store_true",
                   help="allow a broker on another machine without TLS: the password and all "
                   "metadata then cross the network in clear")
    p.add_argument("--ca-file", default="", metavar="FILE")
    p.add_argument("--username", default="")
    p.add_argument("--password-file", default="", metavar="FILE")
    p.add_argument("--base", default="doorstep", help="topic root above the device ids")
    p.add_argument("--prefix", default="doorstep/{device}/", help="the devices' mqtt.prefix")
    p.set_defaults(func=run)


def config_from(args: argparse.Namespace) -> HubConfig:
    home = Path(args.home).expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = Path(args.key) if args.key else home / "inbox.key"
    if not key_path.exists():
        key = SigningKey.generate()
        key.save(key_path)
        print(f"made {key_path}; put in each doorbell's config: [owner] inbox_key = "
              f"\"{key.public_text()}\"")
    devices = load_devices(args.device, args.devices)
    if not devices:
        raise DoorstepError("name at least one doorbell with --device or --devices")
    loopback = args.listen in ("127.0.0.1", "::1", "localhost")
    cert = Path(args.tls_cert) if args.tls_cert else None
    tls_key = Path(args.tls_key) if args.tls_key else None
    if args.tls_self_signed:
        cert, tls_key = self_signed(home / "hub" / "tls", args.public_host)
    if (cert is None) != (tls_key is None):
        raise DoorstepError("--tls-cert and --tls-key go together")
    if not loopback and cert is None:
        raise DoorstepError(f"listening on {args.listen} needs HTTPS: give --tls-cert and "
                            "--tls-key, or --tls-self-signed")
    refusal = None if args.no_mqtt else plaintext_refusal(
        args.host, args.mqtt_tls, args.insecure_no_tls, key="--insecure-no-tls")
    if refusal:
        raise DoorstepError(refusal)
    broker = None if args.no_mqtt else Broker(
        host=args.host, port=args.mqtt_port, protocol=args.protocol, tls=args.mqtt_tls,
        ca_file=args.ca_file, username=args.username, password_file=args.password_file)
    return HubConfig(home=home, devices=devices, inbox_key=SigningKey.load(key_path),
                     broker=broker, listen=args.listen, port=args.port,
                     public_hosts=args.public_host, tls_cert=cert, tls_key=tls_key,
                     base=args.base, prefix=args.prefix)


def run(args: argparse.Namespace) -> int:
    try:
        server = HubServer(config_from(args)).start()
    except (DoorstepError, OSError) as exc:
        print(f"doorstep home: {exc}", file=sys.stderr)
        return 2
    print(f"doorstep home: serving {server.url}")
    if server.fingerprint:
        print(f"  certificate SHA-256 fingerprint: {server.fingerprint}")
    print("  enrol a browser: doorstep enroll --home " + str(server.cfg.home))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.serve_until(stop)
    return 0
