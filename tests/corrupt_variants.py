"""Seeded corruptions of stored objects, for the tests/test_corrupt_objects_*.py files.

Each generator takes the bytes of a real, valid object written by daic and yields
``(description, bytes)`` variants that are *not* what the reader expects: truncated, not JSON or
not an npz, JSON of another shape (a list for an object, a field dropped or retyped, NaN/inf,
negative numbers), arrays of another dtype or shape. Which fields and arrays are hit is drawn
from a seeded generator, so a run is repeatable and another seed tries other corruptions.
"""
from __future__ import annotations

import io
import json
import random
from typing import Any, Callable, Iterator

import numpy as np

RETYPES: tuple[Any, ...] = ("x", 7, -3, None, [], {}, True, 1.5)

# Damage to the bytes of any stored object, whatever its format, for the fault tables of the
# Parquet readers' tests (entries ``(table, raw) -> bytes``; the table is not used here).
DAMAGED_OBJECT: dict[str, Callable[[Any, bytes], bytes]] = {
    "empty": lambda t, raw: b"",
    "truncated": lambda t, raw: raw[: len(raw) // 2],
    "tail cut": lambda t, raw: raw[:-9],
    "random bytes": lambda t, raw: random.Random(7).randbytes(len(raw)),
}


def _paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside a JSON document (dict keys and list indices)."""
    if path:
        yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from _paths(v, path + (i,))


def _set(doc: Any, path: tuple, value: Any, drop: bool = False) -> Any:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def json_variants(raw: bytes, seed: int, n_fields: int = 6) -> Iterator[tuple[str, bytes]]:
    """Whole-object corruptions, then field-level ones on ``n_fields`` seeded paths."""
    rng = random.Random(seed)
    yield "empty", b""
    yield "truncated", raw[: max(1, len(raw) // 2)]
    yield "not json", b"\x00\x01garbage\xff"
    yield "a list", b"[]"
    yield "a number", b"42"
    yield "null", b"null"
    doc = json.loads(raw)
    if isinstance(doc, dict):
        yield "list of its values", json.dumps(list(doc.values())).encode()
    paths = list(_paths(doc))
    for path in rng.sample(paths, min(n_fields, len(paths))):
        name = ".".join(map(str, path))
        if isinstance(path[-1], str):
            yield f"{name} dropped", json.dumps(_set(doc, path, None, drop=True)).encode()
        new = rng.choice(RETYPES)
        yield f"{name} = {new!r}", json.dumps(_set(doc, path, new)).encode()
    numeric = [p for p in paths if isinstance(_get(doc, p), (int, float)) and not isinstance(_get(doc, p), bool)]
    for path in rng.sample(numeric, min(3, len(numeric))):
        name = ".".join(map(str, path))
        for bad in (float("nan"), float("inf"), -1):
            yield f"{name} = {bad!r}", json.dumps(_set(doc, path, bad)).encode()


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def npz_variants(raw: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    """Whole-object corruptions, then each array (in seeded order) dropped, retyped, reshaped."""
    rng = random.Random(seed)
    yield "empty", b""
    yield "truncated", raw[: max(1, len(raw) // 2)]
    yield "json instead", b'{"not": "an npz"}'
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    names = sorted(arrays)
    rng.shuffle(names)
    for name in names:
        a = arrays[name]
        yield f"{name} dropped", npz_bytes(**{k: v for k, v in arrays.items() if k != name})
        yield f"{name} as strings", npz_bytes(**{**arrays, name: np.full(a.shape or (), "x")})
        if a.ndim >= 1 and len(a) > 1:
            yield f"{name} one row short", npz_bytes(**{**arrays, name: a[:-1]})
        yield f"{name} with an extra axis", npz_bytes(**{**arrays, name: a[..., None] if a.ndim else a.reshape(1, 1)})
        if a.ndim == 0 or a.size > 0:
            yield f"{name} flattened to a scalar", npz_bytes(**{**arrays, name: a.reshape(-1)[0] if a.size else a})
        if np.issubdtype(a.dtype, np.floating) and a.size:
            bad = a.copy()
            bad.reshape(-1)[rng.randrange(bad.size)] = np.nan
            yield f"{name} with a NaN", npz_bytes(**{**arrays, name: bad})
        if np.issubdtype(a.dtype, np.signedinteger) and a.size:  # an unsigned array cannot hold one
            bad = a.copy()
            bad.reshape(-1)[rng.randrange(bad.size)] = -7
            yield f"{name} with a negative value", npz_bytes(**{**arrays, name: bad})


def check_planted(store: Any, key: str, variants: Iterator[tuple[str, bytes]], read: Callable[[], Any],
                  valid: Callable[[Any], str | None] = lambda got: None) -> None:
    """Plant each variant at ``key`` and call ``read``: it must succeed or raise a StorageError
    (a CorruptObject among them) naming the key; any other exception is the bug these tests look
    for, and so is a success whose result ``valid`` finds a problem with (a message; None: fine).
    The original is put back after each variant, and ``read`` must work on it at the end."""
    from daic.storage import StorageError

    original = store.get_bytes(key)
    failures = []
    try:
        for what, data in variants:
            store.put_bytes(key, data)
            try:
                got = read()
            except StorageError as exc:
                if key not in str(exc):
                    failures.append(f"{what}: StorageError without the key: {exc}")
            except Exception as exc:  # noqa: BLE001 - any other type is the bug this test looks for
                failures.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
            else:
                problem = valid(got)
                if problem:
                    failures.append(f"{what}: read as {got!r}: {problem}")
            finally:
                store.put_bytes(key, original)
    finally:
        store.put_bytes(key, original)
    assert not valid(read())  # whole again: reads as before
    assert not failures, f"{key}:\n" + "\n".join(failures)
