"""Objects read back as typed records: one error for an object that exists but is not what its
reader expects, naming the store and the key.

``get_json`` fails clearly on bytes that are not JSON; one level up, a reader still meets JSON of
the wrong shape (a list where an object belongs, a missing or mistyped field) and numbers that no
record holds (Python's JSON reader accepts NaN and Infinity). ``read_object`` / ``parse_object``
validate the parsed value against the reader's pydantic model and refuse non-finite floats, so
a corrupt record is one :class:`CorruptObject` at the read, never a KeyError or TypeError deep
inside a step, and never garbage used silently (a NaN accuracy promoted).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, TypeVar

from pydantic import BaseModel, ValidationError

from .base import ObjectStore
from .errors import StorageError


class CorruptObject(StorageError):
    """An object exists but is not what its reader expects (not JSON, the wrong shape, a field
    missing or of the wrong type, a number that is NaN/inf or out of range). A StorageError, so the
    CLI prints it as one line and the servers answer 503 naming the key until the object is whole."""


M = TypeVar("M", bound=BaseModel)


def describe_errors(exc: ValidationError, limit: int = 3) -> str:
    """``field.path: message; ...`` for the first ``limit`` errors of a pydantic validation."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err.get("loc") or ()) or "(top level)"
        parts.append(f"{where}: {err.get('msg')}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_object(store: ObjectStore, key: str, model: type[M], raw: Any) -> M:
    """``raw`` (as read from ``key``) validated as ``model``; CorruptObject naming the key otherwise.
    Floats must be finite: Python's JSON reader accepts NaN and Infinity, which no record holds."""
    return parse_value(f"{store.url}: object {key!r}", model, raw)


def parse_value(where: str, model: type[M], raw: Any) -> M:
    """``raw`` validated as ``model``; CorruptObject starting with ``where`` (what was read: a store
    object, or a local file such as a controller's status.json or the sidecar's checkpoint)
    otherwise. Floats must be finite, as in :func:`parse_object`."""
    bad = _non_finite(raw)
    if bad is not None:
        raise CorruptObject(f"{where} is not a valid {model.__name__}: {bad or '(top level)'}: not a finite number")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise CorruptObject(f"{where} is not a valid {model.__name__}: {describe_errors(exc)}") from None


def load_json_file(path: Path, model: type[M]) -> M:
    """A local JSON file read as ``model``: CorruptObject naming the file when it cannot be read as
    text, is not JSON or is not a valid ``model``; FileNotFoundError when it is absent."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 (UnicodeDecodeError) or not JSON
        raise CorruptObject(f"{path}: not a readable JSON file: {exc}") from None
    return parse_value(str(path), model, raw)


def read_object(store: ObjectStore, key: str, model: type[M]) -> M:
    """Read JSON object ``key`` as ``model`` (KeyNotFound when absent, CorruptObject when not valid)."""
    return parse_object(store, key, model, store.get_json(key))


def _non_finite(value: Any, path: str = "") -> Optional[str]:
    """The path of the first NaN/inf float inside a parsed JSON value, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None
