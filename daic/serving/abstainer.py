"""The model server's side of abstaining (issue 21, item 4): ask the sidecar for P(correct), tag the answer.

Why the sidecar scores: the assessor (``daic.oracles``, its faiss bank and scikit-learn models,
pickled by the main environment's numpy 2) does not load in the serving image (seldon-core 1.18,
numpy 1.x, no faiss; DESIGN.md, "Known constraints"), and the sidecar already holds the loaded
assessors -- the wrapped model's behind the filter included (:mod:`daic.filters.assessor`). It runs
in the same pod: the model server posts the response it is about to send to the sidecar's
loopback-only ``POST /assess`` (ingest port 8301) and gets each input's P(correct) back (about
0.1 ms an input of scoring plus one loopback round trip); the pure rule
(:func:`daic.serving.abstain.abstain_tags`) decides and tags ``meta.tags``.

Never blocks serving on it: the call has a short timeout (``abstain_timeout_ms``, default 50), and
no assessor loaded yet (the sidecar answers 503 at once, having started the load), a sidecar that
is down, slow or answers nonsense all give an answer with no input abstained and the reason in
``daic.abstain.status``. With abstaining off (no policy, or ``abstain: off``) nothing is called.

Which bound: ``abstain: service`` (default) follows the policy record
(:mod:`daic.serving.abstain_policy`), re-read by :meth:`Abstainer.refresh`; ``off``; or a pinned
bound such as ``0.5``.
"""
from __future__ import annotations

import http.client
import json
import logging
import threading
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from daic.serving.abstain import abstain_tags, check_bound

#: The largest answer read from the sidecar's /assess: one P(correct) per input of the request.
MAX_ANSWER_BYTES = 16 * 2**20

logger = logging.getLogger(__name__)
SERVICE = "service"
OFF = "off"


def parse_mode(value: str) -> Optional[float]:
    """``service`` -> None (follow the record), ``off`` -> 0.0, else the pinned bound; ValueError
    naming ``abstain`` for anything else."""
    if value == SERVICE:
        return None
    if value == OFF:
        return 0.0
    try:
        bound = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"abstain must be 'service', 'off' or a bound in (0, 1), got {value!r}") from None
    return check_bound(bound, "abstain")


class Unavailable(Exception):
    """No P(correct) for this answer; the message is the status tag."""


class Abstainer:
    """Holds the bound in force and asks the sidecar (see the module docstring)."""

    def __init__(self, mode: str, url: str, timeout_s: float, read_policy: Callable[[], Any] | None = None) -> None:
        pinned = parse_mode(mode)
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"abstain_url must be an http:// URL of the sidecar's /assess, got {url!r}")
        if not timeout_s > 0:
            raise ValueError(f"abstain_timeout_ms must be > 0, got {timeout_s * 1000!r}")
        self.follows_record = pinned is None
        self._bound: Optional[float] = pinned or None  # None: off
        self._read_policy = read_policy
        self._host, self._port = parts.hostname, parts.port or 80
        self._path = parts.path or "/assess"
        self.timeout_s = timeout_s
        self._local = threading.local()  # one keep-alive connection per serving thread

    @property
    def bound(self) -> Optional[float]:
        return self._bound

    def refresh(self) -> None:
        """Re-read the policy record (when following it); the bound is swapped in one assignment."""
        if not self.follows_record or self._read_policy is None:
            return
        policy = self._read_policy()
        bound = float(policy.bound) if policy.enabled else None
        if bound != self._bound:
            logger.info("daic: abstain bound %s -> %s", self._bound, bound)
        self._bound = bound

    def tag(self, response: dict, n: int) -> dict:
        """``response`` with the abstain tags in ``meta.tags`` (unchanged when abstaining is off)."""
        bound = self._bound
        if bound is None:
            return response
        try:
            p_correct, assessor = self._ask(response, n)
            tags = abstain_tags(n, bound, p_correct, assessor)
        except Unavailable as exc:
            tags = abstain_tags(n, bound, reason=str(exc))
        except (TypeError, ValueError) as exc:  # scores of the wrong length, type or range
            tags = abstain_tags(n, bound, reason=f"the sidecar's scores are unusable: {exc}")
        meta = response.setdefault("meta", {})
        meta.setdefault("tags", {}).update(tags)
        return response

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        return conn

    def _ask(self, response: dict, n: int) -> tuple[list, Optional[str]]:
        body = json.dumps(response).encode()
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers={"Content-Type": "application/json"})
            answer = conn.getresponse()
            data = answer.read(MAX_ANSWER_BYTES + 1)
            if len(data) > MAX_ANSWER_BYTES:
                raise http.client.HTTPException(f"an answer over the {MAX_ANSWER_BYTES} bytes read")
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._local.conn = None
            raise Unavailable(f"the sidecar did not answer in {self.timeout_s * 1000:.0f} ms "
                              f"({type(exc).__name__}: {exc})") from None
        try:
            payload = json.loads(data)
        except ValueError:
            payload = {}
        if answer.status != 200:
            reason = payload.get("error") if isinstance(payload, dict) else None
            raise Unavailable(str(reason or f"the sidecar answered HTTP {answer.status}"))
        if not isinstance(payload, dict) or not isinstance(payload.get("p_correct"), list):
            raise Unavailable("the sidecar's answer has no p_correct list")
        return payload["p_correct"], payload.get("assessor")
