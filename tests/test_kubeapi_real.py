"""RealKubeAPI over HTTP against responses a real kube-apiserver (v1.36.2) produced.

The official `kubernetes` client talks to `apiserver_stub`, which serves the captured bytes unchanged, so the
adapter's real code path runs: paging, the chunked watch stream, error mapping and request bodies.
"""

from __future__ import annotations

import socket
import threading
from datetime import datetime, timezone

import orjson
import pytest
from apiserver_stub import CAPTURES, Reply, expired_watch_event, status_body, watch_lines

from kubernetes import client as k8s

from guardgrid.kubeapi.base import EvictionOutcome, KubeAPIError, ResourceExpired
from guardgrid.kubeapi.real import RealKubeAPI
from guardgrid.quantity import memory_bytes
from guardgrid.records import PodRecord

GiB = 2**30
NOW = datetime(2026, 11, 23, 12, 30, tzinfo=timezone.utc).timestamp()
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/guardgrid-system/leases/guardgrid-predictor"


def _captured(name: str) -> dict:
    return orjson.loads((CAPTURES / name).read_bytes())


@pytest.fixture
def kube(api_client: k8s.ApiClient) -> RealKubeAPI:
    """Pages of 3, as the pod list was captured; a fixed clock for leases and events."""
    return RealKubeAPI(api_client, page_size=3, reporting_instance="guardgrid-predictor-0", clock=lambda: NOW)


# --- list ------------------------------------------------------------------------------------------------

def test_listing_nodes_decodes_all_six_worker_nodes_with_their_allocatable_memory(api_client):
    result = RealKubeAPI(api_client).list("nodes")

    captured = {n["metadata"]["name"]: n for n in _captured("list-nodes.json")["items"]}
    assert [n.name for n in result.items] == [f"worker-{i}" for i in range(1, 7)]
    for node in result.items:
        assert node.allocatable_memory == memory_bytes(captured[node.name]["status"]["allocatable"]["memory"])
        assert node.uid == captured[node.name]["metadata"]["uid"]
    by_name = {n.name: n for n in result.items}
    assert by_name["worker-4"].allocatable_memory == 256 * GiB  # the README's table
    assert by_name["worker-5"].allocatable_gpus == 0 and by_name["worker-1"].allocatable_gpus == 4
    assert by_name["worker-3"].zone == "zone-b"
    assert result.resource_version == "428"


def test_listing_pods_follows_continue_tokens_across_pages_and_returns_every_pod_once_with_the_last_pages_rv(
        kube, apiserver):
    result = kube.list("pods")

    keys = [p.key for p in result.items]
    assert len(keys) == len(set(keys)) == 7
    assert set(keys) == {"default/etl-worker-1", "default/etl-worker-2", "default/feature-store-0",
                         "default/inference-a", "default/inference-b", "ml-team/bert-finetune-mnt6x",
                         "ml-team/standby-resnet50-train-0"}
    assert result.resource_version == "428"
    standby = next(p for p in result.items if p.name == "standby-resnet50-train-0")
    assert standby.is_standby and standby.memory_request == 96 * GiB and standby.node_name == "worker-3"
    assert len(apiserver.requests_to("GET", "/api/v1/pods")) == 3


def test_the_limit_and_continue_query_parameters_are_sent_as_the_api_server_expects(kube, apiserver):
    kube.list("pods")

    first = _captured("list-pods-page1.json")["metadata"]["continue"]
    second = _captured("list-pods-page2.json")["metadata"]["continue"]
    assert [r.query for r in apiserver.requests_to("GET", "/api/v1/pods")] == [
        {"limit": "3"}, {"limit": "3", "continue": first}, {"limit": "3", "continue": second}]
    assert all(r.headers["accept"] == "application/json" for r in apiserver.requests)


