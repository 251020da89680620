"""kube-scheduler's decisions, as far as they matter for memory: resource fit, scoring, preemption.

Modelled after the default plugins (k8s.io/kubernetes/pkg/scheduler/framework/plugins):
- Filter, NodeResourcesFit: a node fits when its free memory and GPUs *by requests* hold the pod's.
- Score, NodeResourcesFit with the default LeastAllocated strategy over memory (CPU is not modelled):
  (allocatable - requested after placement) / allocatable x 100; and ImageLocality: the sizes of the pod's
  images already on the node, scaled by how many nodes have them, normalised between 23 MB and 1000 MB per
  container to 0..100. Other default plugins score every node alike for these pods and are left out.
- Ties are broken at random among the best nodes, as kube-scheduler does (with a seeded generator here).
- Preemption (DefaultPreemption): on each node remove every pod of lower priority; if the pod then fits,
  reprieve victims from the highest priority down while it still fits; among candidate nodes prefer the
  lowest highest-victim priority, then the smallest priority sum, then the fewest victims.

GuardGrid's extender plugs in between (filter, prioritize, preempt) through the same calls the real
kube-scheduler makes; see evaluation/policies.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evaluation.sim.cluster import BoundPod, Cluster

__all__ = ["KubeScheduler", "Candidate", "MAX_NODE_SCORE"]

MAX_NODE_SCORE = 100.0
_IMAGE_MIN_BYTES = 23e6
_IMAGE_MAX_BYTES = 1000e6


@dataclass(frozen=True)
class Candidate:
    """A preemption candidate: evicting `victims` (pod uids) from `node` lets the pod fit."""

    node: int
    victims: tuple[BoundPod, ...]

    @property
    def highest_priority(self) -> int:
        return max((v.priority for v in self.victims), default=-(2**31))

    @property
    def priority_sum(self) -> int:
        return sum(v.priority for v in self.victims)


class KubeScheduler:
    def __init__(self, cluster: Cluster, rng: np.random.Generator) -> None:
        self.cluster = cluster
        self.rng = rng

    def feasible(self, request: float, gpu_milli: int) -> npt.NDArray[np.bool_]:
        c = self.cluster
        return c.up & (c.free_memory() >= request) & (c.free_gpu() >= gpu_milli)

    def plugin_scores(self, request: float, images: Sequence[tuple[str, float]], now: float) -> npt.NDArray[np.float64]:
        """Sum of the in-tree plugin scores (each 0..100, weight 1) for every node."""
        c = self.cluster
        with np.errstate(divide="ignore", invalid="ignore"):
            least = np.where(c.capacity > 0, (c.capacity - c.requested - request) / c.capacity, 0.0)
        score = np.clip(least, 0.0, 1.0) * MAX_NODE_SCORE
        total = len(c.nodes)
        for image, size in images:
            holders = [i for i, cache in enumerate(c.images) if cache.get(image, np.inf) <= now]
            if not holders:
                continue
            scaled = size * len(holders) / total
            value = np.clip((scaled - _IMAGE_MIN_BYTES) / (_IMAGE_MAX_BYTES * len(images) - _IMAGE_MIN_BYTES), 0, 1)
            score[holders] += value * MAX_NODE_SCORE
        return score

    def pick(self, candidates: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> int:
        """The best-scoring candidate; a random one among equals."""
        best = np.flatnonzero(scores >= scores.max() - 1e-9)
        if len(best) == 1:
            return int(candidates[best[0]])
        return int(candidates[best[int(self.rng.integers(len(best)))]])

    def preemption_candidates(self, request: float, gpu_milli: int, priority: int) -> list[Candidate]:
        """Nodes where evicting lower-priority pods would let the pod fit, with the minimal victims."""
        c = self.cluster
        found: list[Candidate] = []
        for i in np.flatnonzero(c.up):
            lower = [p for p in c.pods_on(int(i)) if p.priority < priority]
            if not lower:
                continue
            free_memory = c.capacity[i] - c.requested[i] + sum(p.memory for p in lower)
            free_gpu = c.gpu_capacity[i] - c.gpu_requested[i] + sum(p.gpu_milli for p in lower)
            if free_memory < request or free_gpu < gpu_milli:
                continue
            victims = []
            for pod in sorted(lower, key=lambda p: (-p.priority, p.uid)):  # reprieve the most important first
                if free_memory - pod.memory >= request and free_gpu - pod.gpu_milli >= gpu_milli:
                    free_memory -= pod.memory
                    free_gpu -= pod.gpu_milli
                else:
                    victims.append(pod)
            found.append(Candidate(int(i), tuple(victims)))
        return found

    @staticmethod
    def select_candidate(candidates: Sequence[Candidate]) -> Candidate:
        """kube-scheduler's order: lowest highest-victim priority, smallest sum, fewest victims, first node."""
        return min(candidates, key=lambda c: (c.highest_priority, c.priority_sum, len(c.victims), c.node))
