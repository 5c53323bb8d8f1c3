"""Labelers and their tokens: who may answer on the labeling page, and under which name.

Each labeler has one secret token (``secrets.token_urlsafe(32)``, 256 bits); the page keeps only its
SHA-256 in a small JSON file (default ``.daic/labeling/labelers.json``, mode 0600; on a cluster a
Secret mounted as that file), so reading the file does not let anyone log in. The labeler's name
recorded with every answer comes from the token, never from the request body. A token is handed
over as a login link, ``<page>/login#token=<token>``: the part after ``#`` never leaves the browser
in a request line, so it is not in access logs or ``Referer`` headers; the login page posts it once
and gets an HttpOnly, SameSite=Strict cookie. Scripts send ``Authorization: Bearer <token>``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FILE = Path(".daic") / "labeling" / "labelers.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid labeler name {str(name)[:80]!r}: 1-64 letters, digits and ._@- "
                         "(starting with a letter or digit)")
    return name


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def login_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/login#token={token}"


@dataclass
class Labelers:
    """name -> SHA-256 of the token, read from and written to ``path``."""

    path: Path
    digests: dict[str, str] = field(default_factory=dict)
    _mtime: float | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path | str = DEFAULT_FILE) -> "Labelers":
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            mtime = path.stat().st_mtime
            doc = json.loads(path.read_text())
            digests = {check_name(k): str(v) for k, v in doc["labelers"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a labelers file ({{\"labelers\": {{name: sha256}}}}): {exc}") from None
        return cls(path, digests, mtime)

    def refresh(self) -> None:
        """Re-read the file if it changed (a token issued by ``daic label token`` works at once)."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime != self._mtime:
            fresh = Labelers.load(self.path)
            self.digests, self._mtime = fresh.digests, fresh._mtime

    def issue(self, name: str) -> str:
        """A new token for ``name`` (replacing any earlier one, which stops working); saved at once."""
        token = secrets.token_urlsafe(32)
        self.digests[check_name(name)] = _digest(token)
        self.save()
        return token

    def revoke(self, name: str) -> bool:
        found = self.digests.pop(name, None) is not None
        if found:
            self.save()
        return found

    def who(self, token: str | None) -> str | None:
        """The labeler whose token this is, or None. Compares digests in constant time."""
        if not token or len(token) > 256:
            return None
        digest = _digest(token)
        match = None
        for name, known in self.digests.items():
            if hmac.compare_digest(known, digest):
                match = name
        return match

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".labelers-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"labelers": self.digests}, f, indent=2, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            self._mtime = self.path.stat().st_mtime
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
