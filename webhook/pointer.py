"""RFC 6901 JSON Pointers and RFC 6902 operations, built right once.

Why a module for three lines: label keys like `guardgrid.io/job` contain `/`, which must be written `~1`
(and `~` as `~0`, escaped first). A pointer built by string concatenation elsewhere would address
`/metadata/labels/guardgrid.io` + `/job` and the API server would reject the whole patch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["escape", "pointer", "add", "replace"]


def escape(token: str | int) -> str:
    """One reference token: `~` -> `~0`, then `/` -> `~1` (order matters, RFC 6901 section 3)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """`pointer("metadata", "labels", "guardgrid.io/job")` -> `/metadata/labels/guardgrid.io~1job`."""
    return "".join("/" + (token if token == "-" else escape(token)) for token in tokens)


def add(path: str, value: Any) -> dict[str, Any]:
    return {"op": "add", "path": path, "value": value}


def replace(path: str, value: Any) -> dict[str, Any]:
    return {"op": "replace", "path": path, "value": value}
