"""The simulated cluster: nodes, the pods bound to them, image caches, and the `ClusterState` GuardGrid reads.

Why two views of the same pods: the simulation needs fast arrays (requested memory and GPUs per node,
which node holds which pod) and the real GuardGrid code needs a `guardgrid.state.ClusterState` of
`NodeRecord`/`PodRecord`s, exactly what its informer would build from the API server. Every bind and
removal goes through this one class, which updates both, so they cannot drift; `check()` proves it
(memory conservation), and the tests call it after every event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from evaluation.workloads import NodeSpec
from guardgrid import keys
from guardgrid.records import NodeRecord, PodRecord
from guardgrid.state import ClusterState

__all__ = ["Cluster", "BoundPod", "InvariantError", "EPOCH"]

# Simulation time 0 as epoch seconds: GuardGrid's code works on wall-clock timestamps.
EPOCH = 1_750_000_000.0
SIM_NAMESPACE = "training"


class InvariantError(AssertionError):
    """The simulation's bookkeeping broke a physical law (memory not conserved, a pod in two places)."""


@dataclass
class BoundPod:
    """A pod holding resources on a node: a job's pod or a standby slot."""

    uid: str
    node: int
    memory: float  # request, bytes
    gpu_milli: int
    priority: int
    job: str  # the job it belongs to (job pod) or serves (standby slot)
    standby: bool
    images: tuple[str, ...]
    record: PodRecord


