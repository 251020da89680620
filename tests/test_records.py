import pytest

from conftest import NODE_CACHE_CLUSTER, SCHEDULER, load_json
from guardgrid import keys
from guardgrid.records import RecordError, node_from_dict, pod_from_dict

GiB = 2**30


def _cluster_items(kind):
    return [item for item in load_json(NODE_CACHE_CLUSTER)["items"] if item["kind"] == kind]


def test_nodes_of_the_captured_cluster_read_with_allocatable_memory_zone_and_gpus():
    nodes = {n.name: n for n in map(node_from_dict, _cluster_items("Node"))}
    assert nodes["worker-4"].allocatable_memory == 256 * GiB
    assert nodes["worker-4"].allocatable_gpus == 8
    assert nodes["worker-5"].allocatable_gpus == 0
    assert nodes["worker-3"].zone == "zone-b"
    assert all(n.ready for n in nodes.values())


def test_the_standby_pod_is_recognised_by_class_and_label_and_serves_its_job():
    pods = {p.name: p for p in map(pod_from_dict, _cluster_items("Pod"))}
    standby = pods["standby-resnet50-train-0"]
    assert standby.is_standby and standby.standby_for == "resnet50-train"
    assert standby.job == ""  # a slot serves a job, it is not a member of it
    assert standby.memory_request == 96 * GiB
    assert standby.priority == keys.PRIORITY_STANDBY


def test_a_job_comes_from_the_label_then_the_annotation_then_the_controller_owner():
    pod = pod_from_dict(load_json(SCHEDULER / "node-cache" / "filter-args.json")["Pod"])
    assert pod.job == "bert-finetune"  # annotation only
    resnet = pod_from_dict(load_json(SCHEDULER / "node-cache" / "preempt-args.json")["Pod"])
    assert resnet.job == "resnet50-train"  # label
    owned = pod_from_dict({"metadata": {"name": "x", "ownerReferences": [
        {"kind": "Job", "name": "owner-job", "uid": "u", "controller": True}]}, "spec": {"containers": []}})
    assert owned.job == "owner-job"


def test_pod_memory_is_the_scheduler_effective_request():
    spec = {
        "initContainers": [
            {"name": "big-init", "resources": {"requests": {"memory": "10Gi"}}},
            {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"memory": "1Gi"}}},
        ],
        "containers": [
            {"name": "a", "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "3Gi"}}},
            {"name": "b", "resources": {"limits": {"memory": "4Gi"}}},  # request defaults to the limit
        ],
        "overhead": {"memory": "128Mi"},
    }
    pod = pod_from_dict({"metadata": {"name": "p"}, "spec": spec})
    assert pod.memory_request == 10 * GiB + 128 * 2**20  # the init peak dominates 2+4+1
    assert pod.memory_limit == 7 * GiB + 128 * 2**20


def test_a_terminal_or_unbound_pod_holds_no_memory():
    bound = pod_from_dict({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": []}})
    assert bound.holds_memory
    done = pod_from_dict({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": []},
                          "status": {"phase": "Succeeded"}})
    assert not done.holds_memory
    assert not pod_from_dict({"metadata": {"name": "p"}, "spec": {"containers": []}}).holds_memory


def test_a_bad_memory_quantity_names_the_pod_and_the_value():
    with pytest.raises(RecordError, match=r"ns/p.*'lots'"):
        pod_from_dict({"metadata": {"name": "p", "namespace": "ns"},
                       "spec": {"containers": [{"resources": {"requests": {"memory": "lots"}}}]}})


def test_a_node_without_a_name_or_with_a_wrong_type_is_rejected_clearly():
    with pytest.raises(RecordError, match="name"):
        node_from_dict({"metadata": {}})
    with pytest.raises(RecordError, match="expected an object"):
        node_from_dict({"metadata": {"name": "n"}, "status": ["no"]})


def test_scheduled_time_comes_from_the_pod_scheduled_condition():
    pod = pod_from_dict({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T12:09:25Z"}]}})
    assert pod.scheduled_at == pytest.approx(1795435765.0)
