"""The node-cache filter through the compiled kernel (guardgrid/_kernel.c), when it is built.

Why: the same decision as `evaluate` + `passed_mask` + `explain_filter` + `score_array` (guardgrid.placement),
in one pass of C instead of ~40 numpy calls and ~150 distinct lines of Python, which cost 0.65-0.9 ms per
filter in a gunicorn worker whose caches go cold between requests (docs/bench-extender.md).

The Python decision stays the reference and the fallback: `filter_body_decision` returns None when the
module is not built (`make` builds it; see scripts/build_kernel.py), when the name table needs exact lookups,
or when the kernel meets anything it does not reproduce bit for bit (a NaN figure, a name JSON escapes).
tests/test_kernel.py compares the two on random clusters and bodies, byte for byte.
"""

from __future__ import annotations

from typing import NamedTuple

from guardgrid.config import Settings
from guardgrid.placement import UNKNOWN_NODE_MESSAGE, ForecastAligner, PodDemand
from guardgrid.snapshot import Snapshot
from guardgrid.state import ClusterState

try:
    from guardgrid import _kernel
except ImportError:  # not built: every decision is the Python one
    _kernel = None  # type: ignore[assignment]

__all__ = ["BodyFilter", "available", "filter_body_decision"]


def available() -> bool:
    return _kernel is not None


class BodyFilter(NamedTuple):
    """A filter answered from the request's bytes: every text byte for byte what the Python path writes. A
    tuple: one is made per filter request."""

    answer: bytes  # the ExtenderFilterResult
    names_json: bytes  # the passed names as a JSON array, for the prioritize request that follows
    priority_list: bytes  # the HostPriorityList that prioritize request gets
    passed: int
    oom_risk: int  # rejections by reason, as the metrics count them
    unknown: int


def filter_body_decision(state: ClusterState, snapshot: Snapshot | None, aligner: ForecastAligner,
                         pod: PodDemand, body: bytes, start: int, end: int, settings: Settings,
                         since: float | None, recent: dict[str, float] | None = None) -> BodyFilter | None:
    """The filter for the candidates in `body[start:end]`, a `"NodeNames"` JSON array, straight from and to
    bytes; None when the names are not all plain (no escapes, each sent once), or for anything else the kernel
    does not reproduce (see the module's docstring): then decide with guardgrid.placement.

    `since` is `inflight_since(snapshot, now, settings)`, already applied to the state (its expired binds
    dropped), exactly as `evaluate` would compute it; `recent` is `state.inflight_by_node(since)` when the
    caller already has it. The figures are read as `evaluate` reads them.

    Why bytes: ~500 str objects made, hashed and collected into lists and dicts, then encoded again, were a
    third of a compiled filter's time in a worker (docs/bench-extender.md, "Fourth round").
    """
    table = state.table
    index = table.name_index
    if _kernel is None or index.exact or len(table) == 0:
        return None
    existing = state.pods.get(pod.uid)
    existing_row = -1
    if existing is not None and existing.holds_memory:
        existing_row = table.index.get(existing.node_name, -1)
    if since is not None:
        assert snapshot is not None
        forecast = aligner.align(snapshot, table).columns
        recent = state.inflight_by_node(since) if recent is None else recent
    else:
        forecast, recent = None, {}
    outcome = _kernel.filter_body(
        body, start, end, index.bucket_hashes, index.slot_rows, index.mask, table.memory, forecast,
        state.own_standby(pod.job), recent, existing_row,
        float(existing.memory_request) if existing is not None else 0.0, pod.peak, settings.risk_threshold,
        settings.filter_keep_least_risky, settings.fallback_spread, settings.fault_prior_rate_per_hour,
        settings.fault_rate_reference_per_hour, settings.weight_risk, settings.weight_balance,
        settings.weight_fault, UNKNOWN_NODE_MESSAGE)
    return BodyFilter._make(outcome) if outcome is not None else None
