"""Bech32 (BIP 173) as age uses it for its keys: no 90-character limit, one case throughout."""

from __future__ import annotations

from collections.abc import Sequence

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: Sequence[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GEN[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Sequence[int], frm: int, to: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to) - 1
    for value in data:
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to - bits)) & maxv)
    elif bits >= frm or (acc << (to - bits)) & maxv:
        return None
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Encode bytes as bech32 with a lower-case human-readable part."""
    five = _convert_bits(data, 8, 5, True) or []
    pm = _polymod([*_hrp_expand(hrp), *five, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in five + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Decode bech32 text into (lower-case hrp, bytes). Raises ValueError saying what is wrong."""
    if text != text.lower() and text != text.upper():
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("no separator or too short")
    hrp, rest = text[:pos], text[pos + 1:]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise ValueError("invalid character in prefix")
    try:
        values = [_CHARSET.index(c) for c in rest]
    except ValueError:
        raise ValueError("invalid bech32 character") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise ValueError("bad checksum (typo?)")
    data = _convert_bits(values[:-6], 5, 8, False)
    if data is None:
        raise ValueError("invalid padding")
    return hrp, bytes(data)
