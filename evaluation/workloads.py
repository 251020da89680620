"""Workloads for the simulation: a built-in generator, a CSV loader for your own trace, and the Alibaba trace.

A workload is a cluster (nodes with memory and GPUs) plus training jobs, each with its submit time, its
amount of work, its memory profile and its progress curve. Three sources:

- `builtin_workload(BuiltinParams(...), seed)`: a GPU training cluster with parameters documented below.
- `load_jobs_csv(path)`: your own jobs (format in `CSV_FORMAT` and docs/evaluation.md), on the built-in
  cluster or on nodes from `load_nodes_csv(path)`.
- `openb_workload(OpenbParams(...), seed)`: the real cluster shape of Alibaba's cluster-trace-gpu-v2023
  ("openb", 1523 nodes; used by the USENIX ATC'23 paper "Beware of Fragmentation" (FGD)). Node capacities
  and pod requests and lifetimes come from the trace; what it lacks (memory *usage* over time, failures,
  images, datasets) is modelled with the same assumptions as the built-in workload, and said so.

Every generator is deterministic for a seed. Bad input raises `WorkloadError` naming the file, the line
and the column, never a traceback from deep inside the simulation.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from evaluation.sim.params import GiB, MiB

__all__ = ["WorkloadError", "ProgressCurve", "JobSpec", "NodeSpec", "Workload", "BuiltinParams", "OpenbParams",
           "builtin_nodes", "builtin_workload", "load_jobs_csv", "load_nodes_csv", "openb_workload",
           "parse_memory_profile", "parse_progress_curve", "CSV_FORMAT", "OPENB_CREDIT", "OPENB_DIR"]

REPO = Path(__file__).resolve().parent.parent
OPENB_DIR = REPO / "data" / "alibaba-openb-2023"
OPENB_CREDIT = ("Alibaba cluster-trace-gpu-v2023, openb, from the USENIX ATC'23 paper "
                "'Beware of Fragmentation' (FGD)")

CSV_FORMAT = """\
Columns (header row required; extra columns are ignored):
  job_id          unique name (letters, digits, '-', '_', '.')
  submit_time     seconds from the start of the trace (>= 0)
  duration        seconds of training the job needs at full speed, without failures (> 0)
  memory_profile  "<peak_gib>:<ramp_epochs>:<noise>": the working set grows from 40% to <peak_gib> over the
                  first <ramp_epochs> epochs, then fluctuates with standard deviation <noise> x peak
  progress_curve  "exp:<tau>" (accuracy-like 1 - e^(-f/tau), f = fraction of work done), "linear", or
                  "points:<f>=<v>;<f>=<v>;..." (piecewise linear in f from 0 to 1)
Optional columns (default):
  memory_request_gib (= peak_gib)  gpus (0; fractions share a GPU)  epochs (10)  image (user/train:latest)
  image_gib (8)  dataset_gib (20)  dataset_image (false)  checkpoint_gib (4)  migratable (true)
