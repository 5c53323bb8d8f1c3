"""``file://`` backend: the embedded default, a directory tree on local disk."""
from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .base import ObjectStore, check_key, check_prefix
from .errors import KeyNotFound, PreconditionFailed, StorageError

_TMP_PREFIX = ".tmp-"
_LOCK_NAME = _TMP_PREFIX + "lock"  # one per directory; hidden from list() like temporary files


def etag_of(data: bytes) -> str:
    """The ETag S3 gives a single-part object: the hex MD5 of its bytes."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class FileStore(ObjectStore):
    """Objects are files under ``root``.

    Writes go to a temporary file in the target directory, are fsynced, then renamed over the
    target (``os.replace`` is atomic on POSIX), so a crash never leaves a half-written object.
    Conditional writes: ``if_none_match`` publishes with ``os.link`` (fails atomically when the
    name exists); ``if_match`` compares and replaces while holding an exclusive ``flock`` on the
    directory's lock file, which every write and delete in that directory takes, so the
    compare-and-replace is atomic against all other writers on the machine (processes included).
    ETags are the MD5 of the content, as S3 computes them for single-part objects.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot create the store directory: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextmanager
    def _dir_lock(self, directory: Path) -> Iterator[None]:
        with open(directory / _LOCK_NAME, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False,
                  if_match: str | None = None) -> str:
        self._check_condition(if_none_match, if_match)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                with self._dir_lock(path.parent):
                    if if_none_match:
                        try:
                            os.link(tmp, path)  # atomic create-if-absent
                        except FileExistsError:
                            raise PreconditionFailed(
                                f"{self.url}: {key!r} already exists (write with if_none_match refused)") from None
                    else:
                        if if_match is not None:
                            self._compare(key, path, if_match)
                        os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot write {key!r}: {exc}") from exc
        return etag_of(data)

    def _compare(self, key: str, path: Path, if_match: str) -> None:
        try:
            current = etag_of(path.read_bytes())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise PreconditionFailed(f"{self.url}: {key!r} does not exist (write with if_match refused)") from None
        if current != if_match.strip('"'):
            raise PreconditionFailed(
                f"{self.url}: {key!r} changed (ETag {current}, expected {if_match.strip(chr(34))}); write refused")

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > self.max_object_bytes:
                    raise self._too_large(key, size)
                # Writes replace a file whole (rename), so this inode keeps its size; one byte more
                # shows a file that grew anyway. Reading ``size + 1`` (not the bound) allocates no more.
                data = fh.read(size + 1)
                if len(data) > size:  # it grew: take the rest, still within the bound
                    data += fh.read(self.max_object_bytes + 1 - len(data))
            if len(data) > self.max_object_bytes:
                raise self._too_large(key, None)
            return data
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(f"{self.url}: no object {key!r}") from None
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot read {key!r}: {exc}") from exc

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)  # one read: the ETag is of exactly these bytes
        return data, etag_of(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)  # a prefix is joined to the root below: never outside it
        # Walk only the deepest directory the prefix names, not the whole store.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if not path.parent.is_dir():
                return
            with self._dir_lock(path.parent):
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot delete {key!r}: {exc}") from exc
