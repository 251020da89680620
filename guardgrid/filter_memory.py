"""The figures of recent filter calls, so the prioritize call that follows each need not recompute them.

Why: kube-scheduler calls prioritize right after filter, for the same pod, with exactly the nodes the filter
passed, over the same kept-alive connection (so the same worker). Recomputing means looking up ~450 names
and gathering their rows again: about a third of a prioritize call in the benchmark.

Exactness: an answer is reused only when every input of `evaluate` is provably unchanged: the same pod
demand, the same snapshot object, the same freshness, the same cluster-state generation (which also moves
when an in-flight bind leaves its window; `recall` applies that expiry first), and the same names in the
same order. Anything else evaluates afresh, so reuse never changes an answer (tests compare both ways).

A filter may also leave the whole prioritize answer, computed while its figures are in cache, with the exact
request body kube-scheduler will send for it (the same Pod, `"Nodes":null`, the passed names: the scheduler
encodes it as orjson does, see tests/fixtures). A prioritize body equal to it byte for byte is that request,
so `answer` returns the stored bytes under the same conditions as `recall`, without parsing anything. Why:
between two requests a worker's caches go cold (docs/bench-extender.md), and parsing, scoring and encoding
~450 nodes cold cost ~0.3 ms of a ~0.35 ms prioritize; right after the filter the same work costs ~60 us.
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
    positions: npt.NDArray[np.int64] | None
    evaluation: Evaluation | None  # None when the compiled kernel decided (it keeps no figures)
    prioritize_request: bytes = b""  # the prioritize body the scheduler will send next ...
    prioritize_answer: bytes = b""  # ... and the answer to it, as of this entry's inputs


class FilterMemory:
    """The last `capacity` filter evaluations, by pod UID (one per pod: a newer filter replaces it)."""

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, state: ClusterState, generation: int, demand: PodDemand, snapshot: Snapshot | None,
                 fresh: bool, evaluation: Evaluation | None, passed_mask: npt.NDArray[np.bool_] | None,
                 passed: list[str], prioritize_request: bytes = b"", prioritize_answer: bytes = b"") -> None:
        """Keep a filter's evaluation (None, with no mask, from the compiled filter: then only the prepared
        prioritize answer can be reused). `generation` is the state's, read before evaluating: if a change was
        half applied then, or happened since, the evaluation may mix two states and is not kept."""
        if not self.keeps(state, generation, demand):
            return
        positions = passed_mask.nonzero()[0] if passed_mask is not None else None
        entry = _Entry(demand, snapshot, fresh, generation, passed, positions, evaluation, prioritize_request,
                       prioritize_answer)
        with self._lock:
            self._entries[demand.uid] = entry
            self._entries.move_to_end(demand.uid)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    @staticmethod
    def keeps(state: ClusterState, generation: int, demand: PodDemand) -> bool:
        """Whether `remember` would keep this filter's figures (so a caller can skip preparing them)."""
        return bool(demand.uid) and not generation % 2 and state.generation == generation

    def answer(self, state: ClusterState, snapshot: Snapshot | None, body: bytes, settings: Settings,
               now: float) -> bytes | None:
        """The stored prioritize answer for a request byte for byte equal to the one a filter predicted, or
        None (then parse and score as usual) when there is none or anything it depends on has changed."""
        with self._lock:
            for uid in reversed(self._entries):  # newest first: the filter just before, as a rule
                candidate = self._entries[uid]
                # An entry that prepared nothing has an empty request: an empty body must not match it.
                if (len(candidate.prioritize_request) == len(body) and body
                        and candidate.prioritize_request == body):
                    entry = self._entries.pop(uid)  # one prioritize per filter
                    break
            else:
                return None
        if not self._unchanged(entry, state, snapshot, settings, now):
            return None
        return entry.prioritize_answer

    @staticmethod
    def _unchanged(entry: _Entry, state: ClusterState, snapshot: Snapshot | None, settings: Settings,
                   now: float) -> bool:
        if entry.snapshot is not snapshot:
            return False
        since = inflight_since(snapshot, now, settings)
        if (since is not None) != entry.fresh:
            return False
        if since is not None:
            state.inflight_by_node(since)  # expire binds that left their window since the filter ran
        return state.generation == entry.generation

    def recall(self, state: ClusterState, snapshot: Snapshot | None, demand: PodDemand, names: Sequence[str],
               settings: Settings, now: float) -> Evaluation | None:
        """The remembered figures for exactly `names`, or None when anything they depend on has changed."""
        with self._lock:
            entry = self._entries.pop(demand.uid, None)  # one prioritize per filter
        if entry is None or entry.demand != demand or not self._unchanged(entry, state, snapshot, settings, now):
            return None
        if entry.evaluation is None or entry.positions is None or list(names) != entry.passed:
            return None
        return entry.evaluation.take(entry.positions, names)
