"""The webhook's HTTP surface through Flask's test client: status codes, bodies, limits, metrics."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from guardgrid import keys
from guardgrid import metrics as names
from guardgrid.config import ConfigError, load_settings
from webhook.app import create_app
from webhook.handler import INTERNAL_ERROR_WARNING
from webhook.mutation import Advice

ADMISSION = Path(__file__).parent / "fixtures" / "admission"
JOB_POD = ADMISSION / "pod-create-by-job-controller.json"


def advice(job: str) -> Advice:
    return Advice(1200.0)


@pytest.fixture
def client() -> FlaskClient:
    return create_app(load_settings({}, max_body_bytes=64 * 1024), advice=advice).test_client()


def review() -> dict[str, Any]:
    return json.loads(JOB_POD.read_bytes())


def post(client: FlaskClient, body: Any, path: str = "/mutate?timeout=5s") -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, data=data, content_type="application/json")


def reviews_total(client: FlaskClient) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    pattern = re.compile(rf'^{names.WEBHOOK_REVIEWS}{{result="(\w+)"}} ([0-9.e+]+)$', re.M)
    return {result: float(value) for result, value in pattern.findall(text)}


def test_the_api_servers_timeout_query_is_accepted_and_the_pod_is_mutated(client: FlaskClient) -> None:
    reply = post(client, JOB_POD.read_bytes())
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    response = reply.get_json()["response"]
    assert response["uid"] == "2775e424-2442-49b1-877f-3ea4a7748f90" and response["allowed"] is True
    ops = json.loads(base64.b64decode(response["patch"]))
    assert {"op": "add", "path": "/spec/priorityClassName", "value": keys.PRIORITY_CLASS_TRAINING} in ops


@pytest.mark.parametrize(("body", "reason"), [
    (b"this is not json", "body is not JSON"),
    (b"", "empty body"),
    (b"[1, 2]", "expected an AdmissionReview JSON object"),
    (b'{"apiVersion": "v1", "kind": "Pod"}', "expected apiVersion admission.k8s.io/v1 kind AdmissionReview"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request: expected an object"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {}}}',
     "request.uid"),
])
def test_a_body_that_is_not_an_admission_review_gets_400_with_the_reason(
        client: FlaskClient, body: bytes, reason: str) -> None:
    reply = post(client, body)
    assert reply.status_code == 400
    assert reply.mimetype == "text/plain" and reason in reply.get_data(as_text=True)


def test_a_pod_object_of_the_wrong_shape_gets_400_naming_the_field(client: FlaskClient) -> None:
    body = review()
    body["request"]["object"]["spec"]["containers"] = "not a list"
    reply = post(client, body)
    assert reply.status_code == 400 and "spec.containers" in reply.get_data(as_text=True)


@pytest.mark.parametrize("change", [
    {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}},
    {"operation": "UPDATE"},
    {"operation": "DELETE", "object": None},
    {"subResource": "ephemeralcontainers"},
    {"namespace": "kube-system"},
    {"namespace": "guardgrid-system"},
])
def test_other_kinds_operations_and_namespaces_are_allowed_untouched(client: FlaskClient,
                                                                     change: dict[str, Any]) -> None:
    body = review()
    body["request"].update(change)
    reply = post(client, body)
    assert reply.status_code == 200
    assert reply.get_json()["response"] == {"uid": body["request"]["uid"], "allowed": True}


def test_a_v1beta1_review_is_answered_in_v1beta1(client: FlaskClient) -> None:
    body = review()
    body["apiVersion"] = "admission.k8s.io/v1beta1"
    reply = post(client, body).get_json()
    assert reply["apiVersion"] == "admission.k8s.io/v1beta1" and reply["kind"] == "AdmissionReview"


def test_a_bad_annotation_is_denied_with_a_readable_message_naming_it_and_its_value(client: FlaskClient) -> None:
    body = review()
    body["request"]["object"]["metadata"]["annotations"][keys.DATASET_IMAGE_PATH] = "data/sst2"
    reply = post(client, body)
    assert reply.status_code == 200
    response = reply.get_json()["response"]
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 400 and response["status"]["status"] == "Failure"
    assert response["status"]["message"] == (
        f"annotation {keys.DATASET_IMAGE_PATH}='data/sst2': expected an absolute path inside the image, "
        "without '..'")


def test_an_oversize_body_gets_413(client: FlaskClient) -> None:
    body = review()
    body["request"]["object"]["metadata"]["annotations"]["example.com/blob"] = "x" * (64 * 1024)
    reply = post(client, body)
    assert reply.status_code == 413 and "GUARDGRID_MAX_BODY_BYTES" in reply.get_data(as_text=True)


def test_warnings_are_at_most_120_characters_and_bounded_in_number(client: FlaskClient) -> None:
    body = review()
    annotations = body["request"]["object"]["metadata"]["annotations"]
    for index in range(30):
        annotations[f"guardgrid.io/unknown-{index:02d}-" + "k" * 40] = "v"
    response = post(client, body).get_json()["response"]
    assert response["allowed"] is True
    assert 1 < len(response["warnings"]) <= 10
    assert all(len(warning) <= 120 and warning.isascii() and warning.isprintable()
               for warning in response["warnings"])
    assert response["warnings"][-1].endswith("more GuardGrid warnings not shown")


def test_metrics_count_every_result(client: FlaskClient) -> None:
    before = reviews_total(client)
    post(client, JOB_POD.read_bytes())  # mutated
    post(client, (ADMISSION / "pod-create-standby-opted-out.json").read_bytes())  # skipped
    bad = review()
    bad["request"]["object"]["metadata"]["annotations"][keys.CHECKPOINT_COST_SECONDS] = "soon"
    post(client, bad)  # denied
    post(client, b"{")  # error
    after = reviews_total(client)
    assert set(after) == {"mutated", "unchanged", "skipped", "denied", "error"}
    assert {key: after[key] - before.get(key, 0.0) for key in after} == \
        {"mutated": 1, "unchanged": 0, "skipped": 1, "denied": 1, "error": 1}
    text = client.get("/metrics").get_data(as_text=True)
    assert f"{names.WEBHOOK_LATENCY}_bucket" in text and f"{names.WEBHOOK_LATENCY}_count" in text


def test_an_internal_error_admits_the_pod_unmutated_with_a_warning() -> None:
    def broken(job: str) -> Advice:
        raise RuntimeError("boom")

    app = create_app(load_settings({}), advice=broken)
    response = post(app.test_client(), JOB_POD.read_bytes()).get_json()["response"]
    assert response == {"uid": "2775e424-2442-49b1-877f-3ea4a7748f90", "allowed": True,
                        "warnings": [INTERNAL_ERROR_WARNING]}


def test_health_and_wrong_methods_and_paths(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/mutate").status_code == 405
    assert client.post("/validate", data=b"{}").status_code == 404


def test_a_relative_stage_root_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="GUARDGRID_STAGE_ROOT"):
        create_app(load_settings({"GUARDGRID_STAGE_ROOT": "guardgrid"}), advice=advice)


@pytest.mark.parametrize(("size", "status"), [(64 * 1024 + 1, 413), (64 * 1024, 400)])
def test_a_chunked_body_without_length_is_limited_too_and_never_silently_truncated(
        client: FlaskClient, size: int, status: int) -> None:
    reply = client.post("/mutate", input_stream=io.BytesIO(b" " * (size - 2) + b"{}"),
                        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    assert reply.status_code == status


def test_a_chunked_review_within_the_limit_is_answered(client: FlaskClient) -> None:
    reply = client.post("/mutate", input_stream=io.BytesIO(JOB_POD.read_bytes()),
                        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    assert reply.status_code == 200 and reply.get_json()["response"]["allowed"] is True
