"""The heap upkeep: cycles collected before the survivors are frozen out of later scans."""

from __future__ import annotations

import gc
import weakref

from exporter import memory


class _Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: object = None


def test_settle_collects_garbage_cycles_then_freezes_the_living() -> None:
    """A cycle that is already garbage is collected, not frozen; live objects are frozen, so
    later collections no longer walk them."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    dead = weakref.ref(a)
    del a, b
    alive = [_Node() for _ in range(100)]
    gc.unfreeze()
    try:
        memory.settle()
        assert dead() is None
        assert gc.get_freeze_count() >= len(alive)
    finally:
        gc.unfreeze()
