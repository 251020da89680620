"""A large cluster drawn from the real Alibaba trace, as a `GUARDGRID_CLUSTER_FILE`, plus a matching snapshot.

Data: Alibaba cluster-trace-gpu-v2023 (openb), used by the USENIX ATC'23 FGD paper ("Beware of Fragmentation:
Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent"); a copy lives in data/alibaba-openb-2023/.

Why drawn from the trace instead of invented: node capacities (CPU, memory, GPUs, GPU model) and pod requests
(CPU, memory, GPU share, phase, scheduling time) then have the mix of a real GPU cluster, including its
odd sizes and zero-memory pods, and the benchmark's cost per request is the cost on such a cluster.

Method (deterministic for a given seed):
1. Nodes: sample `nodes` rows of nodes.csv with replacement; allocatable = capacity from the row.
2. Pods: sample rows of pods.csv with replacement. A share become training pods of GuardGrid jobs (1-8
   identical workers per job, label `guardgrid.io/job`, PriorityClass guardgrid-training); the rest are
   ordinary pods in team namespaces. Standby slots (one per protected job, PriorityClass guardgrid-standby,
   label `guardgrid.io/standby-for`) complete the count to exactly `pods`.
3. Phase: a row whose trace phase is Succeeded/Failed becomes a finished pod (it keeps a nodeName but holds
   no memory); a Pending row stays unbound; Running rows and all training pods are placed.
4. Placement: first-fit over the pods in a shuffled order (training pods first, as their higher priority
   would have them), nodes in sampled order, on CPU, memory and GPU share (num_gpu x gpu_milli against
   gpu x 1000), like kube-scheduler's resource fit. Memory may fill a node only up to a per-node load
   ceiling drawn uniformly from [0.55, 0.95] of allocatable: the trace's pods ask for ~2.8x the memory the
   sampled nodes have, so unbounded first-fit would pack every node to ~100% and every OOM-risk decision
   would be a trivial reject. Pods that fit nowhere stay Pending (the scheduler's queue). Standby slots are
   placed last, first-fit on memory up to 100% of allocatable, never on a node running their own job.
   No node ever exceeds its allocatable memory, CPU or GPUs.

What the trace does not have is memory *usage*: the snapshot's forecasts are modelled from requests
(usage = request x a per-node ratio drawn from [0.6, 1.05], spread 2-8% of allocatable, fault rates
log-normal around 0.01/h) and say so in `forecast_snapshot`.

`python bench/trace_cluster.py --out cluster.json [--snapshot snapshot.json]` writes the files.
"""

from __future__ import annotations

import argparse
import csv
import gc
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

if __package__ in (None, ""):  # run as a script: make `guardgrid` and `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if sys.path[1] == str(Path(__file__).resolve().parent):
        del sys.path[1]

from guardgrid import keys  # noqa: E402
from guardgrid.risk import oom_risk  # noqa: E402
from guardgrid.snapshot import JobAdvice, NodeForecast, Snapshot, StandbySlot, WorkloadPeak  # noqa: E402

__all__ = ["TraceCluster", "TrainingJob", "build_cluster", "forecast_snapshot", "write_cluster_file",
           "TRACE_CREDIT", "DATA_DIR"]

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "data" / "alibaba-openb-2023"
FIXTURE_FULL_NODES = REPO / "tests" / "fixtures" / "kube-scheduler" / "full-nodes" / "filter-args.json"
TRACE_CREDIT = "Alibaba cluster-trace-gpu-v2023 (openb), used by the USENIX ATC'23 FGD paper"
MIB = 2**20
ZONES = 16
TEAMS = 20
LOAD_CEILING = (0.55, 0.95)


@dataclass(frozen=True)
class TrainingJob:
    name: str
    namespace: str
    memory_bytes: int  # every worker's request (data-parallel workers are identical)
    nodes: tuple[str, ...]  # where its bound workers run
    standby_node: str = ""  # node of its standby slot ("" when unprotected or no room)
    standby_pod: str = ""


