"""The real `KubeAPI`: the official `kubernetes` client, with raw JSON decoded once into slim records.

Why this shape:
- Every call asks the client for the raw response (`_preload_content=False`) and decodes the bytes with orjson
  straight into `NodeRecord`/`PodRecord`. The client's own deserialisation builds ~100 pydantic objects per
  pod; at cluster scale that is gigabytes and seconds per relist.
- Request bodies (pods, evictions, events, leases) go through the same `ApiClient` (auth, TLS, proxy,
  token refresh all come from it) but as plain dicts: the generated typed methods would coerce a dict into
  a `V1Pod`, reject any field newer than the client's models, and cost a validation pass per call.
- Errors are mapped once, here, onto `KubeAPIError(status, reason)`; 410 Gone/Expired becomes
  `ResourceExpired` so the informer knows to relist; no answer at all is status 0.
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import orjson
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from guardgrid.kubeapi.base import (EvictionOutcome, EvictionResult, Kind, KubeAPI, KubeAPIError, ListResult,
                                    ResourceExpired, WatchEvent)
from guardgrid.records import PodRecord, RecordError, node_from_dict, parse_time, pod_from_dict

__all__ = ["RealKubeAPI"]

log = logging.getLogger(__name__)

COMPONENT = "guardgrid"
USER_AGENT = "guardgrid/0.1.0"
_DECODERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {"nodes": node_from_dict, "pods": pod_from_dict}
_WATCH_READ_GRACE_SECONDS = 30  # the server closes a watch at timeoutSeconds; wait this much longer for it
_REASON_LIMIT = 128  # core/v1 Event validation limits (k8s.io/kubernetes pkg/apis/core/validation/events.go)
_MESSAGE_LIMIT = 1024
_NAME_LIMIT = 253


def _status_of(body: bytes | str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The metav1.Status in an error body, or {} when the body is not one (a proxy's HTML page, say)."""
    if isinstance(body, Mapping):
        return body
    if not body:
        return {}
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _error(what: str, status: int, body: bytes | str | Mapping[str, Any] | None, fallback: str = "") -> KubeAPIError:
    """Turn an HTTP status (or an in-stream ERROR event) into our error; 410 means relist."""
    detail = _status_of(body)
    reason = str(detail.get("reason") or fallback or "")
    message = str(detail.get("message") or reason or f"HTTP {status}")
    if status == 410:
        return ResourceExpired(f"{what}: {message}")
    return KubeAPIError(f"{what}: HTTP {status} {reason}: {message}", status=status, reason=reason)


