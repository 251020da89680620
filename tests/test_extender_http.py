"""Bad input gets a clear 4xx with a reason; the worker keeps serving; metrics count it all."""

import orjson
import pytest

from conftest import NODE_CACHE_CLUSTER, SCHEDULER, load_json
from extender.app import create_app
from guardgrid.config import load_settings
from guardgrid.kubeapi.memory import InMemoryKubeAPI

GOOD = (SCHEDULER / "node-cache" / "filter-args.json").read_bytes()


@pytest.fixture
def client():
    app = create_app(load_settings({}, max_body_bytes=64 * 1024), api=InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER))
    cache = app.extensions["guardgrid"]["cache"]
    assert cache.wait_synced(5)
    yield app.test_client()
    cache.stop()


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty request body"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"NodeNames": ["a"]}', "missing 'Pod'"),
    (b'{"Pod": "x", "NodeNames": ["a"]}', "'Pod' must be an object"),
    (b'{"Pod": {"metadata": {"name": "p"}, "spec": {}}, "NodeNames": "a"}', "'NodeNames' must be a list"),
    (b'{"Pod": {"metadata": {"name": "p"}, "spec": {}}, "Nodes": {"items": [{}]}}', "has no metadata.name"),
    (b'{"Pod": {"metadata": {"name": "p"}, "spec": {}}, "Nodes": null, "NodeNames": null}', "nothing to filter"),
    (b'{"Pod": {"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"requests": {"memory": "x"}}}]}},'
     b' "NodeNames": []}', "invalid quantity 'x'"),
    # In kube-scheduler's own layout (the compiled reader's path), with a field of a type it was never sent.
    (b'{"Pod":{"metadata":{"name":"p"},"status":{"conditions":5}},"Nodes":null,"NodeNames":["worker-1"]}',
     "status.conditions: expected a list, got int"),
    (b'{"Pod":{"metadata":{"name":"p"},"spec":{"containers":{"a":1}}},"Nodes":null,"NodeNames":["worker-1"]}',
     "containers: expected a list, got dict"),
])
def test_unreadable_filter_bodies_get_400_with_the_reason_and_the_worker_keeps_serving(client, body, reason):
    response = client.post("/filter", data=body, content_type="application/json")
    assert response.status_code == 400
    assert reason in response.get_json()["Error"]
    assert client.post("/filter", data=GOOD).status_code == 200


def test_malformed_preemption_victims_are_a_400_not_a_500(client):
    body = load_json(SCHEDULER / "node-cache" / "preempt-args.json")
    body["NodeNameToMetaVictims"] = {"worker-3": {"Pods": [{"UID": "x"}], "NumPDBViolations": "many"}}
    response = client.post("/preempt", data=orjson.dumps(body))
    assert response.status_code == 400 and "NumPDBViolations" in response.get_json()["Error"]


def test_an_unknown_verb_is_a_404_and_a_wrong_method_a_405_both_in_json(client):
    response = client.post("/bind", data=GOOD)
    assert response.status_code == 404 and "/bind" in response.get_json()["Error"]
    assert client.get("/filter").status_code == 405
    assert client.get("/filter").get_json()["Error"]


def test_a_body_over_the_limit_is_a_413_naming_the_setting(client):
    response = client.post("/filter", data=b"{" + b" " * (65 * 1024) + b"}")
    assert response.status_code == 413
    assert "GUARDGRID_MAX_BODY_BYTES" in response.get_json()["Error"]


def test_health_ready_and_metrics_report_requests_rejections_and_snapshot_age(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    body = load_json(SCHEDULER / "node-cache" / "filter-args.json")
    body["NodeNames"] = ["worker-1", "no-such-node"]
    client.post("/filter", data=orjson.dumps(body))
    client.post("/filter", data=b"junk")
    text = client.get("/metrics").data.decode()
    assert 'guardgrid_extender_requests_total{code="200",verb="filter"}' in text
    assert 'guardgrid_extender_requests_total{code="400",verb="filter"}' in text
    assert 'guardgrid_extender_nodes_rejected_total{reason="unknown_node"}' in text
    assert "guardgrid_extender_snapshot_age_seconds +Inf" in text
    assert 'guardgrid_extender_request_duration_seconds_bucket{le="0.001",verb="filter"}' in text


def test_before_the_cache_syncs_the_extender_answers_503_so_an_ignorable_scheduler_skips_it():
    api = InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER)
    app = create_app(load_settings({}), api=api, start=False)
    client = app.test_client()
    assert client.get("/readyz").status_code == 503
    response = client.post("/filter", data=GOOD)
    assert response.status_code == 503 and "not synced" in response.get_json()["Error"]


def _service(client):
    return client.application.extensions["guardgrid"]["service"]


def test_the_filter_answers_first_and_prepares_the_prioritize_answer_once_it_is_sent(client):
    service = _service(client)
    prepared = []
    original = service.recent.remember
    service.recent.remember = lambda *args: prepared.append(args[-2:]) or original(*args)
    response = client.open("/filter", method="POST", data=GOOD, buffered=False)  # not yet closed
    passed = orjson.loads(response.get_data())["NodeNames"]
    assert len(passed) >= 2 and prepared == []  # the answer is out, the preparation still waits
    response.close()  # what gunicorn does right after sending it
    [(request, answer)] = prepared
    assert orjson.loads(request)["NodeNames"] == passed
    assert client.post("/prioritize", data=request).data == answer


def test_a_failure_after_the_answer_is_sent_is_logged_and_the_worker_keeps_serving(client, caplog):
    service = _service(client)
    service.recent.remember = lambda *args: 1 / 0
    response = client.post("/filter", data=GOOD)
    assert response.status_code == 200 and orjson.loads(response.data)["NodeNames"]
    assert "work after the response failed" in caplog.text and "ZeroDivisionError" in caplog.text
    assert client.post("/filter", data=GOOD).status_code == 200


def test_an_empty_prioritize_body_is_a_400_even_after_a_filter_that_prepared_nothing(client):
    """A filter that passes one node prepares no prioritize answer (the scheduler skips prioritize then); its
    empty stored request must not be taken for an empty body's answer."""
    one_node = orjson.loads(GOOD)
    one_node["NodeNames"] = one_node["NodeNames"][:1]
    assert len(orjson.loads(client.post("/filter", data=orjson.dumps(one_node)).data)["NodeNames"]) == 1
    response = client.post("/prioritize", data=b"")
    assert response.status_code == 400
    assert "empty request body" in response.get_json()["Error"]
