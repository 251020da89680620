"""Prioritize may reuse the figures of the filter call before it only when the answer cannot differ."""

import dataclasses

import orjson
import pytest

from conftest import SCHEDULER, captured_state, load_json
from extender.service import ExtenderService
from extender.wire import ExtenderArgs, node_cache_request, parse_extender_args
from guardgrid.config import load_settings
from guardgrid.records import pod_from_dict
from guardgrid.snapshot import NodeForecast, Snapshot
from guardgrid.state import ClusterState

GiB = 2**30
NOW = 1_800_000_000.0
NODES = ["worker-1", "worker-2", "worker-3", "worker-4", "worker-5", "worker-6"]
SETTINGS = load_settings({})
BERT = pod_from_dict(load_json(SCHEDULER / "node-cache" / "filter-args.json")["Pod"])  # 8Gi, bert-finetune
FILTER_BODY = (SCHEDULER / "node-cache" / "filter-args.json").read_bytes().strip()  # bert, 6 nodes, as captured


_state = captured_state


def _snapshot(generated_at: float = NOW - 5) -> Snapshot:
    means = dict(zip(NODES, [120, 60, 10, 100, 57, 30]))  # worker-1 and worker-5 too full for 8Gi more
    return Snapshot(generated_at=generated_at, nodes={
        name: NodeForecast(forecast_mean_bytes=mean * GiB, forecast_std_bytes=2 * GiB, fault_rate_per_hour=0.001,
                           allocatable_bytes=0) for name, mean in means.items()})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _service(state: ClusterState, snapshot: Snapshot, clock: Clock, compiled: bool = False) -> ExtenderService:
    """By default the Python filter, whose figures `recall` reuses; the compiled kernel keeps none, and
    filters only whole bodies (`filter_body_then`)."""
    return ExtenderService(state, SETTINGS, lambda: snapshot, clock=clock, compiled=compiled)


