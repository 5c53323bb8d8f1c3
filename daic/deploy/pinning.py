"""What counts as a pinned image reference, for manifests and Dockerfiles alike.

Pinned: a digest (``name@sha256:<64 hex>``, immutable), or a tag that names a full release
``X.Y.Z`` (``daic-train:0.1.0``, ``python:3.11.7-slim-bookworm``). Not pinned: no tag (which is
``latest``), ``latest``, and moving tags that name only a series (``python:3.11-slim-bookworm``,
``3``, ``stable``): they change under the same name, so two builds or two nodes may run different
code.
"""
from __future__ import annotations

import re

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_FULL_VERSION = re.compile(r"(?<![0-9.])v?\d+\.\d+\.\d+(?![0-9])")


def pin_problem(image: str) -> str | None:
    """Why ``image`` is not pinned, or None when it is."""
    if _DIGEST.search(image):
        return None
    if "@" in image:
        return f"{image!r}: a digest must be @sha256: and 64 hex digits"
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    if tag is None:
        return f"{image!r} names no tag (that is 'latest'); pin a version or a digest"
    if tag == "latest":
        return f"{image!r}: 'latest' is not a pin"
    if not _FULL_VERSION.search(tag):
        return f"{image!r}: tag {tag!r} moves (names no full X.Y.Z version); pin a release or a digest"
    return None