def test_an_expired_continue_token_restarts_the_list_from_the_first_page(kube, apiserver):
    first = _captured("list-pods-page1.json")["metadata"]["continue"]
    apiserver.respond("GET", "/api/v1/pods", Reply(status=410, body=status_body(
        410, "Expired", "The provided continue parameter is too old to display a consistent list result."), times=1),
        {"limit": "3", "continue": first})

    result = kube.list("pods")

    assert len({p.key for p in result.items}) == 7
    queries = [r.query for r in apiserver.requests_to("GET", "/api/v1/pods")]
    assert [q.get("continue") is None for q in queries] == [True, False, True, False, False]


def test_a_server_error_is_a_kube_api_error_with_its_status(kube, apiserver):
    apiserver.respond("GET", "/api/v1/pods", Reply(status=500, body=status_body(500, "InternalError", "etcd is down")))

    with pytest.raises(KubeAPIError) as error:
        kube.list("pods")

    assert error.value.status == 500 and error.value.reason == "InternalError"
    assert "etcd is down" in str(error.value)
    assert not isinstance(error.value, ResourceExpired)


def test_a_forbidden_list_names_the_missing_permission(kube, apiserver):
    message = 'nodes is forbidden: User "system:serviceaccount:guardgrid-system:guardgrid-scheduler" cannot list ' \
              'resource "nodes" in API group "" at the cluster scope'
    apiserver.respond("GET", "/api/v1/nodes", Reply(status=403, body=status_body(403, "Forbidden", message)))

    with pytest.raises(KubeAPIError) as error:
        kube.list("nodes")

    assert error.value.status == 403 and message in str(error.value)


def test_an_answer_that_is_not_json_is_a_kube_api_error_not_a_crash(kube, apiserver):
    apiserver.respond("GET", "/api/v1/nodes", Reply(body=b"<html>proxy says hello</html>"))

    with pytest.raises(KubeAPIError) as error:
        kube.list("nodes")

    assert error.value.reason == "InvalidBody"


def test_an_unreachable_api_server_is_a_kube_api_error_with_status_zero():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    client = k8s.ApiClient(configuration)
    try:
        with pytest.raises(KubeAPIError) as error:
            RealKubeAPI(client).list("nodes")
    finally:
        client.close()
    assert error.value.status == 0


def test_from_environment_outside_a_cluster_uses_the_kubeconfig_context_and_its_token(apiserver, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: stub\n"
        f"clusters:\n- name: stub\n  cluster:\n    server: {apiserver.url}\n"
        "users:\n- name: guardgrid\n  user:\n    token: test-token\n"
        "contexts:\n- name: stub\n  context:\n    cluster: stub\n    user: guardgrid\n")
    kube = RealKubeAPI.from_environment(kubeconfig=str(kubeconfig))
    try:
        assert len(kube.list("nodes").items) == 6
    finally:
        kube.close()

    (request,) = apiserver.requests_to("GET", "/api/v1/nodes")
    assert request.headers["authorization"] == "Bearer test-token"
    assert request.headers["user-agent"].startswith("guardgrid/")


def test_from_environment_without_any_configuration_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    with pytest.raises(KubeAPIError) as error:
        RealKubeAPI.from_environment(kubeconfig=str(tmp_path / "missing"))

    assert error.value.reason == "NoConfiguration" and "kubeconfig" in str(error.value)


# --- watch ---------------------------------------------------------------------------------------------

def test_a_watch_yields_added_modified_modified_with_deletion_deleted_then_the_bookmarks_resource_version_433(
        kube, apiserver):
    events = list(kube.watch("pods", "428", 12))

    assert [e.type for e in events] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED", "BOOKMARK"]
    assert [e.resource_version for e in events] == ["430", "431", "432", "433", "433"]
    assert all(e.record.key == "default/watch-demo" for e in events[:4])
    assert [e.record.terminating for e in events[:4]] == [False, False, True, True]
    assert events[4].record is None
    (request,) = apiserver.requests_to("GET", "/api/v1/pods")
    assert request.query == {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": "428",
                             "timeoutSeconds": "12"}


