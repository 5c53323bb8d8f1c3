"""Ids as object-store key parts: one reversible encoding, used wherever an id becomes part of a key.

Input ids are whatever the edge hands us: the sidecar's ``<request id>:<row>`` (a Seldon puid such as
``3f0c…-…:7``), a client's own request id (any unicode, possibly with ``/``, ``..`` or NUL), a
benchmark's ``s0-12``. A store key admits only ``[A-Za-z0-9._=@+-]`` in ``/``-separated parts that
are not ``.`` or ``..`` (:func:`daic.storage.base.check_key`, kept strict on purpose: it is what
makes keys portable between a directory and S3 and keeps them inside the store root).

The encoding is percent-encoding's idea with ``=`` as the escape (``%`` is not a key character):
the UTF-8 bytes of the id are kept when they are ``A-Z a-z 0-9 _ -`` or a ``.`` that is not the
first character, and written as ``=XX`` (two upper-case hex digits) otherwise. So

* the result is one key part (no ``/``), never ``.``/``..`` nor a hidden file (no leading ``.``);
* it is injective and :func:`key_part_to_id` inverts it exactly (property-tested in
  tests/test_storage_keys.py on sidecar ids, unicode, ``/``, ``..``, NUL, long ids; lone surrogates
  refused);
* ids that are already plain (``r0``, ``s0-12``) encode to themselves, so older stores read back.

A key part is at most :data:`MAX_KEY_PART` characters (a file name's 255-byte limit, with room for
a suffix such as ``.json``; a 36-character uuid with its row needs 40). An id whose encoding is
longer (the sidecar accepts any printable request id a client sends) gets the *hashed form*
``<first characters of its encoding>==<SHA-256 of its UTF-8 bytes, hex>``: ``==`` never occurs in
the plain form (``=`` is always followed by two hex digits there), so the two forms cannot collide,
and the hashed form is injective as far as SHA-256 is. It is not reversible from the key alone:
:func:`key_part_to_id` says so, and the id is read from the object stored under it (every answer
object holds its id). Ids must be non-empty strings of valid unicode (no lone surrogates).
"""
from __future__ import annotations

import hashlib
import re

MAX_KEY_PART = 240
HASHED = "=="
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DOT = ord(".")
_PART = re.compile(r"^(?:[A-Za-z0-9_-]|=[0-9A-F]{2})(?:[A-Za-z0-9._-]|=[0-9A-F]{2})*$")


def id_to_key_part(sample_id: str) -> str:
    """The key part that stands for ``sample_id`` (see the module docstring); ValueError for an empty
    id, a non-string or a lone surrogate."""
    if not isinstance(sample_id, str):
        raise ValueError(f"an id must be a string, got {type(sample_id).__name__}")
    if not sample_id:
        raise ValueError("an id must not be empty")
    try:
        raw = sample_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"id {sample_id!r} is not valid unicode (lone surrogate)") from None
    out = []
    for k, byte in enumerate(raw):
        if byte in _PLAIN or (byte == _DOT and k > 0):
            out.append(chr(byte))
        else:
            out.append(f"={byte:02X}")
    if sum(len(o) for o in out) <= MAX_KEY_PART:
        return "".join(out)
    head, room = [], MAX_KEY_PART - len(HASHED) - 64
    for piece in out:  # whole characters and escapes only
        if room < len(piece):
            break
        head.append(piece)
        room -= len(piece)
    return "".join(head) + HASHED + hashlib.sha256(raw).hexdigest()


def is_hashed(part: str) -> bool:
    """Whether ``part`` is the hashed form of a long id (its id is in the object, not in the key)."""
    return HASHED in part


def key_part_to_id(part: str) -> str:
    """The id :func:`id_to_key_part` encoded as ``part``; ValueError for anything it cannot have made."""
    if isinstance(part, str) and is_hashed(part):
        raise ValueError(f"{part[:60]!r}... is the hashed form of a long id: read the id from its object")
    if not isinstance(part, str) or not _PART.fullmatch(part):
        raise ValueError(f"{part!r} is not an encoded id")
    raw = bytearray()
    k = 0
    while k < len(part):
        if part[k] == "=":
            raw.append(int(part[k + 1:k + 3], 16))
            k += 3
        else:
            raw.append(ord(part[k]))
            k += 1
    try:
        sample_id = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{part!r} is not an encoded id (not UTF-8)") from None
    if id_to_key_part(sample_id) != part:  # e.g. "=41" for "A": only the canonical form is accepted
        raise ValueError(f"{part!r} is not the canonical encoding of {sample_id!r}")
    return sample_id


__all__ = ["HASHED", "MAX_KEY_PART", "id_to_key_part", "is_hashed", "key_part_to_id"]
