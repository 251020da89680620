"""The extender benchmark's own parts: the trace-drawn cluster, the request stream, the no-op baseline, helpers.

Why test a benchmark: its numbers are only worth reporting if the cluster it builds is a valid one (no node
over its memory, exact counts, real standby slots), if the requests exercise the paths it claims (own slot
among the candidates), and if its percentile and memory helpers say what they claim.
"""

from __future__ import annotations

import http.client
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (free_port, percentile, process_tree, start_json_server, tree_memory,  # noqa: E402
                          wait_http_ready)
from bench.extender import CANDIDATES, make_pairs, nodes_body  # noqa: E402
from bench.noop_extender import create_app as create_noop_app  # noqa: E402
from bench.trace_cluster import MIB, build_cluster, forecast_snapshot, write_cluster_file  # noqa: E402
from guardgrid import keys  # noqa: E402
from guardgrid.informer import ClusterCache  # noqa: E402
from guardgrid.kubeapi.memory import InMemoryKubeAPI  # noqa: E402
from guardgrid.records import node_from_dict, pod_from_dict  # noqa: E402
from guardgrid.snapshot import Snapshot  # noqa: E402

NOW = 1_795_000_000.0


@pytest.fixture(scope="module")
def small_cluster():
    return build_cluster(nodes=60, pods=3000, seed=7, now=NOW)


def _records(cluster):
    nodes = [node_from_dict(o) for o in cluster.items if o["kind"] == "Node"]
    pods = [pod_from_dict(o) for o in cluster.items if o["kind"] == "Pod"]
    return nodes, pods


def test_the_cluster_has_exactly_the_requested_numbers_of_nodes_and_pods(small_cluster):
    nodes, pods = _records(small_cluster)
    assert len(nodes) == 60
    assert len(pods) == 3000
    assert len({p.key for p in pods}) == 3000
    assert len({n.name for n in nodes}) == 60


def test_no_node_holds_more_memory_than_it_has(small_cluster):
    nodes, pods = _records(small_cluster)
    held: dict[str, int] = defaultdict(int)
    for pod in pods:
        if pod.holds_memory:
            held[pod.node_name] += pod.memory_request
    assert held, "some pods must be bound"
    for node in nodes:
        assert held[node.name] <= node.allocatable_memory, node.name