def test_a_watch_line_split_across_chunks_is_still_decoded(kube, apiserver):
    stream = b"".join(watch_lines())
    chunks = [stream[i:i + 97] for i in range(0, len(stream), 97)]  # lines cut anywhere, several per chunk
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=chunks), {"watch": "true", "resourceVersion": "428",
                                                                     "allowWatchBookmarks": "true"})

    events = list(kube.watch("pods", "428", 12))

    assert [(e.type, e.resource_version) for e in events] == [
        ("ADDED", "430"), ("MODIFIED", "431"), ("MODIFIED", "432"), ("DELETED", "433"), ("BOOKMARK", "433")]


def test_an_expired_error_event_in_the_stream_raises_resource_expired(kube, apiserver):
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=[watch_lines()[0], expired_watch_event("428", "500")]),
                      {"watch": "true", "resourceVersion": "428", "allowWatchBookmarks": "true"})

    stream = kube.watch("pods", "428", 12)
    first = next(stream)
    with pytest.raises(ResourceExpired) as error:
        next(stream)

    assert first.type == "ADDED" and first.record.name == "watch-demo"
    assert error.value.status == 410 and "too old resource version" in str(error.value)


def test_an_http_410_on_the_watch_request_raises_resource_expired(kube, apiserver):
    gone = status_body(410, "Gone", "too old resource version")
    apiserver.respond("GET", "/api/v1/pods", Reply(status=410, body=gone),
                      {"watch": "true", "resourceVersion": "12", "allowWatchBookmarks": "true"})

    with pytest.raises(ResourceExpired):
        list(kube.watch("pods", "12", 12))


def test_another_error_event_in_the_stream_is_a_kube_api_error_with_its_code(kube, apiserver):
    error_event = orjson.dumps({"type": "ERROR", "object": orjson.loads(
        status_body(500, "InternalError", "an error on the server has prevented the request from succeeding"))})
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=[error_event + b"\n"]),
                      {"watch": "true", "resourceVersion": "428", "allowWatchBookmarks": "true"})

    with pytest.raises(KubeAPIError) as error:
        list(kube.watch("pods", "428", 12))

    assert error.value.status == 500 and error.value.reason == "InternalError"
    assert not isinstance(error.value, ResourceExpired)


def test_an_undecodable_watch_line_is_a_kube_api_error_not_a_crash(kube, apiserver):
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=[watch_lines()[0], b"{not json\n"]),
                      {"watch": "true", "resourceVersion": "428", "allowWatchBookmarks": "true"})

    stream = kube.watch("pods", "428", 12)
    assert next(stream).type == "ADDED"
    with pytest.raises(KubeAPIError) as error:
        next(stream)
    assert error.value.reason == "InvalidWatchEvent"


def test_a_connection_broken_mid_watch_is_a_kube_api_error_with_status_zero(kube, apiserver):
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=watch_lines()[:2], break_stream=True),
                      {"watch": "true", "resourceVersion": "428", "allowWatchBookmarks": "true"})

    stream = kube.watch("pods", "428", 12)
    received = [next(stream).type, next(stream).type]
    with pytest.raises(KubeAPIError) as error:
        next(stream)

    assert received == ["ADDED", "MODIFIED"] and error.value.status == 0


def test_closing_a_watch_early_releases_the_connection(kube, apiserver):
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=watch_lines()[:1], hold_open=True),
                      {"watch": "true", "resourceVersion": "428", "allowWatchBookmarks": "true"})

    stream = kube.watch("pods", "428", 60)
    assert next(stream).type == "ADDED"
    stream.close()

    assert apiserver.wait_until(lambda stub: stub.streams_left_by_client == 1)


def test_interrupting_watches_ends_a_quiet_watch_without_an_error(kube, apiserver):
    outcome: dict[str, object] = {}
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=watch_lines()[:1], hold_open=True),
                      {"watch": "true", "resourceVersion": "428", "allowWatchBookmarks": "true"})
    first_event = threading.Event()

    def consume() -> None:
        try:
            for event in kube.watch("pods", "428", 60):
                outcome.setdefault("types", []).append(event.type)
                first_event.set()
            outcome["ended"] = True
        except Exception as exc:  # noqa: BLE001 - the test asserts there is none
            outcome["error"] = exc

    thread = threading.Thread(target=consume)
    thread.start()
    ended_by_interrupt = False
    try:
        assert first_event.wait(5)
        kube.interrupt_watches()
        thread.join(5)
        ended_by_interrupt = not thread.is_alive()
        connection_released = apiserver.wait_until(lambda stub: stub.streams_left_by_client == 1)
    finally:
        apiserver.end_streams()  # in case the interrupt failed: never leave the thread behind
        thread.join(5)
    assert ended_by_interrupt
    assert outcome == {"types": ["ADDED"], "ended": True}
    assert connection_released


