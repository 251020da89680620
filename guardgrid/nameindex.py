"""Node name -> table row for a whole request at once, from a compact numpy hash table.

Why not the dict: the extender looks up ~500 candidate names per request in a 5000-node index. A CPython
dict of str keys stores no hashes in its entries, so every probe reads the key object, and in a worker whose
heap holds the node/pod cache those 5000 key objects are scattered over hundreds of MB: measured in the
benchmark's gunicorn worker, 500 dict lookups took 130-260 us (34 us in a fresh process). Here the table is
two small contiguous arrays (a few hundred KB), the request's names are hashed while they are still in cache
from parsing, and probing is a handful of vector operations: ~40 us in the same worker.

Exactness: a row is matched by the 64-bit `hash()` of the name (CPython's SipHash, keyed per process).
Known names never share a hash: that is checked when the table is built, and a table with a clash (odds
about 1e-12 for 5000 names) answers through the exact dict instead. A name we do not know would be taken for
a known one only if its hash equalled one of theirs: about n / 2**64 (3e-16 at 5000 nodes) per unknown name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["NameIndex"]

IntArray = npt.NDArray[np.int64]
_WIDTH = 8  # slots per bucket: 8 int64 hashes are one 64-byte cache line


class NameIndex:
    """Buckets of 8 slots, one cache line of hashes each, addressed by the low bits of the hash.

    A lookup is one gather of a bucket per name and one vector compare: no probing loop. With at least as
    many buckets as names a bucket overflows with odds of ~1e-6 each; the build then doubles the buckets.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self._exact: dict[str, int] | None = None
        hashes = [hash(name) for name in names]
        if len(set(hashes)) != len(hashes):  # two known names share a hash: exact lookups for this table
            self._exact = {n: i for i, n in enumerate(names)}
            return
        buckets = 8
        while buckets < len(names):
            buckets *= 2
        values = np.array(hashes, dtype=np.int64)
        while True:
            self._mask = buckets - 1
            where = values & self._mask
            order = np.argsort(where, kind="stable")
            sorted_buckets = where[order]
            # Position of each name inside its bucket: its rank among the names of the same bucket.
            starts = np.searchsorted(sorted_buckets, sorted_buckets, side="left")
            slot = np.arange(len(order)) - starts
            if not len(slot) or slot.max() < _WIDTH:
                break
            buckets *= 2
        self._hashes = np.zeros((buckets, _WIDTH), dtype=np.int64)
        rows = np.full((buckets, _WIDTH), -1, dtype=np.int64)  # -1: a free slot
        self._hashes[sorted_buckets, slot] = values[order]
        rows[sorted_buckets, slot] = order
        # Flat views for the second step of a lookup: one 1-d gather per name beats 2-d fancy indexing.
        self._flat_hashes = self._hashes.reshape(-1)
        self._flat_rows = rows.reshape(-1)

    @property
    def exact(self) -> bool:
        """Whether lookups go through the exact dict (two known names share a hash): no hash table then."""
        return self._exact is not None

    # The hash table itself, for the compiled filter (guardgrid/_kernel.c probes it as `rows` does).
    @property
    def bucket_hashes(self) -> IntArray:
        return self._hashes

    @property
    def slot_rows(self) -> IntArray:
        return self._flat_rows

    @property
    def mask(self) -> int:
        return self._mask

    def rows(self, names: Sequence[str]) -> IntArray:
        """Row of each name, -1 where the name is not in the table. Names must be str (hash() is str's)."""
        count = len(names)
        if self._exact is not None:
            exact = self._exact
            return np.fromiter((exact.get(n, -1) for n in names), dtype=np.int64, count=count)
        wanted = np.fromiter(map(hash, names), dtype=np.int64, count=count)
        bucket = wanted & self._mask
        # The first slot of its bucket whose hash equals the name's (a bucket fills from slot 0, so a free
        # slot never comes before a used one), then that slot's row, kept only if its hash really matches:
        # argmax lands on slot 0 when nothing matched. take() rather than fancy indexing: the same gathers
        # at a third of the overhead.
        slot = (self._hashes.take(bucket, axis=0) == wanted[:, None]).argmax(axis=1)
        slot += bucket * _WIDTH
        rows = self._flat_rows.take(slot)
        rows[self._flat_hashes.take(slot) != wanted] = -1
        return rows
