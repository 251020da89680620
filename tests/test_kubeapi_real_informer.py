"""The informer (guardgrid/informer.py) over RealKubeAPI against the recording API-server stub.

The same list/watch/relist loop the extender and predictor run in a cluster, fed by bytes a real kube-apiserver
produced: the paged pod list, the captured watch stream (watch-demo created, relabelled, deleted, then a
bookmark at 433), and the documented 410 Expired answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from apiserver_stub import Reply, expired_watch_event, status_body, watch_lines

from kubernetes import client as k8s

from guardgrid.informer import Backoff, ClusterCache, Reflector
from guardgrid.kubeapi.real import RealKubeAPI
from guardgrid.state import ClusterState

GiB = 2**30
WATCH_FROM_LIST = {"watch": "true", "resourceVersion": "428", "allowWatchBookmarks": "true"}


def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition until a deadline (the informer runs in its own threads)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


def _pod_names(state: ClusterState) -> set[str]:
    return {p.name for p in state.all_pods()}


def _informer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("informer-")]


@pytest.fixture
def kube(api_client: k8s.ApiClient) -> RealKubeAPI:
    return RealKubeAPI(api_client, page_size=3)  # pods are paged as captured; nodes are re-paged by the stub


def test_the_cache_lists_then_applies_the_watch_so_the_watch_demo_pod_appears_then_disappears(
        kube, apiserver):
    lines = watch_lines()
    deletion = threading.Event()
    apiserver.respond("GET", "/api/v1/pods", Reply(chunks=[*lines[:2], deletion, *lines[2:]], hold_open=True),
                      WATCH_FROM_LIST)
    cache = ClusterCache(kube, watch_timeout=30)
    cache.start()
    try:
        assert cache.wait_synced(5)
        assert len(cache.state.table) == 6 and cache.state.table.index.keys() == {f"worker-{i}" for i in range(1, 7)}
        assert _eventually(lambda: "watch-demo" in _pod_names(cache.state))
        assert _pod_names(cache.state) >= {"etl-worker-1", "bert-finetune-mnt6x", "standby-resnet50-train-0"}
        assert len(cache.state.all_pods()) == 8
        worker3 = cache.state.table.index["worker-3"]
        assert cache.state.table.requested[worker3] == 96 * GiB  # the standby slot from the synthesized page 3

        deletion.set()
        pods = cache.reflectors["pods"]
        assert _eventually(lambda: "watch-demo" not in _pod_names(cache.state) and pods.resource_version == "433")
        assert len(cache.state.all_pods()) == 7 and pods.relists == 1
    finally:
        cache.stop()
    assert not _informer_threads()
    assert [r.query.get("limit") for r in apiserver.requests_to("GET", "/api/v1/nodes")][:2] == ["3", "3"]


@pytest.mark.parametrize("expiry", ["an ERROR event in the stream", "HTTP 410 on the request"])
def test_a_410_on_the_watch_makes_the_informer_relist_and_watch_again_from_the_new_list(
        kube, apiserver, expiry):
    if expiry == "HTTP 410 on the request":
        reply = Reply(status=410, body=status_body(410, "Expired", "too old resource version: 428 (440)"), times=1)
    else:
        reply = Reply(chunks=[expired_watch_event("428", "440")], times=1)
    apiserver.respond("GET", "/api/v1/pods", reply, WATCH_FROM_LIST)
    stop = threading.Event()
    state = ClusterState()
    reflector = Reflector(kube, "pods", state, stop, watch_timeout=30)
    thread = threading.Thread(target=reflector.run, name="informer-pods-test")
    thread.start()
    try:
        assert _eventually(lambda: reflector.relists == 2 and reflector.resource_version == "433")
    finally:
        stop.set()
        kube.interrupt_watches()
        thread.join(5)
    assert not thread.is_alive()
    lists = [r for r in apiserver.requests_to("GET", "/api/v1/pods") if "watch" not in r.query]
    watches = [r.query["resourceVersion"] for r in apiserver.requests_to("GET", "/api/v1/pods") if "watch" in r.query]
    assert [r.query.get("continue") is None for r in lists] == [True, False, False, True, False, False]
    assert watches[:3] == ["428", "428", "433"]  # expired, watched again from the relist, then resumed
    assert len(state.all_pods()) == 7 and "watch-demo" not in _pod_names(state)
    assert reflector.errors == 0


def test_a_server_error_on_the_list_backs_off_and_the_informer_recovers(kube, apiserver):
    apiserver.respond("GET", "/api/v1/nodes", Reply(status=500, body=status_body(500, "InternalError", "etcd timeout"),
                                                    times=2), {"limit": "3"})
    stop = threading.Event()
    state = ClusterState()
    reflector = Reflector(kube, "nodes", state, stop, watch_timeout=30, backoff=Backoff(initial=0.01, cap=0.05))
    thread = threading.Thread(target=reflector.run, name="informer-nodes-test")
    thread.start()
    try:
        assert reflector.synced.wait(5)
    finally:
        stop.set()
        kube.interrupt_watches()
        thread.join(5)
    assert not thread.is_alive()
    assert reflector.errors == 2 and len(state.table) == 6
