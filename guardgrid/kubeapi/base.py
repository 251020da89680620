"""The one interface through which GuardGrid talks to Kubernetes.

Why an interface: business logic (scoring, planning, migration) must be testable without a cluster and
without mocking HTTP. Two implementations exist: `RealKubeAPI` (the `kubernetes` client, raw JSON decoded
once into slim records) and `InMemoryKubeAPI` (a cluster file held in memory, with real watch semantics),
used by tests, benchmarks and the local demo. Both speak in `NodeRecord`/`PodRecord`, never client objects.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from guardgrid.records import NodeRecord, PodRecord

__all__ = ["KubeAPI", "Kind", "ListResult", "WatchEvent", "KubeAPIError", "ResourceExpired",
           "EvictionOutcome", "EvictionResult", "Record"]

Record = NodeRecord | PodRecord
Kind = Literal["nodes", "pods"]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


class KubeAPIError(RuntimeError):
    """The API server (or the in-memory stand-in) refused a call; `status` is the HTTP code (0: no answer)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ResourceExpired(KubeAPIError):
    """410 Gone / reason Expired: the watch's resourceVersion is too old; relist and watch again."""

    def __init__(self, message: str = "resourceVersion too old") -> None:
        super().__init__(message, status=410, reason="Expired")


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[Any]  # list[NodeRecord] or list[PodRecord]
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    record: Any  # NodeRecord | PodRecord, or None for BOOKMARK
    resource_version: str


class EvictionOutcome(enum.Enum):
    EVICTED = "evicted"  # 201: the pod is being deleted gracefully
    BLOCKED = "blocked"  # 429: a PodDisruptionBudget forbids it now; retry later
    NOT_FOUND = "not_found"  # 404: already gone


@dataclass(frozen=True, slots=True)
class EvictionResult:
    outcome: EvictionOutcome
    message: str = ""


class KubeAPI(abc.ABC):
    """What GuardGrid needs from the API server, and nothing more (RBAC grants exactly these verbs)."""

    @abc.abstractmethod
    def list(self, kind: Kind) -> ListResult:
        """All objects of `kind` (paged internally) with the list's resourceVersion."""

    @abc.abstractmethod
    def watch(self, kind: Kind, resource_version: str, timeout_seconds: float) -> Iterator[WatchEvent]:
        """Changes after `resource_version`, with bookmarks, until the server-side timeout.

        Raises `ResourceExpired` (at call time or mid-stream) when the version is too old.
        """

    @abc.abstractmethod
    def create_pod(self, manifest: Mapping[str, Any]) -> PodRecord:
        """Create a pod (standby slots); `KubeAPIError` with status 409 when the name exists."""

    @abc.abstractmethod
    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int = 0) -> bool:
        """Delete a pod GuardGrid owns (standby slots only); False when it was already gone."""

    @abc.abstractmethod
    def evict_pod(self, namespace: str, name: str) -> EvictionResult:
        """The Eviction API (policy/v1): respects PodDisruptionBudgets, never a plain delete."""

    @abc.abstractmethod
    def create_event(self, pod: PodRecord, reason: str, message: str, event_type: str = "Normal") -> None:
        """Record a core/v1 Event on a pod so `kubectl describe pod` shows GuardGrid's decision."""

    def interrupt_watches(self) -> None:
        """Ask watches already open to return early (shutdown). Default: nothing; they end at their timeout."""

    @abc.abstractmethod
    def acquire_lease(self, namespace: str, name: str, identity: str, duration_seconds: int) -> bool:
        """Take or renew a coordination.k8s.io Lease; True while `identity` holds it (leader election)."""
