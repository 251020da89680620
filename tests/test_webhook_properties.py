"""Properties of the mutation over random pod shapes (hypothesis).

For any pod the API server could send: the patch applies; it never removes or changes user data (the only
fields it may change are the defaulted `schedulerName: default-scheduler` and the priority fields resolved
from no class); the result keeps names unique; and a second pass over the result produces no operations.
"""

from __future__ import annotations

import string
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardgrid import keys
from guardgrid.config import load_settings
from webhook.mutation import Advice, Denial, Mutation, mutate_pod
from webhook.stages import STAGES

SETTINGS = load_settings({})
NAMES = st.sampled_from(["main", "worker", "sidecar", "guardgrid-stage-deps", "setup", "a", "b"])
ENV_NAMES = st.sampled_from(["PYTHONPATH", keys.ENV_DATASET_DIR, keys.ENV_CHECKPOINT_DIR,
                             keys.ENV_CHECKPOINT_INTERVAL, "HOME", "NCCL_DEBUG", "X"])
PATHS = st.sampled_from(["/guardgrid/deps", "/guardgrid/dataset/", "/guardgrid/checkpoint", "/data", "/tmp",
                         "/var/run/secrets/kubernetes.io/serviceaccount"])
VOLUME_NAMES = st.sampled_from(["guardgrid-deps", "guardgrid-dataset", "guardgrid-checkpoint", "data", "tmp"])
TEXT = st.text(alphabet=string.ascii_letters + string.digits + "/:._-~ ", max_size=12)


def advice(job: str) -> Advice:
    return Advice(float(len(job) * 60 + 300))


def unique_by(key: str, strategy: st.SearchStrategy[dict[str, Any]], max_size: int) -> st.SearchStrategy[Any]:
    return st.lists(strategy, max_size=max_size, unique_by=lambda item: item[key])


env_entry = st.one_of(
    st.fixed_dictionaries({"name": ENV_NAMES, "value": TEXT}),
    st.fixed_dictionaries({"name": ENV_NAMES, "valueFrom": st.just({"fieldRef": {"fieldPath": "metadata.name"}})}),
)
mount = st.fixed_dictionaries({"name": VOLUME_NAMES, "mountPath": PATHS},
                              optional={"readOnly": st.booleans(), "subPath": st.just("x")})
security = st.fixed_dictionaries({}, optional={"runAsUser": st.integers(0, 70000), "runAsNonRoot": st.booleans(),
                                               "privileged": st.booleans()})
container_body = st.fixed_dictionaries(
    {"image": st.just("registry.example.com/train:1")},
    optional={"env": unique_by("name", env_entry, 4), "volumeMounts": unique_by("mountPath", mount, 3),
              "securityContext": security, "command": st.lists(TEXT, max_size=2)},
)
volume = st.one_of(
    st.fixed_dictionaries({"name": VOLUME_NAMES, "emptyDir": st.just({})}),
    st.fixed_dictionaries({"name": VOLUME_NAMES, "configMap": st.just({"name": "cfg"})}),
)
stage_annotations = st.fixed_dictionaries({}, optional={
    keys.DEPS_IMAGE: st.sampled_from(["registry.example.com/deps:1", "busybox"]),
    keys.DEPS_IMAGE_PATH: st.sampled_from(["/opt/site-packages", "/deps/"]),
    keys.DATASET_IMAGE: st.just("registry.example.com/data@sha256:" + "ab" * 32),
    keys.DATASET_IMAGE_PATH: st.just("/data"),
    keys.CHECKPOINT_IMAGE: st.just("localhost:5000/ckpt:epoch-7"),
    keys.CHECKPOINT_COST_SECONDS: st.sampled_from(["45", "0.5"]),
    keys.MIGRATABLE: st.sampled_from(["true", "false"]),
    keys.JOB: st.sampled_from(["resnet50-train", "j"]),
    keys.INJECT: st.sampled_from(["true", "enabled"]),
    "guardgrid.io/typo": TEXT,
    "example.com/owner": TEXT,
})
labels = st.dictionaries(st.sampled_from([keys.JOB, keys.MANAGED, "app", "a/b~c"]),
                         st.sampled_from(["true", "x", "resnet50-train"]), max_size=3)
