"""Predictor benchmark: full cycles for 5000 nodes x 6 h of one-minute samples, history fed directly.

`python bench/predictor.py` (part of `make bench`). Target: one cycle <= 2 s on 2 cores.

What a cycle does here is exactly what it does in production (predictor.cycle.PredictorCycle.run), minus the
Prometheus round trips: Holt forecasts with per-node parameter selection over 5000 x 360 samples, fault rates
from readiness and OOM series, node risk, the standby plan over every protected job, reconciling slot pods
through the in-memory KubeAPI, checkpoint advice, learned peaks of every pod, the snapshot, its JSON and the
/metrics gauges. The snapshot JSON is encoded as the HTTP app would.

Cluster: drawn from the real Alibaba cluster-trace-gpu-v2023 (openb) by bench/trace_cluster.py: node
capacities from nodes.csv, pod memory requests from pods.csv (credit: Alibaba cluster-trace-gpu-v2023, used
by the USENIX ATC'23 FGD paper). The trace has no memory usage over time, so the history is modelled:
usage = requested memory x a per-node ratio in [0.6, 1.05], a linear trend on a fifth of the nodes, steps
(pods arriving or leaving) on another fifth, Gaussian noise of 0.5-2% of allocatable, 0-2 NotReady episodes
and a few OOM kills on some nodes, 3% of samples missing.

The first cycle creates and deletes slot pods (the drawn cluster has a slot for 40% of the jobs, the plan
keeps at most GUARDGRID_MAX_STANDBY_SLOTS); later cycles are steady state. Both are reported; `cycle_s` is the
slowest. RSS is the process's resident memory after the cycles: the cluster state as the informer holds it
(decoded records; the trace is drawn in a child process), the history, and what the cycles allocated.
Printed last: one JSON object with `cycle_s` and `rss_mb`.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

if __package__ in (None, ""):  # run as a script: make `guardgrid`, `predictor` and `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if sys.path[1] == str(Path(__file__).resolve().parent):
        del sys.path[1]

from bench.common import rss_bytes  # noqa: E402
from bench.trace_cluster import TRACE_CREDIT, build_cluster  # noqa: E402
from guardgrid.config import load_settings  # noqa: E402
from guardgrid.kubeapi.memory import InMemoryKubeAPI  # noqa: E402
from guardgrid.records import NodeRecord, PodRecord, node_from_dict, pod_from_dict  # noqa: E402
from guardgrid.state import ClusterState  # noqa: E402
from predictor.cycle import PredictorCycle  # noqa: E402
from predictor.sources import MetricsWindow, StaticSource, window_times  # noqa: E402

NOW = 1_800_000_000.0
STEP = 60.0


def modelled_history(names: list[str], allocatable: np.ndarray, requested: np.ndarray, hours: float,
                     seed: int) -> MetricsWindow:
    """Six hours of node memory, readiness and OOM counters for the drawn cluster (see the module docstring)."""
    rng = np.random.default_rng(seed)
    times = window_times(NOW, hours * 3600, STEP)
    count, samples = len(names), len(times)
    t = np.arange(samples, dtype=np.float64)
    ratio = rng.uniform(0.6, 1.05, count)
    base = requested * ratio
    kind = rng.integers(0, 5, count)  # 0: trend, 1: steps, else flat
    trend = np.where(kind == 0, rng.uniform(-0.0002, 0.0005, count) * allocatable, 0.0)
    memory = base[:, None] + trend[:, None] * (t - samples)
    steppers = np.flatnonzero(kind == 1)
    for i in steppers:
        at = rng.integers(0, samples, 3)
        for start in at:
            memory[i, start:] += rng.normal(0, 0.05) * allocatable[i]
    memory += rng.normal(0, 1, (count, samples)) * (rng.uniform(0.005, 0.02, count) * allocatable)[:, None]
    memory = np.clip(memory, 0.02 * allocatable[:, None], allocatable[:, None])
    memory[rng.random((count, samples)) < 0.03] = np.nan
    ready = np.ones((count, samples))
    for i in np.flatnonzero(rng.random(count) < 0.05):
        for _ in range(rng.integers(1, 3)):
            start = rng.integers(0, samples - 5)
            ready[i, start:start + rng.integers(1, 5)] = 0.0
    oom = np.cumsum(rng.random((count, samples)) < 0.0005, axis=1).astype(np.float64)
    return MetricsWindow("static", tuple(names), times, STEP, memory, ready, oom, np.zeros(count))


def draw_cluster(nodes: int, pods: int, seed: int) -> tuple[list[NodeRecord], list[PodRecord], dict[str, Any]]:
    """The trace cluster as the predictor's informer would hold it: decoded records (runs in a child process)."""
    cluster = build_cluster(nodes=nodes, pods=pods, seed=seed, now=NOW)
    return ([node_from_dict(o) for o in cluster.items if o.get("kind") == "Node"],
            [pod_from_dict(o) for o in cluster.items if o.get("kind") == "Pod"], cluster.stats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000, help="pods drawn from the trace (default %(default)s)")
    parser.add_argument("--hours", type=float, default=6.0, help="history per node (default %(default)s)")
    parser.add_argument("--cycles", type=int, default=3, help="cycles to time (default %(default)s)")
    parser.add_argument("--seed", type=int, default=20230710)
    args = parser.parse_args()

    began = time.perf_counter()
    # Drawn in a child process: the trace's half a million raw dicts would otherwise stay in this process's
    # heap and inflate its RSS far beyond what the predictor holds (slim records, as its informer keeps them).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        nodes, pods, stats = pool.apply(draw_cluster, (args.nodes, args.pods, args.seed))
    state = ClusterState()
    state.replace_nodes(nodes)
    state.replace_pods(pods)
    del nodes, pods
    names = [n.name for n in state.table.nodes]
    requested = np.maximum(state.table.requested - state.table.standby, 0.0)
    window = modelled_history(names, state.table.allocatable, requested, args.hours, args.seed)
    rng = np.random.default_rng(args.seed)
    peaks = {(p.namespace, p.name): p.memory_request * float(rng.uniform(0.5, 1.1)) for p in state.all_pods()
             if p.holds_memory and not p.is_standby}
    window = MetricsWindow(window.source, window.nodes, window.times, STEP, window.memory_used, window.ready,
                           window.oom_counter, window.pod_oom_kills, peaks)
    gc.collect()
    setup_s = time.perf_counter() - began

    settings = load_settings({}, history_seconds=args.hours * 3600, step_seconds=STEP)
    api = InMemoryKubeAPI(clock=lambda: NOW)  # slot pods are created here; the drawn slots are not in it
    cycle = PredictorCycle(settings, state, StaticSource(window), api, clock=lambda: NOW)
    timings: list[float] = []
    reports = []
    for _ in range(max(1, args.cycles)):
        started = time.perf_counter()
        report = cycle.run()
        body = orjson.dumps({**report.snapshot.to_dict(), "source": report.source},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        timings.append(time.perf_counter() - started)
        reports.append((report, len(body)))

    rss_mb = rss_bytes(os.getpid()) / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first, body_bytes = reports[0]
    last = reports[-1][0]
    print(f"cluster: {TRACE_CREDIT}; {stats['nodes']} nodes, {stats['pods']} pods "
          f"({stats['bound_pods']} bound), {stats['jobs']} training jobs, {stats['standby_slots']} drawn slots; "
          f"history {args.hours:g} h x {len(window.times)} samples per node; setup {setup_s:.1f} s")
    print(f"plan: mode {last.snapshot.mode}, load {last.snapshot.cluster_memory_load:.2f}, "
          f"wanted {last.plan.wanted if last.plan else 0} slots; first cycle created "
          f"{len(first.reconcile.created) if first.reconcile else 0} and deleted "
          f"{len(first.reconcile.deleted) if first.reconcile else 0} slot pods; snapshot {body_bytes / 1e6:.1f} MB")
    print("| cycle | seconds |")
    print("|---|---|")
    for index, seconds in enumerate(timings, 1):
        print(f"| {index}{' (reconciles the drawn slots)' if index == 1 else ''} | {seconds:.3f} |")
    print(f"steady-state median {statistics.median(timings[1:] or timings):.3f} s; RSS {rss_mb:.0f} MB "
          f"(peak {peak_mb:.0f} MB)")
    print(json.dumps({"cycle_s": round(max(timings), 3), "cycle_steady_s": round(statistics.median(timings[1:] or
                                                                                                      timings), 3),
                      "rss_mb": round(rss_mb, 1), "nodes": args.nodes, "samples": len(window.times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