@contextmanager
def _mapped_errors(what: str) -> Iterator[None]:
    """Client and transport exceptions become `KubeAPIError`; nothing else escapes the adapter."""
    try:
        yield
    except ApiException as exc:
        raise _error(what, int(exc.status or 0), exc.body, str(exc.reason or "")) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeAPIError(f"{what}: no answer from the API server: {exc}", status=0,
                           reason=type(exc).__name__) from exc


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Watch events are one JSON object per line, but HTTP chunks do not respect lines: reassemble them.
    The consumed prefix is dropped once per chunk, so a chunk carrying many events costs linear time."""
    buffer = bytearray()
    for chunk in chunks:
        searched_from = len(buffer)
        buffer += chunk
        begin = 0
        newline = buffer.find(b"\n", searched_from)
        while newline >= 0:
            line = bytes(buffer[begin:newline])
            if line.strip():
                yield line
            begin = newline + 1
            newline = buffer.find(b"\n", begin)
        if begin:
            del buffer[:begin]
    if bytes(buffer).strip():
        yield bytes(buffer)


def _micro_time(epoch: float) -> str:
    """metav1.MicroTime (RFC 3339 with microseconds), as eventTime and lease times require."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RealKubeAPI(KubeAPI):
    """`KubeAPI` over a `kubernetes.client.ApiClient`; thread-safe (urllib3's pool is)."""

    def __init__(self, api_client: k8s.ApiClient, page_size: int = 500, request_timeout: float = 30.0,
                 connect_timeout: float = 10.0, reporting_instance: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        """`reporting_instance` names this replica on Events (the pod name; defaults to the host name)."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self._client = api_client
        self._core = k8s.CoreV1Api(api_client)
        self._coordination = k8s.CoordinationV1Api(api_client)
        self._page_size = page_size
        self._timeout = (connect_timeout, request_timeout)
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._instance = (reporting_instance or socket.gethostname())[:128]
        self._watch_lock = threading.Lock()
        self._open_watches: set[Any] = set()  # urllib3 responses of running watches, for interrupt_watches()
        self._interrupts = 0

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, **kwargs: Any) -> RealKubeAPI:
        """In-cluster service account when running in a pod, else the current context of `kubeconfig`
        (default: $KUBECONFIG or ~/.kube/config). `kwargs` go to the constructor."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            try:
                # persist_config=False: never write refreshed tokens back (read-only root filesystem).
                k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                                            persist_config=False)
            except (ConfigException, OSError) as exc:
                raise KubeAPIError(f"no Kubernetes configuration: not in a cluster and no kubeconfig ({exc})",
                                   status=0, reason="NoConfiguration") from exc
        api_client = k8s.ApiClient(configuration)
        api_client.user_agent = USER_AGENT
        return cls(api_client, **kwargs)

    def close(self) -> None:
        """Drop pooled connections (tests and shutdown)."""
        self._client.close()

    # --- transport --------------------------------------------------------------------------------------
    def _list_call(self, kind: Kind) -> Callable[..., Any]:
        if kind == "nodes":
            return self._core.list_node
        if kind == "pods":
            return self._core.list_pod_for_all_namespaces
        raise ValueError(f"unsupported kind {kind!r} (expected 'nodes' or 'pods')")

    def _get(self, what: str, call: Callable[..., Any], **params: Any) -> Mapping[str, Any]:
        """A typed GET asked for raw bytes (no body to validate), decoded once."""
        with _mapped_errors(what):
            response = call(**params, _preload_content=False, _request_timeout=self._timeout)
            try:
                data = response.data
            finally:
                response.release_conn()
        return self._decode_body(what, response.status, data)

    def _send(self, what: str, method: str, path: str, body: Mapping[str, Any] | None = None,
              query: list[tuple[str, Any]] | None = None) -> tuple[int, Mapping[str, Any]]:
        """A write with a plain-dict body through the client's own machinery; the caller judges the status."""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        request = self._client.param_serialize(method=method, resource_path=path, query_params=query,
                                               header_params=headers, body=dict(body) if body is not None else None,
                                               auth_settings=["BearerToken"])
        with _mapped_errors(what):
            response = self._client.call_api(*request, _request_timeout=self._timeout).response
            try:
                data = response.data
            finally:
                response.release_conn()
        if not 200 <= response.status <= 299:
            return response.status, _status_of(data)
        return response.status, self._decode_body(what, response.status, data)

    @staticmethod
    def _decode_body(what: str, status: int, data: bytes) -> Mapping[str, Any]:
        try:
            decoded = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError as exc:
            raise KubeAPIError(f"{what}: the API server's answer is not JSON: {exc}", status=status,
                               reason="InvalidBody") from exc
        if not isinstance(decoded, dict):
            raise KubeAPIError(f"{what}: expected a JSON object, got {type(decoded).__name__}", status=status,
                               reason="InvalidBody")
        return decoded

    @staticmethod
    def _decode_items(kind: str, objects: Iterable[Any], what: str) -> list[Any]:
        """Records of the objects we can read; an unreadable one is logged and skipped so that a single odd
        object cannot keep the whole cache from syncing (the API server already validated it)."""
        decode = _DECODERS[kind]
        records = []
        for obj in objects:
            try:
                records.append(decode(obj))
            except RecordError as exc:
                log.warning("%s: skipping an object GuardGrid cannot read: %s", what, exc)
        return records

    # --- list and watch ---------------------------------------------------------------------------------
    def list(self, kind: Kind) -> ListResult:
        """All objects, `page_size` at a time; a continue token that expired mid-list restarts it once."""
        try:
            return self._list_pages(kind)
        except ResourceExpired as exc:
            log.info("list %s: continue token expired (%s); listing again from the start", kind, exc)
            return self._list_pages(kind)

    def _list_pages(self, kind: Kind) -> ListResult:
        call = self._list_call(kind)
        items: list[Any] = []
        token: str | None = None
        while True:
            what = f"list {kind}" + (" (continued)" if token else "")
            page = self._get(what, call, limit=self._page_size, _continue=token)
            items.extend(self._decode_items(kind, page.get("items") or (), what))
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                return ListResult(items, str(meta.get("resourceVersion") or ""))

    def watch(self, kind: Kind, resource_version: str, timeout_seconds: float) -> Iterator[WatchEvent]:
        """Stream changes after `resource_version` with bookmarks; the connection is released however the
        generator ends (exhausted, closed early, raising, or `interrupt_watches()`)."""
        call = self._list_call(kind)
        what = f"watch {kind} from {resource_version or 'now'}"
        server_timeout = max(1, math.ceil(timeout_seconds))
        with self._watch_lock:
            generation = self._interrupts
        with _mapped_errors(what):
            response = call(watch=True, allow_watch_bookmarks=True, resource_version=resource_version or None,
                            timeout_seconds=server_timeout, _preload_content=False,
                            _request_timeout=(self._connect_timeout, server_timeout + _WATCH_READ_GRACE_SECONDS))
        with self._watch_lock:
            self._open_watches.add(response)
            interrupted = self._interrupts != generation  # interrupt_watches() ran while we were connecting
        try:
            if interrupted:
                return
            with _mapped_errors(what):
                for line in _lines(response.stream(amt=None, decode_content=True)):
                    event = self._watch_event(kind, line, what)
                    if event is not None:
                        yield event
        except KubeAPIError:
            with self._watch_lock:
                if self._interrupts != generation:  # the cut we asked for, not a failure
                    return
            raise
        finally:
            with self._watch_lock:
                self._open_watches.discard(response)
            response.close()
            response.release_conn()

    def interrupt_watches(self) -> None:
        """End every open watch now (shutdown): cut the sockets their reads block on."""
        with self._watch_lock:
            self._interrupts += 1
            responses = list(self._open_watches)
        for response in responses:
            try:
                response.shutdown()
            except (ValueError, RuntimeError, OSError):  # already finished or released: nothing to cut
                pass

    def _watch_event(self, kind: Kind, line: bytes, what: str) -> WatchEvent | None:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise KubeAPIError(f"{what}: undecodable watch event: {exc}", status=0, reason="InvalidWatchEvent") from exc
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            raise KubeAPIError(f"{what}: watch event without an object", status=0, reason="InvalidWatchEvent")
        event_type, obj = data.get("type"), data["object"]
        if event_type == "ERROR":
            code = obj.get("code")
            raise _error(what, code if isinstance(code, int) else 0, obj)
        resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if event_type == "BOOKMARK":
            return WatchEvent("BOOKMARK", None, resource_version)
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: ignoring a watch event of unknown type %r", what, event_type)
            return None
        records = self._decode_items(kind, (obj,), what)
        return WatchEvent(event_type, records[0], resource_version) if records else None

    # --- pods ---------------------------------------------------------------------------------------------
    def create_pod(self, manifest: Mapping[str, Any]) -> PodRecord:
        body = {"apiVersion": "v1", "kind": "Pod", **manifest}
        meta = body.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        what = f"create pod {namespace}/{meta.get('name') or meta.get('generateName') or '?'}"
        status, answer = self._send(what, "POST", f"/api/v1/namespaces/{quote(namespace, safe='')}/pods", body)
        if not 200 <= status <= 299:
            raise _error(what, status, answer)
        try:
            return pod_from_dict(answer)
        except RecordError as exc:
            raise KubeAPIError(f"{what}: the created pod cannot be read: {exc}", status=status,
                               reason="InvalidBody") from exc

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int = 0) -> bool:
        what = f"delete pod {namespace}/{name}"
        status, answer = self._send(what, "DELETE", self._pod_path(namespace, name),
                                    query=[("gracePeriodSeconds", int(grace_period_seconds))])
        if status == 404:
            return False
        if not 200 <= status <= 299:
            raise _error(what, status, answer)
        return True

    def evict_pod(self, namespace: str, name: str) -> EvictionResult:
        """POST the policy/v1 Eviction subresource so PodDisruptionBudgets are honoured by the server."""
        what = f"evict pod {namespace}/{name}"
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        status, answer = self._send(what, "POST", self._pod_path(namespace, name) + "/eviction", body)
        message = str(answer.get("message") or "")
        if 200 <= status <= 299:
            return EvictionResult(EvictionOutcome.EVICTED, message)
        if status == 429:  # a PDB (the cause says which) or API priority-and-fairness: retry later either way
            causes = [str(c.get("message")) for c in (answer.get("details") or {}).get("causes") or ()
                      if isinstance(c, Mapping) and c.get("message")]
            return EvictionResult(EvictionOutcome.BLOCKED, f"{message} ({'; '.join(causes)})" if causes else message)
        if status == 404:
            return EvictionResult(EvictionOutcome.NOT_FOUND, message)
        raise _error(what, status, answer)

    @staticmethod
    def _pod_path(namespace: str, name: str) -> str:
        return f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"

    # --- events -------------------------------------------------------------------------------------------
    def create_event(self, pod: PodRecord, reason: str, message: str, event_type: str = "Normal") -> None:
        """A core/v1 Event with eventTime set, which makes the server require reportingComponent,
        reportingInstance and action; firstTimestamp/lastTimestamp keep older `kubectl describe` readable."""
        now = self._clock()
        involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name}
        if pod.uid:
            involved["uid"] = pod.uid
        if pod.resource_version:
            involved["resourceVersion"] = pod.resource_version
        suffix = "." + secrets.token_hex(8)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": pod.name[:_NAME_LIMIT - len(suffix)] + suffix, "namespace": pod.namespace},
            "involvedObject": involved,
            "reason": reason[:_REASON_LIMIT], "action": reason[:_REASON_LIMIT],
            "message": message[:_MESSAGE_LIMIT], "type": event_type,
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": self._instance,
            "firstTimestamp": _rfc3339(now), "lastTimestamp": _rfc3339(now), "eventTime": _micro_time(now),
            "count": 1,
        }
        what = f"create event {reason} on pod {pod.namespace}/{pod.name}"
        status, answer = self._send(what, "POST", f"/api/v1/namespaces/{quote(pod.namespace, safe='')}/events", body)
        if not 200 <= status <= 299:
            raise _error(what, status, answer)

    # --- leases -------------------------------------------------------------------------------------------
    def acquire_lease(self, namespace: str, name: str, identity: str, duration_seconds: int) -> bool:
        """Create, renew or take over an expired Lease; the resourceVersion on replace makes two replicas
        racing for the same expired lease safe: the loser gets 409 and answers False."""
        what = f"lease {namespace}/{name}"
        path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases/{quote(name, safe='')}"
        now = self._clock()
        try:
            lease = self._get(what, self._coordination.read_namespaced_lease, name=name, namespace=namespace)
        except KubeAPIError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"holderIdentity": identity, "leaseDurationSeconds": int(duration_seconds),
                             "acquireTime": _micro_time(now), "renewTime": _micro_time(now), "leaseTransitions": 0}}
            status, answer = self._send(what, "POST", path.rsplit("/", 1)[0], body)
            return self._lease_outcome(what, status, answer)
        spec = dict(lease.get("spec") or {})
        holder = str(spec.get("holderIdentity") or "")
        renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
        duration = spec.get("leaseDurationSeconds")
        expired = renewed is None or not isinstance(duration, int) or renewed + duration < now
        if holder and holder != identity and not expired:
            return False
        if holder != identity:
            spec["acquireTime"] = _micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=identity, leaseDurationSeconds=int(duration_seconds), renewTime=_micro_time(now))
        body = {**lease, "spec": spec}  # keeps metadata.resourceVersion: the server rejects a stale copy
        status, answer = self._send(what, "PUT", path, body)
        return self._lease_outcome(what, status, answer)

    @staticmethod
    def _lease_outcome(what: str, status: int, answer: Mapping[str, Any]) -> bool:
        if 200 <= status <= 299:
            return True
        if status == 409:  # someone else created or updated it first
            return False
        raise _error(what, status, answer)
