"""Stable assignment of connections to exporter replicas."""

from __future__ import annotations

import hashlib


def shard_of(connection_id: str, total_shards: int) -> int:
    """The shard (0 … total_shards-1) that owns a connection, the same on every replica.

    A hash of the canonical ID, not Python's ``hash()``, which is salted per process.
    """
    digest = hashlib.sha256(connection_id.strip().lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % total_shards


def owned(connection_ids: list[str], shard: int, total_shards: int) -> list[str]:
    """The connections that ``shard`` polls, in config order."""
    return [cid for cid in connection_ids if shard_of(cid, total_shards) == shard]