@dataclass
class Cluster:
    nodes: tuple[NodeSpec, ...]
    capacity: npt.NDArray[np.float64] = field(init=False)
    gpu_capacity: npt.NDArray[np.float64] = field(init=False)
    requested: npt.NDArray[np.float64] = field(init=False)
    gpu_requested: npt.NDArray[np.float64] = field(init=False)
    standby_memory: npt.NDArray[np.float64] = field(init=False)
    standby_count: npt.NDArray[np.int64] = field(init=False)
    up: npt.NDArray[np.bool_] = field(init=False)
    images: list[dict[str, float]] = field(init=False)  # per node: image -> time it is (or will be) present
    pods: dict[str, BoundPod] = field(default_factory=dict)
    pending: dict[str, PodRecord] = field(default_factory=dict)  # pods admitted but not bound yet
    on_node: list[set[str]] = field(init=False)
    state: ClusterState = field(default_factory=ClusterState)
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        count = len(self.nodes)
        self.capacity = np.array([n.memory_bytes for n in self.nodes], dtype=np.float64)
        self.gpu_capacity = np.array([n.gpu_milli for n in self.nodes], dtype=np.float64)
        self.requested = np.zeros(count)
        self.gpu_requested = np.zeros(count)
        self.standby_memory = np.zeros(count)
        self.standby_count = np.zeros(count, dtype=np.int64)
        self.up = np.ones(count, dtype=np.bool_)
        self.images = [{} for _ in range(count)]
        self.on_node = [set() for _ in range(count)]
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.state.replace_nodes(self._node_record(i) for i in range(count))

    # --- nodes -------------------------------------------------------------------------------------------
    def _node_record(self, i: int) -> NodeRecord:
        spec = self.nodes[i]
        return NodeRecord(name=spec.name, uid=f"uid-{spec.name}", allocatable_memory=int(spec.memory_bytes),
                          allocatable_gpus=spec.gpu_milli // 1000, ready=bool(self.up[i]),
                          labels={"kubernetes.io/hostname": spec.name})

    def set_up(self, i: int, up: bool) -> None:
        """A node fails (its pods must already be removed) or a replacement joins (empty image cache)."""
        if not up and self.on_node[i]:
            raise InvariantError(f"node {self.nodes[i].name} set down with pods still bound")
        self.up[i] = up
        if up:
            self.images[i] = {}
        self.state.upsert_node(self._node_record(i))

    def free_memory(self) -> npt.NDArray[np.float64]:
        """Allocatable minus every request (standby slots included), what kube-scheduler's fit checks."""
        return self.capacity - self.requested

    def free_gpu(self) -> npt.NDArray[np.float64]:
        return self.gpu_capacity - self.gpu_requested

    # --- images ------------------------------------------------------------------------------------------
    def has_image(self, i: int, image: str, now: float) -> bool:
        present = self.images[i].get(image)
        return present is not None and present <= now

    def add_image(self, i: int, image: str, at: float) -> None:
        """The image is on the node from `at` on (the end of its pull); an earlier time wins."""
        current = self.images[i].get(image)
        if current is None or at < current:
            self.images[i][image] = at

    def nodes_with_image(self, image: str, now: float) -> int:
        return sum(1 for cache in self.images if cache.get(image, np.inf) <= now)

    # --- pods --------------------------------------------------------------------------------------------
    def admit(self, record: PodRecord, now: float) -> None:
        """A pod exists but is not bound yet (GuardGrid sees it: a pending replacement keeps its job's slots)."""
        if record.uid in self.pods or record.uid in self.pending:
            raise InvariantError(f"pod {record.uid} admitted twice")
        self.pending[record.uid] = record
        self.state.upsert_pod(record, now=EPOCH + now)

    def withdraw(self, uid: str) -> PodRecord | None:
        """A pending pod is deleted before it was bound."""
        record = self.pending.pop(uid, None)
        if record is not None:
            self.state.delete_pod(uid)
        return record

    def bind(self, pod: BoundPod, now: float) -> None:
        i = pod.node
        if pod.uid in self.pods:
            raise InvariantError(f"pod {pod.uid} bound twice")
        if not self.up[i]:
            raise InvariantError(f"pod {pod.uid} bound to node {self.nodes[i].name}, which is down")
        if self.requested[i] + pod.memory > self.capacity[i] + 1.0 or \
                self.gpu_requested[i] + pod.gpu_milli > self.gpu_capacity[i] + 1e-9:
            raise InvariantError(f"pod {pod.uid} does not fit node {self.nodes[i].name} by requests")
        self.pending.pop(pod.uid, None)
        self.pods[pod.uid] = pod
        self.on_node[i].add(pod.uid)
        self.requested[i] += pod.memory
        self.gpu_requested[i] += pod.gpu_milli
        if pod.standby:
            self.standby_memory[i] += pod.memory
            self.standby_count[i] += 1
        self.state.upsert_pod(pod.record, now=EPOCH + now)

    def unbind(self, uid: str) -> BoundPod:
        pod = self.pods.pop(uid)
        i = pod.node
        self.on_node[i].discard(uid)
        self.requested[i] -= pod.memory
        self.gpu_requested[i] -= pod.gpu_milli
        if pod.standby:
            self.standby_memory[i] -= pod.memory
            self.standby_count[i] -= 1
        if not self.on_node[i]:  # no float residue on an empty node
            self.requested[i] = self.gpu_requested[i] = self.standby_memory[i] = 0.0
        self.state.delete_pod(uid)
        return pod

    def pods_on(self, i: int) -> list[BoundPod]:
        return [self.pods[uid] for uid in sorted(self.on_node[i])]

    def standby_slots(self) -> list[BoundPod]:
        return [p for p in self.pods.values() if p.standby]

    # --- invariants --------------------------------------------------------------------------------------
    def check(self, usage_by_pod: Mapping[str, float] | None = None,
              node_usage: npt.NDArray[np.float64] | None = None) -> None:
        """Memory conservation: per node, the pods' requests add up to the node's accounted requests, in the
        simulation's arrays and in GuardGrid's ClusterState alike; no node is over-committed by requests;
        no pod sits on a node that is down. With usage, the pods' usage adds up to the node's usage."""
        count = len(self.nodes)
        requested = np.zeros(count)
        gpus = np.zeros(count)
        standby = np.zeros(count)
        for pod in self.pods.values():
            if pod.uid not in self.on_node[pod.node]:
                raise InvariantError(f"pod {pod.uid} missing from its node's set")
            requested[pod.node] += pod.memory
            gpus[pod.node] += pod.gpu_milli
            if pod.standby:
                standby[pod.node] += pod.memory
        if sum(len(s) for s in self.on_node) != len(self.pods):
            raise InvariantError("a node lists a pod that is not bound")
        tolerance = 1024.0
        if np.any(np.abs(requested - self.requested) > tolerance):
            bad = int(np.argmax(np.abs(requested - self.requested)))
            raise InvariantError(f"node {self.nodes[bad].name}: pods request {requested[bad]:.0f} bytes but the "
                                 f"node accounts {self.requested[bad]:.0f}")
        if np.any(np.abs(standby - self.standby_memory) > tolerance) or \
                np.any(np.abs(gpus - self.gpu_requested) > 1e-6):
            raise InvariantError("standby memory or GPU accounting differs from the pods bound")
        if np.any(self.requested > self.capacity + tolerance):
            raise InvariantError("a node is over-committed by requests (negative free memory)")
        if np.any(~self.up & (requested > 0)):
            raise InvariantError("a node that is down still holds pods")
        table = self.state.table
        mirrored = np.array([table.requested[table.index[n.name]] for n in self.nodes])
        if np.any(np.abs(mirrored - self.requested) > tolerance):
            bad = int(np.argmax(np.abs(mirrored - self.requested)))
            raise InvariantError(f"node {self.nodes[bad].name}: GuardGrid's ClusterState accounts "
                                 f"{mirrored[bad]:.0f} bytes, the simulation {self.requested[bad]:.0f}")
        if len(self.state.pods) != len(self.pods) + len(self.pending):
            raise InvariantError(f"ClusterState holds {len(self.state.pods)} pods, the simulation "
                                 f"{len(self.pods)} bound and {len(self.pending)} pending")
        if set(self.pods) & set(self.pending):
            raise InvariantError("a pod is both bound and pending")
        if usage_by_pod is not None and node_usage is not None:
            summed = np.zeros(count)
            for uid, used in usage_by_pod.items():
                summed[self.pods[uid].node] += used
            if np.any(np.abs(summed - node_usage) > tolerance):
                bad = int(np.argmax(np.abs(summed - node_usage)))
                raise InvariantError(f"node {self.nodes[bad].name}: pods use {summed[bad]:.0f} bytes but the node "
                                     f"accounts {node_usage[bad]:.0f}")


def pod_record(uid: str, node: str, memory: float, priority: int, priority_class: str,
               labels: Mapping[str, str], annotations: Mapping[str, str], images: Iterable[str],
               now: float, created: float | None = None) -> PodRecord:
    """A PodRecord as GuardGrid's informer would decode it from the API server: bound and Running when
    `node` is given, else Pending."""
    return PodRecord(uid=uid, namespace=SIM_NAMESPACE, name=uid, node_name=node, memory_request=int(memory),
                     priority=priority, priority_class=priority_class, phase="Running" if node else "Pending",
                     labels=dict(labels),
                     annotations={k: v for k, v in annotations.items() if k.startswith(keys.PREFIX)},
                     images=tuple(images), scheduled_at=EPOCH + now if node else None,
                     created_at=EPOCH + (now if created is None else created))
