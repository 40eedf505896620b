"""The hub on HTTPS with a self-signed certificate (`doorstep home --tls-self-signed`): the
fingerprint `doorstep enroll` prints is the certificate the hub serves, and a browser that
pinned it (Chromium's SPKI allow-list stands for the person who compared the fingerprint and
accepted that one certificate) enrols and works over HTTPS, with a Secure session cookie and
HSTS, while a hub with any other certificate is refused by it."""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from doorstep.owner.hub.server import HubConfig, HubServer, self_signed
from doorstep.owner.keys import make_owner
from doorstep.protocol.keys import SigningKey
from tests.owner.hub.rig import chromium, have_chromium, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_chromium(), reason="needs Debian's chromium and "
                                 "chromium-driver (make setup installs them)")]


def spki_pin(cert: Path) -> str:
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def hub_on_tls(home: Path, device: SigningKey) -> HubServer:
    cert, key = self_signed(home / "hub" / "tls", [])
    return HubServer(HubConfig(home=home, devices={"porch": device.public_key},
                               inbox_key=SigningKey.generate(), port=0, tls_cert=cert,
                               tls_key=key)).start()


def test_a_pinned_self_signed_certificate_serves_the_app_over_https(tmp_path: Path) -> None:
    device = SigningKey.generate()
    (tmp_path / "owner").mkdir()
    make_owner(tmp_path / "owner")
    hub = hub_on_tls(tmp_path / "home", device)
    other = hub_on_tls(tmp_path / "impostor", device)     # same names, another certificate
    driver = chromium(tmp_path / "profile", extra=(
        f"--ignore-certificate-errors-spki-list={spki_pin(tmp_path / 'home/hub/tls/cert.pem')}",))
    try:
        assert hub.url.startswith("https://127.0.0.1:")
        printed = subprocess.run(
            [sys.executable, "-m", "doorstep.cli", "enroll", "--home", str(tmp_path / "home"),
             "--key", str(tmp_path / "owner" / "owner-command.key"), "--no-wait", "--no-qr"],
            capture_output=True, text=True, timeout=60, check=True).stdout
        code = re.search(r"Enrolment code: (\S+)", printed).group(1)  # type: ignore[union-attr]
        shown = re.search(r"must show SHA-256 ([0-9A-F:]{95})", printed)
        assert shown is not None, printed
        # what the hub serves is what enrolment told the person to check
        served = ssl.get_server_certificate(("127.0.0.1", hub.port))
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).hexdigest().upper()
        assert shown.group(1).replace(":", "") == digest
        assert f"Open {hub.url}#enrol={code}" in printed

        driver.get(f"{hub.url}#enrol={code}")
        wait_for(lambda: driver.find_elements("id", "enrol"), 30, "the enrolment form")
        driver.find_element("id", "enrol").click()
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready"), 30,
                 "the app over HTTPS")
        assert driver.execute_script("return window.isSecureContext && location.protocol") \
            == "https:"
        cookies = driver.execute_cdp_cmd("Network.getCookies", {"urls": [hub.url]})["cookies"]
        session = next(c for c in cookies if c["name"] == "ds_session")
        assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
        context = ssl.create_default_context(cafile=str(tmp_path / "home/hub/tls/cert.pem"))
        with urllib.request.urlopen(hub.url, context=context, timeout=10) as r:
            assert "max-age=" in r.headers["Strict-Transport-Security"]

        # the pinned browser refuses a hub with any other certificate
        driver.get(other.url + "#timeline")
        assert not driver.find_elements("id", "main")
        assert not driver.execute_script("return document.body && document.body.dataset.ready")
    finally:
        driver.quit()
        hub.stop()
        other.stop()
