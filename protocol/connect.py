"""How either side reaches the broker: the address and credentials (`Broker`), and a paho
client made from them. The device's [mqtt] section and the owner's command-line flags both
become a `Broker`, so neither side imports the other's settings."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from doorstep.core.errors import ConfigError


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