"""

_REQUIRED = ("job_id", "submit_time", "duration", "memory_profile", "progress_curve")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class WorkloadError(ValueError):
    """A workload that cannot be read; the message names the file, line and column."""


# --- progress curves --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressCurve:
    """Training progress (e.g. accuracy, 0..1) as a function of the fraction of work done (0..1).

    What the job exports as its progress metric; speculative migration reads its growth.
    """

    kind: str  # "exp", "linear" or "points"
    tau: float = 0.3
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()

    def value(self, fraction: float) -> float:
        f = min(max(fraction, 0.0), 1.0)
        if self.kind == "exp":
            return (1.0 - math.exp(-f / self.tau)) / (1.0 - math.exp(-1.0 / self.tau))
        if self.kind == "linear":
            return f
        return float(np.interp(f, self.xs, self.ys))

    def describe(self) -> str:
        if self.kind == "exp":
            return f"exp:{self.tau:g}"
        if self.kind == "linear":
            return "linear"
        return "points:" + ";".join(f"{x:g}={y:g}" for x, y in zip(self.xs, self.ys))


def parse_progress_curve(text: str) -> ProgressCurve:
    """Read the `progress_curve` column (see CSV_FORMAT); ValueError with the reason on bad input."""
    text = text.strip()
    if text == "linear":
        return ProgressCurve("linear")
    kind, _, rest = text.partition(":")
    if kind == "exp":
        tau = _positive_float(rest, "exp:<tau> needs a positive tau")
        return ProgressCurve("exp", tau=tau)
    if kind == "points":
        xs, ys = [], []
        for pair in filter(None, (p.strip() for p in rest.split(";"))):
            x_text, eq, y_text = pair.partition("=")
            if not eq:
                raise ValueError(f"points: {pair!r} is not <fraction>=<value>")
            try:
                x, y = float(x_text), float(y_text)
            except ValueError:
                raise ValueError(f"points: {pair!r} is not two numbers") from None
            if not (0.0 <= x <= 1.0) or not math.isfinite(y):
                raise ValueError(f"points: fraction {x_text!r} must be in [0, 1] and value finite")
            xs.append(x)
            ys.append(y)
        if len(xs) < 2 or any(b <= a for a, b in zip(xs, xs[1:])):
            raise ValueError("points: need at least two points with strictly increasing fractions")
        return ProgressCurve("points", xs=tuple(xs), ys=tuple(ys))
    raise ValueError(f"{text!r}: expected exp:<tau>, linear or points:<f>=<v>;...")


def parse_memory_profile(text: str) -> tuple[float, float, float]:
    """`<peak_gib>:<ramp_epochs>:<noise>` -> (peak bytes, ramp epochs, noise); ValueError on bad input."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(f"{text!r}: expected <peak_gib>:<ramp_epochs>:<noise>, e.g. 48:3:0.05")
    peak = _positive_float(parts[0], "peak_gib must be a positive number")
    try:
        ramp, noise = float(parts[1]), float(parts[2])
    except ValueError:
        raise ValueError(f"{text!r}: ramp_epochs and noise must be numbers") from None
    if not (math.isfinite(ramp) and ramp >= 0) or not (math.isfinite(noise) and 0 <= noise < 1):
        raise ValueError(f"{text!r}: ramp_epochs must be >= 0 and noise in [0, 1)")
    return peak * GiB, ramp, noise


def _positive_float(text: str, message: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r}: {message}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: {message}")
    return value


# --- the data model ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One training job as submitted. Memory in bytes, times in seconds."""

    job_id: str
    submit_time: float
    duration: float  # seconds of work at full speed
    peak_bytes: float  # working set after the ramp (fluctuates around it)
    request_bytes: float  # what the pod asks for
    ramp_epochs: float = 2.0
    epochs: int = 10
    noise: float = 0.05
    gpu_milli: int = 0  # 1000 = one whole GPU
    image: str = "user/train:latest"
    image_bytes: float = 8 * GiB
    dataset_bytes: float = 20 * GiB
    dataset_image: bool = False  # packaged as an image (guardgrid.io/dataset-image) under GuardGrid
    checkpoint_bytes: float = 4 * GiB
    progress: ProgressCurve = field(default_factory=lambda: ProgressCurve("exp", tau=0.3))
    migratable: bool = True  # guardgrid.io/migratable: "true"

    @property
    def ramp_seconds(self) -> float:
        """Wall seconds of training over which memory ramps (the first ramp_epochs of epochs)."""
        return self.duration * min(1.0, self.ramp_epochs / max(self.epochs, 1))


@dataclass(frozen=True)
class NodeSpec:
    name: str
    memory_bytes: float
    gpu_milli: int = 0


@dataclass(frozen=True)
class Workload:
    name: str
    nodes: tuple[NodeSpec, ...]
    jobs: tuple[JobSpec, ...]
    description: str = ""
    credit: str = ""

    def __post_init__(self) -> None:
        if not self.nodes:
            raise WorkloadError(f"workload {self.name}: no nodes")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise WorkloadError(f"workload {self.name}: duplicate node names")
        ids = [j.job_id for j in self.jobs]
        if len(set(ids)) != len(ids):
            raise WorkloadError(f"workload {self.name}: duplicate job ids")
        biggest_memory = max(n.memory_bytes for n in self.nodes)
        biggest_gpus = max(n.gpu_milli for n in self.nodes)
        for job in self.jobs:
            if job.request_bytes > biggest_memory or job.gpu_milli > biggest_gpus:
                raise WorkloadError(f"workload {self.name}: job {job.job_id} asks for more than any node has "
                                    f"({job.request_bytes / GiB:.0f}Gi, {job.gpu_milli} GPU milli)")

    @property
    def cluster_memory(self) -> float:
        return float(sum(n.memory_bytes for n in self.nodes))


