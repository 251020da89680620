"""Standby pods brought to the plan through the KubeAPI: create what is missing, delete what is surplus.

The slot pod (same shape as the standby pod in the captured fixture cluster):
- the job's images (its app containers' images plus its deps/dataset/checkpoint staging images), each run
  as `sleep infinity`, so the kubelet pulls every image the replacement pod will need onto the node.
  Images need a `sleep` binary (any distro, busybox or alpine base; the staging images already need `sh`
  and `cp`). In an image without one the container restarts in a back-off loop, which still keeps the
  image pulled and the memory reserved, only noisily.
- the memory request of the job's (largest) pod on the first container, 10m CPU per container, no GPUs
  (GPUs stay usable by others; the fixture's preemption run shows the training pod getting them);
- PriorityClass `guardgrid-standby` (negative, preemptionPolicy Never), terminationGracePeriodSeconds 0, so
  the scheduler's preemption evicts it at once for the job's replacement pod;
- placed by a required node affinity on `metadata.name` (as the DaemonSet controller does; hostname labels
  need not equal node names), scheduled by the default scheduler, which keeps every other admission rule;
- the restricted Pod Security Standard: non-root (UID 65532, whatever the image declares), RuntimeDefault
  seccomp, no privilege escalation, all capabilities dropped, a read-only root filesystem;
- labels `guardgrid.io/standby-for=<job>` and `guardgrid.io/managed=true`, annotation
  `guardgrid.io/inject: "false"` (the webhook leaves it alone) and `guardgrid.io/standby-node` (the planned
  node, readable while the pod is still pending);
- an ownerReference to the job's controller owner (controller: false, so the Job controller never adopts or
  releases it), so the garbage collector deletes the slot with its job. Jobs of bare pods (no owner) get
  none; their slots are deleted by the plan once the job has no pods left.
- name `standby-<job>-<n>`, n the smallest free index, so names are predictable and a 409 on create means
  "already there".

Restart-safe: the slots are read from the cluster state every cycle; nothing is remembered across restarts.
Within one process, pods created in the last RECENT_SECONDS count as existing until the watch shows them,
so a lagging cache can never make the next cycle create a duplicate. Only pods carrying both labels are
ever deleted, and only when the caller allows deletion (never on stale data).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardgrid import keys
from guardgrid.kubeapi.base import KubeAPI, KubeAPIError
from guardgrid.records import PodRecord
from guardgrid.standby import ExistingSlot, Plan, ProtectedJob

__all__ = ["StandbyReconciler", "ReconcileResult", "SlotStatus", "standby_manifest", "is_managed_slot",
           "slot_node", "STANDBY_NODE_ANNOTATION", "PENDING_TIMEOUT_SECONDS", "RECENT_SECONDS"]

log = logging.getLogger(__name__)

STANDBY_NODE_ANNOTATION = keys.STANDBY_NODE
PENDING_TIMEOUT_SECONDS = 300.0  # a slot still unbound after this is given up (and its node avoided a while)
RECENT_SECONDS = 120.0
CPU_REQUEST = "10m"
_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")
_MAX_JOB_IN_NAME = 200


@dataclass(frozen=True)
class SlotStatus:
    job: str
    node: str
    memory: float
    pod: str  # namespace/name; "" for a slot only planned
    state: str  # ready | pending | planned


@dataclass
class ReconcileResult:
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    slots: list[SlotStatus] = field(default_factory=list)
    timed_out_nodes: list[str] = field(default_factory=list)


def is_managed_slot(pod: PodRecord) -> bool:
    """A standby pod GuardGrid created (and may delete): both labels, not just the PriorityClass."""
    return bool(pod.standby_for) and pod.labels.get(keys.MANAGED) == "true"


def slot_node(pod: PodRecord) -> str:
    return pod.node_name or pod.annotations.get(STANDBY_NODE_ANNOTATION, "")


def _is_ready(pod: PodRecord) -> bool:
    return bool(pod.node_name) and pod.phase == "Running" and not pod.terminating


def _slot_name(job: str, index: int) -> str:
    safe = _NAME_UNSAFE.sub("-", job.lower()).strip("-")[:_MAX_JOB_IN_NAME] or "job"
    return f"standby-{safe}-{index}"


# The restricted Pod Security Standard, whatever user the job's images declare: `sleep` runs as any user, so a
# slot never needs root, and a namespace enforcing `restricted` admits it.
SLOT_USER = 65532
SLOT_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": SLOT_USER, "runAsGroup": SLOT_USER,
                         "seccompProfile": {"type": "RuntimeDefault"}}


def standby_manifest(job: ProtectedJob, node: str, memory: float, name: str) -> dict[str, Any]:
    """The slot pod for `job` on `node` (see the module docstring for each field)."""
    containers = []
    for position, image in enumerate(job.images or ("registry.k8s.io/pause:3.10",)):
        requests = {"cpu": CPU_REQUEST}
        if position == 0:
            requests["memory"] = str(int(memory))
        containers.append({
            "name": f"warm-{position}",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "infinity"] if job.images else None,
            "resources": {"requests": requests},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True},
        })
        if containers[-1]["command"] is None:
            del containers[-1]["command"]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": job.namespace,
        "labels": {keys.STANDBY_FOR: job.name, keys.MANAGED: "true"},
        "annotations": {keys.INJECT: "false", STANDBY_NODE_ANNOTATION: node},
    }
    if job.owner is not None and job.owner.uid:
        metadata["ownerReferences"] = [{"apiVersion": job.owner.api_version, "kind": job.owner.kind,
                                        "name": job.owner.name, "uid": job.owner.uid, "controller": False,
                                        "blockOwnerDeletion": False}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "priorityClassName": keys.PRIORITY_CLASS_STANDBY,
            "terminationGracePeriodSeconds": 0,
            "schedulerName": "default-scheduler",
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": SLOT_SECURITY_CONTEXT,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
            "containers": containers,
        },
    }


class StandbyReconciler:
    """Brings slot pods to a plan. Stateless across restarts (see the module docstring)."""

    def __init__(self, api: KubeAPI, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, tuple[float, SlotStatus]] = {}  # pod key -> (created at, slot)

    # --- reading the cluster ----------------------------------------------------------------------------
    def live_slots(self, pods: Iterable[PodRecord]) -> tuple[list[PodRecord], list[PodRecord], list[PodRecord]]:
        """Managed slot pods split into (live, stuck pending past the timeout, finished)."""
        now = self.clock()
        live, stuck, finished = [], [], []
        for pod in pods:
            if not is_managed_slot(pod) or pod.terminating:
                continue
            if pod.phase in ("Succeeded", "Failed"):
                finished.append(pod)
            elif not pod.node_name and pod.created_at is not None and now - pod.created_at > PENDING_TIMEOUT_SECONDS:
                stuck.append(pod)
            else:
                live.append(pod)
        return live, stuck, finished

    def existing(self, pods: Sequence[PodRecord]) -> list[ExistingSlot]:
        """Slots the plan may keep: live managed slot pods plus ones created moments ago the cache lacks."""
        live, _, _ = self.live_slots(pods)
        slots = [ExistingSlot(p.standby_for, slot_node(p), float(p.memory_request), p.key) for p in live]
        seen = {p.key for p in pods}
        for key, (_, status) in self._recent_items(seen):
            slots.append(ExistingSlot(status.job, status.node, status.memory, key))
        return slots

    def _recent_items(self, seen: set[str]) -> list[tuple[str, tuple[float, SlotStatus]]]:
        now = self.clock()
        with self._lock:
            for key in [k for k, (at, _) in self._recent.items() if k in seen or now - at > RECENT_SECONDS]:
                del self._recent[key]
            return list(self._recent.items())

    def observe(self, pods: Sequence[PodRecord], planned: Iterable[SlotStatus] = ()) -> list[SlotStatus]:
        """Slot statuses as the cluster shows them (no action): for stale cycles and non-leaders."""
        live, _, _ = self.live_slots(pods)
        statuses = [SlotStatus(p.standby_for, slot_node(p), float(p.memory_request), p.key,
                               "ready" if _is_ready(p) else "pending") for p in live]
        seen = {p.key for p in pods}
        statuses += [status for _, (_, status) in self._recent_items(seen)]
        return statuses + list(planned)

    # --- acting -----------------------------------------------------------------------------------------
    def reconcile(self, plan: Plan, jobs: Sequence[ProtectedJob], pods: Sequence[PodRecord],
                  allow_delete: bool) -> ReconcileResult:
        """Create the plan's new slots, delete managed slots the plan does not keep (if allowed)."""
        result = ReconcileResult()
        live, stuck, finished = self.live_slots(pods)
        kept = {slot.keep for slot in plan.slots if slot.keep}
        if allow_delete:
            doomed = [(p, "finished") for p in finished] + [(p, "pending too long") for p in stuck] + \
                     [(p, "not in the plan") for p in live if p.key not in kept]
            for pod, why in doomed:
                if why == "pending too long":
                    result.timed_out_nodes.append(slot_node(pod))
                try:
                    self.api.delete_pod(pod.namespace, pod.name, grace_period_seconds=0)
                except KubeAPIError as exc:
                    result.errors.append(f"delete {pod.key}: {exc}")
                    log.warning("could not delete standby slot %s: %s (HTTP %s)", pod.key, exc, exc.status)
                    continue
                result.deleted.append(pod.key)
                log.info("standby slot %s (job %s, node %s) deleted: %s", pod.key, pod.standby_for,
                         slot_node(pod), why)
        by_job = {job.name: job for job in jobs}
        used_names = {p.key for p in pods} | {key for key, _ in self._recent_items(set())}
        not_created: list[SlotStatus] = []
        for slot in plan.slots:
            job = by_job.get(slot.job)
            if slot.keep or job is None:
                continue
            created = self._create(job, slot.node, slot.memory, used_names, result)
            if created:
                used_names.add(created)
            else:
                not_created.append(SlotStatus(slot.job, slot.node, slot.memory, "", "planned"))
        deleted = set(result.deleted)
        result.slots = [s for s in self.observe(pods) if s.pod not in deleted] + not_created
        return result

    def _create(self, job: ProtectedJob, node: str, memory: float, used: set[str],
                result: ReconcileResult) -> str:
        index = 0
        for _ in range(len(used) + 3):
            name = _slot_name(job.name, index)
            key = f"{job.namespace}/{name}"
            index += 1
            if key in used:
                continue
            try:
                self.api.create_pod(standby_manifest(job, node, memory, name))
            except KubeAPIError as exc:
                if exc.status == 409:
                    used.add(key)  # a pod the cache has not shown yet: take the next index
                    continue
                result.errors.append(f"create {key}: {exc}")
                log.warning("could not create standby slot %s for job %s on %s: %s (HTTP %s)", key, job.name,
                            node, exc, exc.status)
                return ""
            status = SlotStatus(job.name, node, memory, key, "pending")
            with self._lock:
                self._recent[key] = (self.clock(), status)
            result.created.append(key)
            log.info("standby slot %s created for job %s on node %s (%d MiB)", key, job.name, node,
                     int(memory) // 2**20)
            return key
        return ""
