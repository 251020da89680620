"""Every number the simulation model uses, with its unit, its default and where the default comes from.

Why one frozen dataclass with a source per field: the evaluation is only as honest as its assumptions, so
each one is written next to its value, marked as a Kubernetes default, a public measurement, or an
assumption of ours. `python -m evaluation.sim.params` prints the table docs/evaluation.md shows; a test
keeps every field documented. Nothing here is tuned to reproduce a paper's number.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SimParams", "markdown_table", "GiB", "MiB"]

MiB = float(2**20)
GiB = float(2**30)

# Kinds of source, printed in the docs so a reader sees at a glance what is measured and what is assumed.
K8S = "Kubernetes default"
MEASURED = "public measurement"
CAPTURED = "captured (fixtures)"
ASSUMED = "assumption"
CHOICE = "simulation choice"


def _param(default: Any, unit: str, doc: str, kind: str, source: str) -> Any:
    return field(default=default, metadata={"unit": unit, "doc": doc, "kind": kind, "source": source})


@dataclass(frozen=True)
class SimParams:
    """Model parameters; every policy runs with the same values."""

    # --- time ------------------------------------------------------------------------------------------
    tick_seconds: float = _param(
        60.0, "s", "Resolution of the memory model, of failure draws and of the node memory history the "
        "forecast sees (one sample per tick, like a Prometheus range query at step 60 s).", CHOICE,
        "GuardGrid's default GUARDGRID_STEP_SECONDS (60 s).")
    predictor_cycle_seconds: float = _param(
        300.0, "s", "How often the simulated predictor runs its cycle (forecast, fault rates, standby plan, "
        "checkpoint advice, migration).", CHOICE,
        "The real predictor cycles every 30 s; every 5 min keeps `make demo` under its time budget. The "
        "10-minute forecast horizon still covers the gap between cycles.")
    max_sim_seconds: float = _param(
        21 * 86400.0, "s", "Hard stop. Jobs still unfinished then are reported as unfinished, not dropped.",
        CHOICE, "Long enough for every built-in workload to drain.")

    # --- recovery pipeline -----------------------------------------------------------------------------
    node_failure_detection_seconds: float = _param(
        350.0, "s", "From a node failure until the replacement pod exists: the node controller marks the node "
        "NotReady after node-monitor-grace-period (50 s), then the NoExecute taint evicts its pods after the "
        "default tolerationSeconds (300 s), and the Job controller creates a replacement.", K8S,
        "kube-controller-manager --node-monitor-grace-period=50s (v1.32+); DefaultTolerationSeconds admission "
        "plugin adds tolerationSeconds: 300 for not-ready/unreachable (visible in the captured fixture pods).")
    oom_restart_seconds: float = _param(
        10.0, "s", "From an OOM kill until the replacement pod exists.", K8S,
        "kubelet's initial restart back-off (10 s); the kill itself is reported at once.")
    scheduling_latency_seconds: float = _param(
        1.0, "s", "Scheduling and binding one pod (including a standby preemption).", CAPTURED,
        "Captured on a real v1.36 kube-scheduler (tests/fixtures/README.md): preemption of the standby slot "
        "and the bind took under a second.")
    node_start_seconds: float = _param(
        300.0, "s", "A replacement node joining Ready after a node failure (VM provisioning, boot, GPU driver "
        "and device plugin). A recovering pod that found no room on the remaining nodes waits for it.",
        MEASURED, "1-5 min for a cloud VM (Union.ai engineering blog, 'We cut container cold boot from minutes "
        "to seconds'); 5-10 min reported for A100 nodes on AKS (Microsoft Q&A). 5 min taken.")
    image_pull_mib_per_s: float = _param(
        38.0, "MiB/s", "Effective pull rate (download + decompress + extract) of a container image not yet "
        "on the node.", MEASURED,
        "'A standard Docker pull of a 10GB image on a fresh node takes 4-5 minutes' (Union.ai blog): "
        "10 GiB / 270 s = 38 MiB/s.")
    remote_read_mib_per_s: float = _param(
        250.0, "MiB/s", "Read rate of a dataset or checkpoint from remote storage (object store / NFS) into "
        "one node.", ASSUMED, "Typical single-node object-store throughput; replace with your own figure.")
    local_copy_mib_per_s: float = _param(
        1000.0, "MiB/s", "Copy rate of staged content from an image already on the node into the pod's "
        "emptyDir (the webhook's init container).", ASSUMED, "Local NVMe copy.")
    framework_init_seconds: float = _param(
        30.0, "s", "Process start of a training job before it reads its checkpoint: imports, CUDA context, "
        "NCCL rendezvous.", ASSUMED, "Order of magnitude seen for PyTorch jobs; the same for every policy.")
    checkpoint_write_mib_per_s: float = _param(
        250.0, "MiB/s", "Write rate of a checkpoint to remote storage; a checkpoint stalls training for "
        "checkpoint size / this rate (the checkpoint cost C).", ASSUMED, "Same storage as remote reads.")
    migration_restart_seconds: float = _param(
        5.0, "s", "From a migration eviction until the replacement pod exists (graceful eviction, Job "
        "controller).", ASSUMED, "The job saves a checkpoint on SIGTERM within its grace period.")

    # --- memory ----------------------------------------------------------------------------------------
    memory_base_fraction: float = _param(
        0.4, "x peak", "Working set when training starts (and while loading), as a fraction of the level "
        "the job reaches after its ramp (framework, weights, optimizer state before caches and activations "
        "grow).", ASSUMED, "Memory grows through the first epochs (caching allocators, data-loader workers, "
        "page cache); the split is ours.")
    memory_noise_phi: float = _param(
        0.9, "per tick", "Autocorrelation of the memory fluctuation (AR(1) per tick); its standard deviation "
        "is each job's `noise` x its peak.", ASSUMED, "Fluctuations that persist for minutes, not samples.")
    standby_usage_bytes: float = _param(
        16 * MiB, "bytes", "Memory a standby slot actually uses (a `sleep` process); it still holds its "
        "request.", ASSUMED, "A sleeping process' RSS.")

    # --- failures --------------------------------------------------------------------------------------
    node_failure_rate_per_hour: float = _param(
        0.005, "1/h", "Node failure hazard at zero memory load.", ASSUMED,
        "Llama 3 (Meta, 2024) saw 419 unexpected interruptions in 54 days on 16,384 GPUs, about 0.00016 per "
        "8-GPU node-hour; we use ~30x that so that runs of two simulated days see enough failures to compare "
        "policies. Relative comparisons are what the evaluation reports.")
    failure_load_factor: float = _param(
        4.0, "", "Hazard multiplier: rate x (1 + factor x load^2), load = memory in use / capacity, so a "
        "full node fails 5x as often as an idle one.", ASSUMED,
        "No public dataset relates node load to failures; the shape is ours.")

    # --- contention ------------------------------------------------------------------------------------
    contention_knee: float = _param(
        0.8, "load", "Node memory load above which co-located jobs slow each other down.", ASSUMED,
        "Where page-cache eviction and memory-bandwidth contention start to bite.")
    contention_slowdown: float = _param(
        0.25, "", "Speed lost at full load: speed = 1 - slowdown x max(0, load - knee) / (1 - knee).",
        ASSUMED, "SpeCon's premise (co-located jobs slow each other); the size is ours.")

    # --- checkpointing ---------------------------------------------------------------------------------
    fixed_checkpoint_interval_seconds: float = _param(
        3600.0, "s", "Checkpoint interval of policy (b), checkpoint-restart without GuardGrid.", ASSUMED,
        "A common hand-picked value (hourly).")

    # --- scheduler -------------------------------------------------------------------------------------
    extender_weight: float = _param(
        5.0, "", "Weight of GuardGrid's extender score against kube-scheduler's in-tree plugin scores.",
        CHOICE, "manifests/scheduler/scheduler-config.yaml (read from there when present).")

    # --- checks ----------------------------------------------------------------------------------------
    check_invariants: bool = _param(
        False, "", "Check memory conservation and queue consistency after every event (tests turn it on).",
        CHOICE, "Costs time; off for the evaluation runs.")

    def with_overrides(self, **changes: Any) -> SimParams:
        """A copy with some fields changed (unknown names raise TypeError, as a typo should)."""
        return dataclasses.replace(self, **changes)


def markdown_table() -> str:
    """The parameter table of docs/evaluation.md."""
    rows = ["| parameter | default | unit | meaning | kind | source |", "|---|---|---|---|---|---|"]
    for f in dataclasses.fields(SimParams):
        meta = f.metadata
        default = f.default
        if isinstance(default, float) and default >= 1e5:
            shown = f"{default:.0f}"
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
        unit = meta["unit"] or "-"
        rows.append(f"| `{f.name}` | {shown} | {unit} | {meta['doc']} | {meta['kind']} | {meta['source']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    sys.stdout.write(markdown_table() + "\n")