# --- the built-in generator ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinParams:
    """The built-in workload's knobs. Defaults describe a busy 12-node GPU training cluster (assumptions)."""

    nodes: int = 12
    node_memory_gib: float = 384.0  # 48 GiB per GPU: memory binds for the heavier jobs, GPUs for the rest
    node_gpus: int = 8
    jobs: int = 300
    arrival_hours: float = 48.0  # Poisson arrivals spread over this window (offered GPU load ~0.75)
    duration_median_hours: float = 3.0  # log-normal work per job
    duration_sigma: float = 0.7
    duration_min_hours: float = 0.5
    duration_max_hours: float = 12.0
    gpu_choices: tuple[int, ...] = (1, 2, 4, 8)
    gpu_weights: tuple[float, ...] = (0.3, 0.3, 0.25, 0.15)
    peak_per_gpu_gib: tuple[float, float] = (20.0, 60.0)  # uniform
    request_ratio: tuple[float, float] = (0.8, 1.25)  # request = peak x uniform: users guess their peak +-20%
    max_peak_fraction: float = 0.8  # no job alone outgrows a node (its noise on top stays below capacity)
    ramp_epochs: tuple[float, float] = (1.0, 4.0)
    epochs: tuple[int, int] = (10, 40)
    noise: tuple[float, float] = (0.02, 0.08)
    images_gib: tuple[float, ...] = (6.0, 9.0, 12.0, 15.0)  # four framework images shared by all jobs
    dataset_median_gib: float = 20.0
    dataset_max_gib: float = 200.0
    dataset_image_max_gib: float = 50.0  # datasets up to this size are shipped as images under GuardGrid
    checkpoint_per_gpu_gib: tuple[float, float] = (1.0, 4.0)
    progress_tau: tuple[float, float] = (0.1, 0.6)
    migratable_fraction: float = 0.5


def builtin_nodes(count: int = 12, memory_gib: float = 384.0, gpus: int = 8) -> tuple[NodeSpec, ...]:
    return tuple(NodeSpec(f"node-{i:03d}", memory_gib * GiB, gpus * 1000) for i in range(count))


def _dataset_gib(rng: np.random.Generator, median: float, maximum: float) -> float:
    return float(min(maximum, max(1.0, rng.lognormal(math.log(median), 0.8))))


def builtin_workload(params: BuiltinParams | None = None, seed: int = 1) -> Workload:
    """The built-in workload; the same seed always gives the same jobs."""
    p = params or BuiltinParams()
    rng = np.random.default_rng([seed, 0xB17])
    nodes = builtin_nodes(p.nodes, p.node_memory_gib, p.node_gpus)
    gaps = rng.exponential(p.arrival_hours * 3600.0 / max(p.jobs, 1), size=p.jobs)
    submits = np.cumsum(gaps) - gaps[0]
    weights = np.asarray(p.gpu_weights) / np.sum(p.gpu_weights)
    jobs = []
    for i in range(p.jobs):
        gpus = int(rng.choice(p.gpu_choices, p=weights))
        peak = gpus * rng.uniform(*p.peak_per_gpu_gib) * GiB
        peak = min(peak, p.max_peak_fraction * p.node_memory_gib * GiB)
        request = min(peak * rng.uniform(*p.request_ratio), p.node_memory_gib * GiB)
        hours = rng.lognormal(math.log(p.duration_median_hours), p.duration_sigma)
        hours = min(p.duration_max_hours, max(p.duration_min_hours, hours))
        image_index = int(rng.integers(len(p.images_gib)))
        dataset = _dataset_gib(rng, p.dataset_median_gib, p.dataset_max_gib)
        jobs.append(JobSpec(
            job_id=f"job-{i:04d}",
            submit_time=float(round(submits[i], 3)),
            duration=float(round(hours * 3600.0, 3)),
            peak_bytes=float(peak),
            request_bytes=float(request),
            ramp_epochs=float(rng.uniform(*p.ramp_epochs)),
            epochs=int(rng.integers(p.epochs[0], p.epochs[1] + 1)),
            noise=float(rng.uniform(*p.noise)),
            gpu_milli=gpus * 1000,
            image=f"registry.example.com/ml/train-{image_index}:latest",
            image_bytes=p.images_gib[image_index] * GiB,
            dataset_bytes=dataset * GiB,
            dataset_image=dataset <= p.dataset_image_max_gib,
            checkpoint_bytes=gpus * rng.uniform(*p.checkpoint_per_gpu_gib) * GiB,
            progress=ProgressCurve("exp", tau=float(rng.uniform(*p.progress_tau))),
            migratable=bool(rng.random() < p.migratable_fraction),
        ))
    return Workload("builtin", nodes, tuple(jobs),
                    description=f"built-in: {p.nodes} nodes x {p.node_memory_gib:g}Gi/{p.node_gpus} GPUs, "
                                f"{p.jobs} training jobs over {p.arrival_hours:g} h (seed {seed})")


