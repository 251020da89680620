"""Slim, immutable records of Nodes and Pods: only the fields GuardGrid uses.

Why not the client's objects: a V1Pod is ~100 Python objects; at 150k pods the cache would cost gigabytes
and every deserialisation milliseconds. Raw JSON (a dict from orjson) is decoded once, here, into
`__slots__` dataclasses, and everything downstream works on these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from guardgrid import keys
from guardgrid.quantity import QuantityError, memory_bytes, parse_quantity

__all__ = ["NodeRecord", "PodRecord", "PodEssentials", "OwnerRef", "RecordError", "node_from_dict",
           "pod_from_dict", "pod_memory_request", "memory_totals", "container_amounts", "job_of", "job_from", "parse_time"]

ZONE_LABEL = "topology.kubernetes.io/zone"
GPU_RESOURCE = "nvidia.com/gpu"
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class RecordError(ValueError):
    """An object that cannot be read as a Node or Pod; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    uid: str
    api_version: str = ""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    uid: str
    allocatable_memory: int
    allocatable_gpus: int = 0
    zone: str = ""
    ready: bool = True
    unschedulable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""


@dataclass(frozen=True, slots=True)
class PodRecord:
    uid: str
    namespace: str
    name: str
    node_name: str = ""
    memory_request: int = 0
    memory_limit: int = 0
    priority: int = 0
    priority_class: str = ""
    phase: str = "Pending"
    terminating: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)  # guardgrid.io/ keys only
    images: tuple[str, ...] = ()
    owner: OwnerRef | None = None
    scheduled_at: float | None = None  # epoch seconds of PodScheduled=True, when the API says so
    created_at: float | None = None
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def holds_memory(self) -> bool:
        """Bound and not finished: the kubelet still reserves its request."""
        return bool(self.node_name) and self.phase not in _TERMINAL_PHASES

    @property
    def standby_for(self) -> str:
        return self.labels.get(keys.STANDBY_FOR, "")

    @property
    def is_standby(self) -> bool:
        """A GuardGrid standby slot: by its PriorityClass or its label (either suffices)."""
        return self.priority_class == keys.PRIORITY_CLASS_STANDBY or bool(self.standby_for)

    @property
    def job(self) -> str:
        return job_of(self.labels, self.annotations, self.owner)


class PodEssentials(NamedTuple):
    """What a scheduling decision needs of the pod being scheduled, and no more (guardgrid.placement.PodDemand
    reads these four from either this or a PodRecord). guardgrid.pod_reader reads them straight from JSON, once
    per filter request: a tuple, which is made in a third of a frozen dataclass's time."""

    uid: str
    job: str
    memory_request: int
    memory_limit: int


def job_of(labels: Mapping[str, str], annotations: Mapping[str, str], owner: OwnerRef | None) -> str:
    """The GuardGrid job a pod belongs to: label, then annotation `guardgrid.io/job`, then controller owner.

    Standby slots are not members of a job (they serve one: see `standby_for`), so they get "".
    """
    return job_from(labels.get(keys.STANDBY_FOR), labels.get(keys.JOB), annotations.get(keys.JOB),
                    owner.name if owner is not None else None)


def job_from(standby_for: str | None, job_label: str | None, job_annotation: str | None,
             owner_name: str | None) -> str:
    """`job_of` from the four values it reads (None: absent), for readers that find only those."""
    if standby_for:
        return ""
    return job_label or job_annotation or owner_name or ""


def parse_time(text: Any) -> float | None:
    """RFC 3339 time as epoch seconds; None for absent or unreadable values (never fatal)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):  # timestamp(): the latter two outside the platform's time_t
        return None


def _dict(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    """A JSON array, or null read as empty: iterating anything else would read a string's characters or
    raise a TypeError, which is not a reason a caller can give."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    mapping = _dict(value, where)
    return {str(k): str(v) for k, v in mapping.items()}


