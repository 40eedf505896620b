"""How either side reaches the broker: the address and credentials (`Broker`), and a paho
client made from them. The device's [mqtt] section and the owner's command-line flags both
become a `Broker`, so neither side imports the other's settings."""

from __future__ import annotations

import argparse
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from doorstep.core.errors import ConfigError, DoorstepError


@dataclass(frozen=True)
class Broker:
    """Where the broker is and how to log in. ``password_file`` is a path already resolved
    by the caller; the password itself is read only when the client is made."""

    host: str = "localhost"
    port: int = 1883
    protocol: str = "5"           # "5" or "3.1.1"
    keepalive: int = 30
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password_file: str = ""


# The largest MQTT packet each side accepts (MQTT 5 Maximum Packet Size, sent in CONNECT: the
# broker then never delivers a bigger one, so paho never buffers it). The device receives only
# receipts, commands and the inbox's status (at most 4 KiB each); the inbox receives artifacts
# (a chunk, or an event with its thumbnail: at most MAX_SINGLE plus an envelope).
DEVICE_MAX_PACKET = 64 * 1024
INBOX_MAX_PACKET = 4 * 1024 * 1024 + 64 * 1024


def connect_properties(client: mqtt.Client, max_packet: int) -> Properties | None:
    """CONNECT properties that cap what the broker may send us (MQTT 5 only: under 3.1.1
    there is no such property, and only the broker's own max_packet_size protects us)."""
    if client.protocol != mqtt.MQTTv5:
        return None
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = max_packet
    return props


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: traffic that never leaves this machine."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plaintext_refusal(host: str, tls: bool, accepted: bool, *, key: str) -> str | None:
    """Why connecting to ``host`` without TLS is refused, or None. Without TLS the broker
    password and every message's metadata cross the network in clear; that is allowed only to
    this machine, or when ``accepted`` (the setting ``key`` names the risk)."""
    if tls or accepted or is_loopback(host):
        return None
    return (f"TLS is off for {host}, so the broker password and every message would cross the "
            f"network in clear: turn TLS on, or set {key} to accept that risk")


def make_client(broker: Broker, client_id: str, *,
                reconnect_on_failure: bool = False) -> mqtt.Client:
    """A paho client for ``broker``: protocol, TLS, username and password file. The device's
    Uplink reconnects by itself (with jitter), so paho's own reconnect is off unless asked
    for, as the inbox does."""
    protocol = mqtt.MQTTv5 if broker.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         reconnect_on_failure=reconnect_on_failure)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    if broker.tls:
        try:
            client.tls_set(ca_certs=broker.ca_file or None, certfile=broker.cert_file or None,
                           keyfile=broker.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"mqtt.ca_file/cert_file/key_file: cannot load: {exc}"]) from exc
    if broker.username:
        password = None
        if broker.password_file:
            try:
                password = Path(broker.password_file).read_text().strip()
            except OSError as exc:
                raise ConfigError([f"mqtt.password_file: cannot read "
                                   f"{broker.password_file!r}: {exc.strerror}"]) from exc
        client.username_pw_set(broker.username, password)
    return client


def add_broker_arguments(p: argparse.ArgumentParser) -> None:
    """The broker flags the owner's commands share (`doorstep inbox`, `doorstep cmd`). TLS is
    on unless --no-tls, and --no-tls to another machine also needs --insecure-no-tls."""
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, metavar="N", help="default 8883, or 1883 with --no-tls")
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    p.add_argument("--no-tls", dest="tls", action="store_false",
                   help="connect without TLS (only to this machine, unless --insecure-no-tls)")
    p.add_argument("--insecure-no-tls", action="store_true",
                   help="allow --no-tls to another machine: the password and all metadata "
                   "then cross the network in clear")
    p.add_argument("--ca-file", default="", metavar="FILE", help="CA certificates for TLS")
    p.add_argument("--client-cert", default="", metavar="FILE", help="TLS client certificate")
    p.add_argument("--client-key", default="", metavar="FILE", help="its private key")
    p.add_argument("--username", default="", help="MQTT username")
    p.add_argument("--password-file", default="", metavar="FILE",
                   help="file holding the MQTT password (never on the command line)")


def broker_from_args(args: argparse.Namespace) -> Broker:
    """The Broker the flags of ``add_broker_arguments`` describe; raises DoorstepError when
    they would send the password in clear over the network."""
    refusal = plaintext_refusal(args.host, args.tls, args.insecure_no_tls,
                                key="--insecure-no-tls")
    if refusal:
        raise DoorstepError(refusal)
    return Broker(host=args.host, port=args.port or (8883 if args.tls else 1883),
                  protocol=args.protocol, tls=args.tls, ca_file=args.ca_file,
                  cert_file=args.client_cert, key_file=args.client_key,
                  username=args.username, password_file=args.password_file)
