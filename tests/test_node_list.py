"""Full-NodeList bodies are read item by item from their bytes; any doubt falls back to decoding them whole."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FULL_NODES_CLUSTER, SCHEDULER, captured_state
from extender.node_list import NodeItemNames, split_node_list
from extender.service import ExtenderService
from extender.wire import WireError, filter_result, parse_extender_args
from guardgrid.config import load_settings
from guardgrid.snapshot import NodeForecast, Snapshot

FULL = SCHEDULER / "full-nodes"
FILTER_BODY = (FULL / "filter-args.json").read_bytes().strip()
NOW = 1_800_000_000.0


def _decoded_whole(body: bytes) -> bytes:
    """The same request in a layout the raw reader declines (a space before the last key)."""
    return body[:-len(b',"NodeNames":null}')] + b', "NodeNames":null}'


def test_the_captured_full_mode_bodies_are_read_raw_with_the_names_and_objects_sent():
    for name in ("filter-args.json", "prioritize-args.json", "filter-args-nominated-node.json"):
        body = (FULL / name).read_bytes().strip()
        raw = split_node_list(body)
        assert raw is not None, name
        sent = orjson.loads(body)["Nodes"]["items"]
        assert [orjson.loads(item) for item in raw.items] == sent
        args = parse_extender_args(body)
        assert args.node_json is not None and args.nodes is None
        assert args.node_names == [n["metadata"]["name"] for n in sent]


def test_a_raw_read_filter_answers_byte_for_byte_like_one_decoded_whole():
    state = captured_state(FULL_NODES_CLUSTER)
    full = {node.name: NodeForecast(forecast_mean_bytes=node.allocatable_memory if i % 2 else 0.0,
                                    forecast_std_bytes=2**30, fault_rate_per_hour=0.001, allocatable_bytes=0)
            for i, node in enumerate(state.table.nodes)}  # every other node forecast full
    snapshot = Snapshot(generated_at=NOW - 5, nodes=full)
    service = ExtenderService(state, load_settings({}), lambda: snapshot, clock=lambda: NOW)
    raw_args, whole_args = parse_extender_args(FILTER_BODY), parse_extender_args(_decoded_whole(FILTER_BODY))
    assert raw_args.node_json is not None and whole_args.nodes is not None
    raw_answer, whole_answer = service.filter(raw_args), service.filter(whole_args)
    assert raw_answer == whole_answer
    assert 0 < len(orjson.loads(raw_answer)["Nodes"]["items"]) < len(raw_args.node_names)  # some were rejected


def _node(name: str, note: str) -> dict:
    return {"metadata": {"name": name, "annotations": {"note": note}}, "spec": {},
            "status": {"images": [{"names": [note]}]}}


def _full_body(nodes: list[dict]) -> bytes:
    pod = orjson.loads(FILTER_BODY)["Pod"]
    return orjson.dumps({"Pod": pod, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None})


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
                          st.sampled_from(["", "plain", '},{"metadata":', '"]},"NodeNames":null}', "\\", "ü"])),
                max_size=8))
def test_any_node_list_splits_into_exactly_the_objects_sent(entries):
    nodes = [_node(name, note) for name, note in entries]
    raw = split_node_list(_full_body(nodes))
    assert raw is not None
    assert [orjson.loads(item) for item in raw.items] == nodes
    assert NodeItemNames().names(raw.items) == [name for name, _ in entries]


def test_an_object_nested_in_a_node_that_looks_like_an_item_boundary_falls_back_to_decoding():
    tricky = _node("worker-1", "x")
    tricky["status"]["conditions"] = [{"metadata": {"name": "not-a-node"}}, {"metadata": {"name": "nor-this"}}]
    body = _full_body([tricky, _node("worker-2", "y")])
    raw = split_node_list(body)
    assert raw is not None and len(raw.items) == 3  # split inside worker-1: pieces that are not whole objects
    assert NodeItemNames().names(raw.items) is None
    assert parse_extender_args(body).node_names == ["worker-1", "worker-2"]  # decoded whole instead


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"Pod":{},"Nodes":{"metadata":{},"items":[{"metadata":{}}]},"NodeNames":null}', "'Nodes.items[0]' has no"),
    (b'{"Pod":{},"Nodes":{"metadata":{},"items":[{"metadata":{"name":"a"},]},"NodeNames":null}', "not valid JSON"),
    (b'{"Nodes":{"metadata":{},"items":[{"metadata":{"name":"a"}}]},"NodeNames":null}', "missing 'Pod'"),
])
def test_bodies_the_raw_reader_declines_get_the_usual_error(body, reason):
    with pytest.raises(WireError) as raised:
        parse_extender_args(body)
    assert raised.value.status == 400
    assert reason in str(raised.value)


def test_a_full_memory_of_node_objects_starts_afresh_and_still_answers():
    memory = NodeItemNames(capacity=2)
    items = [orjson.dumps(_node(f"worker-{i}", "")) for i in range(5)]
    assert memory.names(items) == [f"worker-{i}" for i in range(5)]
    assert len(memory) <= 2


def test_the_answer_carries_the_passing_objects_own_bytes():
    body = _full_body([_node("worker-1", "a"), _node("worker-2", "b")])
    args = parse_extender_args(body)
    answer = filter_result(args, ["worker-2"], {"worker-1": "no"})
    assert args.node_json is not None
    assert orjson.dumps(_node("worker-2", "b")) in answer
    assert orjson.loads(answer)["Nodes"] == {"metadata": {}, "items": [_node("worker-2", "b")]}
