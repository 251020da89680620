"""Every body a real kube-scheduler v1.36 sent is accepted unchanged and answered in its mode's shape.

The cluster each run had at capture time is served by the in-memory KubeAPI (node-cache run:
cluster.json; full-nodes run: full-nodes/cluster.json), so the decisions can be asserted, not only codes.
"""

from pathlib import Path

import orjson
import pytest

from conftest import FULL_NODES_CLUSTER, NODE_CACHE_CLUSTER, SCHEDULER, load_json
from extender.app import create_app
from guardgrid.config import load_settings
from guardgrid.kubeapi.memory import InMemoryKubeAPI

NODES = ["worker-1", "worker-3", "worker-5", "worker-2", "worker-4", "worker-6"]  # the order the scheduler sent


@pytest.fixture(params=[("node-cache", NODE_CACHE_CLUSTER), ("full-nodes", FULL_NODES_CLUSTER)],
                ids=["node-cache", "full-nodes"])
def run(request):
    mode, cluster = request.param
    app = create_app(load_settings({}), api=InMemoryKubeAPI.from_file(cluster))
    cache = app.extensions["guardgrid"]["cache"]
    assert cache.wait_synced(5)
    yield mode, SCHEDULER / mode, app.test_client()
    cache.stop()


def _post(client, verb, path: Path):
    response = client.post(f"/{verb}", data=path.read_bytes(), content_type="application/json")
    assert response.status_code == 200, response.data
    return orjson.loads(response.data)


def test_every_captured_request_body_is_accepted_unchanged(run):
    mode, folder, client = run
    for path in sorted(folder.glob("*-args*.json")):
        verb = path.name.split("-")[0]
        _post(client, verb, path)


def test_filter_answers_in_the_mode_the_scheduler_reads(run):
    mode, folder, client = run
    result = _post(client, "filter", folder / "filter-args.json")
    accepted = load_json(folder / "filter-result-accepted.json")
    assert set(result) == set(accepted) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes",
                                            "Error"}
    assert result["Error"] == "" and result["FailedNodes"] == {}
    if mode == "node-cache":
        assert result["Nodes"] is None
        assert result["NodeNames"] == NODES  # the 8Gi pod fits everywhere, order kept
    else:
        assert result["NodeNames"] is None  # names alone would filter every node out in this mode
        sent = load_json(folder / "filter-args.json")["Nodes"]["items"]
        assert result["Nodes"]["items"] == sent  # returned unchanged: they replace the scheduler's copies
        assert result["Nodes"] == accepted["Nodes"]


def test_prioritize_gives_every_candidate_an_integer_score_and_prefers_headroom(run):
    mode, folder, client = run
    result = _post(client, "prioritize", folder / "prioritize-args.json")
    assert [entry["Host"] for entry in result] == NODES
    assert all(set(e) == {"Host", "Score"} and isinstance(e["Score"], int) and 0 <= e["Score"] <= 10
               for e in result)
    score = {e["Host"]: e["Score"] for e in result}
    # worker-5/6 keep 16Gi of 64Gi free after an 8Gi pod; worker-1/2 keep 20Gi of 128Gi.
    assert score["worker-5"] > score["worker-1"] and score["worker-6"] > score["worker-2"]


def test_preempt_returns_exactly_the_reply_the_scheduler_accepted(run):
    mode, folder, client = run
    result = _post(client, "preempt", folder / "preempt-args.json")
    assert result == load_json(folder / "preempt-result-accepted.json")


def test_the_nominated_node_with_the_jobs_own_slot_passes_the_second_filter(run):
    mode, folder, client = run
    result = _post(client, "filter", folder / "filter-args-nominated-node.json")
    if mode == "node-cache":
        assert result["NodeNames"] == ["worker-3"]
    else:
        assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["worker-3"]
    assert result["FailedNodes"] == {}


def test_the_training_pod_is_kept_off_nodes_without_its_slot_with_the_figures_in_the_message():
    app = create_app(load_settings({}), api=InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER))
    cache = app.extensions["guardgrid"]["cache"]
    assert cache.wait_synced(5)
    try:
        body = load_json(SCHEDULER / "node-cache" / "filter-args-nominated-node.json")
        body["NodeNames"] = NODES
        result = orjson.loads(app.test_client().post("/filter", data=orjson.dumps(body)).data)
        assert result["NodeNames"] == ["worker-3"]
        assert result["FailedNodes"]["worker-1"] == \
            "GuardGrid: predicted OOM risk 1.00 > 0.10 (requested 100Gi + pod 96Gi of 128Gi)"
    finally:
        cache.stop()