# --- CSV traces -------------------------------------------------------------------------------------------


def _rows(path: Path) -> Iterable[tuple[int, dict[str, str]]]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot open: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise WorkloadError(f"{path}: empty file (a header row is required)")
        yield 1, {name.strip(): name for name in reader.fieldnames}  # line 1: the header
        try:
            for row in reader:
                yield reader.line_num, {(k or "").strip(): (v or "").strip() for k, v in row.items()
                                        if isinstance(v, str)}
        except csv.Error as exc:
            raise WorkloadError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None


def _column(row: dict[str, str], name: str, where: str) -> str:
    value = row.get(name, "")
    if value == "":
        raise WorkloadError(f"{where}: column '{name}' is empty")
    return value


def _number(row: dict[str, str], name: str, where: str, default: float | None = None,
            minimum: float = 0.0, strict: bool = False) -> float:
    text = row.get(name, "")
    if text == "":
        if default is None:
            raise WorkloadError(f"{where}: column '{name}' is empty")
        return default
    try:
        value = float(text)
    except ValueError:
        raise WorkloadError(f"{where}: column '{name}': {text!r} is not a number") from None
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise WorkloadError(f"{where}: column '{name}': {text!r} must be a finite number {bound}")
    return value


def _flag(row: dict[str, str], name: str, where: str, default: bool) -> bool:
    text = row.get(name, "").lower()
    if text == "":
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise WorkloadError(f"{where}: column '{name}': {text!r} is not true or false")


def load_jobs_csv(path: str | Path) -> tuple[JobSpec, ...]:
    """Jobs from a CSV trace (format: CSV_FORMAT). Raises WorkloadError naming file, line and column."""
    path = Path(path)
    jobs: list[JobSpec] = []
    seen: set[str] = set()
    rows = _rows(path)
    _, header = next(rows)
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise WorkloadError(f"{path}:1: missing column(s) {', '.join(missing)} (required: {', '.join(_REQUIRED)})")
    for line, row in rows:
        where = f"{path}:{line}"
        job_id = _column(row, "job_id", where)
        if job_id in seen:
            raise WorkloadError(f"{where}: job_id {job_id!r} appears twice")
        if not all(c.isalnum() or c in "-_." for c in job_id):
            raise WorkloadError(f"{where}: job_id {job_id!r} may contain only letters, digits, '-', '_' and '.'")
        seen.add(job_id)
        try:
            peak, ramp, noise = parse_memory_profile(_column(row, "memory_profile", where))
        except ValueError as exc:
            raise WorkloadError(f"{where}: column 'memory_profile': {exc}") from None
        try:
            curve = parse_progress_curve(_column(row, "progress_curve", where))
        except ValueError as exc:
            raise WorkloadError(f"{where}: column 'progress_curve': {exc}") from None
        request = _number(row, "memory_request_gib", where, peak / GiB, strict=True) * GiB
        epochs = _number(row, "epochs", where, 10.0, minimum=1.0)
        if epochs != int(epochs):
            raise WorkloadError(f"{where}: column 'epochs': must be a whole number")
        jobs.append(JobSpec(
            job_id=job_id,
            submit_time=_number(row, "submit_time", where),
            duration=_number(row, "duration", where, strict=True),
            peak_bytes=peak,
            request_bytes=request,
            ramp_epochs=ramp,
            epochs=int(epochs),
            noise=noise,
            gpu_milli=int(round(_number(row, "gpus", where, 0.0) * 1000)),
            image=row.get("image") or "user/train:latest",
            image_bytes=_number(row, "image_gib", where, 8.0) * GiB,
            dataset_bytes=_number(row, "dataset_gib", where, 20.0) * GiB,
            dataset_image=_flag(row, "dataset_image", where, False),
            checkpoint_bytes=_number(row, "checkpoint_gib", where, 4.0) * GiB,
            progress=curve,
            migratable=_flag(row, "migratable", where, True),
        ))
    if not jobs:
        raise WorkloadError(f"{path}: no jobs (only a header)")
    return tuple(sorted(jobs, key=lambda j: (j.submit_time, j.job_id)))


