"""The lineage graph of a model's versions, built from the cards' parent pointers (pure).

Continual development (Gesmundo 2022, "A Continual Development Methodology for Large-scale
Multitask Dynamic ML Systems") grows one model by successive extensions instead of discarding
trial models; the parent pointers record that history, and this module turns them into a forest
that ``daic models lineage`` prints.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional


def children_of(parents: Mapping[str, Optional[str]]) -> dict[Optional[str], list[str]]:
    """``{parent: sorted children}``; roots sit under ``None``, and so do versions whose parent
    is not among ``parents`` (deleted or foreign) so nothing disappears from the tree."""
    out: dict[Optional[str], list[str]] = {}
    for version in sorted(parents):
        parent = parents[version]
        key = parent if parent in parents else None
        out.setdefault(key, []).append(version)
    return out


def ancestry(parents: Mapping[str, Optional[str]], version: str) -> list[str]:
    """``[version, parent, grandparent, ...]`` up to a root; a cycle (corrupt cards) is an error."""
    if version not in parents:
        raise KeyError(f"unknown version {version!r}")
    chain, seen = [version], {version}
    while (parent := parents.get(chain[-1])) is not None and parent in parents:
        if parent in seen:
            raise ValueError(f"lineage cycle through {parent!r}: {' -> '.join(chain + [parent])}")
        chain.append(parent)
        seen.add(parent)
    return chain


def render_tree(parents: Mapping[str, Optional[str]], label: Callable[[str], str] = str) -> list[str]:
    """Text lines of the forest, children indented under their parent (box-drawing connectors)."""
    kids = children_of(parents)
    lines: list[str] = []

    def walk(version: str, prefix: str, last: bool, root: bool) -> None:
        connector = "" if root else ("└── " if last else "├── ")
        lines.append(f"{prefix}{connector}{label(version)}")
        below = kids.get(version, [])
        child_prefix = prefix if root else prefix + ("    " if last else "│   ")
        for i, child in enumerate(below):
            walk(child, child_prefix, i == len(below) - 1, False)

    for root in kids.get(None, []):
        walk(root, "", True, True)
    return lines
