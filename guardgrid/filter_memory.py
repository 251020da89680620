"""The figures of recent filter calls, so the prioritize call that follows each need not recompute them.

Why: kube-scheduler calls prioritize right after filter, for the same pod, with exactly the nodes the filter
passed, over the same kept-alive connection (so the same worker). Recomputing means looking up ~450 names
and gathering their rows again: about a third of a prioritize call in the benchmark.

Exactness: an answer is reused only when every input of `evaluate` is provably unchanged: the same pod
demand, the same snapshot object, the same freshness, the same cluster-state generation (which also moves
when an in-flight bind leaves its window; `recall` applies that expiry first), and the same names in the
same order. Anything else evaluates afresh, so reuse never changes an answer (tests compare both ways).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from guardgrid.config import Settings
from guardgrid.placement import Evaluation, PodDemand, inflight_since
from guardgrid.snapshot import Snapshot
from guardgrid.state import ClusterState

__all__ = ["FilterMemory"]


@dataclass(frozen=True)
class _Entry:
    demand: PodDemand
    snapshot: Snapshot | None
    fresh: bool
    generation: int
    passed: list[str]
    positions: npt.NDArray[np.int64]
    evaluation: Evaluation


class FilterMemory:
    """The last `capacity` filter evaluations, by pod UID (one per pod: a newer filter replaces it)."""

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, state: ClusterState, generation: int, demand: PodDemand, snapshot: Snapshot | None,
                 fresh: bool, evaluation: Evaluation, passed_mask: npt.NDArray[np.bool_], passed: list[str]) -> None:
        """Keep a filter's evaluation. `generation` is the state's, read before evaluating: if a change was
        half applied then, or happened since, the evaluation may mix two states and is not kept."""
        if not demand.uid or generation % 2 or state.generation != generation:
            return
        entry = _Entry(demand, snapshot, fresh, generation, passed, np.flatnonzero(passed_mask), evaluation)
        with self._lock:
            self._entries[demand.uid] = entry
            self._entries.move_to_end(demand.uid)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def recall(self, state: ClusterState, snapshot: Snapshot | None, demand: PodDemand, names: Sequence[str],
               settings: Settings, now: float) -> Evaluation | None:
        """The remembered figures for exactly `names`, or None when anything they depend on has changed."""
        with self._lock:
            entry = self._entries.pop(demand.uid, None)  # one prioritize per filter
        if entry is None or entry.snapshot is not snapshot or entry.demand != demand:
            return None
        since = inflight_since(snapshot, now, settings)
        if (since is not None) != entry.fresh:
            return None
        if since is not None:
            state.inflight_by_node(since)  # expire binds that left their window since the filter ran
        if state.generation != entry.generation or list(names) != entry.passed:
            return None
        return entry.evaluation.take(entry.positions, names)