def load_nodes_csv(path: str | Path) -> tuple[NodeSpec, ...]:
    """Nodes from a CSV with columns name, memory_gib[, gpus]."""
    path = Path(path)
    rows = _rows(path)
    _, header = next(rows)
    if "name" not in header or "memory_gib" not in header:
        raise WorkloadError(f"{path}:1: need columns name and memory_gib (and optionally gpus)")
    nodes = []
    for line, row in rows:
        where = f"{path}:{line}"
        nodes.append(NodeSpec(_column(row, "name", where), _number(row, "memory_gib", where, strict=True) * GiB,
                              int(round(_number(row, "gpus", where, 0.0) * 1000))))
    if not nodes:
        raise WorkloadError(f"{path}: no nodes")
    return tuple(nodes)


def csv_workload(jobs_path: str | Path, nodes_path: str | Path | None = None) -> Workload:
    nodes = load_nodes_csv(nodes_path) if nodes_path else builtin_nodes()
    return Workload(f"csv:{Path(jobs_path).name}", nodes, load_jobs_csv(jobs_path),
                    description=f"user trace {jobs_path} on {len(nodes)} nodes")


# --- the Alibaba openb trace -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenbParams:
    """How the openb trace becomes a simulation workload (documented in docs/evaluation.md).

    The trace is a *sample* of the cluster's pods: replayed at its own timestamps it never has more than 53
    pods running on 1523 nodes. Like FGD's own simulator, we keep its shapes (node capacities, pod memory
    and GPU requests, pod lifetimes) and set the arrival rate so the offered load reaches `target_load` of
    the binding resource (GPU share or memory, whichever is tighter per pod).
    """

    node_fraction: float = 1.0 / 24.0  # stratified sample of the 1523 nodes (by memory, GPUs, model)
    hours: float = 12.0  # arrival window
    target_load: float = 0.85
    min_lifetime_s: float = 60.0  # shorter tasks are below the model's resolution (one tick)
    max_lifetime_hours: float = 24.0  # lifetimes are capped (the trace has months-long services)
    request_ratio: tuple[float, float] = BuiltinParams.request_ratio  # peak = request / ratio (assumption)
    noise: tuple[float, float] = BuiltinParams.noise
    progress_tau: tuple[float, float] = BuiltinParams.progress_tau
    images_gib: tuple[float, ...] = BuiltinParams.images_gib
    migratable_fraction: float = 0.5
    pods_file: str = "pods.csv"


def _read_openb(name: str) -> list[dict[str, str]]:
    path = OPENB_DIR / name
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot open the openb trace: {exc.strerror}") from None


def _stratified(rows: Sequence[dict[str, str]], fraction: float, rng: np.random.Generator) -> list[dict[str, str]]:
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["memory_mib"], row["gpu"], row["model"]), []).append(row)
    chosen: list[dict[str, str]] = []
    for key in sorted(groups):
        members = groups[key]
        expected = len(members) * fraction
        take = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
        picks = rng.choice(len(members), size=min(take, len(members)), replace=False)
        chosen.extend(members[int(i)] for i in sorted(picks))
    return sorted(chosen, key=lambda r: r["sn"])


