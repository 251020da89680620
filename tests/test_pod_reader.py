"""The compiled pod reader (guardgrid/_pod_reader.c) reads a pod as orjson + pod_from_dict do, or declines.

The property: whenever `read_pod_essentials` answers, the reference reader accepts the same bytes and gives
the same uid, job, memory request and memory limit; whenever the reference rejects a pod (a 400 for the
scheduler), the compiled reader declines. Checked on the captured pods, on pods built with every memory and
job shape the scheduler knows, and on thousands of mutations of them: values of other types, keys sent twice
or spelled with escapes, whitespace, escapes in values, bytes flipped, inserted and cut.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from conftest import FIXTURES, SCHEDULER, captured_state, load_json

from extender.service import ExtenderService
from extender.wire import parse_extender_args
from guardgrid import kernel, keys
from guardgrid.config import load_settings
from guardgrid.pod_reader import read_pod_essentials
from guardgrid.records import RecordError, pod_from_dict
from guardgrid.snapshot import NodeForecast, Snapshot

pytestmark = pytest.mark.skipif(not kernel.available(), reason="the compiled kernel is not built (make kernel)")

HEAD, TAIL = b'{"Pod":', b',"Nodes":null,"NodeNames":["worker-1"]}'
Reading = tuple[str, str, int, int]


def captured_pods() -> list[dict[str, Any]]:
    pods = [load_json(SCHEDULER / mode / "filter-args.json")["Pod"] for mode in ("node-cache", "full-nodes")]
    pods += [item for page in ("list-pods-page1.json", "list-pods-page2.json")
             for item in load_json(FIXTURES / "apiserver" / page)["items"]]
    pods += [load_json(path)["request"]["object"] for path in sorted((FIXTURES / "admission").glob("*.json"))]
    return pods


def built_pods(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Pods with every shape the memory and job rules distinguish."""
    quantities = ["12Gi", "8Gi", "500Mi", "1G", "1.5Gi", "123456789", "0", "64Mi", "2e3", "100m", "40Gi", "96Gi"]

    def container(init: bool) -> dict[str, Any]:
        resources: dict[str, Any] = {}
        for part in ("requests", "limits"):
            draw = rng.random()
            if draw < 0.6:
                resources[part] = {"memory": rng.choice(quantities), "cpu": "2"}
            elif draw < 0.7:
                resources[part] = {"memory": None}
            elif draw < 0.8:
                resources[part] = None
            elif draw < 0.9:
                resources[part] = {"cpu": "1"}
        made: dict[str, Any] = {"name": f"c{rng.randrange(100)}", "image": "registry.local/train:1"}
        if rng.random() < 0.9:
            made["resources"] = resources
        if init and rng.random() < 0.5:
            made["restartPolicy"] = rng.choice(["Always", "OnFailure", "always", None, 3])
        return made

    pods = []
    for k in range(count):
        labels = {"app": "train"}
        if rng.random() < 0.5:
            labels[keys.JOB] = rng.choice(["bert", "gpt-7b", ""])
        if rng.random() < 0.2:
            labels[keys.STANDBY_FOR] = rng.choice(["bert", ""])
        annotations = {"note": "x"}
        if rng.random() < 0.4:
            annotations[keys.JOB] = rng.choice(["resnet", ""])
        owners = []
        for _ in range(rng.randrange(3)):
            owner: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job", "uid": "u"}
            if rng.random() < 0.8:
                owner["name"] = rng.choice(["job-a", "job-b", ""])
            if rng.random() < 0.7:
                owner["controller"] = rng.choice([True, False, None])
            owners.append(owner)
        spec: dict[str, Any] = {"containers": [container(False) for _ in range(rng.randrange(4))],
                                "schedulerName": "guardgrid-scheduler", "priority": 1000}
        if rng.random() < 0.5:
            spec["initContainers"] = [container(True) for _ in range(rng.randrange(4))]
        if rng.random() < 0.3:
            spec["overhead"] = {"memory": rng.choice(quantities)}
        metadata: dict[str, Any] = {"name": f"pod-{k}", "namespace": "ml", "uid": f"uid-{k}", "labels": labels,
                                    "annotations": annotations}
        if owners:
            metadata["ownerReferences"] = owners
        pods.append({"metadata": metadata, "spec": spec,
                     "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}})
    return pods


def reference(text: bytes) -> Reading | None:
    """What orjson + pod_from_dict read of the text, or None where they reject it. Any other exception
    fails the test: bad input must be a RecordError (a 400), never a crash."""
    try:
        pod = orjson.loads(text)
        if not isinstance(pod, dict):
            return None
        record = pod_from_dict(pod)
    except (orjson.JSONDecodeError, RecordError):
        return None
    return record.uid, record.job, record.memory_request, record.memory_limit


def compiled(text: bytes) -> Reading | None:
    """What the compiled reader reads of `text` as the Pod of a node-cache request, or None: it declined, or
    the value it read ends before the text does (extender.wire.node_cache_layout then parses the body whole)."""
    read = read_pod_essentials(HEAD + text + TAIL, len(HEAD))
    if read is None or read[1] != len(HEAD) + len(text):
        return None
    pod = read[0]
    return pod.uid, pod.job, pod.memory_request, pod.memory_limit


def check(text: bytes) -> bool:
    """Asserts the property for one text; whether the compiled reader answered."""
    read = compiled(text)
    if read is None:
        return False
    expected = reference(text)
    assert expected is not None, f"compiled reader accepted what pod_from_dict rejects: {text[:300]!r}"
    assert read == expected, text[:300]
    return True


# --- text mutations ---------------------------------------------------------------------------------------------
ODD_VALUES: list[Any] = [None, 0, -1, 7.5, True, False, "", "x", "12Gi", [], [1, "a"], {}, {"memory": "1Gi"},
                         {"k": None}, "Always", "a\"b", "tab\there", "\u00e9t\u00e9", "\\"]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def replaced(pod: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(pod) if isinstance(pod, dict) else list(pod)
    copy[path[0]] = replaced(pod[path[0]], path[1:], new)
    return copy


def removed(pod: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        copy: Any = dict(pod) if isinstance(pod, dict) else list(pod)
        del copy[path[0]]
        return copy
    return replaced(pod, path[:1], removed(pod[path[0]], path[1:]))


def spelled(value: Any, rng: random.Random, spaces: float, escapes: float = 0.0, twice: float = 0.0) -> bytes:
    """JSON for `value` as orjson would read it, written unusually: whitespace between tokens (at a rate of
    `spaces`), characters of keys and strings escaped (`escapes`), keys sent twice, first with another value
    (`twice`)."""
    def space() -> bytes:
        return rng.choice([b" ", b"\n", b"\t ", b"\r\n"]) if rng.random() < spaces else b""

    def string(text: str) -> bytes:
        if rng.random() >= escapes:
            return orjson.dumps(text)
        out = []
        for ch in text:
            if rng.random() < 0.3 and ch.isascii() and ch.isprintable():
                out.append(rng.choice([f"\\u{ord(ch):04x}", f"\\u{ord(ch):04X}"]) if ch != "/" else "\\/")
            else:
                out.append(orjson.dumps(ch).decode()[1:-1])
        return ('"' + "".join(out) + '"').encode()

    def write(item: Any) -> bytes:
        if isinstance(item, dict):
            members = []
            for key, inner in item.items():
                if rng.random() < twice:
                    members.append(space() + string(key) + space() + b":" + space() + write(rng.choice(ODD_VALUES)))
                members.append(space() + string(key) + space() + b":" + space() + write(inner))
            return b"{" + b",".join(members) + space() + b"}"
        if isinstance(item, list):
            return b"[" + b",".join(space() + write(inner) for inner in item) + space() + b"]"
        if isinstance(item, str):
            return string(item)
        return orjson.dumps(item)
    return space() + write(value) + space()


MUTATIONS: dict[str, Callable[[dict[str, Any], random.Random], bytes]] = {
    "a value of another type": lambda pod, rng: orjson.dumps(
        replaced(pod, rng.choice(paths(pod)[1:]), rng.choice(ODD_VALUES))),
    "a field removed": lambda pod, rng: orjson.dumps(removed(pod, rng.choice(paths(pod)[1:]))),
    "whitespace between tokens": lambda pod, rng: spelled(pod, rng, 0.3),
    "escapes in keys and strings": lambda pod, rng: spelled(pod, rng, 0.0, escapes=0.01),
    "keys sent twice": lambda pod, rng: spelled(pod, rng, 0.0, twice=0.01),
    "all of these, and a value of another type": lambda pod, rng: spelled(
        replaced(pod, rng.choice(paths(pod)[1:]), rng.choice(ODD_VALUES)), rng, 0.1, 0.01, 0.01),
}
# Of 800 texts, how many the compiled reader must answer itself (about half of what it does): an escape or a
# repeated key in a part it reads, or a value of an unusual type, makes it decline.
LEAST_ANSWERED = {"a value of another type": 250, "a field removed": 400, "whitespace between tokens": 400,
                  "escapes in keys and strings": 250, "keys sent twice": 300,
                  "all of these, and a value of another type": 120}


def byte_mutation(text: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(text))
    kind = rng.randrange(4)
    if kind == 0:
        return text[:at] + bytes([rng.randrange(256)]) + text[at + 1:]
    if kind == 1:
        return text[:at] + rng.choice([b"\\", b'"', b",", b"}", b"]", b"\\u", b"1e5", b"\x00", b"\xc3\xa9"]) + text[at:]
    if kind == 2:
        return text[:at]
    return text[:at] + text[at + rng.randrange(1, 20):]


# --- the tests --------------------------------------------------------------------------------------------------
def test_every_captured_pod_is_read_by_the_compiled_reader_as_pod_from_dict_reads_it() -> None:
    pods = captured_pods()
    assert len(pods) >= 6
    for pod in pods:
        assert check(orjson.dumps(pod)), pod["metadata"].get("name")


def test_pods_of_every_memory_and_job_shape_read_the_same() -> None:
    rng = random.Random(7)
    pods = built_pods(rng, 600)
    assert all(check(orjson.dumps(pod)) for pod in pods)  # every one valid, compact: none left to Python


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_mutated_pod_is_read_the_same_or_left_to_python(mutation: str) -> None:
    rng = random.Random(sorted(MUTATIONS).index(mutation))
    pods = captured_pods() + built_pods(rng, 40)
    answered = sum(check(MUTATIONS[mutation](rng.choice(pods), rng)) for _ in range(800))
    assert answered >= LEAST_ANSWERED[mutation], answered


def test_bytes_flipped_inserted_or_cut_are_read_the_same_or_left_to_python() -> None:
    rng = random.Random(11)
    pods = [orjson.dumps(pod) for pod in captured_pods() + built_pods(rng, 20)]
    for _ in range(3000):
        text = rng.choice(pods)
        for _ in range(rng.randrange(1, 3)):
            text = byte_mutation(text, rng) or b"{}"
        check(text)


@pytest.mark.parametrize("text", [
    b'{"metadata":{"uid":"a","uid":"b"}}',  # a field it reads sent twice: orjson keeps the last
    b'{"metadata":{"labels":{"guardgrid.io/job":"a","guardgrid.io/j\\u006fb":"b"}}}',  # a key spelled with an escape
    b'{"metadata":{"labels":{"guardgrid.io/job":"b\\u00e9rt"}}}',  # a value read, with an escape
    b'{"metadata":{"name":"p\xc3\xa9"}}',  # UTF-8 left to orjson
    b'{"spec":{"priority":1e3}}',  # an exponent
    b'{"spec":{"priority":12345678901234567890}}',  # a long number
    b'{"spec":{"x":"\\ud83d\\ude00"}}',  # a surrogate pair
    b'[' * 70 + b']' * 70,  # deep nesting
    b'null',
])
def test_what_the_reader_is_not_sure_of_is_left_to_python(text: bytes) -> None:
    assert compiled(text) is None


@pytest.mark.parametrize("text", [
    b'{"status":{"conditions":5}}',
    b'{"spec":{"containers":5}}',
    b'{"spec":{"initContainers":{"a":1}}}',
    b'{"metadata":{"ownerReferences":"abc"}}',
    b'{"spec":{"containers":[{"resources":{"limits":{"memory":"12 Gi"}}}]}}',
    b'{"metadata":{"labels":[]}}',
    b'{"metadata":{"name":5}}',
])
def test_a_pod_python_rejects_is_declined_and_rejected_with_a_reason(text: bytes) -> None:
    assert compiled(text) is None
    with pytest.raises(RecordError):
        pod_from_dict(orjson.loads(text))


def test_the_end_of_the_pod_includes_the_whitespace_after_it() -> None:
    body = HEAD + b' {"metadata":{"uid":"u"}} \n' + TAIL
    read = read_pod_essentials(body, len(HEAD))
    assert read is not None and body[read[1]:].startswith(b',"Nodes"')


@pytest.mark.parametrize("forecast", [False, True], ids=["requests", "forecast"])
def test_the_extender_answers_a_pod_read_by_either_reader_alike(monkeypatch, forecast: bool) -> None:
    state = captured_state()
    now = 1_800_000_000.0
    snapshot = Snapshot(generated_at=now - 5, nodes={
        f"worker-{k}": NodeForecast(forecast_mean_bytes=k * 20 * 2**30, forecast_std_bytes=2 * 2**30,
                                    fault_rate_per_hour=0.001, allocatable_bytes=0) for k in range(1, 7)})
    settings = load_settings({})
    python = ExtenderService(state, settings, lambda: snapshot if forecast else None, clock=lambda: now,
                             compiled=False)
    compiled = ExtenderService(state, settings, lambda: snapshot if forecast else None, clock=lambda: now)
    captured = load_json(SCHEDULER / "node-cache" / "filter-args.json")
    rng = random.Random(5)
    pods = built_pods(rng, 150)
    for pod in pods[::3]:  # a third of them in the job that holds the captured standby slot
        pod["metadata"]["labels"][keys.JOB] = "bert-finetune"
        pod["metadata"]["labels"].pop(keys.STANDBY_FOR, None)
    monkeypatch.setattr("extender.wire._RECENT_POD.record_of_json", lambda text: pytest.fail("read in Python"))
    outcomes = set()
    for pod in pods:
        body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": captured["NodeNames"]})
        expected, _ = python.filter_then(parse_extender_args(body))
        answer, _ = compiled.filter_body_then(body)
        assert answer == expected
        outcomes.add(len(orjson.loads(answer)["NodeNames"]))
    assert len(outcomes) >= 3  # the pods' sizes matter: some pass everywhere, some nowhere, some in between
