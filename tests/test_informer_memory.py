"""The informer over the in-memory API: the same list/watch/relist code path the real adapter runs."""

import threading

from conftest import NODE_CACHE_CLUSTER, wait_for
from guardgrid.informer import Backoff, ClusterCache, Reflector
from guardgrid.kubeapi.base import KubeAPIError
from guardgrid.kubeapi.memory import InMemoryKubeAPI
from guardgrid.state import ClusterState

GiB = 2**30


def _pod(name, node, memory="1Gi"):
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"memory": memory}}}]},
            "status": {"phase": "Running"}}


def test_the_cache_syncs_then_follows_watch_events():
    api = InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER)
    cache = ClusterCache(api, watch_timeout=30)
    cache.start()
    try:
        assert cache.wait_synced(5)
        assert len(cache.state.table) == 6 and len(cache.state.pods) == 7
        api.upsert_raw(_pod("late", "worker-5", "3Gi"))
        index = cache.state.table.index["worker-5"]
        assert wait_for(lambda: cache.state.table.requested[index] == 43 * GiB)
        api.delete_pod("default", "late")
        assert wait_for(lambda: cache.state.table.requested[index] == 40 * GiB)
    finally:
        cache.stop()


def test_a_compacted_watch_gets_410_and_the_reflector_relists():
    api = InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER)
    state = ClusterState()
    stop = threading.Event()
    reflector = Reflector(api, "pods", state, stop, watch_timeout=30)
    reflector.list_once()
    api.upsert_raw(_pod("missed", "worker-6"))
    api.compact()  # the event for "missed" is gone: only a relist can find it
    thread = threading.Thread(target=reflector.run)
    thread.start()
    try:
        assert wait_for(lambda: reflector.relists >= 2 and any(p.name == "missed" for p in state.pods.values()))
    finally:
        stop.set()
        api.interrupt_watches()
        thread.join(5)
    assert not thread.is_alive()


class _FlakyAPI(InMemoryKubeAPI):
    """Fails the first `failures` list calls the way an unreachable API server does."""

    def __init__(self, failures, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failures = failures

    def list(self, kind):
        if self.failures > 0:
            self.failures -= 1
            raise KubeAPIError("connection refused", status=0)
        return super().list(kind)


def test_errors_back_off_and_the_reflector_recovers_without_crashing():
    from guardgrid.kubeapi.memory import load_cluster_file

    api = _FlakyAPI(3, load_cluster_file(NODE_CACHE_CLUSTER))
    state = ClusterState()
    stop = threading.Event()
    reflector = Reflector(api, "nodes", state, stop, watch_timeout=30, backoff=Backoff(initial=0.001, cap=0.01))
    thread = threading.Thread(target=reflector.run)
    thread.start()
    try:
        assert reflector.synced.wait(5)
        assert reflector.errors == 3 and len(state.table) == 6
    finally:
        stop.set()
        api.interrupt_watches()
        thread.join(5)


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(initial=1.0, cap=8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    assert all(0 <= d <= cap for d, cap in zip(delays, [1, 2, 4, 8, 8, 8]))
    backoff.reset()
    assert backoff.failures == 0


def test_a_watch_from_the_list_version_sees_every_later_change_once():
    api = InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER)
    listed = api.list("pods")
    api.upsert_raw(_pod("one", "worker-1"))
    api.delete_pod("default", "one")
    events = list(api.watch("pods", listed.resource_version, timeout_seconds=0.01))
    assert [e.type for e in events] == ["ADDED", "DELETED", "BOOKMARK"]
    assert int(events[-1].resource_version) >= int(events[1].resource_version)