owner = st.fixed_dictionaries({"apiVersion": st.just("batch/v1"), "kind": st.just("Job"),
                               "name": st.sampled_from(["bert", "x" * 70]), "uid": st.just("u"),
                               "controller": st.booleans()})


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    split = draw(st.integers(1, len(names)))
    containers = [{"name": name, **draw(container_body)} for name in names[:split]]
    init_containers = [{"name": name, **draw(container_body)} for name in names[split:]]
    metadata: dict[str, Any] = {"namespace": "ml-team"}
    if draw(st.booleans()):
        metadata["annotations"] = draw(stage_annotations)
    if draw(st.booleans()):
        metadata["labels"] = draw(labels)
    if draw(st.booleans()):
        metadata["ownerReferences"] = [draw(owner)]
    spec: dict[str, Any] = {"containers": containers}
    if init_containers or draw(st.booleans()):
        spec["initContainers"] = init_containers
    if draw(st.booleans()):
        spec["volumes"] = draw(unique_by("name", volume, 4))
    optional = {"schedulerName": st.sampled_from(["default-scheduler", "volcano", keys.SCHEDULER_NAME]),
                "priorityClassName": st.sampled_from(["high", keys.PRIORITY_CLASS_TRAINING]),
                "priority": st.sampled_from([0, 1000, 5000]),
                "preemptionPolicy": st.sampled_from(["PreemptLowerPriority", "Never"])}
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def may_change(path: tuple[Any, ...], original_pod: dict[str, Any]) -> bool:
    """The only user-visible values the webhook may replace: ones the API server defaulted, not the user."""
    spec = original_pod["spec"]
    if path == ("spec", "schedulerName"):
        return spec["schedulerName"] == "default-scheduler"
    if path in (("spec", "priority"), ("spec", "preemptionPolicy")):
        return not spec.get("priorityClassName")
    return False


def assert_preserved(before: Any, after: Any, path: tuple[Any, ...], original_pod: dict[str, Any]) -> None:
    if may_change(path, original_pod):
        return
    if isinstance(before, dict):
        assert isinstance(after, dict), path
        for key, value in before.items():
            assert key in after, path + (key,)
            assert_preserved(value, after[key], path + (key,), original_pod)
    elif isinstance(before, list):
        assert isinstance(after, list) and len(after) >= len(before), path
        for index, value in enumerate(before):
            assert_preserved(value, after[index], path + (index,), original_pod)
    else:
        assert before == after, path


def decide(pod: dict[str, Any]) -> Mutation:
    decision = mutate_pod(pod, SETTINGS, advice)
    assert isinstance(decision, Mutation), decision  # only valid annotation values are drawn
    return decision


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(pods())
def test_the_patch_always_applies_and_never_removes_or_changes_user_data(pod: dict[str, Any]) -> None:
    result = jsonpatch.apply_patch(pod, list(decide(pod).ops))
    assert_preserved(pod, result, (), pod)


@FAST
@given(pods())
def test_a_second_pass_over_the_result_produces_no_operations(pod: dict[str, Any]) -> None:
    result = jsonpatch.apply_patch(pod, list(decide(pod).ops))
    assert decide(result).ops == ()


@FAST
@given(pods())
def test_the_result_keeps_container_volume_and_mount_names_unique(pod: dict[str, Any]) -> None:
    result = jsonpatch.apply_patch(pod, list(decide(pod).ops))
    spec = result["spec"]
    everything = spec["containers"] + spec.get("initContainers", [])
    names = [item["name"] for item in everything]
    assert len(names) == len(set(names))
    volumes = [item["name"] for item in spec.get("volumes", [])]
    assert len(volumes) == len(set(volumes))
    for item in everything:
        paths = [m["mountPath"].rstrip("/") for m in item.get("volumeMounts", [])]
        assert len(paths) == len(set(paths))
        env = [e["name"] for e in item.get("env", [])]
        assert len(env) == len(set(env))


@FAST
@given(pods())
def test_every_staging_env_the_webhook_adds_points_at_the_stage_volume_mounted_there(pod: dict[str, Any]) -> None:
    result = jsonpatch.apply_patch(pod, list(decide(pod).ops))
    for before, after in zip(pod["spec"]["containers"], result["spec"]["containers"], strict=True):
        own = {entry["name"] for entry in before.get("env", [])}
        mounts = {(m["name"], m["mountPath"].rstrip("/")) for m in after.get("volumeMounts", [])}
        for stage in STAGES:
            added = [e for e in after.get("env", []) if e["name"] == stage.env_name and e["name"] not in own]
            for entry in added:
                assert (stage.volume, entry["value"]) in mounts
                assert any(v["name"] == stage.volume and "emptyDir" in v for v in result["spec"]["volumes"])
                assert any(c["name"] == stage.init_name for c in result["spec"]["initContainers"])


@FAST
@given(pods())
def test_a_pod_that_gets_the_training_class_always_gets_its_priority_too(pod: dict[str, Any]) -> None:
    result = jsonpatch.apply_patch(pod, list(decide(pod).ops))
    spec = result["spec"]
    if spec.get("priorityClassName") == keys.PRIORITY_CLASS_TRAINING and not pod["spec"].get("priorityClassName"):
        assert spec["priority"] == keys.PRIORITY_TRAINING
        assert spec.get("preemptionPolicy", "PreemptLowerPriority") == "PreemptLowerPriority"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(keys.KNOWN_KEYS) + ["guardgrid.io/x"]), st.text(max_size=40),
                       max_size=6))
def test_any_annotation_values_give_a_decision_and_never_an_exception(annotations: dict[str, str]) -> None:
    pod = {"metadata": {"annotations": annotations}, "spec": {"containers": [{"name": "main", "image": "x"}]}}
    decision = mutate_pod(pod, SETTINGS, advice)
    if isinstance(decision, Denial):
        assert decision.message.startswith("annotation guardgrid.io/")
    else:
        jsonpatch.apply_patch(pod, list(decision.ops))
