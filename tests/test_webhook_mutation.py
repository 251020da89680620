"""The webhook's pure decision (webhook.mutation), its annotation rules and its checkpoint-advice cache."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonpatch
import pytest

from guardgrid import keys
from guardgrid.config import load_settings
from guardgrid.snapshot import JobAdvice, Snapshot
from guardgrid.snapshot_client import SnapshotFetch
from webhook.advice import UNAVAILABLE_WARNING, AdviceCache
from webhook.annotations import check_annotations, is_image_reference, is_label_value
from webhook.mutation import Advice, Denial, Mutation, PodShapeError, mutate_pod
from webhook.pointer import escape, pointer

SETTINGS = load_settings({})


def no_advice(job: str) -> Advice:
    return Advice(None)


def pod(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
        containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    """A pod as the API server sends it after defaulting: schedulerName and priority already set."""
    metadata: dict[str, Any] = {"name": "trainer-0", "namespace": "ml-team"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if labels is not None:
        metadata["labels"] = labels
    body = {"schedulerName": "default-scheduler", "priority": 0, "preemptionPolicy": "PreemptLowerPriority",
            "containers": containers if containers is not None else [{"name": "main", "image": "train:1"}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def mutate(obj: dict[str, Any], advice: Any = no_advice) -> Mutation:
    decision = mutate_pod(obj, SETTINGS, advice)
    assert isinstance(decision, Mutation), decision
    return decision


def applied(obj: dict[str, Any], advice: Any = no_advice) -> dict[str, Any]:
    return jsonpatch.apply_patch(obj, list(mutate(obj, advice).ops))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry.get("value", "") for entry in container.get("env", [])}


JOB = {keys.JOB: "llm-pretrain"}


# --- JSON Pointer ----------------------------------------------------------------------------------------

def test_a_pointer_escapes_tilde_before_slash() -> None:
    assert escape("a/b~c") == "a~1b~0c"
    assert escape("~1") == "~01"
    assert pointer("metadata", "labels", "guardgrid.io/job") == "/metadata/labels/guardgrid.io~1job"
    assert pointer("spec", "volumes", "-") == "/spec/volumes/-"


def test_label_keys_with_slashes_and_tildes_land_under_the_right_key() -> None:
    obj = pod(annotations=JOB, labels={"weird~key/x": "1"})
    result = applied(obj)
    assert result["metadata"]["labels"] == {"weird~key/x": "1", keys.JOB: "llm-pretrain", keys.MANAGED: "true"}


# --- annotations -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reference", [
    "busybox", "busybox:1.36", "library/busybox", "registry.example.com/datasets/imagenet-1k:shard-a",
    "registry.example.com:5000/ml/deps_bert:1.2", "localhost:5000/a/b__c/d-e.f:v1",
    "ghcr.io/org/img@sha256:" + "a" * 64, "ghcr.io/org/img:1.0@sha256:" + "0" * 64, "[::1]:5000/x:y",
])
def test_image_references_runtimes_accept_are_accepted(reference: str) -> None:
    assert is_image_reference(reference)


@pytest.mark.parametrize("reference", [
    "", "Busybox", "busybox:", "registry.example.com/", "/abs/path", "a b", "img:tag with space",
    "img@sha256:short", "img:" + "t" * 129, "-leading/dash", "a//b", "x" * 256,
])
def test_strings_that_are_not_image_references_are_rejected(reference: str) -> None:
    assert not is_image_reference(reference)


def test_label_values_follow_kubernetes_rules() -> None:
    assert is_label_value("resnet50-train") and is_label_value("a.b_c-d") and is_label_value("")
    assert not is_label_value("-x") and not is_label_value("x" * 64) and not is_label_value("a/b")


@pytest.mark.parametrize(("key", "value", "expected"), [
    (keys.DEPS_IMAGE, "Not An Image!", "not an image reference"),
    (keys.DATASET_IMAGE_PATH, "data/train", "absolute path"),
    (keys.CHECKPOINT_IMAGE_PATH, "/ckpt/../etc", "absolute path"),
    (keys.CHECKPOINT_COST_SECONDS, "fast", "positive number"),
    (keys.CHECKPOINT_COST_SECONDS, "-3", "positive number"),
    (keys.CHECKPOINT_COST_SECONDS, "nan", "positive number"),
    (keys.MIGRATABLE, "yes please", "\"true\" or \"false\""),
    (keys.JOB, "Has Spaces", "label value"),
    (keys.INJECT, "maybe", "opt out"),
])
def test_a_bad_value_of_a_known_annotation_is_denied_naming_the_annotation_and_value(
        key: str, value: str, expected: str) -> None:
    annotations = {key: value}
    if key.endswith("-path"):
        annotations[key.removesuffix("-path")] = "registry.example.com/data:1"
    decision = mutate_pod(pod(annotations=annotations), SETTINGS, no_advice)
    assert isinstance(decision, Denial)
    assert key in decision.message and repr(value) in decision.message and expected in decision.message


def test_every_bad_annotation_is_named_in_one_denial() -> None:
    decision = mutate_pod(pod(annotations={keys.DEPS_IMAGE: "UPPER", keys.CHECKPOINT_COST_SECONDS: "x"}),
                          SETTINGS, no_advice)
    assert isinstance(decision, Denial)
    assert keys.DEPS_IMAGE in decision.message and keys.CHECKPOINT_COST_SECONDS in decision.message


def test_a_huge_annotation_value_is_shortened_in_the_denial() -> None:
    decision = mutate_pod(pod(annotations={keys.DEPS_IMAGE: "X" * 100_000}), SETTINGS, no_advice)
    assert isinstance(decision, Denial) and len(decision.message) < 300


def test_an_unknown_guardgrid_annotation_is_admitted_with_a_warning_naming_it_and_the_likely_key() -> None:
    check = check_annotations({"guardgrid.io/dataset-imgae": "x", "example.com/other": "y"})
    assert check.errors == ()
    assert check.warnings == ("unknown annotation 'guardgrid.io/dataset-imgae' ignored "
                              "(did you mean guardgrid.io/dataset-image?)",)
    result = mutate(pod(annotations={**JOB, "guardgrid.io/dataset-imgae": "x"}))
    assert any("guardgrid.io/dataset-imgae" in warning for warning in result.warnings)


def test_a_path_annotation_without_its_image_is_admitted_with_a_warning() -> None:
    result = mutate(pod(annotations={**JOB, keys.DATASET_IMAGE_PATH: "/data"}))
    assert f"annotation {keys.DATASET_IMAGE_PATH} has no effect without {keys.DATASET_IMAGE}" in result.warnings
    assert not any(op["path"].startswith("/spec/initContainers") for op in result.ops)


def test_valid_values_of_every_known_annotation_are_admitted_without_warnings() -> None:
    annotations = {keys.JOB: "j", keys.INJECT: "true", keys.DEPS_IMAGE: "r.io/d:1", keys.DEPS_IMAGE_PATH: "/d",
                   keys.DATASET_IMAGE: "r.io/ds:1", keys.DATASET_IMAGE_PATH: "/ds",
                   keys.CHECKPOINT_IMAGE: "r.io/c:1", keys.CHECKPOINT_IMAGE_PATH: "/c",
                   keys.CHECKPOINT_COST_SECONDS: "45.5", keys.MIGRATABLE: "false", keys.MANAGED: "true",
                   keys.STANDBY_FOR: "other-job"}
    assert check_annotations(annotations) == check_annotations({})
    assert mutate(pod(annotations=annotations)).warnings == ()


# --- scope -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["false", "False", "disabled"])
def test_a_pod_opted_out_by_annotation_is_skipped_even_with_bad_annotations(value: str) -> None:
    result = mutate(pod(annotations={keys.INJECT: value, keys.DEPS_IMAGE: "NOT VALID"}))
    assert result.result == "skipped" and result.ops == ()


def test_a_pod_of_the_standby_class_is_skipped() -> None:
    result = mutate(pod(annotations=JOB, priorityClassName=keys.PRIORITY_CLASS_STANDBY, priority=-5))
    assert result.result == "skipped"


# --- scheduling ------------------------------------------------------------------------------------------

def test_a_pod_without_a_class_gets_class_priority_and_scheduler_together() -> None:
    result = applied(pod(annotations=JOB))
    assert result["spec"]["priorityClassName"] == keys.PRIORITY_CLASS_TRAINING
    assert result["spec"]["priority"] == keys.PRIORITY_TRAINING
    assert result["spec"]["schedulerName"] == keys.SCHEDULER_NAME


def test_a_pod_whose_priority_was_not_resolved_gets_it_added() -> None:
    obj = pod(annotations=JOB)
    del obj["spec"]["priority"], obj["spec"]["schedulerName"]
    ops = mutate(obj).ops
    assert {"op": "add", "path": "/spec/priority", "value": 1000} in ops
    assert {"op": "add", "path": "/spec/schedulerName", "value": keys.SCHEDULER_NAME} in ops


def test_a_never_preempting_policy_is_aligned_with_the_training_class() -> None:
    result = applied(pod(annotations=JOB, preemptionPolicy="Never"))
    assert result["spec"]["preemptionPolicy"] == "PreemptLowerPriority"


def test_a_pod_with_its_own_class_keeps_class_priority_and_policy_with_a_warning() -> None:
    obj = pod(annotations=JOB, priorityClassName="high", priority=5000, preemptionPolicy="Never")
    result = mutate(obj)
    after = jsonpatch.apply_patch(obj, list(result.ops))
    assert (after["spec"]["priorityClassName"], after["spec"]["priority"], after["spec"]["preemptionPolicy"]) == \
        ("high", 5000, "Never")
    assert "pod's own priorityClassName 'high' kept instead of guardgrid-training" in result.warnings


def test_a_pod_with_its_own_scheduler_keeps_it_with_a_warning() -> None:
    obj = pod(annotations=JOB, schedulerName="volcano")
    result = mutate(obj)
    assert jsonpatch.apply_patch(obj, list(result.ops))["spec"]["schedulerName"] == "volcano"
    assert any("'volcano' kept" in warning for warning in result.warnings)


# --- labels and job identity -----------------------------------------------------------------------------

def test_the_job_label_comes_from_the_controller_owner_when_there_is_no_annotation() -> None:
    obj = pod(labels={"app": "x"})
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-me", "uid": "1"},
        {"apiVersion": "batch/v1", "kind": "Job", "name": "bert-finetune", "uid": "2", "controller": True},
    ]
    assert applied(obj)["metadata"]["labels"] == {"app": "x", keys.JOB: "bert-finetune", keys.MANAGED: "true"}


def test_an_existing_job_label_wins_over_the_annotation_with_a_warning() -> None:
    obj = pod(annotations={keys.JOB: "from-annotation"}, labels={keys.JOB: "from-label"})
    result = mutate(obj)
    assert jsonpatch.apply_patch(obj, list(result.ops))["metadata"]["labels"][keys.JOB] == "from-label"
    assert any("from-annotation" in warning for warning in result.warnings)


def test_an_owner_name_too_long_for_a_label_is_not_copied_but_warned_about() -> None:
    obj = pod()
    obj["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "j" * 100, "uid": "1", "controller": True}]
    result = mutate(obj)
    assert keys.JOB not in jsonpatch.apply_patch(obj, list(result.ops))["metadata"]["labels"]
    assert any("not a valid label value" in warning for warning in result.warnings)


def test_a_user_managed_label_with_another_value_is_kept() -> None:
    obj = pod(annotations=JOB, labels={keys.MANAGED: "no"})
    assert applied(obj)["metadata"]["labels"][keys.MANAGED] == "no"


# --- staging ---------------------------------------------------------------------------------------------

def test_a_pod_without_init_containers_gets_the_array_added() -> None:
    result = mutate(pod(annotations={**JOB, keys.DEPS_IMAGE: "r.io/deps:1"}))
    adds = [op for op in result.ops if op["path"] == "/spec/initContainers"]
    assert len(adds) == 1 and [c["name"] for c in adds[0]["value"]] == ["guardgrid-stage-deps"]


def test_a_pod_with_init_containers_gets_entries_appended_and_keeps_its_own_first() -> None:
    mine = {"name": "setup", "image": "tools:1"}
    obj = pod(annotations={**JOB, keys.DEPS_IMAGE: "r.io/deps:1", keys.CHECKPOINT_IMAGE: "r.io/ck:1"},
              initContainers=[mine])
    result = applied(obj)
    assert [c["name"] for c in result["spec"]["initContainers"]] == \
        ["setup", "guardgrid-stage-deps", "guardgrid-stage-checkpoint"]
    assert result["spec"]["initContainers"][0] == mine


def test_staging_uses_the_configured_root_and_resources() -> None:
    settings = load_settings({}, stage_root="/warm/", init_memory_limit="2Gi", init_cpu_request="250m")
    obj = pod(annotations={**JOB, keys.DATASET_IMAGE: "r.io/ds:1"})
    decision = mutate_pod(obj, settings, no_advice)
    assert isinstance(decision, Mutation)
    after = jsonpatch.apply_patch(obj, list(decision.ops))
    init = after["spec"]["initContainers"][0]
    assert init["resources"]["limits"]["memory"] == "2Gi" and init["resources"]["requests"]["cpu"] == "250m"
    main = after["spec"]["containers"][0]
    assert main["volumeMounts"] == [{"name": "guardgrid-dataset", "mountPath": "/warm/dataset", "readOnly": True}]
    assert env_of(main)[keys.ENV_DATASET_DIR] == "/warm/dataset"


def test_every_app_container_gets_the_mounts_and_env_but_init_containers_do_not() -> None:
    obj = pod(annotations={**JOB, keys.DATASET_IMAGE: "r.io/ds:1"},
              containers=[{"name": "a", "image": "x"},
                          {"name": "b", "image": "y", "env": [{"name": "K", "value": "v"}]}],
              initContainers=[{"name": "setup", "image": "tools:1"}])
    after = applied(obj)
    for item in after["spec"]["containers"]:
        assert env_of(item)[keys.ENV_DATASET_DIR] == "/guardgrid/dataset"
        staged = {"name": "guardgrid-dataset", "mountPath": "/guardgrid/dataset", "readOnly": True}
        assert staged in item["volumeMounts"]
    assert after["spec"]["containers"][1]["env"][0] == {"name": "K", "value": "v"}
    assert "volumeMounts" not in after["spec"]["initContainers"][0]


def test_a_user_pythonpath_is_kept_with_a_warning_that_says_where_the_deps_are() -> None:
    obj = pod(annotations={**JOB, keys.DEPS_IMAGE: "r.io/deps:1"},
              containers=[{"name": "main", "image": "x", "env": [{"name": "PYTHONPATH", "value": "/app"}]}])
    result = mutate(obj)
    after = jsonpatch.apply_patch(obj, list(result.ops))
    assert after["spec"]["containers"][0]["env"] == [{"name": "PYTHONPATH", "value": "/app"}]
    assert "container 'main': its own PYTHONPATH kept (GuardGrid's value: /guardgrid/deps)" in result.warnings


def test_a_user_mount_at_the_stage_path_is_kept_and_the_stage_is_not_mounted_there() -> None:
    mine = {"name": "mine", "mountPath": "/guardgrid/dataset/"}
    obj = pod(annotations={**JOB, keys.DATASET_IMAGE: "r.io/ds:1"},
              containers=[{"name": "main", "image": "x", "volumeMounts": [mine]}],
              volumes=[{"name": "mine", "emptyDir": {}}])
    result = mutate(obj)
    after = jsonpatch.apply_patch(obj, list(result.ops))
    assert after["spec"]["containers"][0]["volumeMounts"] == [mine]
    assert keys.ENV_DATASET_DIR not in env_of(after["spec"]["containers"][0])
    assert any("already mounts /guardgrid/dataset" in warning for warning in result.warnings)


def test_a_user_volume_named_like_a_stage_that_is_not_an_emptydir_is_never_written_to() -> None:
    pvc = {"name": "guardgrid-checkpoint", "persistentVolumeClaim": {"claimName": "ckpt"}}
    obj = pod(annotations={**JOB, keys.CHECKPOINT_IMAGE: "r.io/ck:1"}, volumes=[pvc])
    result = mutate(obj)
    after = jsonpatch.apply_patch(obj, list(result.ops))
    assert after["spec"]["volumes"] == [pvc]
    assert "initContainers" not in after["spec"]
    assert any("not an emptyDir" in warning for warning in result.warnings)


def test_staging_containers_run_as_the_app_container_user_when_it_is_set_there() -> None:
    obj = pod(annotations={**JOB, keys.DEPS_IMAGE: "r.io/deps:1"},
              containers=[{"name": "main", "image": "x",
                           "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "privileged": False}}])
    init = applied(obj)["spec"]["initContainers"][0]
    assert init["securityContext"]["runAsUser"] == 1000 and init["securityContext"]["runAsNonRoot"] is True
    assert "privileged" not in init["securityContext"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_an_annotation_path_is_passed_as_env_and_never_spliced_into_the_shell_script() -> None:
    nasty = "/data/$(rm -rf ~)/; echo pwned"
    init = applied(pod(annotations={**JOB, keys.DATASET_IMAGE: "r.io/ds:1", keys.DATASET_IMAGE_PATH: nasty}))[
        "spec"]["initContainers"][0]
    assert env_of(init) == {"GUARDGRID_STAGE_SOURCE": nasty}
    assert nasty not in init["command"][2]


# --- idempotence and reinvocation ------------------------------------------------------------------------

def test_a_mutated_pod_gets_an_empty_patch_and_no_warnings() -> None:
    obj = pod(annotations={**JOB, keys.DEPS_IMAGE: "r.io/d:1", keys.DATASET_IMAGE: "r.io/ds:1",
                           "guardgrid.io/typo": "x"},
              containers=[{"name": "main", "image": "x", "env": [{"name": "PYTHONPATH", "value": "/app"}]}])
    once = applied(obj, lambda job: Advice(900.0))
    again = mutate(once, lambda job: Advice(1200.0))
    assert again.ops == () and again.warnings == () and again.result == "unchanged"


def test_reinvocation_after_another_webhook_added_a_sidecar_mounts_and_env_only_there() -> None:
    obj = pod(annotations={**JOB, keys.DATASET_IMAGE: "r.io/ds:1"})
    once = applied(obj, lambda job: Advice(900.0))
    other = copy.deepcopy(once)
    other["spec"]["containers"].append({"name": "proxy", "image": "envoy:1"})
    second = mutate(other, lambda job: Advice(900.0))
    assert {op["path"] for op in second.ops} == {"/spec/containers/1/volumeMounts", "/spec/containers/1/env"}
    after = jsonpatch.apply_patch(other, list(second.ops))
    assert after["spec"]["containers"][0] == once["spec"]["containers"][0]
    assert env_of(after["spec"]["containers"][1]) == {keys.ENV_DATASET_DIR: "/guardgrid/dataset",
                                                      keys.ENV_CHECKPOINT_INTERVAL: "900"}
    assert mutate(after).ops == ()


# --- checkpoint advice -----------------------------------------------------------------------------------

def test_advice_becomes_a_whole_number_of_seconds_in_every_app_container() -> None:
    obj = pod(annotations=JOB, containers=[{"name": "a", "image": "x"}, {"name": "b", "image": "y"}])
    calls: list[str] = []

    def lookup(job: str) -> Advice:
        calls.append(job)
        return Advice(1799.6)

    after = applied(obj, lookup)
    assert calls == ["llm-pretrain"]  # asked once per pod, not per container
    assert all(env_of(c)[keys.ENV_CHECKPOINT_INTERVAL] == "1800" for c in after["spec"]["containers"])


def test_an_unreachable_predictor_admits_the_pod_without_the_env_and_with_a_warning() -> None:
    result = mutate(pod(annotations=JOB), lambda job: Advice(None, UNAVAILABLE_WARNING))
    assert result.result == "mutated" and UNAVAILABLE_WARNING in result.warnings
    assert not any(keys.ENV_CHECKPOINT_INTERVAL in json.dumps(op) for op in result.ops)


def test_a_lookup_with_no_advice_and_no_fallback_gives_no_env_and_no_warning() -> None:
    result = mutate(pod(annotations=JOB))
    assert result.warnings == ()
    assert not any(keys.ENV_CHECKPOINT_INTERVAL in json.dumps(op) for op in result.ops)


def test_a_user_set_interval_is_kept_and_the_predictor_is_not_asked() -> None:
    def refuse(job: str) -> Advice:
        raise AssertionError("the predictor must not be asked")

    obj = pod(annotations=JOB, containers=[{"name": "a", "image": "x",
                                             "env": [{"name": keys.ENV_CHECKPOINT_INTERVAL, "value": "60"}]}])
    assert env_of(applied(obj, refuse)["spec"]["containers"][0])[keys.ENV_CHECKPOINT_INTERVAL] == "60"


# --- malformed pods --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mangle", "field"), [
    (lambda p: p.__setitem__("spec", "nope"), "spec"),
    (lambda p: p["spec"].__setitem__("containers", {"a": 1}), "spec.containers"),
    (lambda p: p["spec"]["containers"].append("x"), "spec.containers[1]"),
    (lambda p: p["metadata"].__setitem__("labels", {"a": 1}), "metadata.labels"),
    (lambda p: p["metadata"].__setitem__("annotations", ["x"]), "metadata.annotations"),
    (lambda p: p["spec"]["containers"][0].__setitem__("env", [{"value": "no name"}]), "env[0]"),
    (lambda p: p["spec"].__setitem__("volumes", "x"), "spec.volumes"),
])
def test_a_pod_of_the_wrong_shape_raises_a_shape_error_naming_the_field(mangle: Any, field: str) -> None:
    obj = pod(annotations=JOB)
    mangle(obj)
    with pytest.raises(PodShapeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        mutate_pod(obj, SETTINGS, no_advice)


# --- the advice cache, over real HTTP --------------------------------------------------------------------

class _Predictor(BaseHTTPRequestHandler):
    body = b""
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def predictor() -> Iterator[tuple[str, type[_Predictor]]]:
    handler = type("Predictor", (_Predictor,), {"hits": 0, "body": Snapshot(
        generated_at=1.0, jobs={"llm-pretrain": JobAdvice(2400.0, 86400.0, 45.0)}).to_json()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_advice_cache_reads_the_predictor_snapshot_over_http_once_per_ttl(
        predictor: tuple[str, type[_Predictor]]) -> None:
    url, handler = predictor
    now = [100.0]
    cache = AdviceCache(url, timeout=2.0, ttl=30.0, timer=lambda: now[0])
    assert cache.lookup("llm-pretrain") == Advice(2400.0)
    assert cache.lookup("unknown-job") == Advice(None, unplaced_node_fault_rates=())  # advised from the prior
    assert handler.hits == 1
    now[0] += 31
    assert cache.lookup("llm-pretrain") == Advice(2400.0)
    assert handler.hits == 2


def test_the_advice_cache_fails_open_with_a_warning_when_the_predictor_is_down() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = AdviceCache(f"http://127.0.0.1:{port}", timeout=0.5, ttl=30.0)
    assert cache.lookup("llm-pretrain") == Advice(None, UNAVAILABLE_WARNING)
    assert cache.lookup("llm-pretrain") == Advice(None, UNAVAILABLE_WARNING)
    assert cache.fetches == 1  # the failure is cached too: one timeout per period, not per pod


def test_a_cached_failure_expires_sooner_than_a_cached_snapshot() -> None:
    now = [0.0]
    results = [SnapshotFetch(None, "down"), SnapshotFetch(Snapshot(generated_at=1.0,
                                                                   jobs={"j": JobAdvice(600.0, 1.0, 1.0)}))]
    cache = AdviceCache("", 1.0, ttl=60.0, fetch=lambda: results.pop(0), timer=lambda: now[0])
    assert cache.lookup("j").warning == UNAVAILABLE_WARNING
    now[0] += 6  # past the 5 s failure TTL, well inside the 60 s snapshot TTL
    assert cache.lookup("j") == Advice(600.0)


def test_without_a_predictor_url_there_is_no_advice_and_no_warning() -> None:
    assert AdviceCache("", 1.0, 30.0).lookup("j") == Advice(None)


def test_concurrent_lookups_share_one_fetch() -> None:
    release = threading.Event()
    started = threading.Event()
    calls: list[int] = []

    def slow_fetch() -> SnapshotFetch:
        calls.append(1)
        started.set()
        release.wait(5)
        return SnapshotFetch(Snapshot(generated_at=1.0, jobs={"j": JobAdvice(600.0, 1.0, 1.0)}))

    cache = AdviceCache("", 1.0, ttl=60.0, fetch=slow_fetch)
    answers: list[Advice] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.lookup("j"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert started.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert answers == [Advice(600.0)] * 4 and len(calls) == 1
