"""One gzip stream from pieces compressed separately, and CRC-32s combined without the data.

Each piece is raw deflate ending in a sync flush, so pieces concatenate into one valid deflate
stream; the gzip trailer needs the CRC-32 of the whole, which ``crc32_combine`` derives from
the pieces' CRCs and lengths, as zlib's crc32_combine does (zlib does not expose it to Python).
"""

from __future__ import annotations

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


def _x_to_8n(n: int) -> int:
    """x**(8 n) modulo the polynomial: the operator that appends n zero bytes."""
    product, k = 1 << 31, 3  # x**0; 8 n = n << 3
    while n:
        if n & 1:
            product = _multiply(_X2N[k & 31], product)
        n >>= 1
        k += 1
    return product


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A + B from CRC-32(A), CRC-32(B) and len(B)."""
    return _multiply(_x_to_8n(length2), crc1) ^ crc2