def openb_workload(params: OpenbParams | None = None, seed: int = 1) -> Workload:
    """The openb cluster shape with jobs drawn from its pods (credit: OPENB_CREDIT)."""
    p = params or OpenbParams()
    rng = np.random.default_rng([seed, 0x0BE])
    try:
        node_rows = _stratified(_read_openb("nodes.csv"), p.node_fraction, rng)
        nodes = tuple(NodeSpec(row["sn"], float(row["memory_mib"]) * MiB, int(row["gpu"]) * 1000)
                      for row in node_rows)
    except (KeyError, ValueError) as exc:
        raise WorkloadError(f"{OPENB_DIR / 'nodes.csv'}: unexpected format: {exc}") from None
    if not nodes:
        raise WorkloadError("openb: node_fraction too small, no node sampled")
    max_gpu = max(n.gpu_milli for n in nodes)

    pool: list[tuple[float, int, float]] = []  # (memory bytes, gpu milli, lifetime s)
    pod_rows = _read_openb(p.pods_file)
    needed = ("memory_mib", "num_gpu", "gpu_milli", "scheduled_time", "deletion_time")
    missing = [c for c in needed if pod_rows and c not in pod_rows[0]]
    if missing:
        raise WorkloadError(f"{OPENB_DIR / p.pods_file}: no column(s) {', '.join(missing)}: this file has no pod "
                            "lifetimes (use pods.csv)")
    for row in pod_rows:
        try:
            if not row.get("scheduled_time"):
                continue  # never ran
            memory = float(row["memory_mib"]) * MiB
            gpu = int(row["num_gpu"]) * int(row["gpu_milli"] or 0) if int(row["num_gpu"]) else 0
            lifetime = float(row["deletion_time"]) - float(row["scheduled_time"])
        except (KeyError, ValueError) as exc:
            raise WorkloadError(f"{OPENB_DIR / p.pods_file}: row {row.get('name')}: unexpected format: {exc}") from None
        if memory <= 0 or lifetime < p.min_lifetime_s or gpu > max_gpu:
            continue
        if memory > max((n.memory_bytes for n in nodes if n.gpu_milli >= gpu), default=0.0):
            continue  # fits no sampled node with enough GPUs
        pool.append((memory, gpu, min(lifetime, p.max_lifetime_hours * 3600.0)))
    if not pool:
        raise WorkloadError("openb: no usable pods in the trace")
    memory = np.array([m for m, _, _ in pool])
    gpus = np.array([g for _, g, _ in pool], dtype=np.float64)
    life = np.array([t for _, _, t in pool])
    cluster_memory = sum(n.memory_bytes for n in nodes)
    cluster_gpu = max(1.0, float(sum(n.gpu_milli for n in nodes)))
    share = np.maximum(memory / cluster_memory, gpus / cluster_gpu) * life  # resource-seconds, normalised
    rate = p.target_load / float(share.mean())  # jobs per second for the target offered load
    count = int(round(rate * p.hours * 3600.0))
    picks = rng.integers(len(pool), size=count)
    gaps = rng.exponential(1.0 / rate, size=count)
    submits = np.cumsum(gaps) - gaps[0]
    jobs = []
    node_memory = np.array([n.memory_bytes for n in nodes])
    node_gpu = np.array([n.gpu_milli for n in nodes])
    for k, (index, submit) in enumerate(zip(picks, submits)):
        request = float(memory[index])
        gpu_milli = int(gpus[index])
        # No job alone outgrows the largest node it can run on (enough GPUs): such a job could never finish.
        roomiest = float(node_memory[node_gpu >= gpu_milli].max())
        peak = request / rng.uniform(*p.request_ratio)
        peak = min(peak, BuiltinParams.max_peak_fraction * roomiest)
        per_gpu = max(1.0, gpu_milli / 1000.0)
        image_index = int(rng.integers(len(p.images_gib)))
        dataset = _dataset_gib(rng, BuiltinParams.dataset_median_gib, BuiltinParams.dataset_max_gib)
        jobs.append(JobSpec(
            job_id=f"openb-{k:05d}",
            submit_time=float(round(submit, 3)),
            duration=float(life[index]),
            peak_bytes=float(peak),
            request_bytes=request,
            ramp_epochs=2.0,
            epochs=10,
            noise=float(rng.uniform(*p.noise)),
            gpu_milli=gpu_milli,
            image=f"registry.example.com/ml/train-{image_index}:latest",
            image_bytes=p.images_gib[image_index] * GiB,
            dataset_bytes=dataset * GiB,
            dataset_image=dataset <= BuiltinParams.dataset_image_max_gib,
            checkpoint_bytes=per_gpu * rng.uniform(*BuiltinParams.checkpoint_per_gpu_gib) * GiB,
            progress=ProgressCurve("exp", tau=float(rng.uniform(*p.progress_tau))),
            migratable=bool(rng.random() < p.migratable_fraction),
        ))
    return Workload("openb", nodes, tuple(jobs),
                    description=f"openb cluster shape: {len(nodes)} of 1523 nodes (stratified {p.node_fraction:.3g}), "
                                f"{len(jobs)} jobs drawn from {p.pods_file} over {p.hours:g} h at offered load "
                                f"{p.target_load:g} (seed {seed})",
                    credit=OPENB_CREDIT)


def as_array(values: Iterable[float]) -> npt.NDArray[np.float64]:
    return np.fromiter(values, dtype=np.float64)