# --- pods ----------------------------------------------------------------------------------------------

def _standby_manifest() -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "standby-resnet50-train-0", "namespace": "ml-team",
                         "labels": {"guardgrid.io/standby-for": "resnet50-train"}},
            "spec": {"priorityClassName": "guardgrid-standby", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "standby", "image": "registry.example.com/ml/pytorch-train:2.4-cuda12",
                                     "command": ["sleep", "infinity"],
                                     "resources": {"requests": {"cpu": "1", "memory": "96Gi"}}}],
                     "someFieldNewerThanTheClient": {"kept": True}}}


def test_creating_a_pod_posts_the_manifest_unchanged_and_returns_its_record(kube, apiserver):
    cluster = orjson.loads((CAPTURES.parent / "kube-scheduler" / "cluster.json").read_bytes())
    created = next(i for i in cluster["items"] if i["metadata"]["name"] == "standby-resnet50-train-0")
    apiserver.respond("POST", "/api/v1/namespaces/ml-team/pods", Reply(status=201, body=orjson.dumps(created)))

    record = kube.create_pod(_standby_manifest())

    (request,) = apiserver.requests_to("POST", "/api/v1/namespaces/ml-team/pods")
    assert request.json() == _standby_manifest()  # not squeezed through V1Pod: unknown fields survive
    assert isinstance(record, PodRecord) and record.uid == created["metadata"]["uid"] and record.is_standby


def test_creating_an_existing_pod_raises_a_409_kube_api_error(kube, apiserver):
    apiserver.respond("POST", "/api/v1/namespaces/ml-team/pods", Reply(status=409, body=status_body(
        409, "AlreadyExists", 'pods "standby-resnet50-train-0" already exists',
        name="standby-resnet50-train-0", kind="pods")))

    with pytest.raises(KubeAPIError) as error:
        kube.create_pod(_standby_manifest())

    assert error.value.status == 409 and error.value.reason == "AlreadyExists"
    assert "already exists" in str(error.value)


def test_deleting_a_pod_sends_its_grace_period_and_reports_it_deleted(kube, apiserver):
    path = "/api/v1/namespaces/ml-team/pods/standby-resnet50-train-0"
    apiserver.respond("DELETE", path, Reply(status=200, body=orjson.dumps(
        {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "standby-resnet50-train-0"}})))

    assert kube.delete_pod("ml-team", "standby-resnet50-train-0", grace_period_seconds=0) is True
    assert [r.query for r in apiserver.requests_to("DELETE", path)] == [{"gracePeriodSeconds": "0"}]


def test_deleting_a_pod_that_is_already_gone_returns_false(kube, apiserver):
    path = "/api/v1/namespaces/ml-team/pods/standby-resnet50-train-0"
    apiserver.respond("DELETE", path, Reply(status=404, body=status_body(
        404, "NotFound", 'pods "standby-resnet50-train-0" not found')))

    assert kube.delete_pod("ml-team", "standby-resnet50-train-0") is False


# --- eviction ------------------------------------------------------------------------------------------

def test_an_eviction_answered_201_is_evicted_and_the_body_is_a_policy_v1_eviction_naming_the_pod(
        kube, apiserver):
    result = kube.evict_pod("default", "inference-a")

    assert result.outcome is EvictionOutcome.EVICTED
    (request,) = apiserver.requests_to("POST", "/api/v1/namespaces/default/pods/inference-a/eviction")
    assert request.json() == {"apiVersion": "policy/v1", "kind": "Eviction",
                              "metadata": {"name": "inference-a", "namespace": "default"}}
    assert request.headers["content-type"] == "application/json"