def _recording(service: ExtenderService, method: str = "recall") -> list:
    """Wrap one of the service's FilterMemory lookups so a test sees what it returned: `recall` (the filter's
    figures, for prioritize to score) or `answer` (the prioritize answer the filter prepared)."""
    results: list = []
    original = getattr(service.recent, method)

    def wrapper(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    setattr(service.recent, method, wrapper)
    return results


def _fresh_prioritize(state: ClusterState, snapshot: Snapshot, clock: Clock, names: list[str]) -> bytes:
    """What a service that never saw the filter answers."""
    return _service(state, snapshot, clock).prioritize(ExtenderArgs(BERT, list(names), None, None))


def _filter(service: ExtenderService) -> list[str]:
    return orjson.loads(service.filter(ExtenderArgs(BERT, list(NODES), None, None)))["NodeNames"]


def test_prioritize_after_filter_reuses_its_figures_and_answers_the_same():
    state, snapshot, clock = _state(), _snapshot(), Clock()
    service = _service(state, snapshot, clock)
    recalled = _recording(service)
    passed = _filter(service)
    assert 2 <= len(passed) < len(NODES)  # the filter rejected some nodes: positions must be mapped right
    answer = service.prioritize(ExtenderArgs(BERT, list(passed), None, None))
    assert recalled[0] is not None
    assert answer == _fresh_prioritize(state, snapshot, clock, passed)


def _bind(state: ClusterState, node: str, at: float) -> None:
    pod = dataclasses.replace(BERT, uid=f"late-{at}", name="late", node_name=node, phase="Running", scheduled_at=at)
    state.upsert_pod(pod, now=at)


@pytest.mark.parametrize("change", ["a pod was bound", "a new snapshot", "other names", "a bind left its window",
                                    "the snapshot went stale"])
def test_any_change_between_the_calls_makes_prioritize_evaluate_afresh(change):
    state, clock = _state(), Clock()
    snapshots = [_snapshot()]
    service = ExtenderService(state, SETTINGS, lambda: snapshots[-1], clock=clock, compiled=False)
    recalled = _recording(service)
    _bind(state, "worker-3", NOW - 30)  # in flight now (the window is a minute), no longer 40 s later
    names = _filter(service)
    if change == "a pod was bound":
        _bind(state, names[0], NOW)
    elif change == "a new snapshot":
        snapshots.append(_snapshot(generated_at=NOW - 1))
    elif change == "other names":
        names = names[::-1]
    elif change == "a bind left its window":
        clock.now += 40
    elif change == "the snapshot went stale":
        clock.now += SETTINGS.snapshot_max_age_seconds + 1
    answer = service.prioritize(ExtenderArgs(BERT, list(names), None, None))
    assert recalled == [None]
    assert answer == _fresh_prioritize(state, snapshots[-1], clock, names)


def test_a_filter_that_raced_a_change_is_not_remembered():
    state, snapshot, clock = _state(), _snapshot(), Clock()
    service = _service(state, snapshot, clock)
    recalled = _recording(service)
    with state._mutation():  # an informer event half applied while the filter runs
        names = _filter(service)
    service.prioritize(ExtenderArgs(BERT, list(names), None, None))
    assert recalled == [None]


# --- the prioritize answer prepared by the filter, for a body it predicted byte for byte ---------------------
def test_the_captured_prioritize_body_is_exactly_the_one_its_filter_predicts():
    prioritize_body = (SCHEDULER / "node-cache" / "prioritize-args.json").read_bytes().strip()
    filter_args = parse_extender_args(FILTER_BODY)
    assert node_cache_request(filter_args.pod_json, parse_extender_args(prioritize_body).node_names) == \
        prioritize_body


def _filter_body(service: ExtenderService) -> tuple[list[str], bytes]:
    """Filter the captured body as the app does (compiled when the service is); the passed names and the
    prioritize body kube-scheduler would send next."""
    answer, after = service.filter_body_then(FILTER_BODY)
    after()
    passed = orjson.loads(answer)["NodeNames"]
    return passed, node_cache_request(parse_extender_args(FILTER_BODY).pod_json, passed)


BOTH_FILTERS = pytest.mark.parametrize("compiled", [False, True], ids=["python-filter", "compiled-filter"])


@BOTH_FILTERS
def test_a_predicted_prioritize_body_is_answered_from_the_filter_without_parsing(monkeypatch, compiled):
    state, snapshot, clock = _state(), _snapshot(), Clock()
    service = _service(state, snapshot, clock, compiled)
    answers = _recording(service, "answer")
    passed, body = _filter_body(service)
    assert 2 <= len(passed) < len(NODES)
    monkeypatch.setattr("extender.service.parse_extender_args", lambda body: pytest.fail("parsed the body"))
    answer = service.prioritize_body(body)
    assert answers[0] is not None
    assert answer == _fresh_prioritize(state, snapshot, clock, passed)


@pytest.mark.parametrize("change", ["a pod was bound", "a new snapshot", "a bind left its window",
                                    "the snapshot went stale", "one byte differs"])
@BOTH_FILTERS
def test_after_any_change_a_predicted_body_is_parsed_and_scored_afresh(change, compiled):
    state, clock = _state(), Clock()
    snapshots = [_snapshot()]
    service = ExtenderService(state, SETTINGS, lambda: snapshots[-1], clock=clock, compiled=compiled)
    answers = _recording(service, "answer")
    _bind(state, "worker-3", NOW - 30)  # in flight now (the window is a minute), no longer 40 s later
    passed, body = _filter_body(service)
    if change == "a pod was bound":
        _bind(state, passed[0], NOW)
    elif change == "a new snapshot":
        snapshots.append(_snapshot(generated_at=NOW - 1))
    elif change == "a bind left its window":
        clock.now += 40
    elif change == "the snapshot went stale":
        clock.now += SETTINGS.snapshot_max_age_seconds + 1
    elif change == "one byte differs":
        body = body.replace(b'"Nodes":null,', b'"Nodes": null,')
    answer = service.prioritize_body(body)
    assert answers == [None]
    assert answer == _fresh_prioritize(state, snapshots[-1], clock, passed)


@BOTH_FILTERS
def test_each_prepared_answer_serves_one_prioritize_call(compiled):
    state, snapshot, clock = _state(), _snapshot(), Clock()
    service = _service(state, snapshot, clock, compiled)
    answers = _recording(service, "answer")
    passed, body = _filter_body(service)
    first, second = service.prioritize_body(body), service.prioritize_body(body)
    assert answers[0] is not None and answers[1] is None
    assert first == second == _fresh_prioritize(state, snapshot, clock, passed)


def test_the_schedulers_own_layout_is_filtered_from_its_bytes_with_the_same_answers(monkeypatch):
    state, snapshot, clock = _state(), _snapshot(), Clock()
    python = _service(state, snapshot, clock, compiled=False)
    expected_answer, expected_after = python.filter_then(parse_extender_args(FILTER_BODY))
    expected_after()
    compiled = _service(state, snapshot, clock, compiled=True)
    answers = _recording(compiled, "answer")
    monkeypatch.setattr("extender.service.parse_extender_args", lambda body: pytest.fail("parsed the body"))
    answer, after = compiled.filter_body_then(FILTER_BODY)
    after()
    assert answer == expected_answer
    passed = orjson.loads(answer)["NodeNames"]
    assert 2 <= len(passed) < len(NODES)  # some rejected: messages and names are both written from bytes
    prioritize = node_cache_request(parse_extender_args(FILTER_BODY).pod_json, passed)
    assert compiled.prioritize_body(prioritize) == _fresh_prioritize(state, snapshot, clock, passed)
    assert answers[0] is not None  # the answer the bytes path prepared
