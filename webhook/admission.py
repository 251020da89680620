"""AdmissionReview v1 on the wire: reading the request, writing the response.

Why strict here: the API server treats a reply it cannot read as a webhook failure, and with
`failurePolicy: Ignore` that means the pod is silently admitted unmutated. So the reply always echoes
`request.uid`, carries the apiVersion and kind it received, and a patch is base64 of an RFC 6902 array with
`patchType: JSONPatch`. A body that is not an AdmissionReview is answered HTTP 400 with the reason (the API
server logs it), never 500. Warnings are bounded to what the API server shows (120 characters each,
printable text; at most `MAX_WARNINGS` of them).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = ["Review", "ReviewError", "parse_review", "allow", "deny", "encode", "clean_warnings",
           "API_VERSIONS", "MAX_WARNING_LENGTH", "MAX_WARNINGS"]

API_VERSIONS: Final = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")  # same shape; v1 is configured
KIND: Final = "AdmissionReview"
MAX_WARNING_LENGTH: Final = 120
MAX_WARNINGS: Final = 10


class ReviewError(ValueError):
    """The body is not a readable AdmissionReview request; the message is the 400 reason."""


@dataclass(frozen=True, slots=True)
class Review:
    """The parts of an AdmissionReview request the webhook uses."""

    api_version: str
    kind: str
    uid: str
    group: str
    version: str
    resource_kind: str
    sub_resource: str
    operation: str
    namespace: str
    dry_run: bool
    object: Any

    @property
    def is_pod_create(self) -> bool:
        return (self.group == "" and self.version == "v1" and self.resource_kind == "Pod"
                and self.operation == "CREATE" and not self.sub_resource)


def _string(value: Any, where: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{where}: expected a string")
    return value


def parse_review(body: bytes) -> Review:
    """Decode and check an AdmissionReview request body; raise ReviewError naming what is wrong."""
    if not body:
        raise ReviewError("empty body: expected an AdmissionReview JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReviewError("body: expected an AdmissionReview JSON object")
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if kind != KIND or api_version not in API_VERSIONS:
        raise ReviewError(f"expected apiVersion admission.k8s.io/v1 kind AdmissionReview, got "
                          f"{str(api_version)[:60]!r} {str(kind)[:60]!r}")
    request = data.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request: expected an object")
    uid = _string(request.get("uid"), "request.uid")
    if not uid:
        raise ReviewError("request.uid: must not be empty")
    gvk = request.get("kind")
    if not isinstance(gvk, dict):
        raise ReviewError("request.kind: expected an object with group, version, kind")
    dry_run = request.get("dryRun", False)
    return Review(
        api_version=api_version,
        kind=kind,
        uid=uid,
        group=_string(gvk.get("group", ""), "request.kind.group"),
        version=_string(gvk.get("version"), "request.kind.version"),
        resource_kind=_string(gvk.get("kind"), "request.kind.kind"),
        sub_resource=_string(request.get("subResource"), "request.subResource", required=False),
        operation=_string(request.get("operation"), "request.operation"),
        namespace=_string(request.get("namespace"), "request.namespace", required=False),
        dry_run=dry_run is True,
        object=request.get("object"),
    )


def clean_warnings(warnings: Sequence[str]) -> list[str]:
    """Printable ASCII (they travel as HTTP Warning headers), de-duplicated, at most 120 characters each and
    `MAX_WARNINGS` in all."""
    cleaned: list[str] = []
    for warning in warnings:
        text = "".join(ch if " " <= ch <= "~" else "?" for ch in warning).strip()
        if len(text) > MAX_WARNING_LENGTH:
            text = text[: MAX_WARNING_LENGTH - 3] + "..."
        if text and text not in cleaned:
            cleaned.append(text)
    if len(cleaned) > MAX_WARNINGS:
        hidden = len(cleaned) - (MAX_WARNINGS - 1)
        cleaned = cleaned[: MAX_WARNINGS - 1] + [f"{hidden} more GuardGrid warnings not shown"]
    return cleaned


def _envelope(review: Review, response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": review.api_version, "kind": review.kind, "response": response}


def allow(review: Review, ops: Sequence[Mapping[str, Any]] = (), warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Admit, with a JSONPatch when there are operations (none at all when the pod is left as it is)."""
    response: dict[str, Any] = {"uid": review.uid, "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(list(ops))).decode("ascii")
    cleaned = clean_warnings(warnings)
    if cleaned:
        response["warnings"] = cleaned
    return _envelope(review, response)


def deny(review: Review, message: str, code: int = 400, reason: str = "BadRequest") -> dict[str, Any]:
    """Refuse: the API server shows `message` as 'admission webhook ... denied the request: <message>'."""
    return _envelope(review, {
        "uid": review.uid,
        "allowed": False,
        "status": {"status": "Failure", "code": code, "reason": reason, "message": message},
    })


def encode(answer: Mapping[str, Any]) -> bytes:
    return orjson.dumps(answer)
