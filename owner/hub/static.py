"""The web app's files: served from the package's static/ folder, read once. The vendored npm
modules stay byte for byte as npm delivered them (static/vendor/SHA256SUMS); their bare import
specifiers ("@noble/hashes/sha2.js") are pointed at the vendored copies as they are served,
because a service worker cannot use an import map. Nothing is built, on the Pi or anywhere."""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR_URL = "/static/vendor/"
_BARE = re.compile(rb"""((?:import|export)\s*(?:[^"';]*?\sfrom\s*)?)"""
                   rb"""(["'])(@?[a-z][^"'.][^"']*)\2""")
_MAIN = {b"age-encryption": b"age-encryption/dist/index.js",
         b"@scure/base": b"@scure/base/index.js"}
TYPES = {".js": "text/javascript", ".json": "application/json", ".webmanifest":
         "application/manifest+json", ".html": "text/html", ".css": "text/css",
         ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _point(match: re.Match[bytes]) -> bytes:
    spec = match.group(3)
    target = _MAIN.get(spec, spec)
    return match.group(1) + match.group(2) + VENDOR_URL.encode() + target + match.group(2)


def load(root: Path = STATIC) -> dict[str, Asset]:
    """URL path -> asset, for every file under ``root`` (the service worker at the root of
    the site, so its scope is the whole app)."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        body = path.read_bytes()
        if path.suffix == ".js":
            body = _BARE.sub(_point, body)
        ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or \
            "application/octet-stream"
        url = {"index.html": "/", "sw.js": "/sw.js",
               "manifest.webmanifest": "/manifest.webmanifest"}.get(rel, f"/static/{rel}")
        assets[url] = Asset(body, ctype, hashlib.sha256(body).hexdigest()[:16])
    return assets