def test_node_capacities_and_pod_requests_come_from_the_trace(small_cluster):
    data = ROOT / "data" / "alibaba-openb-2023"
    trace_nodes = {line.split(",")[2] for line in (data / "nodes.csv").read_text().splitlines()[1:]}
    trace_pods = {line.split(",")[2] for line in (data / "pods.csv").read_text().splitlines()[1:]}
    nodes, pods = _records(small_cluster)
    assert {str(n.allocatable_memory // MIB) for n in nodes} <= trace_nodes
    assert {str(p.memory_request // MIB) for p in pods} <= trace_pods


def test_standby_slots_serve_a_job_and_never_sit_on_that_jobs_own_nodes(small_cluster):
    _, pods = _records(small_cluster)
    slots = [p for p in pods if p.is_standby]
    assert slots
    job_nodes: dict[str, set[str]] = defaultdict(set)
    for pod in pods:
        if pod.job and pod.holds_memory:
            job_nodes[pod.job].add(pod.node_name)
    for slot in slots:
        assert slot.priority_class == keys.PRIORITY_CLASS_STANDBY and slot.priority == keys.PRIORITY_STANDBY
        assert slot.node_name not in job_nodes[slot.standby_for]
        assert slot.standby_for in job_nodes


def test_the_same_seed_draws_the_same_cluster_and_another_seed_a_different_one():
    first = build_cluster(nodes=20, pods=500, seed=3, now=NOW)
    again = build_cluster(nodes=20, pods=500, seed=3, now=NOW)
    other = build_cluster(nodes=20, pods=500, seed=4, now=NOW)
    assert orjson.dumps(first.items) == orjson.dumps(again.items)
    assert orjson.dumps(first.items) != orjson.dumps(other.items)


def test_the_cluster_file_syncs_into_the_extenders_cache(small_cluster, tmp_path):
    path = tmp_path / "cluster.json"
    write_cluster_file(small_cluster, path)
    cache = ClusterCache(InMemoryKubeAPI.from_file(path))
    cache.sync_now()
    assert len(cache.state.table) == 60
    assert len(cache.state.pods) == 3000
    protected = [job for job in small_cluster.jobs if job.standby_node]
    assert protected
    for job in protected:
        assert cache.state.own_standby(job.name) == {job.standby_node: float(job.memory_bytes)}


def test_the_snapshot_covers_every_node_and_follows_the_schema(small_cluster):
    snapshot = Snapshot.from_json(forecast_snapshot(small_cluster, now=NOW).to_json())
    assert set(snapshot.nodes) == set(small_cluster.node_names)
    assert all(n.forecast_std_bytes > 0 and n.allocatable_bytes > 0 for n in snapshot.nodes.values())
    assert {s.node for s in snapshot.standby} == {j.standby_node for j in small_cluster.jobs if j.standby_node}


def test_own_slot_requests_always_offer_the_slots_node_among_distinct_candidates():
    cluster = build_cluster(nodes=CANDIDATES + 100, pods=3000, seed=11, now=NOW)
    pairs = make_pairs(60, cluster.node_names, cluster.jobs, cluster.pod_memory_mib, random.Random(1))
    own = [p for p in pairs if p.kind == "own-slot"]
    assert own
    for pair in pairs:
        assert len(set(pair.node_indexes)) == CANDIDATES
    for pair in own:
        assert pair.own_node in {cluster.node_names[i] for i in pair.node_indexes}
        pod = pod_from_dict(orjson.loads(pair.pod))
        assert pod.job and any(j.name == pod.job and j.standby_node == pair.own_node for j in cluster.jobs)


def test_a_full_nodelist_body_is_what_the_wire_parser_reads_back():
    from extender.wire import parse_extender_args

    nodes = [orjson.dumps({"metadata": {"name": f"n{i}"}, "status": {"allocatable": {"memory": "1Gi"}}})
             for i in range(3)]
    pod = orjson.dumps(orjson.loads((ROOT / "tests/fixtures/kube-scheduler/node-cache/filter-args.json")
                                    .read_bytes())["Pod"])
    args = parse_extender_args(nodes_body(pod, nodes))
    assert args.full_mode and args.node_names == ["n0", "n1", "n2"]


def test_the_noop_extender_answers_the_replies_the_scheduler_accepted():
    client = create_noop_app().test_client()
    accepted = ROOT / "tests/fixtures/kube-scheduler/node-cache"
    answer = client.post("/filter", data=b'{"Pod":{}}', content_type="application/json")
    assert answer.status_code == 200
    assert answer.data == (accepted / "filter-result-accepted.json").read_bytes()
    answer = client.post("/prioritize", data=b"not even json", content_type="application/json")
    assert answer.status_code == 200
    assert answer.data == (accepted / "prioritize-result-accepted.json").read_bytes()


def test_percentile_is_nearest_rank_and_refuses_nonsense():
    samples = list(range(1, 101))
    assert percentile(samples, 50) == 50
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_tree_memory_counts_this_process_and_its_children():
    tree = process_tree(os.getpid())
    assert tree[0] == os.getpid()
    memory = tree_memory(os.getpid())
    assert memory.rss_bytes >= memory.per_process_rss[os.getpid()] > 0
    assert memory.pss_bytes > 0


def test_the_json_server_restamps_generated_at_at_most_once_per_period(tmp_path):
    path = tmp_path / "snapshot.json"
    path.write_bytes(orjson.dumps({"generated_at": 1.0, "kind": "Snapshot"}))
    port = free_port()
    server = start_json_server(path, port, "generated_at", restamp_every=3600)
    try:
        wait_http_ready(port, "/v1/snapshot", 20, process=server.process, interval=0.05)
        bodies = []
        for _ in range(2):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", "/v1/snapshot")
                bodies.append(connection.getresponse().read())
            finally:
                connection.close()
        assert bodies[0] == bodies[1]  # one predictor cycle: the same snapshot, which refreshers skip
        assert orjson.loads(bodies[0])["generated_at"] > 1.0  # but stamped when first served
    finally:
        server.stop()


def test_the_json_server_restamps_generated_at_on_every_get(tmp_path):
    path = tmp_path / "snapshot.json"
    path.write_bytes(orjson.dumps({"generated_at": 1.0, "kind": "Snapshot"}))
    port = free_port()
    server = start_json_server(path, port, "generated_at")
    try:
        wait_http_ready(port, "/v1/snapshot", 20, process=server.process, interval=0.05)
        before = time.time()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/v1/snapshot")
            body = orjson.loads(connection.getresponse().read())
        finally:
            connection.close()
        assert body["kind"] == "Snapshot"
        assert body["generated_at"] >= before
    finally:
        server.stop()
    assert server.process.poll() is not None
