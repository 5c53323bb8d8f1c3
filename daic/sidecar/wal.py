"""The sidecar's write-ahead log: no accepted event is lost when the process dies.

An event is acknowledged (HTTP 200) only after its line has been written to the current
*segment* file (``wal-<n>.jsonl``, append-only JSON lines). A ``write`` that returned survives
a killed process (it is in the kernel's page cache); an ``fsync`` every ``fsync_interval_s`` bounds
what a machine crash can lose. Segments are retired in a *commit*: once everything in segments
``<= n`` has been turned into operational records and those are in the object store, the sidecar
writes a checkpoint (the halves still waiting for their partner, the ids already joined, the
estimator state) atomically and deletes those segments. On start, :meth:`recover` returns the
last checkpoint and every entry of the segments it does not cover, in order, for replay.

A torn last line (the process died inside ``write``) belongs to an event that was never
acknowledged; it is skipped and counted.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

_SEGMENT = re.compile(r"^wal-(\d{10})\.jsonl$")
CHECKPOINT = "checkpoint.json"


@dataclass
class Recovery:
    checkpoint: dict[str, Any] | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    torn_lines: int = 0


class WriteAheadLog:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._segment = 0
        self._dirty = False
        self._committed = -1

    @property
    def segment(self) -> int:
        """The segment new entries go to."""
        return self._segment

    def _path(self, segment: int) -> Path:
        return self.directory / f"wal-{segment:010d}.jsonl"

    def _segments(self) -> list[int]:
        found = []
        for p in self.directory.iterdir():
            m = _SEGMENT.match(p.name)
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def recover(self) -> Recovery:
        """Read the checkpoint and the uncommitted segments, then open a fresh segment."""
        if self._fd is not None:
            raise RuntimeError("recover() must run once, before the first append")
        checkpoint = None
        cp_path = self.directory / CHECKPOINT
        if cp_path.exists():
            try:
                checkpoint = json.loads(cp_path.read_text())
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"{cp_path}: unreadable write-ahead-log checkpoint ({exc}); "
                                   "move it aside to start without the saved state") from exc
            # Checked before any segment is deleted on its word: a corrupt one must not cost data.
            committed = checkpoint.get("committed_segment", -1) if isinstance(checkpoint, dict) else None
            if isinstance(committed, bool) or not isinstance(committed, int) or committed < -1:
                what = ("not a JSON object" if not isinstance(checkpoint, dict)
                        else f"committed_segment {committed!r} is not a segment number")
                raise RuntimeError(f"{cp_path}: write-ahead-log checkpoint is {what}; "
                                   "move it aside to start without the saved state")
            self._committed = committed
        recovery = Recovery(checkpoint=checkpoint)
        existing = self._segments()
        for seg in existing:
            if seg <= self._committed:
                self._path(seg).unlink(missing_ok=True)  # committed but not yet deleted
                continue
            recovery.segments.append(seg)
            with open(self._path(seg), "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        recovery.torn_lines += 1
                        continue
                    try:
                        recovery.entries.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        recovery.torn_lines += 1
        self._open(max([self._committed, *existing]) + 1)
        return recovery

    def _open(self, segment: int) -> None:
        self._segment = segment
        self._fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._dirty = False

    def append(self, entry: dict[str, Any]) -> int:
        """Write one entry (one ``write`` call); returns the segment it went to."""
        if self._fd is None:
            raise RuntimeError("call recover() before append()")
        line = orjson.dumps(entry) + b"\n"
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._dirty = True
        return self._segment

    def sync_handle(self) -> int | None:
        """A duplicate descriptor of the current segment to fsync off the event loop (the caller
        closes it), or None when nothing was written since the last sync."""
        if self._fd is None or not self._dirty:
            return None
        self._dirty = False
        return os.dup(self._fd)

    def rotate(self) -> int:
        """Close the current segment (fsynced) and open the next; returns the closed one."""
        if self._fd is None:
            raise RuntimeError("call recover() before rotate()")
        closed = self._segment
        os.fsync(self._fd)
        os.close(self._fd)
        self._open(closed + 1)
        return closed

    def commit(self, segment: int, checkpoint: dict[str, Any]) -> None:
        """Everything in segments <= ``segment`` is durable elsewhere: save ``checkpoint`` (state
        that outlives those segments) atomically, then delete them."""
        if segment >= self._segment:
            raise ValueError(f"cannot commit segment {segment}: it is still open (current {self._segment})")
        body = dict(checkpoint, committed_segment=segment)
        tmp = self.directory / f".{CHECKPOINT}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:  # 0600, as the WAL
            json.dump(body, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / CHECKPOINT)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._committed = segment
        for seg in self._segments():
            if seg <= segment:
                self._path(seg).unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def size_bytes(self) -> int:
        return sum(self._path(s).stat().st_size for s in self._segments() if self._path(s).exists())