@dataclass
class TraceCluster:
    """The cluster as objects plus what the benchmark needs to build requests and the snapshot."""

    items: list[dict[str, Any]]  # the v1 List's items: Nodes, then Pods
    node_names: list[str]
    full_nodes: list[dict[str, Any]]  # the same nodes as kube-scheduler sends them with nodeCacheCapable: false
    allocatable: np.ndarray  # bytes per node, in node_names order
    workload_requested: np.ndarray  # bytes requested by bound non-standby pods per node
    standby_requested: np.ndarray  # bytes held by standby slots per node
    jobs: list[TrainingJob]
    pod_memory_mib: list[int]  # trace draws, for pods the benchmark asks about
    seed: int
    stats: dict[str, Any] = field(default_factory=dict)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cpu(milli: int) -> str:
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _node_objects(template: dict[str, Any], name: str, row: dict[str, str], index: int, uid: str,
                  created: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cluster-file Node, full-mode Node) in the shape of the captured full-mode request's worker-1."""
    full = orjson.loads(orjson.dumps(template))  # a deep copy, ~10x faster than copy.deepcopy here
    meta = full["metadata"]
    meta.update(name=name, uid=uid, resourceVersion=str(1000 + index), creationTimestamp=created)
    model = row["model"] or "cpu"
    gpus = int(row["gpu"])
    meta["labels"] = {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                      "node.kubernetes.io/instance-type": f"openb-{model.lower()}-{gpus}x",
                      "topology.kubernetes.io/zone": f"zone-{chr(ord('a') + index % ZONES)}"}
    if row["model"]:
        meta["labels"]["nvidia.com/gpu.product"] = row["model"]
    meta["annotations"] = {"node.alpha.kubernetes.io/ttl": "0", "openb.trace/sn": row["sn"]}
    resources = {"cpu": _cpu(int(row["cpu_milli"])), "ephemeral-storage": "500Gi",
                 "memory": f"{int(row['memory_mib'])}Mi", "nvidia.com/gpu": str(gpus), "pods": "110"}
    full["status"]["capacity"] = dict(resources)
    full["status"]["allocatable"] = dict(resources)
    full["status"]["addresses"] = [{"type": "InternalIP", "address": f"10.{index // 65536 % 256}.{index // 256 % 256}."
                                                                     f"{index % 256}"},
                                   {"type": "Hostname", "address": name}]
    stored = orjson.loads(orjson.dumps(full))
    stored["metadata"].pop("managedFields", None)  # the cluster file is stored without them, like cluster.json
    stored = {"apiVersion": "v1", "kind": "Node", **stored}
    return stored, full


