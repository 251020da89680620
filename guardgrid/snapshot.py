"""The predictor snapshot: what the predictor publishes at `GET /v1/snapshot` and the others read.

Why a schema in core: the extender scores with it, the webhook reads checkpoint advice from it, the
simulation passes it between the real planning and scoring code; one definition keeps them from drifting.
Wire form (JSON, `apiVersion: guardgrid.io/v1`, `kind: Snapshot`):

    {
      "apiVersion": "guardgrid.io/v1", "kind": "Snapshot",
      "generated_at": 1795000000.0,          # epoch seconds the forecast was made
      "horizon_seconds": 600,
      "stale": false,                        # true: Prometheus was unreachable, data is last-known
      "mode": "proactive" | "reactive",
      "cluster_memory_load": 0.62,           # sum(forecast mean) / sum(allocatable)
      "nodes": {"worker-1": {"forecast_mean_bytes": ..., "forecast_std_bytes": ...,
                             "fault_rate_per_hour": ..., "allocatable_bytes": ..., "oom_risk": ...}},
      "workloads": {"resnet50-train": {"peak_memory_bytes": ...}},
      "standby": [{"job": "resnet50-train", "node": "worker-3", "memory_bytes": ..., "pod": "ns/name",
                   "state": "ready" | "pending" | "planned"}],
      "jobs": {"resnet50-train": {"checkpoint_interval_seconds": 1800, "mtbf_seconds": ... | null,
                                  "checkpoint_cost_seconds": 60}},   # null MTBF: infinite
      "source": "prometheus" | "synthetic" | "static"   # where the history came from
    }

Unknown keys are ignored (forward compatibility); missing or mistyped required keys raise
`SnapshotError` naming the key, so a broken predictor never yields a silently wrong score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

__all__ = ["Snapshot", "NodeForecast", "WorkloadPeak", "StandbySlot", "JobAdvice", "SnapshotError",
           "API_VERSION", "KIND"]

API_VERSION = "guardgrid.io/v1"
KIND = "Snapshot"
Mode = Literal["proactive", "reactive"]


class SnapshotError(ValueError):
    """A snapshot body that does not follow the schema; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class NodeForecast:
    forecast_mean_bytes: float
    forecast_std_bytes: float
    fault_rate_per_hour: float
    allocatable_bytes: float
    oom_risk: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkloadPeak:
    peak_memory_bytes: float


@dataclass(frozen=True, slots=True)
class StandbySlot:
    job: str
    node: str
    memory_bytes: float
    pod: str = ""
    state: str = "planned"


@dataclass(frozen=True, slots=True)
class JobAdvice:
    checkpoint_interval_seconds: float
    mtbf_seconds: float
    checkpoint_cost_seconds: float


@dataclass(frozen=True)
class Snapshot:
    generated_at: float
    horizon_seconds: float = 600.0
    stale: bool = False
    mode: Mode = "proactive"
    cluster_memory_load: float = 0.0
    nodes: Mapping[str, NodeForecast] = field(default_factory=dict)
    workloads: Mapping[str, WorkloadPeak] = field(default_factory=dict)
    standby: tuple[StandbySlot, ...] = ()
    jobs: Mapping[str, JobAdvice] = field(default_factory=dict)
    source: str = "prometheus"  # where the history came from: prometheus, synthetic (demo), static (tests)

    def age(self, now: float) -> float:
        return max(0.0, now - self.generated_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "generated_at": self.generated_at,
            "horizon_seconds": self.horizon_seconds,
            "stale": self.stale,
            "mode": self.mode,
            "cluster_memory_load": self.cluster_memory_load,
            "nodes": {name: asdict(node) for name, node in self.nodes.items()},
            "workloads": {name: asdict(w) for name, w in self.workloads.items()},
            "standby": [asdict(s) for s in self.standby],
            "jobs": {name: _finite_or_null(asdict(j)) for name, j in self.jobs.items()},
            "source": self.source,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, body: bytes | str) -> Snapshot:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise SnapshotError(f"snapshot is not JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Snapshot:
        if not isinstance(data, Mapping):
            raise SnapshotError("snapshot: expected a JSON object")
        if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
            raise SnapshotError(f"snapshot: expected apiVersion {API_VERSION} kind {KIND}, got "
                                f"{data.get('apiVersion')!r} {data.get('kind')!r}")
        mode = data.get("mode", "proactive")
        if mode not in ("proactive", "reactive"):
            raise SnapshotError(f"snapshot.mode: {mode!r} is not proactive or reactive")
        return cls(
            generated_at=_number(data, "generated_at", "snapshot"),
            horizon_seconds=_number(data, "horizon_seconds", "snapshot", 600.0),
            stale=bool(data.get("stale", False)),
            mode=mode,
            cluster_memory_load=_number(data, "cluster_memory_load", "snapshot", 0.0),
            nodes={name: NodeForecast(
                forecast_mean_bytes=_number(n, "forecast_mean_bytes", f"nodes.{name}"),
                forecast_std_bytes=_number(n, "forecast_std_bytes", f"nodes.{name}"),
                fault_rate_per_hour=_number(n, "fault_rate_per_hour", f"nodes.{name}", 0.0),
                allocatable_bytes=_number(n, "allocatable_bytes", f"nodes.{name}", 0.0),
                oom_risk=_number(n, "oom_risk", f"nodes.{name}", 0.0),
            ) for name, n in _mapping(data, "nodes").items()},
            workloads={name: WorkloadPeak(_number(w, "peak_memory_bytes", f"workloads.{name}"))
                       for name, w in _mapping(data, "workloads").items()},
            standby=tuple(StandbySlot(
                job=_string(s, "job", f"standby[{i}]"), node=_string(s, "node", f"standby[{i}]"),
                memory_bytes=_number(s, "memory_bytes", f"standby[{i}]"),
                pod=str(s.get("pod", "")), state=str(s.get("state", "planned")),
            ) for i, s in enumerate(_sequence(data, "standby"))),
            jobs={name: JobAdvice(
                checkpoint_interval_seconds=_number(j, "checkpoint_interval_seconds", f"jobs.{name}"),
                mtbf_seconds=_number(j, "mtbf_seconds", f"jobs.{name}", math.inf, null_means_infinite=True),
                checkpoint_cost_seconds=_number(j, "checkpoint_cost_seconds", f"jobs.{name}", 0.0),
            ) for name, j in _mapping(data, "jobs").items()},
            source=str(data.get("source", "prometheus")),
        )


def _finite_or_null(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity (orjson writes null): an infinite MTBF, a node that never fails, goes out as null."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in values.items()}


def _number(data: Any, key: str, where: str, default: float | None = None,
            null_means_infinite: bool = False) -> float:
    if not isinstance(data, Mapping):
        raise SnapshotError(f"{where}: expected an object")
    if null_means_infinite and key in data and data[key] is None:
        return math.inf
    value = data.get(key, default)
    if value is None:
        raise SnapshotError(f"{where}.{key}: missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SnapshotError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def _string(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise SnapshotError(f"{where}.{key}: expected a non-empty string")
    return value


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise SnapshotError(f"snapshot.{key}: expected an object")
    return value


def _sequence(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise SnapshotError(f"snapshot.{key}: expected a list of objects")
    return value
