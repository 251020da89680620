"""An in-memory API server for tests, benchmarks and the local demo.

Why not a mock: it keeps the API server's semantics GuardGrid depends on (monotonic resourceVersions, watch
from a version, 410 Expired once the event log is compacted past it, bookmarks, 409 on duplicate names,
PodDisruptionBudgets that turn an eviction into 429), so the same informer and planner code runs against it
and against a real cluster. It loads a `v1 List` of Nodes, Pods and PodDisruptionBudgets from YAML or JSON
(`GUARDGRID_CLUSTER_FILE`).
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from guardgrid.kubeapi.base import (EvictionOutcome, EvictionResult, Kind, KubeAPI, KubeAPIError, ListResult,
                                    ResourceExpired, WatchEvent)
from guardgrid.records import PodRecord, node_from_dict, pod_from_dict

__all__ = ["InMemoryKubeAPI", "load_cluster_file", "ClusterFileError"]


class ClusterFileError(ValueError):
    """The cluster file cannot be read; the message names the file and the item."""


def load_cluster_file(path: str | Path) -> list[dict[str, Any]]:
    """Objects of a `v1 List` (or a YAML stream of objects) in a file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ClusterFileError(f"cluster file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            documents = [orjson.loads(text)]
        else:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ClusterFileError(f"cluster file {path}: not valid JSON/YAML: {exc}") from exc
    objects: list[dict[str, Any]] = []
    for document in documents:
        if not isinstance(document, dict):
            raise ClusterFileError(f"cluster file {path}: expected objects, got {type(document).__name__}")
        if document.get("kind", "").endswith("List") and "items" in document:
            objects.extend(document["items"] or [])
        else:
            objects.append(document)
    return objects


def _key(obj: Mapping[str, Any], kind: str) -> str:
    meta = obj.get("metadata") or {}
    return meta["name"] if kind == "nodes" else f"{meta.get('namespace') or 'default'}/{meta['name']}"


def _with_own_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy `_store` may stamp: only `metadata` is written, and the object is serialised right after."""
    return {**obj, "metadata": dict(obj.get("metadata") or {})}


def _encode(obj: Mapping[str, Any]) -> bytes:
    """JSON as the API server would serve it; YAML timestamps (datetime) become RFC 3339 strings."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)
    except TypeError as exc:
        name = (obj.get("metadata") or {}).get("name")
        raise ClusterFileError(f"object {name!r} cannot be stored as JSON: {exc}") from None


def _kind_of(obj: Mapping[str, Any]) -> str:
    kind = obj.get("kind")
    if kind == "Node":
        return "nodes"
    if kind == "Pod":
        return "pods"
    if kind == "PodDisruptionBudget":
        return "pdbs"
    raise ClusterFileError(f"unsupported object kind {kind!r} (expected Node, Pod or PodDisruptionBudget)")


class InMemoryKubeAPI(KubeAPI):
    """Thread-safe; `history` bounds the event log (older watches get 410 Expired, as on a real server)."""

    def __init__(self, objects: list[dict[str, Any]] | None = None, history: int = 10000,
                 clock: Any = time.time) -> None:
        self._lock = threading.Condition()
        # Objects are kept serialised, as etcd keeps them: a JSON blob is one untracked allocation, where a
        # decoded Pod is ~100 tracked Python objects. At the benchmark's 150k pods that is ~110 MB instead of
        # ~900 MB per process, and the garbage collector never walks them. Reads decode a private copy.
        self._objects: dict[str, dict[str, bytes]] = {"nodes": {}, "pods": {}, "pdbs": {}}
        self._log: deque[tuple[int, str, str, bytes]] = deque(maxlen=history)
        self._rv = 100
        self._compacted_before = self._rv  # watches from a version below this get 410
        self._clock = clock
        self.events: list[dict[str, Any]] = []  # core/v1 Events recorded by create_event, for assertions
        self.evictions: list[str] = []  # "ns/name" of every granted eviction, in order
        self.leases: dict[str, dict[str, Any]] = {}
        self._interrupts = 0  # bumped by interrupt_watches(); watches opened before a bump return
        for obj in objects or ():
            self._store(_with_own_metadata(obj), _kind_of(obj), "ADDED", log=False)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> InMemoryKubeAPI:
        return cls(load_cluster_file(path), **kwargs)

    # --- storage ---------------------------------------------------------------------------------------
    def _store(self, obj: dict[str, Any], kind: str, event: str, log: bool = True) -> None:
        """Stamp and keep `obj` (the caller's private copy: its metadata is written to)."""
        self._rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._rv)
        meta.setdefault("uid", str(uuid.uuid4()))
        if kind == "pods":
            meta.setdefault("namespace", "default")
        key = _key(obj, kind)
        raw = _encode(obj)
        if event == "DELETED":
            self._objects[kind].pop(key, None)
        else:
            self._objects[kind][key] = raw
        if log and kind != "pdbs":
            if len(self._log) == self._log.maxlen:
                self._compacted_before = self._log[0][0] + 1
            self._log.append((self._rv, kind, event, raw))
            self._lock.notify_all()

    def _get(self, kind: str, key: str) -> dict[str, Any] | None:
        raw = self._objects[kind].get(key)
        return orjson.loads(raw) if raw is not None else None

    def _decode(self, kind: str, raw: bytes) -> Any:
        obj = orjson.loads(raw)
        return node_from_dict(obj) if kind == "nodes" else pod_from_dict(obj)

    # --- KubeAPI ---------------------------------------------------------------------------------------
    def list(self, kind: Kind) -> ListResult:
        with self._lock:
            return ListResult([self._decode(kind, o) for o in self._objects[kind].values()], str(self._rv))

    def watch(self, kind: Kind, resource_version: str, timeout_seconds: float) -> Iterator[WatchEvent]:
        since = int(resource_version or 0)
        deadline = time.monotonic() + timeout_seconds
        with self._lock:
            generation = self._interrupts
            if since < self._compacted_before - 1:
                raise ResourceExpired(f"too old resource version: {since} ({self._compacted_before - 1})")
        while True:
            with self._lock:
                if since < self._compacted_before - 1:
                    raise ResourceExpired(f"too old resource version: {since} ({self._compacted_before - 1})")
                pending = [(rv, event, obj) for rv, k, event, obj in self._log if rv > since and k == kind]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if self._interrupts != generation:
                        return
                    if remaining <= 0:
                        # A real server sends a bookmark before closing a watch that asked for them.
                        yield WatchEvent("BOOKMARK", None, str(self._rv))
                        return
                    self._lock.wait(remaining)
                    continue
            for rv, event, obj in pending:
                since = rv
                yield WatchEvent(event, self._decode(kind, obj), str(rv))

    def create_pod(self, manifest: Mapping[str, Any]) -> PodRecord:
        obj = copy.deepcopy(dict(manifest))
        obj["kind"] = "Pod"
        obj.setdefault("apiVersion", "v1")
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise KubeAPIError("pod needs metadata.name or generateName", 422, "Invalid")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("namespace", "default")
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())))
        obj.setdefault("status", {"phase": "Pending"})
        pod_from_dict(obj)  # validate before storing, as the API server would
        with self._lock:
            if _key(obj, "pods") in self._objects["pods"]:
                raise KubeAPIError(f"pods \"{meta['name']}\" already exists", 409, "AlreadyExists")
            self._store(obj, "pods", "ADDED")
            return pod_from_dict(obj)

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int = 0) -> bool:
        with self._lock:
            obj = self._get("pods", f"{namespace}/{name}")
            if obj is None:
                return False
            self._store(obj, "pods", "DELETED")
            return True

    def evict_pod(self, namespace: str, name: str) -> EvictionResult:
        with self._lock:
            obj = self._get("pods", f"{namespace}/{name}")
            if obj is None:
                return EvictionResult(EvictionOutcome.NOT_FOUND, f'pods "{name}" not found')
            for pdb in map(orjson.loads, self._objects["pdbs"].values()):
                if self._pdb_blocks(pdb, obj):
                    pdb_name = pdb["metadata"]["name"]
                    return EvictionResult(EvictionOutcome.BLOCKED,
                                          f"The disruption budget {pdb_name} does not allow evicting pods currently")
            self._store(obj, "pods", "DELETED")
            self.evictions.append(f"{namespace}/{name}")
            return EvictionResult(EvictionOutcome.EVICTED)

    def _pdb_blocks(self, pdb: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
        """policy/v1 semantics for integer minAvailable/maxUnavailable over matchLabels selectors."""
        meta = pdb.get("metadata") or {}
        pod_meta = pod.get("metadata") or {}
        if (meta.get("namespace") or "default") != pod_meta.get("namespace"):
            return False
        spec = pdb.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = pod_meta.get("labels") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            return False
        prefix = f"{pod_meta.get('namespace')}/"  # pods are keyed namespace/name: decode only this namespace
        same_namespace = (orjson.loads(raw) for key, raw in self._objects["pods"].items() if key.startswith(prefix))
        healthy = sum(1 for p in same_namespace
                      if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())
                      and (p.get("status") or {}).get("phase", "Pending") not in ("Succeeded", "Failed"))
        if "minAvailable" in spec:
            return healthy - 1 < int(spec["minAvailable"])
        if "maxUnavailable" in spec:
            return int(spec["maxUnavailable"]) < 1
        return int((pdb.get("status") or {}).get("disruptionsAllowed", 1)) < 1

    def create_event(self, pod: PodRecord, reason: str, message: str, event_type: str = "Normal") -> None:
        with self._lock:
            self.events.append({"involvedObject": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name,
                                                   "uid": pod.uid},
                                "reason": reason, "message": message, "type": event_type,
                                "source": {"component": "guardgrid"}, "time": self._clock()})

    def interrupt_watches(self) -> None:
        with self._lock:
            self._interrupts += 1
            self._lock.notify_all()

    def acquire_lease(self, namespace: str, name: str, identity: str, duration_seconds: int) -> bool:
        with self._lock:
            now = self._clock()
            lease = self.leases.get(f"{namespace}/{name}")
            if lease is None or lease["holder"] == identity or now >= lease["renewed"] + lease["duration"]:
                self.leases[f"{namespace}/{name}"] = {"holder": identity, "renewed": now,
                                                      "duration": duration_seconds}
                return True
            return False

    # --- helpers for tests, the demo and the simulation (not part of KubeAPI) ----------------------------
    def get_raw(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._get(kind, key)

    def upsert_raw(self, obj: Mapping[str, Any]) -> None:
        """Create or replace any object (what a controller or kubelet would do on a real cluster)."""
        kind = _kind_of(obj)
        with self._lock:
            existed = _key(obj, kind) in self._objects[kind]
            self._store(_with_own_metadata(obj), kind, "MODIFIED" if existed else "ADDED")

    def bind_pod(self, namespace: str, name: str, node: str) -> None:
        """Bind as the scheduler does: set nodeName and PodScheduled=True with the bind time."""
        with self._lock:
            obj = self._get("pods", f"{namespace}/{name}")
            if obj is None:
                raise KubeAPIError(f'pods "{name}" not found', 404, "NotFound")
            obj["spec"]["nodeName"] = node
            status = obj.setdefault("status", {})
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            status["conditions"].append({"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp})
            status["phase"] = "Running"
            self._store(obj, "pods", "MODIFIED")

    def compact(self) -> None:
        """Forget the event log, as etcd compaction does: every older watch now gets 410 Expired."""
        with self._lock:
            self._log.clear()
            self._compacted_before = self._rv + 1
            self._lock.notify_all()

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)
