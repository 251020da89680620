"""The pod being scheduled, read for its decision straight from the request's bytes (guardgrid/_pod_reader.c).

Why: in nearly every filter request kube-scheduler sends a pod the extender has not seen, and reading it
through orjson and `pod_from_dict` (a whole PodRecord from ~150 objects) was half of a filter's time in a
gunicorn worker. A decision needs only the four fields of `PodEssentials`; the compiled reader finds them in
one pass and builds a few strings. `read_pod_essentials` returns None whenever the module is not built or the
reader is not sure to read the pod exactly as `orjson.loads` + `pod_from_dict` would (see the C file): the
caller then reads it with those, which stay the reference (tests/test_pod_reader.py compares the two).
"""

from __future__ import annotations

from guardgrid import keys
from guardgrid.kernel import _kernel
from guardgrid.quantity import QuantityError, memory_bytes
from guardgrid.records import PodEssentials, container_amounts, job_from, memory_totals

__all__ = ["read_pod_essentials"]


def read_pod_essentials(text: bytes, offset: int) -> tuple[PodEssentials, int] | None:
    """The pod whose JSON value starts at `text[offset]`, and where that value (and the whitespace after it)
    ends; or None: read it with orjson and `pod_from_dict` instead (which also words what is wrong with it)."""
    if _kernel is None:
        return None
    found = _kernel.read_pod(text, offset, keys.JOB, keys.STANDBY_FOR)
    if found is None:
        return None
    end, uid, job_label, standby_for, job_annotation, owner_name, containers, inits, overhead = found
    try:
        app = [container_amounts(request, limit) for request, limit in containers]
        init_amounts = [(container_amounts(request, limit)[0], sidecar) for request, limit, sidecar in inits]
        request, limit = memory_totals(app, init_amounts, memory_bytes(overhead) if overhead is not None else 0)
    except QuantityError:  # pod_from_dict rejects it, with the reason
        return None
    return PodEssentials(uid, job_from(standby_for, job_label, job_annotation, owner_name), request, limit), end
