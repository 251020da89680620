"""Every AdmissionReview captured from a real kube-apiserver v1.36 is answered correctly.

The captured bodies are used unchanged (tests/fixtures/admission/). Each answer is checked the way the API
server uses it: the envelope and uid, then the base64 JSONPatch applied with `jsonpatch` to the captured pod,
then the API server's own rules on the result (Priority admission plugin, schema validity, unique names),
then a second pass over the result (reinvocation) which must produce no patch.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from guardgrid import keys
from guardgrid.config import load_settings
from webhook.handler import Answer, answer_review
from webhook.mutation import Advice
from webhook.stages import COPY_COMMAND

ADMISSION = Path(__file__).parent / "fixtures" / "admission"
ALL_FIXTURES = sorted(path.name for path in ADMISSION.glob("*.json"))
SETTINGS = load_settings({})
ADVISED = {"bert-finetune": 1500.0, "resnet50-train": 2700.0}
SCHEMA_VERSION = "1.36.0"


def advice(job: str) -> Advice:
    return Advice(ADVISED.get(job))


def captured(name: str) -> dict[str, Any]:
    return json.loads((ADMISSION / name).read_bytes())


def answer(review: dict[str, Any]) -> tuple[Answer, dict[str, Any]]:
    result = answer_review(json.dumps(review).encode(), SETTINGS, advice)
    assert result.status == 200
    return result, json.loads(result.body)["response"]


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"], validate=True))


def admitted_pod(name: str) -> dict[str, Any]:
    """The pod as the API server stores it after applying our patch."""
    review = captured(name)
    _, response = answer(review)
    assert response["allowed"] is True
    return jsonpatch.apply_patch(review["request"]["object"], patch_of(response))


def container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    items = pod["spec"]["initContainers" if init else "containers"]
    return next(item for item in items if item["name"] == name)


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry.get("value", "") for entry in item.get("env", [])}


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_captured_review_is_answered_in_the_envelope_it_came_in_with_its_uid(name: str) -> None:
    review = captured(name)
    raw = answer_review((ADMISSION / name).read_bytes(), SETTINGS, advice)
    reply = json.loads(raw.body)
    assert raw.status == 200 and raw.content_type == "application/json"
    assert reply["apiVersion"] == review["apiVersion"] == "admission.k8s.io/v1"
    assert reply["kind"] == review["kind"] == "AdmissionReview"
    assert reply["response"]["uid"] == review["request"]["uid"]
    assert reply["response"]["allowed"] is True
    assert all(len(warning) <= 120 for warning in reply["response"].get("warnings", []))


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_captured_pod_gets_no_patch_on_a_second_pass_over_the_admitted_result(name: str) -> None:
    review = captured(name)
    review["request"]["object"] = admitted_pod(name)
    result, response = answer(review)
    assert "patch" not in response and "patchType" not in response
    assert result.result in ("unchanged", "skipped")
    assert "warnings" not in response


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_admitted_pod_passes_the_priority_admission_plugin_rules(name: str) -> None:
    pod = admitted_pod(name)
    spec = pod["spec"]
    classes = {keys.PRIORITY_CLASS_TRAINING: keys.PRIORITY_TRAINING, keys.PRIORITY_CLASS_STANDBY: keys.PRIORITY_STANDBY}
    assert spec["priority"] == classes[spec["priorityClassName"]]
    assert spec["preemptionPolicy"] == ("Never" if spec["priorityClassName"] == keys.PRIORITY_CLASS_STANDBY
                                        else "PreemptLowerPriority")


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_admitted_pod_is_a_valid_pod_with_unique_names(name: str) -> None:
    pod = admitted_pod(name)
    kubernetes_validate.validate(pod, SCHEMA_VERSION, strict=True)
    spec = pod["spec"]
    container_names = [c["name"] for c in spec["containers"] + spec.get("initContainers", [])]
    assert len(container_names) == len(set(container_names))
    volume_names = [v["name"] for v in spec["volumes"]]
    assert len(volume_names) == len(set(volume_names))
    for item in spec["containers"] + spec.get("initContainers", []):
        mounts = [m["mountPath"] for m in item.get("volumeMounts", [])]
        assert len(mounts) == len(set(mounts))
        assert all(m["name"] in volume_names for m in item.get("volumeMounts", []))


def test_the_job_controller_pod_gets_the_training_class_and_priority_1000_in_one_patch() -> None:
    review = captured("pod-create-by-job-controller.json")
    assert review["request"]["object"]["spec"]["priority"] == 0  # resolved by the Priority plugin already
    _, response = answer(review)
    ops = {op["path"]: op for op in patch_of(response)}
    assert ops["/spec/priorityClassName"] == {"op": "add", "path": "/spec/priorityClassName",
                                              "value": keys.PRIORITY_CLASS_TRAINING}
    assert ops["/spec/priority"] == {"op": "replace", "path": "/spec/priority", "value": 1000}
    assert ops["/spec/schedulerName"]["value"] == keys.SCHEDULER_NAME


def test_the_job_controller_pod_stages_deps_and_dataset_from_the_annotated_paths() -> None:
    pod = admitted_pod("pod-create-by-job-controller.json")
    deps = container(pod, "guardgrid-stage-deps", init=True)
    dataset = container(pod, "guardgrid-stage-dataset", init=True)
    assert deps["image"] == "registry.example.com/ml/deps-bert:1.2"
    assert env_of(deps) == {"GUARDGRID_STAGE_SOURCE": "/opt/site-packages"}
    assert dataset["image"] == "registry.example.com/datasets/glue-sst2:2024.1"
    assert env_of(dataset) == {"GUARDGRID_STAGE_SOURCE": "/data"}
    for init in (deps, dataset):
        assert init["imagePullPolicy"] == "IfNotPresent"
        assert init["command"] == ["sh", "-c", COPY_COMMAND]
        assert init["securityContext"]["allowPrivilegeEscalation"] is False
        assert init["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                     "limits": {"cpu": "1", "memory": "512Mi"}}
    assert "guardgrid-stage-checkpoint" not in {c["name"] for c in pod["spec"]["initContainers"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["guardgrid-deps"] == {"name": "guardgrid-deps", "emptyDir": {}}
    assert volumes["guardgrid-dataset"] == {"name": "guardgrid-dataset", "emptyDir": {}}
    assert "kube-api-access-g57rv" in volumes  # the token volume is still there


def test_the_job_controller_pod_gets_labels_mounts_and_env_and_keeps_its_own() -> None:
    original = captured("pod-create-by-job-controller.json")["request"]["object"]
    pod = admitted_pod("pod-create-by-job-controller.json")
    assert pod["metadata"]["labels"] == {**original["metadata"]["labels"], keys.JOB: "bert-finetune",
                                         keys.MANAGED: "true"}
    trainer = container(pod, "trainer")
    assert env_of(trainer) == {"NCCL_DEBUG": "WARN", "PYTHONPATH": "/guardgrid/deps",
                               keys.ENV_DATASET_DIR: "/guardgrid/dataset", keys.ENV_CHECKPOINT_INTERVAL: "1500"}
    assert trainer["env"][0] == {"name": "NCCL_DEBUG", "value": "WARN"}
    assert trainer["volumeMounts"] == original["spec"]["containers"][0]["volumeMounts"] + [
        {"name": "guardgrid-deps", "mountPath": "/guardgrid/deps", "readOnly": True},
        {"name": "guardgrid-dataset", "mountPath": "/guardgrid/dataset", "readOnly": True},
    ]


def test_the_training_pod_with_its_own_class_keeps_it_and_gets_a_warning() -> None:
    review = captured("pod-create-training-with-priority.json")
    result, response = answer(review)
    assert result.result == "mutated"
    paths = {op["path"] for op in patch_of(response)}
    assert "/spec/priorityClassName" not in paths and "/spec/priority" not in paths
    assert any("priorityClassName guardgrid-training" in warning for warning in response["warnings"])
    pod = jsonpatch.apply_patch(review["request"]["object"], patch_of(response))
    assert pod["spec"]["priorityClassName"] == keys.PRIORITY_CLASS_TRAINING and pod["spec"]["priority"] == 1000


def test_the_training_pod_stages_its_checkpoint_read_write_from_the_default_path() -> None:
    pod = admitted_pod("pod-create-training-with-priority.json")
    checkpoint = container(pod, "guardgrid-stage-checkpoint", init=True)
    assert checkpoint["image"] == "registry.example.com/ckpt/resnet50:epoch-41"
    assert env_of(checkpoint) == {"GUARDGRID_STAGE_SOURCE": "/checkpoint"}
    assert env_of(container(pod, "guardgrid-stage-dataset", init=True)) == {"GUARDGRID_STAGE_SOURCE": "/dataset"}
    trainer = container(pod, "trainer")
    mounts = {m["name"]: m for m in trainer["volumeMounts"]}
    assert mounts["guardgrid-checkpoint"] == {"name": "guardgrid-checkpoint", "mountPath": "/guardgrid/checkpoint",
                                              "readOnly": False}
    assert mounts["guardgrid-dataset"]["readOnly"] is True
    assert env_of(trainer) == {keys.ENV_DATASET_DIR: "/guardgrid/dataset",
                               keys.ENV_CHECKPOINT_DIR: "/guardgrid/checkpoint",
                               keys.ENV_CHECKPOINT_INTERVAL: "2700"}
    assert "PYTHONPATH" not in env_of(trainer)  # no deps image, no PYTHONPATH
    assert pod["metadata"]["labels"][keys.JOB] == "resnet50-train"  # its own label, unchanged


def test_the_dry_run_pod_with_init_containers_gets_staging_appended_after_them() -> None:
    review = captured("pod-create-dry-run-with-init-containers.json")
    assert review["request"]["dryRun"] is True
    _, response = answer(review)
    ops = patch_of(response)
    assert {"op": "add", "path": "/spec/initContainers/-"} in [{k: op[k] for k in ("op", "path")} for op in ops]
    pod = jsonpatch.apply_patch(review["request"]["object"], ops)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["fetch-config", "guardgrid-stage-deps"]
    assert pod["spec"]["initContainers"][0] == review["request"]["object"]["spec"]["initContainers"][0]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["config", "kube-api-access-6crtx", "guardgrid-deps"]
    notebook = container(pod, "notebook")
    assert env_of(notebook) == {"PYTHONPATH": "/guardgrid/deps"}  # env array created: it had none
    assert pod["metadata"]["labels"] == {keys.MANAGED: "true"}  # labels object created: it had none
    assert pod["metadata"]["annotations"] == review["request"]["object"]["metadata"]["annotations"]


def test_the_dry_run_pod_without_a_job_is_warned_that_it_gets_no_advice() -> None:
    seen: list[str] = []

    def recording(job: str) -> Advice:
        seen.append(job)
        return Advice(600.0)

    body = (ADMISSION / "pod-create-dry-run-with-init-containers.json").read_bytes()
    response = json.loads(answer_review(body, SETTINGS, recording).body)["response"]
    assert seen == []  # no job identity: the predictor is not asked
    assert any(keys.JOB in warning for warning in response["warnings"])


def test_the_opted_out_standby_pod_is_admitted_untouched() -> None:
    review = captured("pod-create-standby-opted-out.json")
    result, response = answer(review)
    assert result.result == "skipped"
    assert response == {"uid": review["request"]["uid"], "allowed": True}


def test_the_standby_pod_is_left_alone_even_without_its_opt_out_annotation() -> None:
    review = captured("pod-create-standby-opted-out.json")
    del review["request"]["object"]["metadata"]["annotations"]
    result, response = answer(review)
    assert result.result == "skipped" and "patch" not in response


def test_a_patch_is_the_same_for_the_same_review_every_time() -> None:
    review = captured("pod-create-by-job-controller.json")
    first = answer(copy.deepcopy(review))[1]["patch"]
    assert all(answer(copy.deepcopy(review))[1]["patch"] == first for _ in range(3))
