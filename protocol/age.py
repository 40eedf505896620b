"""The age v1 file format (https://age-encryption.org/v1) with X25519 recipients, streamed both
ways, plus the header re-wrap used for sharing. Built on the `cryptography` library's primitives.

Chunks in error messages are counted from 1. A file key lives only in memory, in a bytearray that is
zeroed once the header and payload keys are derived (copies inside OpenSSL are out of our reach).
"""

from __future__ import annotations

import base64
import binascii
import hmac as std_hmac
import io
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from doorstep.core.errors import KeyFileError, SealError
from doorstep.protocol.bech32 import bech32_decode, bech32_encode

VERSION_LINE = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024                      # plaintext bytes per STREAM chunk
TAG = 16
ENC_CHUNK = CHUNK + TAG                # ciphertext bytes per full chunk
NONCE_LEN = 16
FILE_KEY_LEN = 16
MAX_HEADER = 256 * 1024                # far beyond any sane recipient list
_X25519_INFO = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)

# --- keys ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class X25519Recipient:
    """An age X25519 recipient, written "age1..."."""

    public: bytes

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        text = text.strip()
        try:
            hrp, data = bech32_decode(text)
        except ValueError as e:
            raise KeyFileError(f"not an age recipient {text[:12]!r}...: {e}") from None
        if hrp != "age" or len(data) != 32 or text != text.lower():
            raise KeyFileError(f"not an age X25519 recipient (want 'age1...'): {text[:12]!r}...")
        return cls(data)

    def __str__(self) -> str:
        return bech32_encode("age", self.public)

    def _key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.public)


class X25519Identity:
    """An age X25519 identity (secret key), written "AGE-SECRET-KEY-1..."."""

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key
        self.recipient = X25519Recipient(key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        text = text.strip()
        if text.upper().startswith("AGE-PLUGIN-"):
            raise KeyFileError("age plugin identities are not supported, only AGE-SECRET-KEY-1...")
        try:
            hrp, data = bech32_decode(text)
        except ValueError as e:
            raise KeyFileError(f"not an age secret key: {e}") from None
        if hrp != "age-secret-key-" or len(data) != 32 or text != text.upper():
            raise KeyFileError("not an age X25519 secret key (want 'AGE-SECRET-KEY-1...')")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def __str__(self) -> str:
        return bech32_encode("age-secret-key-", self._key.private_bytes_raw()).upper()

    def __repr__(self) -> str:  # never show the secret
        return f"X25519Identity(recipient={self.recipient})"

    def unwrap(self, stanza: Stanza) -> bytearray | None:
        """The file key if this X25519 stanza is addressed to us, else None."""
        share, body = _x25519_parts(stanza)
        try:
            secret = self._key.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            raise SealError("X25519 stanza has a low-order share (malicious file?)") from None
        salt = share + self.recipient.public
        wrap_key = HKDF(hashes.SHA256(), 32, salt, _X25519_INFO).derive(secret)
        try:
            return bytearray(ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, body, None))
        except InvalidTag:
            return None