def test_an_eviction_a_disruption_budget_refuses_is_blocked_and_keeps_the_budgets_message(kube):
    result = kube.evict_pod("default", "etl-worker-1")

    assert result.outcome is EvictionOutcome.BLOCKED
    captured = _captured("eviction-429-pdb.json")
    assert captured["message"] in result.message
    assert captured["details"]["causes"][0]["message"] in result.message  # names etl-pdb


def test_an_eviction_of_a_missing_pod_is_not_found(kube):
    result = kube.evict_pod("default", "does-not-exist")

    assert result.outcome is EvictionOutcome.NOT_FOUND
    assert result.message == _captured("eviction-404.json")["message"]


def test_an_eviction_the_server_fails_is_a_kube_api_error(kube, apiserver):
    apiserver.respond("POST", "/api/v1/namespaces/default/pods/inference-b/eviction",
                      Reply(status=500, body=status_body(500, "InternalError", "boom")))

    with pytest.raises(KubeAPIError) as error:
        kube.evict_pod("default", "inference-b")

    assert error.value.status == 500


# --- events --------------------------------------------------------------------------------------------

def test_an_event_names_the_pod_in_its_namespace_with_guardgrid_as_the_reporter(kube, apiserver):
    apiserver.respond("POST", "/api/v1/namespaces/ml-team/events", Reply(status=201, body=b"{}"))
    pod = PodRecord(uid="469f5c63-ce80-465e-bfab-a466f8eda9ae", namespace="ml-team", name="bert-finetune-mnt6x",
                    resource_version="369")

    kube.create_event(pod, "StandbyPlaced", "standby slot kept on worker-3", "Normal")

    (request,) = apiserver.requests_to("POST", "/api/v1/namespaces/ml-team/events")
    event = request.json()
    prefix, _, suffix = event["metadata"]["name"].rpartition(".")
    assert prefix == "bert-finetune-mnt6x" and len(suffix) == 16 and int(suffix, 16) >= 0
    assert event["metadata"]["namespace"] == "ml-team"
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "ml-team",
                                       "name": "bert-finetune-mnt6x", "uid": pod.uid, "resourceVersion": "369"}
    assert (event["reason"], event["message"], event["type"]) == (
        "StandbyPlaced", "standby slot kept on worker-3", "Normal")
    assert event["source"] == {"component": "guardgrid"} and event["reportingComponent"] == "guardgrid"
    assert event["reportingInstance"] == "guardgrid-predictor-0" and event["action"] == "StandbyPlaced"
    assert event["eventTime"] == "2026-11-23T12:30:00.000000Z"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-23T12:30:00Z"


def test_an_overlong_event_message_is_cut_to_what_the_api_server_accepts(kube, apiserver):
    apiserver.respond("POST", "/api/v1/namespaces/default/events", Reply(status=201, body=b"{}"))

    kube.create_event(PodRecord(uid="u", namespace="default", name="p"), "Migrated", "x" * 5000, "Warning")

    (request,) = apiserver.requests_to("POST", "/api/v1/namespaces/default/events")
    assert len(request.json()["message"]) == 1024


# --- leases --------------------------------------------------------------------------------------------

def _lease(holder: str, renewed: str, duration: int = 15, transitions: int = 2) -> bytes:
    return orjson.dumps({
        "kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"name": "guardgrid-predictor", "namespace": "guardgrid-system", "resourceVersion": "777",
                     "uid": "0d5b7c1e-0000-4000-8000-000000000001"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                 "acquireTime": "2026-11-23T12:00:00.000000Z", "renewTime": renewed,
                 "leaseTransitions": transitions}})


def test_an_absent_lease_is_created_with_us_as_holder(kube, apiserver):
    apiserver.respond("GET", LEASE_PATH, Reply(status=404, body=status_body(
        404, "NotFound", 'leases.coordination.k8s.io "guardgrid-predictor" not found')))
    collection = LEASE_PATH.rsplit("/", 1)[0]
    apiserver.respond("POST", collection, Reply(status=201, body=b"{}"))

    assert kube.acquire_lease("guardgrid-system", "guardgrid-predictor", "predictor-a", 15) is True

    (request,) = apiserver.requests_to("POST", collection)
    lease = request.json()
    assert lease["metadata"] == {"name": "guardgrid-predictor", "namespace": "guardgrid-system"}
    assert lease["spec"]["holderIdentity"] == "predictor-a" and lease["spec"]["leaseDurationSeconds"] == 15
    assert lease["spec"]["renewTime"] == "2026-11-23T12:30:00.000000Z"