def _pod(name: str, namespace: str, uid: str, row: dict[str, str], memory_mib: int, created: str,
         node: str, phase: str, scheduled: str, labels: dict[str, str], priority_class: str = "",
         priority: int = 0, image: str = "registry.example.com/openb/task:1", standby: bool = False,
         owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Pod with the fields a real list returns that matter here (no volumes/tolerations: see docs)."""
    requests: dict[str, str] = {"cpu": "1" if standby else _cpu(int(row["cpu_milli"])), "memory": f"{memory_mib}Mi"}
    limits: dict[str, str] = {}
    gpus = 0 if standby else int(row["num_gpu"])
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        requests["nvidia.com/gpu"] = str(gpus)
    qos = row.get("qos", "")
    if qos == "Guaranteed" and not standby:
        limits["memory"] = requests["memory"]
        limits["cpu"] = requests["cpu"]
    container: dict[str, Any] = {"name": "standby" if standby else "main", "image": image,
                                 "resources": {"requests": requests, **({"limits": limits} if limits else {})},
                                 "imagePullPolicy": "IfNotPresent"}
    if standby:
        container["command"] = ["sleep", "infinity"]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "creationTimestamp": created,
                                "labels": labels}
    if standby:
        metadata["annotations"] = {keys.INJECT: "false"}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Always" if standby else "OnFailure",
                            "schedulerName": keys.SCHEDULER_NAME if priority_class else "default-scheduler",
                            "priority": priority, "terminationGracePeriodSeconds": 0 if standby else 30}
    if priority_class:
        spec["priorityClassName"] = priority_class
    if standby:
        spec["preemptionPolicy"] = "Never"
    status: dict[str, Any] = {"phase": phase, "qosClass": "Guaranteed" if "memory" in limits else "Burstable"}
    if node:
        spec["nodeName"] = node
        status["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


class _Packer:
    """First-fit over nodes in a fixed order on CPU, memory (up to a ceiling) and GPU share, vectorised."""

    def __init__(self, cpu: np.ndarray, memory: np.ndarray, gpu_milli: np.ndarray, ceiling: np.ndarray) -> None:
        self.free_cpu = cpu.astype(np.int64).copy()
        self.free_gpu = gpu_milli.astype(np.int64).copy()
        self.allocatable = memory.astype(np.int64)
        self.used = np.zeros(len(memory), dtype=np.int64)
        self.ceiling = (memory * ceiling).astype(np.int64)

    def place(self, cpu: int, memory: int, gpu: int, full: bool = False, avoid: set[int] | None = None) -> int:
        limit = self.allocatable if full else self.ceiling
        fits = (self.free_cpu >= cpu) & (limit - self.used >= memory) & (self.free_gpu >= gpu)
        if avoid:
            fits[list(avoid)] = False
        i = int(fits.argmax())
        if not fits[i]:
            return -1
        self.free_cpu[i] -= cpu
        self.free_gpu[i] -= gpu
        self.used[i] += memory
        return i


def build_cluster(nodes: int = 5000, pods: int = 150_000, seed: int = 20230710, training_share: float = 0.10,
                  protected_share: float = 0.40, now: float | None = None, data_dir: Path = DATA_DIR) -> TraceCluster:
    """Draw the cluster (see the module docstring for the method)."""
    # Half a million acyclic dicts: the cyclic GC would rescan them again and again for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(nodes, pods, seed, training_share, protected_share, now, data_dir)
    finally:
        if enabled:
            gc.enable()


def _build(nodes: int, pods: int, seed: int, training_share: float, protected_share: float, now: float | None,
           data_dir: Path) -> TraceCluster:
    if nodes < 1 or pods < 1:
        raise ValueError("a cluster needs at least one node and one pod")
    now = time.time() if now is None else now
    rng = random.Random(seed)
    node_rows = _read_csv(data_dir / "nodes.csv")
    pod_rows = _read_csv(data_dir / "pods.csv")
    template = orjson.loads(FIXTURE_FULL_NODES.read_bytes())["Nodes"]["items"][0]

    # Trace times are seconds from the trace's start; the trace's last event is put 2 h before `now`.
    trace_end = max(int(r["creation_time"]) for r in pod_rows)
    anchor = now - 7200 - trace_end

    sampled_nodes = [rng.choice(node_rows) for _ in range(nodes)]
    names = [f"{row['sn']}-{i:04d}" for i, row in enumerate(sampled_nodes)]
    items: list[dict[str, Any]] = []
    full_nodes: list[dict[str, Any]] = []
    for i, (name, row) in enumerate(zip(names, sampled_nodes)):
        stored, full = _node_objects(template, name, row, i, _uid(rng), _stamp(anchor))
        items.append(stored)
        full_nodes.append(full)
    cpu = np.array([int(r["cpu_milli"]) for r in sampled_nodes])
    memory = np.array([int(r["memory_mib"]) * MIB for r in sampled_nodes], dtype=np.int64)
    gpu_milli = np.array([int(r["gpu"]) * 1000 for r in sampled_nodes])
    ceilings = np.array([rng.uniform(*LOAD_CEILING) for _ in range(nodes)])
    packer = _Packer(cpu, memory, gpu_milli, ceilings)
    workload = np.zeros(nodes, dtype=np.int64)
    standby_bytes = np.zeros(nodes, dtype=np.int64)

    # --- training jobs: identical workers, all meant to run ------------------------------------------------
    training_pods = int(pods * training_share)
    job_specs: list[tuple[str, str, dict[str, str], int]] = []  # name, namespace, row, size
    planned = 0
    while planned < training_pods:
        size = min(rng.randint(1, 8), training_pods - planned)
        job_specs.append((f"train-{len(job_specs):04d}", f"ml-team-{len(job_specs) % 8}", rng.choice(pod_rows), size))
        planned += size
    protected = set(rng.sample(range(len(job_specs)), int(len(job_specs) * protected_share)))
    standby_count = len(protected)
    ordinary = max(0, pods - training_pods - standby_count)

    pod_objects: list[dict[str, Any]] = []
    job_nodes: list[list[int]] = [[] for _ in job_specs]
    training_order = [(j, w) for j, (_, _, _, size) in enumerate(job_specs) for w in range(size)]
    rng.shuffle(training_order)
    bound = pending = finished = 0
    for j, worker in training_order:
        job, namespace, row, _ = job_specs[j]
        mem = int(row["memory_mib"])
        gpu = int(row["num_gpu"]) * int(row["gpu_milli"] or 0)
        i = packer.place(int(row["cpu_milli"]), mem * MIB, gpu)
        node = names[i] if i >= 0 else ""
        if i >= 0:
            job_nodes[j].append(i)
            workload[i] += mem * MIB
            bound += 1
        else:
            pending += 1
        scheduled = anchor + int(row["scheduled_time"] or row["creation_time"])
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": _uid(rng), "controller": True,
                 "blockOwnerDeletion": True}
        pod_objects.append(_pod(f"{job}-{worker}", namespace, _uid(rng), row, mem,
                                _stamp(anchor + int(row["creation_time"])), node,
                                "Running" if node else "Pending", _stamp(scheduled),
                                {"app": job, keys.JOB: job}, keys.PRIORITY_CLASS_TRAINING, keys.PRIORITY_TRAINING,
                                image="registry.example.com/ml/pytorch-train:2.4-cuda12", owner=owner))

    # --- ordinary pods, in the trace's phases ----------------------------------------------------------------
    for k in range(ordinary):
        row = rng.choice(pod_rows)
        mem = int(row["memory_mib"])
        phase = row["pod_phase"]
        node, i = "", -1
        if phase in ("Succeeded", "Failed"):
            node = names[rng.randrange(nodes)]  # it ran there; finished pods keep nodeName, hold no memory
            finished += 1
        elif phase == "Running":
            i = packer.place(int(row["cpu_milli"]), mem * MIB, int(row["num_gpu"]) * int(row["gpu_milli"] or 0))
            if i >= 0:
                node = names[i]
                workload[i] += mem * MIB
                bound += 1
            else:
                phase = "Pending"
                pending += 1
        else:
            phase = "Pending"
            pending += 1
        created = anchor + int(row["creation_time"])
        scheduled = anchor + int(row["scheduled_time"] or row["creation_time"])
        pod_objects.append(_pod(f"{row['name']}-{k:06d}", f"team-{k % TEAMS:02d}", _uid(rng), row, mem,
                                _stamp(created), node, phase, _stamp(scheduled), {"app": row["name"]}))
    # Trace order is kept apart from placement order: shuffle so the list is not sorted by kind.
    rng.shuffle(pod_objects)

    # --- standby slots for protected jobs, after everything else (the predictor plans into a running cluster) --
    jobs: list[TrainingJob] = []
    for j, (job, namespace, row, _) in enumerate(job_specs):
        mem = int(row["memory_mib"])
        standby_node = standby_pod = ""
        if j in protected and job_nodes[j]:
            i = packer.place(1000, mem * MIB, 0, full=True, avoid=set(job_nodes[j]))
            if i >= 0:
                standby_node, standby_pod = names[i], f"standby-{job}-0"
                standby_bytes[i] += mem * MIB
                pod_objects.append(_pod(standby_pod, namespace, _uid(rng), row, mem, _stamp(now - 1800), standby_node,
                                        "Running", _stamp(now - 1800),
                                        {keys.MANAGED: "true", keys.STANDBY_FOR: job}, keys.PRIORITY_CLASS_STANDBY,
                                        keys.PRIORITY_STANDBY, image="registry.example.com/ml/pytorch-train:2.4-cuda12",
                                        standby=True))
        jobs.append(TrainingJob(job, namespace, mem * MIB, tuple(names[i] for i in job_nodes[j]), standby_node,
                                standby_pod and f"{namespace}/{standby_pod}"))
    # Protected jobs whose slot found no room are topped up with ordinary pending pods to keep the count exact.
    while len(pod_objects) < pods:
        row = rng.choice(pod_rows)
        k = len(pod_objects)
        pod_objects.append(_pod(f"{row['name']}-{k:06d}", f"team-{k % TEAMS:02d}", _uid(rng), row,
                                int(row["memory_mib"]), _stamp(anchor + int(row["creation_time"])), "", "Pending",
                                "", {"app": row["name"]}))
        pending += 1
    items.extend(pod_objects)

    slots = sum(1 for job in jobs if job.standby_node)
    stats = {
        "nodes": nodes, "pods": len(pod_objects), "bound_pods": bound + slots, "pending_pods": pending,
        "finished_pods": finished, "training_pods": training_pods, "jobs": len(jobs), "standby_slots": slots,
        "memory_load_requested": float((workload + standby_bytes).sum() / memory.sum()),
        "allocatable_tib": float(memory.sum() / 2**40), "seed": seed,
    }
    return TraceCluster(items, names, full_nodes, memory.astype(np.float64), workload.astype(np.float64),
                        standby_bytes.astype(np.float64), jobs, [int(r["memory_mib"]) for r in pod_rows], seed, stats)


def forecast_snapshot(cluster: TraceCluster, now: float | None = None, seed: int | None = None) -> Snapshot:
    """A predictor snapshot for every node, MODELLED from requests (the trace has no memory usage).

    Per node: forecast mean = workload requests x a usage ratio drawn from [0.6, 1.05] (standby slots run
    `sleep`, so they use next to nothing), spread 2-8% of allocatable, fault rate log-normal around 0.01/h.
    Each job's learned peak is its request x [1.0, 1.3]. Only the shape and the size matter to the benchmark.
    """
    now = time.time() if now is None else now
    gen = np.random.default_rng(cluster.seed if seed is None else seed)
    count = len(cluster.node_names)
    mean = cluster.workload_requested * gen.uniform(0.6, 1.05, count)
    std = cluster.allocatable * gen.uniform(0.02, 0.08, count)
    fault = np.exp(gen.normal(np.log(0.01), 0.8, count))
    risk = oom_risk(mean, cluster.allocatable, std)
    nodes = {name: NodeForecast(float(mean[i]), float(std[i]), float(fault[i]), float(cluster.allocatable[i]),
                                float(risk[i])) for i, name in enumerate(cluster.node_names)}
    peaks = gen.uniform(1.0, 1.3, len(cluster.jobs))
    workloads = {job.name: WorkloadPeak(job.memory_bytes * float(peaks[k])) for k, job in enumerate(cluster.jobs)}
    standby = tuple(StandbySlot(job.name, job.standby_node, float(job.memory_bytes), job.standby_pod, "ready")
                    for job in cluster.jobs if job.standby_node)
    jobs = {job.name: JobAdvice(1800.0, 36000.0, 60.0) for job in cluster.jobs if job.standby_node}
    return Snapshot(generated_at=now, horizon_seconds=600.0, stale=False, mode="proactive",
                    cluster_memory_load=float(mean.sum() / cluster.allocatable.sum()), nodes=nodes,
                    workloads=workloads, standby=standby, jobs=jobs)


def write_cluster_file(cluster: TraceCluster, path: Path) -> int:
    """Write the v1 List as JSON (orjson; the in-memory KubeAPI reads `.json` with orjson too); bytes written."""
    body = orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster.items})
    Path(path).write_bytes(body)
    return len(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="cluster file to write (.json)")
    parser.add_argument("--snapshot", type=Path, help="also write a matching predictor snapshot here")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=20230710)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cluster = build_cluster(args.nodes, args.pods, args.seed)
    size = write_cluster_file(cluster, args.out)
    if args.snapshot:
        args.snapshot.write_bytes(forecast_snapshot(cluster).to_json())
    print(f"{args.out}: {size / 2**20:.1f} MiB, {cluster.stats} ({time.perf_counter() - started:.1f}s)")
    print(f"data: {TRACE_CREDIT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
