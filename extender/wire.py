"""kube-scheduler's extender wire format (k8s.io/kube-scheduler/extender/v1), parsed and built exactly.

Why strict here and nowhere else: this is the one place untrusted bytes enter; everything past it works on
typed values. Observed on a real v1.36 scheduler (tests/fixtures/README.md):
- requests carry `Pod`, `Nodes`, `NodeNames`, the unused one `null`; the pod has no kind/apiVersion;
- with nodeCacheCapable the scheduler reads `NodeNames` back, otherwise ONLY `Nodes` (answering names alone
  filtered every node out), and the Node objects returned replace its copies: return them unchanged;
- preemption brings `NodeNameToVictims` (whole pods) or `NodeNameToMetaVictims` (UIDs); we always answer
  `NodeNameToMetaVictims`;
- only HTTP 200 with an empty `Error` counts as success.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson

from extender.node_list import NodeItemNames, split_node_list
from guardgrid.placement import MAX_SCORE
from guardgrid.pod_reader import read_pod_essentials
from guardgrid.records import PodEssentials, PodRecord, RecordError, pod_from_dict

__all__ = [
    "ExtenderArgs",
    "NodeCacheLayout",
    "PreemptionArgs",
    "Victims",
    "WireError",
    "error_body",
    "filter_result",
    "node_cache_layout",
    "node_cache_request",
    "parse_extender_args",
    "parse_preemption_args",
    "preemption_result",
    "priority_list",
]


class WireError(ValueError):
    """A request the extender cannot read; `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ExtenderArgs:
    pod: PodRecord
    node_names: list[str]
    nodes: list[dict[str, Any]] | None  # full mode: the Node objects as sent, to be returned unchanged
    node_list_meta: dict[str, Any] | None
    pod_json: bytes = b""  # the Pod as orjson encodes it (as kube-scheduler does); b"" when not parsed from JSON
    node_json: list[bytes] | None = None  # full mode read raw (extender.node_list): each Node object's bytes

    @property
    def full_mode(self) -> bool:
        return self.nodes is not None or self.node_json is not None


@dataclass(frozen=True)
class Victims:
    node: str
    uids: list[str]
    pods: list[dict[str, Any]] | None  # whole victim pods (no node cache); None with meta victims
    pdb_violations: int


@dataclass(frozen=True)
class PreemptionArgs:
    pod: PodRecord
    candidates: list[Victims]


def _load(body: bytes) -> dict[str, Any]:
    if not body:
        raise WireError("empty request body: expected kube-scheduler ExtenderArgs JSON")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireError(f"request body must be a JSON object, got {type(data).__name__}")
    return data


class _RecentPod:
    """The last pod read, by its exact JSON, with its record.

    Why: kube-scheduler sends the same Pod to filter and then to prioritize (and again on a retried cycle);
    building its record costs ~40 us, re-encoding the parsed pod with orjson ~3 us. Keyed by the encoding,
    not by `==` on the dicts, which would take `1`, `1.0` and `true` for one another. A record is immutable,
    so sharing it between requests is safe; one entry, swapped whole, so threads need no lock.
    """

    entry: tuple[bytes, PodRecord] | None = None

    def record(self, pod: dict[str, Any]) -> tuple[PodRecord, bytes]:
        """(record, the pod's JSON as orjson encodes it)."""
        key = orjson.dumps(pod)
        entry = self.entry
        if entry is not None and entry[0] == key:
            return entry[1], key
        record = pod_from_dict(pod)  # raises RecordError: nothing is kept for a pod we cannot read
        self.entry = (key, record)
        return record, key

    def record_of_json(self, pod_json: bytes) -> PodRecord | None:
        """The record of a pod given as its JSON bytes (the same bytes as last time: the same record), or None
        when they are not a readable Pod (a caller then parses the whole body, which words the error)."""
        entry = self.entry
        if entry is not None and entry[0] == pod_json:
            return entry[1]
        try:
            pod = orjson.loads(pod_json)
            record = pod_from_dict(pod) if isinstance(pod, dict) else None
        except (orjson.JSONDecodeError, RecordError):
            return None
        if record is not None:
            self.entry = (pod_json, record)
        return record


_RECENT_POD = _RecentPod()
_NODE_CACHE_HEAD, _NODE_CACHE_NAMES, _NODE_CACHE_TAIL = b'{"Pod":', b',"Nodes":null,"NodeNames":[', b"]}"


class NodeCacheLayout(NamedTuple):
    """A node-cache request in kube-scheduler's own layout, `{"Pod":P,"Nodes":null,"NodeNames":[...]}`, cut
    into its parts without decoding the names (the compiled filter reads them from the bytes). A tuple: one
    is made per filter request."""

    pod: PodEssentials | PodRecord  # what the decision reads of P
    pod_json: bytes  # P, exactly as sent
    names_start: int  # body[names_start:names_end] is the NodeNames array, brackets included
    names_end: int


def node_cache_layout(body: bytes) -> NodeCacheLayout | None:
    """The body's parts, or None when it is laid out otherwise or its pod cannot be read (parse it whole).

    Exact: P must be one JSON value that `pod_from_dict` reads (the compiled reader says so, reading only
    the pod's essentials; else orjson and pod_from_dict do, or it is the very bytes of a pod read before),
    and the compiled filter accepts the names part only as a plain JSON array of strings; then the body is
    that object and nothing else. The last separator is the real one: a names array of plain strings cannot
    contain it.
    """
    if not (body.startswith(_NODE_CACHE_HEAD) and body.endswith(_NODE_CACHE_TAIL)):
        return None
    pod: PodEssentials | PodRecord | None
    read = read_pod_essentials(body, len(_NODE_CACHE_HEAD))
    if read is not None:
        pod, split = read
        if not body.startswith(_NODE_CACHE_NAMES, split):
            return None
    else:
        split = body.rfind(_NODE_CACHE_NAMES)
        if split < 0:
            return None
        pod = _RECENT_POD.record_of_json(body[len(_NODE_CACHE_HEAD):split])
        if pod is None:
            return None
    return NodeCacheLayout(pod, body[len(_NODE_CACHE_HEAD):split], split + len(_NODE_CACHE_NAMES) - 1,
                           len(body) - 1)


def _pod(data: Mapping[str, Any]) -> tuple[PodRecord, bytes]:
    pod = data.get("Pod")
    if pod is None:
        raise WireError("missing 'Pod': kube-scheduler always sends the pod being scheduled")
    if not isinstance(pod, dict):
        raise WireError(f"'Pod' must be an object, got {type(pod).__name__}")
    try:
        return _RECENT_POD.record(pod)
    except RecordError as exc:
        raise WireError(f"'Pod' cannot be read: {exc}") from None


_NODE_ITEM_NAMES = NodeItemNames()


def parse_extender_args(body: bytes) -> ExtenderArgs:
    """Filter and prioritize requests."""
    raw = split_node_list(body)
    if raw is not None:  # full-NodeList mode in the scheduler's layout: items by their bytes
        names = _NODE_ITEM_NAMES.names(raw.items)
        if names is not None:
            pod, pod_json = _pod(raw.shell)
            meta = raw.shell["Nodes"].get("metadata")
            return ExtenderArgs(pod, names, None, meta if isinstance(meta, dict) else {}, pod_json, raw.items)
    data = _load(body)
    pod, pod_json = _pod(data)
    names = data.get("NodeNames")
    nodes = data.get("Nodes")
    if names is not None:
        if not isinstance(names, list) or not set(map(type, names)) <= {str}:  # C-speed check over ~500
            raise WireError("'NodeNames' must be a list of strings")
        return ExtenderArgs(pod, names, None, None, pod_json)
    if nodes is not None:
        if not isinstance(nodes, dict) or not isinstance(nodes.get("items"), list):
            raise WireError("'Nodes' must be a NodeList object with 'items'")
        items = nodes["items"]
        node_names = []
        for i, node in enumerate(items):
            name = node.get("metadata", {}).get("name") if isinstance(node, dict) else None
            if not isinstance(name, str) or not name:
                raise WireError(f"'Nodes.items[{i}]' has no metadata.name")
            node_names.append(name)
        meta = nodes.get("metadata")
        return ExtenderArgs(pod, node_names, items, meta if isinstance(meta, dict) else {}, pod_json)
    raise WireError("neither 'NodeNames' nor 'Nodes' given: nothing to filter")


def parse_preemption_args(body: bytes) -> PreemptionArgs:
    data = _load(body)
    pod, _ = _pod(data)
    meta = data.get("NodeNameToMetaVictims")
    full = data.get("NodeNameToVictims")
    source, is_full = (full, True) if full is not None else (meta, False)
    if source is None:
        return PreemptionArgs(pod, [])
    if not isinstance(source, dict):
        raise WireError("'NodeNameToVictims'/'NodeNameToMetaVictims' must be an object keyed by node name")
    candidates = []
    for node, victims in source.items():
        if not isinstance(victims, dict):
            raise WireError(f"victims of node {node!r} must be an object with 'Pods'")
        pods = victims.get("Pods") or []
        if not isinstance(pods, list) or not all(isinstance(p, dict) for p in pods):
            raise WireError(f"'Pods' of node {node!r} must be a list of objects")
        if is_full:
            uids = [str((p.get("metadata") or {}).get("uid", "")) for p in pods]
        else:
            uids = [str(p.get("UID", "")) for p in pods]
        violations = victims.get("NumPDBViolations", 0)
        if not isinstance(violations, int) or isinstance(violations, bool):
            raise WireError(f"'NumPDBViolations' of node {node!r} must be an integer")
        candidates.append(Victims(node, uids, pods if is_full else None, violations))
    return PreemptionArgs(pod, candidates)


def node_cache_request(pod_json: bytes, names: list[str] | bytes) -> bytes:
    """The ExtenderArgs body kube-scheduler sends with nodeCacheCapable, as it encodes it: Go's field order,
    the unused `Nodes` null, no spaces (the captured bodies re-encode to themselves with orjson). `names` as
    bytes are the names already encoded so (the compiled filter writes them)."""
    names_json = names if isinstance(names, bytes) else orjson.dumps(names)
    return b'{"Pod":' + pod_json + b',"Nodes":null,"NodeNames":' + names_json + b"}"


def filter_result(args: ExtenderArgs, passed: list[str], failed: Mapping[str, str],
                  unresolvable: Mapping[str, str] | None = None, error: str = "") -> bytes:
    """ExtenderFilterResult in the mode the scheduler asked in."""
    body: dict[str, Any] = {"Nodes": None, "NodeNames": None, "FailedNodes": dict(failed),
                            "FailedAndUnresolvableNodes": dict(unresolvable or {}), "Error": error}
    if args.full_mode:
        keep = set(passed)
        if args.node_json is not None:  # the passing objects' own bytes: unchanged, and no re-encoding
            items = b",".join([item for item, name in zip(args.node_json, args.node_names) if name in keep])
            body["Nodes"] = orjson.Fragment(b'{"metadata":' + orjson.dumps(args.node_list_meta or {})
                                            + b',"items":[' + items + b"]}")
        else:
            assert args.nodes is not None
            body["Nodes"] = {"metadata": args.node_list_meta or {},
                             "items": [n for n, name in zip(args.nodes, args.node_names) if name in keep]}
    else:
        body["NodeNames"] = passed
    return orjson.dumps(body)


_HOST_OPEN = '[{"Host":"'
# Keyed by score: one outside 0..10 is a KeyError, which sends the answer through the encoder.
_SCORE_THEN_HOST = {score: f'","Score":{score}}},{{"Host":"' for score in range(MAX_SCORE + 1)}
_SCORE_LAST = {score: f'","Score":{score}}}]' for score in range(MAX_SCORE + 1)}


def priority_list(names: list[str], scores: list[int]) -> bytes:
    """HostPriorityList: `[{"Host": name, "Score": score}, ...]`, byte for byte what orjson would write.

    Why not orjson over 500 dicts: building the dicts costs ~60 us of a ~0.3 ms budget. Node names are DNS
    subdomains, so the entries are spliced as text; a name JSON would need to escape, or a score outside
    0..10, takes the orjson path.
    """
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} names but {len(scores)} scores")
    if not names:
        return b"[]"
    plain = "".join(names)
    # Splice only what a JSON encoder would copy verbatim: ASCII (isascii is O(1) on str) with no quote,
    # backslash or control character (a vector test over the bytes: isprintable() cost ~23 us per 450
    # names); scores through a table keyed 0..10, so a score outside that range falls to the encoder.
    if (plain.isascii() and '"' not in plain and "\\" not in plain
            and (not plain or np.minimum.reduce(np.frombuffer(plain.encode("ascii"), dtype=np.uint8)) >= 0x20)):
        try:
            parts: list[str] = [""] * (2 * len(names))
            parts[0::2] = names
            parts[1::2] = map(_SCORE_THEN_HOST.__getitem__, scores)
            parts[-1] = _SCORE_LAST[scores[-1]]
            return (_HOST_OPEN + "".join(parts)).encode()
        except KeyError:
            pass
    return orjson.dumps([{"Host": name, "Score": score} for name, score in zip(names, scores)])


def preemption_result(kept: list[Victims]) -> bytes:
    return orjson.dumps({"NodeNameToMetaVictims": {
        v.node: {"Pods": [{"UID": uid} for uid in v.uids], "NumPDBViolations": v.pdb_violations} for v in kept}})


def error_body(message: str) -> bytes:
    """The body of a non-200 answer: `Error` is what the scheduler logs, `error` for humans and curl."""
    return orjson.dumps({"Error": message, "error": message})