def test_a_lease_another_replica_creates_first_is_not_ours(kube, apiserver):
    apiserver.respond("GET", LEASE_PATH, Reply(status=404, body=status_body(404, "NotFound", "not found")))
    apiserver.respond("POST", LEASE_PATH.rsplit("/", 1)[0], Reply(status=409, body=status_body(
        409, "AlreadyExists", 'leases.coordination.k8s.io "guardgrid-predictor" already exists')))

    assert kube.acquire_lease("guardgrid-system", "guardgrid-predictor", "predictor-a", 15) is False


def test_a_lease_held_by_someone_else_and_not_expired_is_not_taken(kube, apiserver):
    apiserver.respond("GET", LEASE_PATH, Reply(body=_lease("predictor-b", "2026-11-23T12:29:50.000000Z")))

    assert kube.acquire_lease("guardgrid-system", "guardgrid-predictor", "predictor-a", 15) is False
    assert apiserver.requests_to("PUT", LEASE_PATH) == []


def test_an_expired_lease_is_taken_over_with_its_resource_version(kube, apiserver):
    apiserver.respond("GET", LEASE_PATH, Reply(body=_lease("predictor-b", "2026-11-23T12:29:40.000000Z")))
    apiserver.respond("PUT", LEASE_PATH, Reply(body=b"{}"))

    assert kube.acquire_lease("guardgrid-system", "guardgrid-predictor", "predictor-a", 15) is True

    (request,) = apiserver.requests_to("PUT", LEASE_PATH)
    lease = request.json()
    assert lease["metadata"]["resourceVersion"] == "777"
    assert lease["spec"] == {"holderIdentity": "predictor-a", "leaseDurationSeconds": 15,
                             "acquireTime": "2026-11-23T12:30:00.000000Z", "renewTime": "2026-11-23T12:30:00.000000Z",
                             "leaseTransitions": 3}


def test_our_own_lease_is_renewed_without_a_transition(kube, apiserver):
    apiserver.respond("GET", LEASE_PATH, Reply(body=_lease("predictor-a", "2026-11-23T12:29:55.000000Z")))
    apiserver.respond("PUT", LEASE_PATH, Reply(body=b"{}"))

    assert kube.acquire_lease("guardgrid-system", "guardgrid-predictor", "predictor-a", 15) is True

    spec = apiserver.requests_to("PUT", LEASE_PATH)[0].json()["spec"]
    assert spec["acquireTime"] == "2026-11-23T12:00:00.000000Z" and spec["leaseTransitions"] == 2
    assert spec["renewTime"] == "2026-11-23T12:30:00.000000Z"


def test_losing_the_race_for_an_expired_lease_returns_false(kube, apiserver):
    apiserver.respond("GET", LEASE_PATH, Reply(body=_lease("predictor-b", "2026-11-23T12:00:00.000000Z")))
    apiserver.respond("PUT", LEASE_PATH, Reply(status=409, body=status_body(
        409, "Conflict", 'Operation cannot be fulfilled on leases.coordination.k8s.io "guardgrid-predictor": '
        "the object has been modified; please apply your changes to the latest version and try again")))

    assert kube.acquire_lease("guardgrid-system", "guardgrid-predictor", "predictor-a", 15) is False


def test_a_lease_read_the_server_refuses_is_a_kube_api_error(kube, apiserver):
    apiserver.respond("GET", LEASE_PATH, Reply(status=403, body=status_body(403, "Forbidden", "cannot get leases")))

    with pytest.raises(KubeAPIError) as error:
        kube.acquire_lease("guardgrid-system", "guardgrid-predictor", "predictor-a", 15)

    assert error.value.status == 403

