"""One AdmissionReview request body in, one answer out: the webhook without HTTP.

Why separate from the Flask app: the contract tests, the property tests and the benchmark's sanity check all
go through exactly this path, and the app stays a thin shell (status codes, metrics, body limits).

Scope: only Pod CREATE (no subresource) is mutated. Every other kind or operation is allowed untouched, as
are pods in kube-system and in GuardGrid's own namespace (the webhook configuration already excludes them;
this is the second lock). `dryRun` requests are answered exactly like real ones: the webhook has no side
effects, so the preview a user sees is the pod they would get.

Fail open: an unexpected exception inside the mutation is logged and the pod is admitted unmutated with a
warning (the worker never dies, the API server never waits on a crash).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from guardgrid.config import Settings
from webhook.admission import ReviewError, allow, deny, encode, parse_review
from webhook.mutation import AdviceLookup, Denial, PodShapeError, mutate_pod

__all__ = ["Answer", "answer_review", "INTERNAL_ERROR_WARNING"]

log = logging.getLogger(__name__)
PROTECTED_NAMESPACES: Final = frozenset({"kube-system"})
INTERNAL_ERROR_WARNING: Final = "GuardGrid webhook internal error: pod admitted without GuardGrid changes"


@dataclass(frozen=True, slots=True)
class Answer:
    """HTTP status and body to send, and the metric result (mutated, unchanged, skipped, denied, error)."""

    status: int
    body: bytes
    result: str
    content_type: str = "application/json"


def _bad_request(reason: str) -> Answer:
    return Answer(400, (reason + "\n").encode(), "error", "text/plain; charset=utf-8")


def answer_review(body: bytes, settings: Settings, advice: AdviceLookup) -> Answer:
    """Parse, decide, encode. Never raises."""
    try:
        review = parse_review(body)
    except ReviewError as exc:
        return _bad_request(f"malformed AdmissionReview: {exc}")
    if not review.is_pod_create:
        return Answer(200, encode(allow(review)), "skipped")
    if review.namespace in PROTECTED_NAMESPACES or review.namespace == settings.namespace:
        return Answer(200, encode(allow(review)), "skipped")
    try:
        decision: Any = mutate_pod(review.object, settings, advice)
    except PodShapeError as exc:
        return _bad_request(f"malformed AdmissionReview: request.object: {exc}")
    except Exception:  # noqa: BLE001 - fail open: a bug must never block or crash admission
        log.exception("mutation failed for request %s; admitting unmutated", review.uid)
        return Answer(200, encode(allow(review, warnings=[INTERNAL_ERROR_WARNING])), "error")
    if isinstance(decision, Denial):
        log.info("denied request %s in %s: %s", review.uid, review.namespace, decision.message)
        return Answer(200, encode(deny(review, decision.message)), "denied")
    return Answer(200, encode(allow(review, decision.ops, decision.warnings)), decision.result)
