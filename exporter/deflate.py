"""One gzip stream from pieces compressed separately, and CRC-32s combined without the data.

Each piece is raw deflate ending in a sync flush, so pieces concatenate into one valid deflate
stream; the gzip trailer needs the CRC-32 of the whole, which ``crc32_combine`` derives from
the pieces' CRCs and lengths, as zlib's crc32_combine does (zlib does not expose it to Python).
"""

from __future__ import annotations

import functools
import struct
import zlib

# Level 1 keeps compression cheap; exposition text is so repetitive that it still shrinks ~10x.
LEVEL = 1
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, unknown OS
_POLY = 0xEDB88320  # CRC-32, reflected


def piece(data: bytes) -> bytes:
    """Raw deflate of ``data`` ending in a sync flush; empty data gives an empty piece."""
    if not data:
        return b""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def closing(data: bytes) -> bytes:
    """Raw deflate of ``data`` that ends the stream (final block)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH)


def trailer(crc: int, length: int) -> bytes:
    """The gzip trailer: CRC-32 and length modulo 2**32, little-endian."""
    return struct.pack("<II", crc, length & 0xFFFFFFFF)


def _multiply(a: int, b: int) -> int:
    """a times b modulo the CRC polynomial, in zlib's reflected bit order."""
    mask = 1 << 31
    product = 0
    while True:
        if a & mask:
            product ^= b
            if not a & (mask - 1):
                return product
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> tuple[int, ...]:
    """x**(2**k) modulo the polynomial, for k = 0 … 31."""
    out, power = [], 1 << 30  # x**1
    for _ in range(32):
        out.append(power)
        power = _multiply(power, power)
    return tuple(out)


_X2N = _powers()


@functools.cache
def _times_x2n(k: int) -> tuple[tuple[int, ...], ...]:
    """Multiplication by x**(2**k) as four byte-indexed tables, one per byte of the factor.

    The product is linear in the factor, so it is the XOR of its bytes' products; a few table
    lookups replace a 32-step multiplication. Built on first use, about 2 ms each.
    """
    power = _X2N[k]
    return tuple(tuple(_multiply(value << shift, power) if value else 0 for value in range(256))
                 for shift in (0, 8, 16, 24))


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A + B from CRC-32(A), CRC-32(B) and len(B).

    CRC(A + B) is CRC(A) times x**(8 len(B)) plus CRC(B); the power is applied one set bit of
    8 len(B) at a time, each a multiplication by some x**(2**k).
    """
    k = 3  # 8 len(B) = len(B) << 3
    while length2:
        if length2 & 1:
            low, second, third, high = _times_x2n(k & 31)
            crc1 = (low[crc1 & 0xFF] ^ second[(crc1 >> 8) & 0xFF]
                    ^ third[(crc1 >> 16) & 0xFF] ^ high[crc1 >> 24])
        length2 >>= 1
        k += 1
    return crc1 ^ crc2
