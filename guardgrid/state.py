"""The cluster state every service reasons over: per-node memory as numpy arrays indexed by node name.

Why arrays: the extender scores 500 candidate nodes per request in well under a millisecond only when risk
and balance are computed as vector operations; per-node Python loops would cost ~1 ms alone. Pod events
update the arrays incrementally (O(1) per event); node additions and removals, which are rare, rebuild the
index.

Concurrency: one writer (the informer thread) and many readers (request threads). Writers hold `lock`.
Readers take `state.table` once per request: the table's index and arrays always belong together, because a
node-set change publishes a whole new `NodeTable` by a single reference assignment. In-place pod updates
may be seen half-applied by a concurrent reader, which errs by one pod's memory for one request; that is the
same staleness a scheduler cache has, and far below forecast error.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from guardgrid.nameindex import NameIndex
from guardgrid.records import NodeRecord, PodRecord

__all__ = ["ClusterState", "NodeTable", "ALLOCATABLE", "REQUESTED", "STANDBY"]

FloatArray = npt.NDArray[np.float64]
ALLOCATABLE, REQUESTED, STANDBY = 0, 1, 2  # columns of NodeTable.memory


@dataclass
class NodeTable:
    """Nodes in a fixed order with their memory arrays; replaced, never resized, when the node set changes.

    `allocatable`, `requested` and `standby` are column views of one row-major matrix, `memory`: the extender
    gathers its ~500 candidate rows from it in one pass that touches one cache line per node, instead of
    three scattered passes (between requests these arrays fall out of cache, and cold reads dominate).
    """

    nodes: list[NodeRecord]
    index: dict[str, int]
    memory: FloatArray  # (nodes, 3): allocatable, requested, standby
    ready: npt.NDArray[np.bool_]
    version: int = 0
    name_index: NameIndex = field(default_factory=lambda: NameIndex(()))  # `index` for whole requests

    @classmethod
    def build(cls, nodes: Iterable[NodeRecord], version: int) -> NodeTable:
        ordered = sorted(nodes, key=lambda n: n.name)
        memory = np.zeros((len(ordered), 3), dtype=np.float64)
        memory[:, ALLOCATABLE] = [n.allocatable_memory for n in ordered]
        return cls(
            nodes=ordered,
            index={n.name: i for i, n in enumerate(ordered)},
            memory=memory,
            ready=np.array([n.ready and not n.unschedulable for n in ordered], dtype=np.bool_),
            version=version,
            name_index=NameIndex([n.name for n in ordered]),
        )

    @property
    def allocatable(self) -> FloatArray:
        return self.memory[:, ALLOCATABLE]

    @property
    def requested(self) -> FloatArray:
        """Memory requests of every pod holding memory, standby slots included."""
        return self.memory[:, REQUESTED]

    @property
    def standby(self) -> FloatArray:
        """The part of `requested` held by standby slots."""
        return self.memory[:, STANDBY]

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass
class ClusterState:
    """Nodes, pods and the derived memory accounting; fed by the informer or directly by tests/simulation."""

    table: NodeTable = field(default_factory=lambda: NodeTable.build((), 0))
    pods: dict[str, PodRecord] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _pods_by_node: dict[str, set[str]] = field(default_factory=dict)
    _standby_by_job: dict[str, dict[str, float]] = field(default_factory=dict)
    _bound_at: dict[str, float] = field(default_factory=dict)
    # In-flight accounting, kept incrementally so a query costs O(nodes with recent binds), not O(binds):
    # binds after `_inflight_cutoff` are in `_inflight` (uid -> node, memory, bind time) and summed per node;
    # `_inflight_heap` orders them by bind time so advancing the cut-off expires the oldest first.
    _inflight_cutoff: float = 0.0
    _inflight_heap: list[tuple[float, str]] = field(default_factory=list)
    _inflight: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    _inflight_by_node: dict[str, float] = field(default_factory=dict)
    _version: int = 0
    # Changes with every change a placement decision could see (pods, nodes, in-flight expiry), and is odd
    # while one is half applied: two equal even readings mean equal inputs, which lets the extender reuse a
    # filter's figures for the prioritize call that follows (a seqlock, read without the lock).
    generation: int = 0

    @contextmanager
    def _mutation(self) -> Iterator[None]:
        with self.lock:
            self.generation += 1
            try:
                yield
            finally:
                self.generation += 1

    # --- nodes ---------------------------------------------------------------------------------------
    def replace_nodes(self, nodes: Iterable[NodeRecord]) -> None:
        with self._mutation():
            self._rebuild(list(nodes))

    def upsert_node(self, node: NodeRecord) -> None:
        with self._mutation():
            table = self.table
            i = table.index.get(node.name)
            if i is None:
                self._rebuild([*table.nodes, node])
                return
            table.nodes[i] = node
            table.allocatable[i] = node.allocatable_memory
            table.ready[i] = node.ready and not node.unschedulable

    def delete_node(self, name: str) -> None:
        with self._mutation():
            if name in self.table.index:
                self._rebuild([n for n in self.table.nodes if n.name != name])

    def _rebuild(self, nodes: list[NodeRecord]) -> None:
        self._version += 1
        table = NodeTable.build(nodes, self._version)
        for i, node in enumerate(table.nodes):
            for uid in self._pods_by_node.get(node.name, ()):
                pod = self.pods[uid]
                table.requested[i] += pod.memory_request
                if pod.is_standby:
                    table.standby[i] += pod.memory_request
        self.table = table

    # --- pods ----------------------------------------------------------------------------------------
    def replace_pods(self, pods: Iterable[PodRecord]) -> None:
        """A fresh list: bind times come from PodScheduled conditions (unknown ones count as long past)."""
        with self._mutation():
            self.pods = {}
            self._pods_by_node = {}
            self._standby_by_job = {}
            self._bound_at = {}
            self._inflight_heap = []
            self._inflight = {}
            self._inflight_by_node = {}
            for pod in sorted(pods, key=lambda p: p.scheduled_at or 0.0):
                self._add(pod, bound_at=pod.scheduled_at or 0.0)
            self._rebuild(list(self.table.nodes))

    def upsert_pod(self, pod: PodRecord, now: float | None = None) -> None:
        with self._mutation():
            old = self.pods.get(pod.uid)
            newly_bound = pod.holds_memory and (old is None or old.node_name != pod.node_name)
            if old is not None:
                self._remove(old)
            bound_at = self._bound_at.get(pod.uid, 0.0)
            if newly_bound:
                bound_at = pod.scheduled_at or (time.time() if now is None else now)
            self._add(pod, bound_at)
            self._account(pod, +1)

    def delete_pod(self, uid: str) -> None:
        with self._mutation():
            old = self.pods.get(uid)
            if old is not None:
                self._remove(old)
                self._bound_at.pop(uid, None)

    def _add(self, pod: PodRecord, bound_at: float) -> None:
        self.pods[pod.uid] = pod
        if not pod.holds_memory:
            return
        self._pods_by_node.setdefault(pod.node_name, set()).add(pod.uid)
        if pod.is_standby and pod.standby_for:
            slots = self._standby_by_job.setdefault(pod.standby_for, {})
            slots[pod.node_name] = slots.get(pod.node_name, 0.0) + pod.memory_request
        if bound_at:
            self._bound_at[pod.uid] = bound_at
            if bound_at > self._inflight_cutoff:
                self._inflight[pod.uid] = (pod.node_name, float(pod.memory_request), bound_at)
                self._inflight_by_node[pod.node_name] = \
                    self._inflight_by_node.get(pod.node_name, 0.0) + pod.memory_request
                heapq.heappush(self._inflight_heap, (bound_at, pod.uid))

    def _remove(self, pod: PodRecord) -> None:
        self._account(pod, -1)
        self.pods.pop(pod.uid, None)
        self._forget_inflight(pod.uid)
        if not pod.holds_memory:
            return
        members = self._pods_by_node.get(pod.node_name)
        if members is not None:
            members.discard(pod.uid)
            if not members:
                del self._pods_by_node[pod.node_name]
        if pod.is_standby and pod.standby_for:
            slots = self._standby_by_job.get(pod.standby_for, {})
            left = slots.get(pod.node_name, 0.0) - pod.memory_request
            if left > 0:
                slots[pod.node_name] = left
            else:
                slots.pop(pod.node_name, None)
            if not slots:
                self._standby_by_job.pop(pod.standby_for, None)

    def _forget_inflight(self, uid: str) -> None:
        entry = self._inflight.pop(uid, None)
        if entry is None:
            return
        node, memory, _ = entry
        left = self._inflight_by_node.get(node, 0.0) - memory
        if left > 0.5:
            self._inflight_by_node[node] = left
        else:
            self._inflight_by_node.pop(node, None)

    def _account(self, pod: PodRecord, sign: int) -> None:
        if not pod.holds_memory:
            return
        i = self.table.index.get(pod.node_name)
        if i is None:
            return  # bound to a node not (yet) in the cache; counted when the node arrives
        self.table.requested[i] += sign * pod.memory_request
        if pod.is_standby:
            self.table.standby[i] += sign * pod.memory_request

    # --- queries -------------------------------------------------------------------------------------
    def own_standby(self, job: str) -> dict[str, float]:
        """Memory of the standby slots serving `job`, by node name (empty for no job): a new dict, the caller's."""
        if not job:
            return {}
        with self.lock:
            return dict(self._standby_by_job.get(job, {}))

    def standby_jobs(self) -> dict[str, dict[str, float]]:
        with self.lock:
            return {job: dict(slots) for job, slots in self._standby_by_job.items()}

    def inflight_by_node(self, since: float) -> dict[str, float]:
        """Memory of pods bound after `since`, by node name: not yet visible in a usage forecast.

        Usually empty or a handful of nodes, so callers map it onto just the nodes they look at. The cut-off
        only moves forward (the extender's `since` is the min of the snapshot time and now minus the window,
        both non-decreasing): a `since` earlier than an already applied cut-off is served from the later one.
        """
        with self.lock:
            if since > self._inflight_cutoff:
                self._inflight_cutoff = since
                expired = False
                heap = self._inflight_heap
                while heap and heap[0][0] <= since:
                    bound_at, uid = heapq.heappop(heap)
                    entry = self._inflight.get(uid)
                    if entry is not None and entry[2] == bound_at:
                        self._forget_inflight(uid)
                        expired = True
                if expired:
                    self.generation += 2  # stays even: applied under the lock every reader of it takes
            return dict(self._inflight_by_node)

    def pods_on(self, node: str) -> list[PodRecord]:
        with self.lock:
            return [self.pods[uid] for uid in self._pods_by_node.get(node, ())]

    def all_pods(self) -> list[PodRecord]:
        with self.lock:
            return list(self.pods.values())

    def node(self, name: str) -> NodeRecord | None:
        table = self.table
        i = table.index.get(name)
        return table.nodes[i] if i is not None else None
