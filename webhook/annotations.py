"""Validation of the `guardgrid.io/` annotations users write on training pods.

Why deny instead of guessing: an annotation value that is not an image reference, a relative path or a
non-number would otherwise surface much later (an init container in ImagePullBackOff, a staging copy of the
wrong directory, a predictor that silently ignores a checkpoint cost). Denying at admission puts the
annotation's name and value in front of the person who wrote it. Unknown `guardgrid.io/` keys are most
likely typos (`guardgrid.io/dataset-imgae`), so they are admitted with a warning naming the key and, when
one is close, the known key that was probably meant.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from guardgrid import keys

__all__ = ["AnnotationCheck", "check_annotations", "is_image_reference", "is_label_value", "inject_choice",
           "InjectChoice", "shown"]

# --- image references (the grammar of the container image reference, written out piece by piece) -------
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_NAME = rf"(?:{_DOMAIN}/)?{_REMOTE_NAME}"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?")
_MAX_NAME_LENGTH: Final = 255

# Label values: what Kubernetes accepts in metadata.labels (the job annotation becomes a label).
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_MAX_LABEL_VALUE: Final = 63

_IMAGE_KEYS: Final = (keys.DEPS_IMAGE, keys.DATASET_IMAGE, keys.CHECKPOINT_IMAGE)
_PATH_KEYS: Final = {keys.DEPS_IMAGE_PATH: keys.DEPS_IMAGE, keys.DATASET_IMAGE_PATH: keys.DATASET_IMAGE,
                     keys.CHECKPOINT_IMAGE_PATH: keys.CHECKPOINT_IMAGE}
_BOOLEAN_KEYS: Final = (keys.MIGRATABLE, keys.MANAGED)
_LABEL_VALUE_KEYS: Final = (keys.JOB, keys.STANDBY_FOR)
_INJECT_ON: Final = frozenset({"true", "enabled"})
_INJECT_OFF: Final = frozenset({"false", "disabled"})
_SHOWN_VALUE_LENGTH: Final = 80


def shown(value: str, limit: int = _SHOWN_VALUE_LENGTH) -> str:
    """A user-supplied value quoted for a message: bounded, so a 1 MB annotation cannot flood the reply."""
    text = value if len(value) <= limit else value[: limit - 3] + "..."
    return repr(text)


def is_image_reference(value: str) -> bool:
    """True for `[registry[:port]/]path[:tag][@digest]` as container runtimes parse it (lowercase path)."""
    match = _REFERENCE.fullmatch(value)
    return match is not None and len(match.group("name")) <= _MAX_NAME_LENGTH


def is_label_value(value: str) -> bool:
    """True when `value` may be stored as a Kubernetes label value (63 characters, alphanumeric ends)."""
    return len(value) <= _MAX_LABEL_VALUE and _LABEL_VALUE.fullmatch(value) is not None


def _is_absolute_path(value: str) -> bool:
    """An absolute, printable path without `..` components: the source directory inside a data image."""
    if not value.startswith("/") or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return False
    return ".." not in value.split("/")


def _is_seconds(value: str) -> bool:
    try:
        number = float(value.strip())
    except ValueError:
        return False
    return math.isfinite(number) and number > 0


@dataclass(frozen=True, slots=True)
class InjectChoice:
    """What `guardgrid.io/inject` says: opt in (default), opt out, or an unreadable value (`error`)."""

    enabled: bool
    error: str = ""


def inject_choice(annotations: Mapping[str, str]) -> InjectChoice:
    """Read the per-pod opt-out; absent means the namespace's opt-in applies."""
    raw = annotations.get(keys.INJECT)
    if raw is None:
        return InjectChoice(True)
    lowered = raw.strip().lower()
    if lowered in _INJECT_ON:
        return InjectChoice(True)
    if lowered in _INJECT_OFF:
        return InjectChoice(False)
    return InjectChoice(True, f"annotation {keys.INJECT}={shown(raw)}: expected \"false\" (opt out) or \"true\"")


@dataclass(frozen=True, slots=True)
class AnnotationCheck:
    """Errors deny the pod (each names the annotation and its value); warnings are admitted and shown."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def _error_for(key: str, value: str) -> str | None:
    if key in _IMAGE_KEYS:
        if not is_image_reference(value):
            return f"annotation {key}={shown(value)}: not an image reference (e.g. registry.example.com/data:1.0)"
    elif key in _PATH_KEYS:
        if not _is_absolute_path(value):
            return f"annotation {key}={shown(value)}: expected an absolute path inside the image, without '..'"
    elif key == keys.CHECKPOINT_COST_SECONDS:
        if not _is_seconds(value):
            return f"annotation {key}={shown(value)}: expected a positive number of seconds"
    elif key in _BOOLEAN_KEYS:
        if value.strip().lower() not in ("true", "false"):
            return f"annotation {key}={shown(value)}: expected \"true\" or \"false\""
    elif key in _LABEL_VALUE_KEYS:
        if not value or not is_label_value(value):
            return (f"annotation {key}={shown(value)}: expected a job name usable as a label value "
                    "(at most 63 characters: letters, digits, '-', '_', '.')")
    elif key == keys.INJECT:
        choice = inject_choice({key: value})
        return choice.error or None
    return None


def check_annotations(annotations: Mapping[str, str]) -> AnnotationCheck:
    """Validate every `guardgrid.io/` annotation: bad values of known keys are errors, unknown keys warnings."""
    errors: list[str] = []
    warnings: list[str] = []
    for key in sorted(annotations):
        if not key.startswith(keys.PREFIX):
            continue
        value = annotations[key]
        if key not in keys.KNOWN_KEYS:
            close = difflib.get_close_matches(key, sorted(keys.KNOWN_KEYS), n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"unknown annotation {shown(key, 60)} ignored{hint}")
            continue
        error = _error_for(key, value)
        if error:
            errors.append(error)
    for path_key, image_key in _PATH_KEYS.items():
        if path_key in annotations and image_key not in annotations:
            warnings.append(f"annotation {path_key} has no effect without {image_key}")
    return AnnotationCheck(tuple(errors), tuple(warnings))