def load_identities(path: str | os.PathLike[str]) -> list[X25519Identity]:
    """Read an age identity file as `age-keygen -o` writes it ('#' comments, blank lines)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: cannot read identity file: {e}") from None
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(X25519Identity.parse(line))
        except KeyFileError as e:
            raise KeyFileError(f"{path}:{n}: {e}") from None
    if not found:
        raise KeyFileError(f"{path}: no identities found (expected an AGE-SECRET-KEY-1... line)")
    return found


# --- header -------------------------------------------------------------------------------------

_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_ARG = re.compile(rb"[\x21-\x7e]+")


def b64encode(data: bytes) -> bytes:
    """Standard base64 without padding, as age writes it."""
    return base64.b64encode(data).rstrip(b"=")


def b64decode(text: bytes) -> bytes:
    """Strict, canonical unpadded base64; raises ValueError."""
    if not _B64_CHARS.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("invalid base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("invalid base64") from None
    if b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data


@dataclass(frozen=True)
class Stanza:
    args: tuple[bytes, ...]
    body: bytes

    def encode(self) -> bytes:
        text = b64encode(self.body)
        lines = [text[i:i + 64] for i in range(0, len(text), 64)]
        if not lines or len(lines[-1]) == 64:
            lines.append(b"")
        return b"-> " + b" ".join(self.args) + b"\n" + b"".join(ln + b"\n" for ln in lines)


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes        # the header bytes up to and including "---"
    length: int             # bytes from the start of the file to the payload nonce


def _x25519_parts(stanza: Stanza) -> tuple[bytes, bytes]:
    try:
        if len(stanza.args) != 2:
            raise ValueError("wants exactly one argument")
        share = b64decode(stanza.args[1])
    except ValueError as e:
        raise SealError(f"malformed X25519 stanza: {e}") from None
    if len(share) != 32 or len(stanza.body) != FILE_KEY_LEN + TAG:
        raise SealError("malformed X25519 stanza: wrong share or body length")
    return share, stanza.body


def _line(src: BinaryIO, consumed: int) -> bytes:
    limit = min(4096, MAX_HEADER - consumed)
    line = src.readline(limit)
    if not line.endswith(b"\n"):
        if len(line) == limit:
            raise SealError("malformed age header: line or header too long")
        raise SealError("truncated: the age header ends early")
    return line


def read_header(src: BinaryIO) -> Header:
    """Parse an age header, leaving src positioned at the payload nonce."""
    first = src.readline(len(VERSION_LINE))
    if first != VERSION_LINE:
        if first.startswith(b"-----BEGIN AGE ENCRYPTED FILE"):
            raise SealError("ASCII-armored age files are not supported; use binary age files")
        if first.startswith(b"age-encryption.org/"):
            raise SealError(f"unsupported age version {first.strip()[:40]!r}")
        raise SealError("not an age file")
    raw = bytearray(first)
    stanzas: list[Stanza] = []
    while True:
        line = _line(src, len(raw))
        raw += line
        if line.startswith(b"---"):
            if not line.startswith(b"--- ") or not stanzas:
                raise SealError("malformed age header: bad MAC line or no recipients")
            try:
                mac = b64decode(line[4:-1])
            except ValueError:
                mac = b""
            if len(mac) != 32:
                raise SealError("malformed age header: bad MAC encoding")
            return Header(tuple(stanzas), mac, bytes(raw[:len(raw) - len(line) + 3]), len(raw))
        if not line.startswith(b"-> "):
            raise SealError(f"malformed age header: unexpected line {line[:24]!r}")
        args = tuple(line[3:-1].split(b" "))
        if not all(_ARG.fullmatch(a) for a in args):
            raise SealError("malformed age header: bad stanza arguments")
        body = bytearray()
        while True:
            bl = _line(src, len(raw))
            raw += bl
            if len(bl) > 65:
                raise SealError("malformed age header: stanza body line too long")
            try:
                body += b64decode(bl[:-1])
            except ValueError:
                raise SealError("malformed age header: bad stanza body") from None
            if len(bl) < 65:
                break
        stanzas.append(Stanza(args, bytes(body)))


def _hkdf(key: bytes | bytearray, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(key)


def _header_mac(file_key: bytearray, mac_input: bytes) -> bytes:
    h = hmac.HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    h.update(mac_input)
    return h.finalize()


def _wrap(file_key: bytearray, recipient: X25519Recipient) -> Stanza:
    eph = X25519PrivateKey.generate()
    share = eph.public_key().public_bytes_raw()
    secret = eph.exchange(recipient._key())
    wrap_key = _hkdf(secret, share + recipient.public, _X25519_INFO)
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, bytes(file_key), None)
    return Stanza((b"X25519", b64encode(share)), body)


def _write_header(file_key: bytearray, recipients: Sequence[X25519Recipient]) -> bytes:
    if not recipients:
        raise SealError("no recipients: at least one age1... recipient is required")
    mac_input = VERSION_LINE + b"".join(_wrap(file_key, r).encode() for r in recipients) + b"---"
    return mac_input + b" " + b64encode(_header_mac(file_key, mac_input)) + b"\n"


def unwrap_file_key(header: Header, identities: Sequence[X25519Identity]) -> bytearray:
    """Find our stanza, recover the file key and check the header MAC with it."""
    for stanza in header.stanzas:
        if stanza.args[:1] != (b"X25519",):
            continue
        for ident in identities:
            key = ident.unwrap(stanza)
            if key is None:
                continue
            if not std_hmac.compare_digest(_header_mac(key, header.mac_input), header.mac):
                _zero(key)
                raise SealError("header MAC mismatch (header corrupt or tampered)")
            return key
    names = ", ".join(str(i.recipient)[:16] + "..." for i in identities)
    raise SealError(f"no identity matches any recipient (tried {names or 'none'})")


def _zero(buf: bytearray) -> None:
    buf[:] = bytes(len(buf))


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


# --- streaming encryption -----------------------------------------------------------------------

class Sink(Protocol):
    """Where ciphertext goes: anything with ``write(bytes)``, such as a file or an outbox entry."""

    def write(self, data: bytes, /) -> object: ...


class AgeWriter:
    """Seal a stream to age recipients. Each full 64 KiB chunk is sealed and written to `sink` as
    soon as the next byte arrives; so at most one chunk of plaintext is ever held in memory.

    One full chunk is held back until more data (or close()) shows whether it is the last, so a
    plaintext that is a non-zero multiple of 64 KiB ends in a full final chunk, never in an empty
    one (age 1.1.1 rejects the latter). close() does not close `sink`.
    """

    def __init__(self, sink: Sink, recipients: Sequence[X25519Recipient]) -> None:
        file_key = bytearray(os.urandom(FILE_KEY_LEN))
        try:
            header = _write_header(file_key, recipients)
            nonce = os.urandom(NONCE_LEN)
            self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        finally:
            _zero(file_key)
        self._sink = sink
        self._buf = bytearray()
        self._counter = 0
        self._closed = False
        sink.write(header + nonce)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed AgeWriter")
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            if len(self._buf) == CHUNK:          # more data: the held chunk is not the last
                self._seal(last=False)
            take = min(CHUNK - len(self._buf), len(view) - pos)
            self._buf += view[pos:pos + take]
            pos += take
        return len(view)

    def _seal(self, last: bool) -> None:
        nonce = _chunk_nonce(self._counter, last)
        self._sink.write(self._aead.encrypt(nonce, bytes(self._buf), None))
        _zero(self._buf)
        self._buf.clear()
        self._counter += 1

    def close(self) -> None:
        """Write the final chunk. Idempotent."""
        if not self._closed:
            self._seal(last=True)
            self._closed = True

    def __enter__(self) -> AgeWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:                      # never leave a valid-looking final chunk after a failure
            _zero(self._buf)
            self._closed = True


def whole_chunks_length(src: BinaryIO, size: int) -> int:
    """For an age stream cut off at ``size`` bytes (a crash while writing): the length of its
    longest prefix that ends on a whole payload chunk, or 0 if not even one chunk is whole."""
    header = read_header(src)
    start = header.length + NONCE_LEN
    chunks = (size - start) // ENC_CHUNK if size > start else 0
    return start + chunks * ENC_CHUNK if chunks > 0 else 0


def encrypt(data: bytes, recipients: Sequence[X25519Recipient]) -> bytes:
    """Seal `data` to `recipients` as one age file in memory."""
    out = io.BytesIO()
    with AgeWriter(out, recipients) as w:
        w.write(data)
    return out.getvalue()


# --- streaming decryption -----------------------------------------------------------------------

class AgeReader:
    """Open an age file from a stream. The header (and its MAC) is checked on construction; each
    chunk is released only after it authenticates. Iterate for chunks, or read()."""

    def __init__(self, source: BinaryIO, identities: Sequence[X25519Identity], *,
                 allow_truncated: bool = False) -> None:
        """``allow_truncated``: accept a stream that ends after a whole middle chunk (a
        recording cut short by a crash) and set ``truncated``; every chunk still authenticates.
        """
        self.allow_truncated = allow_truncated
        self.truncated = False
        name = getattr(source, "name", None)
        self._where = f"{name}: " if isinstance(name, str) else ""
        self._src = source
        try:
            header = read_header(source)
            file_key = unwrap_file_key(header, identities)
        except SealError as e:
            raise SealError(f"{self._where}{e}") from None
        try:
            nonce = _read_exact(source, NONCE_LEN)
            if len(nonce) != NONCE_LEN:
                raise self._err("truncated: the payload nonce is missing")
            self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        finally:
            _zero(file_key)
        self._ahead = bytearray()
        self._chunks = 0
        self._done = False
        self._pending = b""

    def _err(self, msg: str) -> SealError:
        return SealError(f"{self._where}{msg}")

    def next_chunk(self) -> bytes | None:
        """The next authenticated plaintext chunk, or None after the final one."""
        if self._done:
            return None
        self._ahead += _read_exact(self._src, ENC_CHUNK + 1 - len(self._ahead))
        n = self._chunks + 1
        if len(self._ahead) > ENC_CHUNK:                    # more follows: must be a middle chunk
            chunk = bytes(self._ahead[:ENC_CHUNK])
            del self._ahead[:ENC_CHUNK]
            plain = self._open(chunk, last=False)
            if plain is None:
                if self._open(chunk, last=True) is not None:
                    raise self._err(f"trailing data after final chunk {n}")
                raise self._err(f"chunk {n} failed authentication (corrupt or tampered)")
        else:
            chunk = bytes(self._ahead)
            self._ahead.clear()
            if not chunk:
                raise self._err(f"truncated: ended after chunk {self._chunks} "
                                "without a final chunk")
            plain = self._open(chunk, last=True)
            if plain is None:
                middle = self._open(chunk, last=False) if len(chunk) == ENC_CHUNK else None
                if middle is not None and self.allow_truncated:
                    self.truncated = True
                    self._done = True
                    self._chunks = n
                    return middle
                if middle is not None:
                    raise self._err(f"truncated: ended after chunk {n} without a final chunk")
                raise self._err(f"chunk {n} failed authentication "
                                "(corrupt, tampered, truncated or followed by extra data)")
            if not plain and self._chunks:
                raise self._err(f"final chunk {n} is empty after a full chunk (invalid age file)")
            self._done = True
        self._chunks = n
        return plain

    def _open(self, chunk: bytes, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(_chunk_nonce(self._chunks, last), chunk, None)
        except InvalidTag:
            return None

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.next_chunk()) is not None:
            yield chunk

    def read(self, size: int = -1) -> bytes:
        """Up to `size` plaintext bytes (all if negative); b"" at the end."""
        out = bytearray(self._pending)
        while size < 0 or len(out) < size:
            chunk = self.next_chunk()
            if chunk is None:
                break
            out += chunk
        if size >= 0:
            self._pending = bytes(out[size:])
            del out[size:]
        else:
            self._pending = b""
        return bytes(out)


def _read_exact(src: BinaryIO, n: int) -> bytes:
    parts = []
    while n > 0:
        part = src.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identities: Sequence[X25519Identity]) -> int:
    """Decrypt src into dst chunk by chunk; returns the plaintext length."""
    total = 0
    for chunk in AgeReader(src, identities):
        dst.write(chunk)
        total += len(chunk)
    return total


def decrypt(data: bytes, identities: Sequence[X25519Identity]) -> bytes:
    """Open an age file held in memory."""
    return AgeReader(io.BytesIO(data), identities).read()


# --- sharing ------------------------------------------------------------------------------------

def rewrap(src: BinaryIO, identities: Sequence[X25519Identity],
           new_recipients: Sequence[X25519Recipient], dst: BinaryIO) -> int:
    """Write to dst the same age file readable by `new_recipients` only: a new header (new stanzas,
    new MAC) over the same file key, then the payload copied byte for byte. The payload is not
    decrypted here; its chunks are authenticated by whoever opens dst. Returns the header length.
    """
    header = read_header(src)
    file_key = unwrap_file_key(header, identities)
    try:
        new_header = _write_header(file_key, new_recipients)
    finally:
        _zero(file_key)
    dst.write(new_header)
    shutil.copyfileobj(src, dst, 1024 * 1024)
    return len(new_header)


def same_file_key(original: Header, shared: Header,
                  identities: Sequence[X25519Identity]) -> bool:
    """Whether ``original``'s header MAC verifies under the file key ``identities`` unwrap
    from ``shared``: the two headers wrap one file key, so the payload under them is the same
    sealing (how a share's recipient checks that the device's signed header and the re-wrapped
    one belong together, without anyone's private key but their own)."""
    key = unwrap_file_key(shared, identities)
    try:
        return std_hmac.compare_digest(_header_mac(key, original.mac_input), original.mac)
    finally:
        _zero(key)


def header_length(src: BinaryIO) -> int:
    """Bytes from the start of an age file to its payload nonce (src is read past the header)."""
    return read_header(src).length