def node_from_dict(obj: Mapping[str, Any]) -> NodeRecord:
    """Read a Node as the API server (or a cluster file, or kube-scheduler in full mode) serves it."""
    obj = _dict(obj, "node")
    meta = _dict(obj.get("metadata"), "node.metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise RecordError("node.metadata.name: missing")
    status = _dict(obj.get("status"), f"node {name}: status")
    spec = _dict(obj.get("spec"), f"node {name}: spec")
    allocatable = _dict(status.get("allocatable") or status.get("capacity"), f"node {name}: status.allocatable")
    try:
        memory = memory_bytes(allocatable.get("memory", 0))
        gpus = int(parse_quantity(allocatable.get(GPU_RESOURCE, 0)))
    except QuantityError as exc:
        raise RecordError(f"node {name}: {exc}") from exc
    ready = True
    for condition in _list(status.get("conditions"), f"node {name}: status.conditions"):
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    labels = _str_map(meta.get("labels"), f"node {name}: labels")
    return NodeRecord(
        name=name,
        uid=str(meta.get("uid") or ""),
        allocatable_memory=memory,
        allocatable_gpus=gpus,
        zone=labels.get(ZONE_LABEL, ""),
        ready=ready,
        unschedulable=bool(spec.get("unschedulable", False)),
        labels=labels,
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def container_amounts(request: Any, limit: Any) -> tuple[int, int]:
    """(request, limit) bytes of one container's memory quantities, None for either unset."""
    return (memory_bytes(request) if request is not None else 0, memory_bytes(limit) if limit is not None else 0)


def _container_memory(containers: Any, where: str) -> list[tuple[int, int]]:
    """(request, limit) bytes per container; a missing request defaults to the limit, as in Kubernetes."""
    amounts = []
    for container in _list(containers, f"{where}: containers"):
        container = _dict(container, where)
        resources = _dict(container.get("resources"), where)
        requests = _dict(resources.get("requests"), where)
        limits = _dict(resources.get("limits"), where)
        limit = limits.get("memory")
        amounts.append(container_amounts(requests.get("memory", limit), limit))
    return amounts


def memory_totals(app: Sequence[tuple[int, int]], inits: Sequence[tuple[int, bool]], overhead: int,
                  ) -> tuple[int, int]:
    """Effective memory (request, limit) as the scheduler computes it, from the app containers' (request,
    limit), the init containers' (request, is a sidecar) in order, and the pod overhead.

    Request: max(sum over app containers + sidecar init containers, largest ordinary init container
    on top of the sidecars started before it) + overhead. Limit: the app containers' sum, or 0 when any
    app container is unlimited (the pod as a whole is then unbounded).
    """
    sidecar_total = 0
    init_peak = 0
    for amount, sidecar in inits:
        if sidecar:
            sidecar_total += amount
            init_peak = max(init_peak, sidecar_total)
        else:
            init_peak = max(init_peak, sidecar_total + amount)
    request = max(sum(r for r, _ in app) + sidecar_total, init_peak) + overhead
    limits = [lim for _, lim in app]
    limit = sum(limits) + overhead if limits and all(limits) else 0
    return request, limit


def pod_memory_request(spec: Mapping[str, Any], where: str = "pod") -> tuple[int, int]:
    """Effective memory (request, limit) of a pod spec: `memory_totals` of its containers."""
    try:
        app = _container_memory(spec.get("containers"), where)
        inits = _list(spec.get("initContainers"), f"{where}: initContainers")
        sidecars = [isinstance(init, Mapping) and init.get("restartPolicy") == "Always" for init in inits]
        init_amounts = [amount for amount, _ in _container_memory(inits, where)]
        overhead = _dict(spec.get("overhead"), where).get("memory")
        extra = memory_bytes(overhead) if overhead is not None else 0
    except QuantityError as exc:
        raise RecordError(f"{where}: {exc}") from exc
    return memory_totals(app, list(zip(init_amounts, sidecars, strict=True)), extra)


def pod_from_dict(obj: Mapping[str, Any]) -> PodRecord:
    """Read a Pod as the API server, a cluster file, kube-scheduler or an AdmissionReview carries it."""
    obj = _dict(obj, "pod")
    meta = _dict(obj.get("metadata"), "pod.metadata")
    name = meta.get("name") or meta.get("generateName") or ""
    if not isinstance(name, str):
        raise RecordError("pod.metadata.name: expected a string")
    namespace = str(meta.get("namespace") or "default")
    where = f"pod {namespace}/{name}"
    spec = _dict(obj.get("spec"), f"{where}: spec")
    status = _dict(obj.get("status"), f"{where}: status")
    request, limit = pod_memory_request(spec, where)
    owner = None
    for ref in _list(meta.get("ownerReferences"), f"{where}: ownerReferences"):
        if isinstance(ref, Mapping) and ref.get("controller"):
            owner = OwnerRef(kind=str(ref.get("kind", "")), name=str(ref.get("name", "")),
                             uid=str(ref.get("uid", "")), api_version=str(ref.get("apiVersion", "")))
            break
    scheduled_at = None
    for condition in _list(status.get("conditions"), f"{where}: status.conditions"):
        if isinstance(condition, Mapping) and condition.get("type") == "PodScheduled" \
                and condition.get("status") == "True":
            scheduled_at = parse_time(condition.get("lastTransitionTime"))
    annotations = {k: v for k, v in _str_map(meta.get("annotations"), f"{where}: annotations").items()
                   if k.startswith(keys.PREFIX)}
    images = tuple(str(c.get("image", "")) for c in _list(spec.get("containers"), where) if isinstance(c, Mapping))
    priority = spec.get("priority", 0)
    return PodRecord(
        uid=str(meta.get("uid") or ""),
        namespace=namespace,
        name=name,
        node_name=str(spec.get("nodeName") or ""),
        memory_request=request,
        memory_limit=limit,
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
        priority_class=str(spec.get("priorityClassName") or ""),
        phase=str(status.get("phase") or "Pending"),
        terminating=meta.get("deletionTimestamp") is not None,
        labels=_str_map(meta.get("labels"), f"{where}: labels"),
        annotations=annotations,
        images=images,
        owner=owner,
        scheduled_at=scheduled_at,
        created_at=parse_time(meta.get("creationTimestamp")),
        resource_version=str(meta.get("resourceVersion") or ""),
    )
