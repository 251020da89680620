"""The webhook's decision: a Pod (as the API server sends it) -> JSONPatch operations and warnings, or a denial.

Why a pure function: admission must be exact and idempotent, and both are properties of this function alone.
It reads nothing but its arguments (checkpoint advice comes in as a callable, called at most once, and only
when the pod still lacks the advice env), so the fixture, property and HTTP tests exercise the very code the
API server talks to.

How it stays idempotent: it *converges* instead of transforming. Each piece of the desired state (label,
scheduler, priority, volume, init container, mount, env entry) is compared with what the pod already has,
and only what is missing becomes an `add`. A pod that went through once gets an empty patch, so
`reinvocationPolicy: IfNeeded` is safe; a container another webhook added after us gets its mounts and env
on reinvocation. Arrays are only ever appended to (or created when absent); user entries are never replaced.

Priority: the API server's Priority admission plugin runs before mutating webhooks, so a pod arrives with
`spec.priority` (and `spec.preemptionPolicy`) already resolved from no class. Setting only
`priorityClassName` makes the API server reject the pod as Forbidden (observed on v1.36), so the patch also
sets `spec.priority` to the class's value and aligns `preemptionPolicy` with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from guardgrid import keys
from guardgrid.checkpoint import advise_unplaced, parse_checkpoint_cost
from guardgrid.config import Settings
from guardgrid.records import OwnerRef, job_of
from webhook.annotations import check_annotations, inject_choice, is_label_value, shown
from webhook.pointer import add, pointer, replace
from webhook.stages import STAGES, Stage, init_container, mount_path

__all__ = ["Advice", "AdviceLookup", "Mutation", "Denial", "PodShapeError", "mutate_pod",
           "TRAINING_PREEMPTION_POLICY", "DEFAULT_SCHEDULER"]

DEFAULT_SCHEDULER: Final = "default-scheduler"
# Must equal the preemptionPolicy of the guardgrid-training PriorityClass (manifests/base): a replacement
# pod has to preempt its job's standby slot. The API server rejects a pod whose policy differs from its class.
TRAINING_PREEMPTION_POLICY: Final = "PreemptLowerPriority"


class PodShapeError(ValueError):
    """The object is not shaped like a Pod (a field of the wrong JSON type); the message names the field."""


@dataclass(frozen=True, slots=True)
class Advice:
    """Checkpoint advice for one job: the interval, or None (no advice, or `warning` says why not).

    `unplaced_node_fault_rates` is for a job the snapshot does not know yet (its first pod): the fault rates
    of the snapshot's nodes, one of which the pod will land on. The interval then depends on the pod's own
    `guardgrid.io/checkpoint-cost-seconds`, which only the mutation sees, so the mutation computes it
    (`guardgrid.checkpoint.advise_unplaced`); an empty tuple means a snapshot without nodes (the prior rate).
    None: no fallback either (no snapshot, or the lookup gave a definite answer).
    """

    interval_seconds: float | None
    warning: str = ""
    unplaced_node_fault_rates: tuple[float, ...] | None = None


AdviceLookup = Callable[[str], Advice]


@dataclass(frozen=True, slots=True)
class Mutation:
    """Admit with these operations and warnings. `skipped` (non-empty) names why the pod is out of scope."""

    ops: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    skipped: str = ""

    @property
    def result(self) -> str:
        """The metric label: skipped, mutated or unchanged."""
        if self.skipped:
            return "skipped"
        return "mutated" if self.ops else "unchanged"


@dataclass(frozen=True, slots=True)
class Denial:
    """Refuse the pod; `message` names the offending annotation and value."""

    message: str


# --- reading the pod defensively: a field of the wrong type is a clear error, never a KeyError deep down -----

def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodShapeError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _string_map(value: Any, where: str) -> Mapping[str, str]:
    mapping = _mapping(value, where)
    for key, item in mapping.items():
        if not isinstance(item, str):
            raise PodShapeError(f"{where}[{key!r}]: expected a string, got {type(item).__name__}")
    return mapping


def _named_list(value: Any, where: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PodShapeError(f"{where}: expected an array, got {type(value).__name__}")
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise PodShapeError(f"{where}[{index}]: expected an object with a string name")
    return value


def _controller_owner(meta: Mapping[str, Any]) -> OwnerRef | None:
    refs = meta.get("ownerReferences")
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller") is True and isinstance(ref.get("name"), str):
            return OwnerRef(kind=str(ref.get("kind", "")), name=ref["name"], uid=str(ref.get("uid", "")))
    return None


@dataclass
class _Builder:
    """Collects operations and warnings; `quiet` drops warnings on a pod we already mutated (reinvocation:
    the first pass's warnings are in the same API response already)."""

    quiet: bool
    ops: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.warnings.append(message)

    def set_member(self, parent: Mapping[str, Any], path: Sequence[str], key: str, value: Any) -> None:
        """Set an object member: `replace` when present, `add` when absent (both leave siblings alone)."""
        target = pointer(*path, key)
        self.ops.append(replace(target, value) if key in parent else add(target, value))

    def extend(self, parent: Mapping[str, Any], path: Sequence[str], key: str, items: list[Any]) -> None:
        """Append to an array, creating it when absent; never rewrites existing entries."""
        if not items:
            return
        if parent.get(key) is None:
            self.ops.append(add(pointer(*path, key), items))
        else:
            self.ops.extend(add(pointer(*path, key, "-"), item) for item in items)


def mutate_pod(pod: Mapping[str, Any], settings: Settings, advice: AdviceLookup) -> Mutation | Denial:
    """Decide what to do with one Pod CREATE; see the module docstring for the rules."""
    if not isinstance(pod, Mapping):
        raise PodShapeError(f"object: expected a Pod object, got {type(pod).__name__}")
    meta = _mapping(pod.get("metadata"), "metadata")
    labels = _string_map(meta.get("labels"), "metadata.labels")
    annotations = _string_map(meta.get("annotations"), "metadata.annotations")
    if not isinstance(pod.get("spec"), Mapping):
        raise PodShapeError("spec: expected an object")
    spec: Mapping[str, Any] = pod["spec"]
    if not isinstance(spec.get("containers"), list):
        raise PodShapeError("spec.containers: expected an array")
    containers = _named_list(spec.get("containers"), "spec.containers")
    init_containers = _named_list(spec.get("initContainers"), "spec.initContainers")
    volumes = _named_list(spec.get("volumes"), "spec.volumes")

    choice = inject_choice(annotations)
    if choice.error:
        return Denial(choice.error)
    if not choice.enabled:
        return Mutation(skipped=f"opted out with annotation {keys.INJECT}")
    if labels.get(keys.STANDBY_FOR) or spec.get("priorityClassName") == keys.PRIORITY_CLASS_STANDBY:
        return Mutation(skipped="GuardGrid standby slot")
    check = check_annotations(annotations)
    if check.errors:
        return Denial("; ".join(check.errors))

    builder = _Builder(quiet=labels.get(keys.MANAGED) == "true")
    builder.warnings.extend(() if builder.quiet else check.warnings)
    job = job_of(labels, annotations, _controller_owner(meta))
    _labels(builder, pod, meta, labels, annotations, job)
    _scheduling(builder, spec)
    stages = _stages(builder, annotations, volumes, containers)
    _volumes(builder, spec, stages)
    _init_containers(builder, spec, annotations, stages, init_containers, containers, settings)
    _app_containers(builder, containers, stages, job, annotations, settings, advice)
    return Mutation(tuple(builder.ops), tuple(builder.warnings))


def _labels(builder: _Builder, pod: Mapping[str, Any], meta: Mapping[str, Any], labels: Mapping[str, str],
            annotations: Mapping[str, str], job: str) -> None:
    wanted: dict[str, str] = {}
    if not job:
        builder.warn(f"no job identity: set annotation {keys.JOB} to get checkpoint advice and standby slots")
    elif keys.JOB in labels:
        declared = annotations.get(keys.JOB)
        if declared and declared != labels[keys.JOB]:
            builder.warn(f"label {keys.JOB}={shown(labels[keys.JOB], 30)} kept; the annotation says "
                         f"{shown(declared, 30)}")
    elif is_label_value(job):
        wanted[keys.JOB] = job
    else:
        builder.warn(f"job name {shown(job, 40)} is not a valid label value; label {keys.JOB} not set")
    current = labels.get(keys.MANAGED)
    if current is None:
        wanted[keys.MANAGED] = "true"
    elif current != "true":
        builder.warn(f"label {keys.MANAGED}={shown(current, 20)} kept")
    if not wanted:
        return
    if not isinstance(pod.get("metadata"), Mapping):
        builder.ops.append(add(pointer("metadata"), {"labels": wanted}))
    elif meta.get("labels") is None:
        builder.ops.append(add(pointer("metadata", "labels"), wanted))
    else:
        for key, value in wanted.items():
            builder.ops.append(add(pointer("metadata", "labels", key), value))


def _scheduling(builder: _Builder, spec: Mapping[str, Any]) -> None:
    """schedulerName and priority. `default-scheduler` counts as unset: the API server defaults it before
    admission, so it is indistinguishable from a pod that named no scheduler."""
    scheduler = spec.get("schedulerName")
    if scheduler in (None, "", DEFAULT_SCHEDULER):
        builder.set_member(spec, ("spec",), "schedulerName", keys.SCHEDULER_NAME)
    elif scheduler != keys.SCHEDULER_NAME:
        builder.warn(f"pod's own schedulerName {shown(str(scheduler), 40)} kept instead of {keys.SCHEDULER_NAME}")

    own_class = spec.get("priorityClassName")
    if own_class:
        if own_class == keys.PRIORITY_CLASS_TRAINING:
            builder.warn(f"pod already sets priorityClassName {own_class}; kept as is")
        else:
            builder.warn(f"pod's own priorityClassName {shown(str(own_class), 40)} kept instead of "
                         f"{keys.PRIORITY_CLASS_TRAINING}")
        return
    builder.set_member(spec, ("spec",), "priorityClassName", keys.PRIORITY_CLASS_TRAINING)
    if spec.get("priority") != keys.PRIORITY_TRAINING:
        builder.set_member(spec, ("spec",), "priority", keys.PRIORITY_TRAINING)
    policy = spec.get("preemptionPolicy")
    if policy is not None and policy != TRAINING_PREEMPTION_POLICY:
        builder.set_member(spec, ("spec",), "preemptionPolicy", TRAINING_PREEMPTION_POLICY)


def _stages(builder: _Builder, annotations: Mapping[str, str], volumes: list[Mapping[str, Any]],
            containers: list[Mapping[str, Any]]) -> list[Stage]:
    """The stages this pod asks for, minus any whose names are taken by something that is not ours: a volume
    that is not an emptyDir, or an app container named like the staging init container."""
    by_name = {volume["name"]: volume for volume in volumes}
    app_names = {container["name"] for container in containers}
    active = []
    for stage in STAGES:
        if not annotations.get(stage.image_key):
            continue
        existing = by_name.get(stage.volume)
        if existing is not None and "emptyDir" not in existing:
            builder.warn(f"volume {stage.volume} exists and is not an emptyDir; {stage.name} not staged")
            continue
        if stage.init_name in app_names:
            builder.warn(f"an app container is named {stage.init_name}; {stage.name} not staged")
            continue
        active.append(stage)
    return active


def _volumes(builder: _Builder, spec: Mapping[str, Any], stages: list[Stage]) -> None:
    present = {volume["name"] for volume in spec.get("volumes") or ()}
    missing = [{"name": stage.volume, "emptyDir": {}} for stage in stages if stage.volume not in present]
    builder.extend(spec, ("spec",), "volumes", missing)


def _init_containers(builder: _Builder, spec: Mapping[str, Any], annotations: Mapping[str, str],
                     stages: list[Stage], init_containers: list[Mapping[str, Any]],
                     containers: list[Mapping[str, Any]], settings: Settings) -> None:
    taken = {c["name"] for c in init_containers}  # ours from an earlier pass (app names were checked in _stages)
    identity = _mapping(containers[0].get("securityContext"), "spec.containers[0].securityContext") \
        if containers else {}
    missing = [
        init_container(stage, annotations[stage.image_key], annotations.get(stage.path_key) or stage.default_path,
                       settings, identity)
        for stage in stages if stage.init_name not in taken
    ]
    builder.extend(spec, ("spec",), "initContainers", missing)


def _app_containers(builder: _Builder, containers: list[Mapping[str, Any]], stages: list[Stage], job: str,
                    annotations: Mapping[str, str], settings: Settings, advice: AdviceLookup) -> None:
    interval = _interval_env(builder, containers, job, annotations, settings, advice)
    for index, container in enumerate(containers):
        where = ("spec", "containers", str(index))
        name = shown(container["name"], 40)
        mounts = _named_list(container.get("volumeMounts"), f"spec.containers[{index}].volumeMounts")
        env = _named_list(container.get("env"), f"spec.containers[{index}].env")
        mounted = {(mount["name"], str(mount.get("mountPath", "")).rstrip("/")) for mount in mounts}
        used_paths = {path for _, path in mounted}
        env_by_name = {entry["name"]: entry for entry in env}
        new_mounts: list[dict[str, Any]] = []
        new_env: list[dict[str, str]] = []
        wanted_env: list[tuple[str, str]] = []
        for stage in stages:
            target = mount_path(settings, stage)
            if (stage.volume, target.rstrip("/")) not in mounted:
                if target.rstrip("/") in used_paths:
                    builder.warn(f"container {name} already mounts {target}; {stage.name} not mounted there")
                    continue
                new_mounts.append({"name": stage.volume, "mountPath": target, "readOnly": stage.read_only})
            wanted_env.append((stage.env_name, target))
        if interval is not None:
            wanted_env.append((keys.ENV_CHECKPOINT_INTERVAL, interval))
        for env_name, value in wanted_env:
            existing = env_by_name.get(env_name)
            if existing is None:
                new_env.append({"name": env_name, "value": value})
            elif existing.get("value") != value:
                builder.warn(f"container {name}: its own {env_name} kept (GuardGrid's value: {value})")
        builder.extend(container, where, "volumeMounts", new_mounts)
        builder.extend(container, where, "env", new_env)


def _interval_env(builder: _Builder, containers: list[Mapping[str, Any]], job: str,
                  annotations: Mapping[str, str], settings: Settings, advice: AdviceLookup) -> str | None:
    """The advised checkpoint interval as an env value, looked up only when some container still lacks it.

    The snapshot's own advice for the job wins; a job it does not know yet gets the interval for one pod on
    an average node with this pod's checkpoint cost (the annotation was validated in `check_annotations`).
    """
    if not job:
        return None
    lacking = any(
        all(entry["name"] != keys.ENV_CHECKPOINT_INTERVAL
            for entry in _named_list(c.get("env"), "spec.containers[].env"))
        for c in containers
    )
    if not lacking:
        return None
    found = advice(job)
    if found.warning:
        builder.warn(found.warning)
    interval = found.interval_seconds
    if interval is None and found.unplaced_node_fault_rates is not None:
        cost = parse_checkpoint_cost(annotations.get(keys.CHECKPOINT_COST_SECONDS))
        interval = advise_unplaced(cost, found.unplaced_node_fault_rates, settings).checkpoint_interval_seconds
    if interval is None or interval <= 0:
        return None
    return str(max(1, round(interval)))
