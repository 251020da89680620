"""The in-memory API keeps objects serialised, as etcd does: callers get private copies, never its own."""

import datetime

import yaml

from guardgrid.kubeapi.memory import InMemoryKubeAPI

GiB = 2**30


def _pod(name: str, node: str = "worker-1") -> dict:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": "ml", "labels": {"a": "1"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"memory": "2Gi"}}}]},
            "status": {"phase": "Running"}}


def test_changing_an_object_after_handing_it_over_changes_nothing_stored():
    original = _pod("train-0")
    api = InMemoryKubeAPI([original])
    original["metadata"]["labels"]["a"] = "changed"
    original["spec"]["containers"][0]["resources"]["requests"]["memory"] = "9Gi"
    stored = api.get_raw("pods", "ml/train-0")
    assert stored["metadata"]["labels"] == {"a": "1"}
    assert "resourceVersion" not in original["metadata"]  # stamped on the stored copy only
    stored["metadata"]["labels"]["a"] = "also changed"
    assert api.get_raw("pods", "ml/train-0")["metadata"]["labels"] == {"a": "1"}
    assert api.list("pods").items[0].memory_request == 2 * GiB


def test_watch_events_carry_the_object_as_it_was_at_that_version():
    api = InMemoryKubeAPI([_pod("train-0")])
    start = api.resource_version
    api.bind_pod("ml", "train-0", "worker-2")
    api.delete_pod("ml", "train-0")
    events = [e for e in api.watch("pods", start, timeout_seconds=0) if e.type != "BOOKMARK"]
    assert [(e.type, e.record.node_name) for e in events] == [("MODIFIED", "worker-2"), ("DELETED", "worker-2")]


def test_yaml_timestamps_become_rfc3339_strings_that_records_read(tmp_path):
    path = tmp_path / "cluster.yaml"
    pod = _pod("train-0")
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True",
                                    "lastTransitionTime": "TIMESTAMP"}]
    path.write_text(yaml.safe_dump(pod).replace("TIMESTAMP", "2026-11-23T12:00:00Z"))
    assert isinstance(yaml.safe_load(path.read_text())["status"]["conditions"][0]["lastTransitionTime"],
                      datetime.datetime)  # what PyYAML hands over for an unquoted timestamp
    record = InMemoryKubeAPI.from_file(path).list("pods").items[0]
    assert record.scheduled_at == datetime.datetime(2026, 11, 23, 12, tzinfo=datetime.UTC).timestamp()


def test_an_eviction_counts_healthy_pods_of_the_budget_in_the_pods_namespace_only():
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b", "namespace": "ml"},
              "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "1"}}}}
    elsewhere = _pod("twin")
    elsewhere["metadata"]["namespace"] = "other"
    api = InMemoryKubeAPI([_pod("train-0"), elsewhere, budget])
    assert api.evict_pod("ml", "train-0").outcome.name == "BLOCKED"  # the twin in "other" does not count
    api.upsert_raw(_pod("train-1"))
    assert api.evict_pod("ml", "train-0").outcome.name == "EVICTED"
    assert api.get_raw("pods", "ml/train-0") is None
