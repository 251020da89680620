from conftest import NODE_CACHE_CLUSTER, load_json
from guardgrid.records import NodeRecord, node_from_dict, pod_from_dict
from guardgrid.state import ClusterState

GiB = 2**30


def _captured_state() -> ClusterState:
    items = load_json(NODE_CACHE_CLUSTER)["items"]
    state = ClusterState()
    state.replace_pods([pod_from_dict(i) for i in items if i["kind"] == "Pod"])  # pods before nodes, as can happen
    state.replace_nodes([node_from_dict(i) for i in items if i["kind"] == "Node"])
    return state


def _pod(uid, node, memory, **labels):
    return pod_from_dict({"metadata": {"name": uid, "uid": uid, "labels": labels},
                          "spec": {"nodeName": node, "containers": [{"resources": {"requests": {"memory": memory}}}]},
                          "status": {"phase": "Running"}})


def test_requested_and_standby_memory_add_up_per_node_whatever_the_arrival_order():
    state = _captured_state()
    table = state.table
    requested = {n.name: table.requested[i] / GiB for i, n in enumerate(table.nodes)}
    assert requested == {"worker-1": 100, "worker-2": 100, "worker-3": 96, "worker-4": 208, "worker-5": 40,
                         "worker-6": 40}
    assert table.standby[table.index["worker-3"]] == 96 * GiB
    assert state.own_standby("resnet50-train") == {"worker-3": 96 * GiB}


def test_moving_and_deleting_a_pod_keeps_the_arrays_conserved():
    state = _captured_state()
    before = state.table.requested.sum()
    state.upsert_pod(_pod("new", "worker-5", "10Gi"), now=1000.0)
    assert state.table.requested.sum() == before + 10 * GiB
    state.upsert_pod(_pod("new", "worker-6", "10Gi"), now=1001.0)
    assert state.table.requested[state.table.index["worker-5"]] == 40 * GiB
    assert state.table.requested[state.table.index["worker-6"]] == 50 * GiB
    state.delete_pod("new")
    assert state.table.requested.sum() == before


def test_deleting_the_standby_slot_frees_its_job_reservation():
    state = _captured_state()
    state.delete_pod("469f5c63-ce80-465e-bfab-a466f8eda9ae")
    assert state.own_standby("resnet50-train") == {}
    assert state.table.standby.sum() == 0


def test_a_new_node_picks_up_pods_already_bound_to_it_and_a_removed_node_drops_them():
    state = _captured_state()
    state.upsert_pod(_pod("early", "worker-7", "5Gi"), now=1.0)
    state.upsert_node(NodeRecord(name="worker-7", uid="u7", allocatable_memory=32 * GiB))
    assert state.table.requested[state.table.index["worker-7"]] == 5 * GiB
    state.delete_node("worker-7")
    assert "worker-7" not in state.table.index
    assert len(state.table) == 6


def test_in_flight_memory_counts_only_binds_after_the_cut_off():
    state = _captured_state()  # its bert pod was bound at 2026-11-23T12:09Z; these binds come later
    t0 = 1_900_000_000.0
    state.upsert_pod(_pod("a", "worker-5", "4Gi"), now=t0)
    state.upsert_pod(_pod("b", "worker-5", "6Gi"), now=t0 + 100)
    assert state.inflight_by_node(since=t0 + 50) == {"worker-5": 6 * GiB}
    # A label change of an already-bound pod is not a new bind.
    state.upsert_pod(_pod("b", "worker-5", "6Gi", extra="x"), now=t0 + 200)
    assert state.inflight_by_node(since=t0 + 150) == {}


def test_binds_reported_out_of_order_still_expire_at_their_own_time():
    state = _captured_state()
    t0 = 1_900_000_000.0
    state.upsert_pod(_pod("late", "worker-6", "5Gi"), now=t0 + 100)
    state.upsert_pod(_pod("early", "worker-5", "3Gi"), now=t0)  # its event arrived second
    assert state.inflight_by_node(since=t0 + 50) == {"worker-6": 5 * GiB}


def test_a_deleted_or_moved_pod_leaves_the_in_flight_account():
    state = _captured_state()
    t0 = 1_900_000_000.0
    state.upsert_pod(_pod("m", "worker-5", "4Gi"), now=t0)
    state.upsert_pod(_pod("m", "worker-6", "4Gi"), now=t0 + 10)  # rebound elsewhere: a new bind
    assert state.inflight_by_node(since=t0 - 1) == {"worker-6": 4 * GiB}
    state.delete_pod("m")
    assert state.inflight_by_node(since=t0 - 1) == {}
