"""Our age v1 implementation against the real `age` CLI, and how it fails on damaged files."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from doorstep.core.errors import KeyFileError, SealError
from doorstep.protocol import age

SIZES = [0, 1, 1000, 65535, 65536, 65537, 131072, 200000]


def plaintext(n: int) -> bytes:
    return os.urandom(n)


def keygen(path: Path) -> str:
    """Make an identity file with age-keygen; return its recipient."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    out = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True)
    return out.stdout.decode().strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    d = tmp_path_factory.mktemp("keys")
    return [(d / f"k{i}.txt", keygen(d / f"k{i}.txt")) for i in range(3)]


def age_decrypt(data: bytes, keyfile: Path) -> bytes:
    r = subprocess.run(["age", "-d", "-i", str(keyfile)], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_bech32_keys_match_age_keygen(keys: list[tuple[Path, str]]) -> None:
    keyfile, recipient = keys[0]
    [ident] = age.load_identities(keyfile)
    assert str(ident.recipient) == recipient
    assert str(ident) in keyfile.read_text()
    assert str(age.X25519Recipient.parse(recipient)) == recipient
    typo = recipient[:-3] + ("q" if recipient[-3] != "q" else "p") + recipient[-2:]
    with pytest.raises(KeyFileError, match="bad checksum"):
        age.X25519Recipient.parse(typo)


def test_keys_we_make_work_with_the_cli(tmp_path: Path) -> None:
    ident = age.X25519Identity.generate()
    keyfile = tmp_path / "ours.txt"
    keyfile.write_text(f"# public key: {ident.recipient}\n\n{ident}\n")
    out = subprocess.run(["age-keygen", "-y", str(keyfile)], check=True, capture_output=True)
    assert out.stdout.decode().strip() == str(ident.recipient)
    ct = subprocess.run(["age", "-r", str(ident.recipient)], input=b"hi", check=True,
                        capture_output=True).stdout
    assert age.decrypt(ct, age.load_identities(keyfile)) == b"hi"


@pytest.mark.parametrize("size", SIZES)
def test_our_encrypt_opens_with_age(size: int, keys: list[tuple[Path, str]]) -> None:
    data = plaintext(size)
    one = age.encrypt(data, [age.X25519Recipient.parse(keys[0][1])])
    assert age_decrypt(one, keys[0][0]) == data
    three = age.encrypt(data, [age.X25519Recipient.parse(r) for _, r in keys])
    for keyfile, _ in keys:
        assert age_decrypt(three, keyfile) == data


@pytest.mark.parametrize("size", SIZES)
def test_age_encrypt_opens_with_ours(size: int, keys: list[tuple[Path, str]]) -> None:
    data = plaintext(size)
    ids = age.load_identities(keys[1][0])
    by_r = subprocess.run(["age", "-r", keys[1][1], "-r", keys[2][1]], input=data,
                          check=True, capture_output=True).stdout
    assert age.decrypt(by_r, ids) == data
    by_i = subprocess.run(["age", "-e", "-i", str(keys[1][0])], input=data,
                          check=True, capture_output=True).stdout
    out = io.BytesIO()
    assert age.decrypt_stream(io.BytesIO(by_i), out, ids) == size
    assert out.getvalue() == data


def test_writer_streams_ciphertext_before_close() -> None:
    ident = age.X25519Identity.generate()
    sink = io.BytesIO()
    data = plaintext(5 * age.CHUNK)
    w = age.AgeWriter(sink, [ident.recipient])
    header_len = len(sink.getvalue())
    for i in range(0, len(data), 10_000):
        w.write(data[i:i + 10_000])
    # Four sealed chunks are out; the fifth is held back only because it might be the last.
    assert len(sink.getvalue()) == header_len + 4 * age.ENC_CHUNK
    w.close()
    assert len(sink.getvalue()) == header_len + 5 * age.ENC_CHUNK
    assert age.decrypt(sink.getvalue(), [ident]) == data


def test_identity_file_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("# comment\n\nAGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(KeyFileError, match=r"bad\.txt:3: not an age secret key"):
        age.load_identities(bad)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(KeyFileError, match="no identities"):
        age.load_identities(tmp_path / "empty.txt")
    with pytest.raises(KeyFileError, match="cannot read"):
        age.load_identities(tmp_path / "missing.txt")


@pytest.fixture
def sealed() -> tuple[age.X25519Identity, bytes, bytes]:
    ident = age.X25519Identity.generate()
    data = plaintext(200_000)
    return ident, data, age.encrypt(data, [ident.recipient])


def header_len(ct: bytes) -> int:
    return age.header_length(io.BytesIO(ct))


def flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]


def swap_b64(data: bytes, pos: int) -> bytes:
    """Change one base64 character of the header to another valid one."""
    new = b"B" if data[pos:pos + 1] == b"A" else b"A"
    return data[:pos] + new + data[pos + 1:]


def test_damage_is_reported_clearly(sealed: tuple[age.X25519Identity, bytes, bytes]) -> None:
    ident, _, ct = sealed
    h = header_len(ct)
    mac_pos = ct.index(b"--- ") + 10
    cases = {
        "not an age file": b"hello world\n" + ct,
        "header MAC mismatch": swap_b64(ct, mac_pos),
        "chunk 2 failed authentication": flip(ct, h + 16 + age.ENC_CHUNK + 100),
        "truncated: ended after chunk 2 without a final chunk": ct[:h + 16 + 2 * age.ENC_CHUNK],
        "chunk 4 failed authentication": ct[:-5],
        "truncated: the payload nonce is missing": ct[:h + 3],
        "truncated: the age header ends early": ct[:30],
    }
    for message, damaged in cases.items():
        with pytest.raises(SealError, match=message):
            age.decrypt(damaged, [ident])
    with pytest.raises(SealError, match="no identity matches any recipient"):
        age.decrypt(ct, [age.X25519Identity.generate()])


def test_header_stanza_bit_flip_is_rejected(
        sealed: tuple[age.X25519Identity, bytes, bytes]) -> None:
    ident, _, ct = sealed
    body_pos = ct.index(b"\n", ct.index(b"-> X25519")) + 5     # inside the wrapped file key
    with pytest.raises(SealError, match="no identity matches"):
        age.decrypt(swap_b64(ct, body_pos), [ident])


def test_trailing_data_after_final_chunk() -> None:
    ident = age.X25519Identity.generate()
    full = age.encrypt(plaintext(2 * age.CHUNK), [ident.recipient])
    with pytest.raises(SealError, match="trailing data after final chunk 2"):
        age.decrypt(full + b"garbage", [ident])
    short = age.encrypt(b"x" * 100, [ident.recipient])
    with pytest.raises(SealError, match="chunk 1 failed authentication"):
        age.decrypt(short + b"garbage", [ident])


def test_no_plaintext_from_a_tampered_chunk(
        sealed: tuple[age.X25519Identity, bytes, bytes]) -> None:
    ident, data, ct = sealed
    h = header_len(ct)
    reader = age.AgeReader(io.BytesIO(flip(ct, h + 16 + age.ENC_CHUNK + 7)), [ident])
    assert reader.next_chunk() == data[:age.CHUNK]           # chunk 1 is intact
    with pytest.raises(SealError, match="chunk 2"):
        reader.next_chunk()


def test_rewrap_keeps_payload_and_drops_old_recipient(
        sealed: tuple[age.X25519Identity, bytes, bytes], keys: list[tuple[Path, str]]) -> None:
    ident, data, ct = sealed
    out = io.BytesIO()
    new_h = age.rewrap(io.BytesIO(ct), [ident], [age.X25519Recipient.parse(keys[2][1])], out)
    shared = out.getvalue()
    assert shared[new_h:] == ct[header_len(ct):]                # nonce + chunks, byte for byte
    assert age_decrypt(shared, keys[2][0]) == data
    with pytest.raises(SealError, match="no identity matches"):
        age.decrypt(shared, [ident])
