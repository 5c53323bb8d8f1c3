"""``label-studio``: label in a Label Studio server (1.x, tested against 1.23.2), through its REST API.

**Authentication** (``LABEL_STUDIO_API_KEY``, ``LABEL_STUDIO_AUTH_SCHEME`` from the Secret
``label-studio``, keys ``api-key`` and ``auth-scheme``; never pipeline parameters, which the Kubeflow
UI shows):

* ``personal`` (Label Studio's default since 1.22): the key is a *personal access token* (Account &
  Settings → Personal Access Token), a JWT refresh token. It is exchanged at ``POST
  /api/token/refresh/`` for an access token (valid 5 minutes) sent as ``Authorization: Bearer``; the
  access token is refreshed before it expires and again whenever the server answers 401;
* ``legacy``: a legacy API token sent as ``Authorization: Token <key>``; Label Studio accepts it only
  when an administrator enabled legacy tokens (Organization → API Tokens Settings);
* ``auto`` (default): ``personal`` when the key looks like a JWT (three dot-separated parts),
  ``legacy`` otherwise. ``Bearer``/``Token`` are accepted as aliases of ``personal``/``legacy``.

**Waiting**: every call is retried with exponential backoff (connection errors, timeouts, 429 and
5xx; a 401 refreshes the access token first); a poll that still fails raises
:class:`~.request.BackendUnavailable`, which the waiting loop counts as "no news" until its deadline.

**Bounded**: each call's answer is read within ``timeout_s`` from the request (``requests``' own
timeout is per socket read, so a server dripping a byte at a time could hold it for ever) and up to
``max_body_bytes`` (a server streaming an endless body would otherwise fill memory); either is a
:class:`LabelStudioError`. Reading a project's tasks stops at what the project can hold: the inputs
daic imported plus one page (tasks someone added in the UI); a server that still answers full pages
(one that ignores ``page``) is a :class:`LabelStudioError`, not an endless loop.

**Project lifecycle** (``cycles/<cycle>/label-studio.json`` records it): the record is written with
``state: creating`` *before* the tasks are imported; a failed import deletes the project (no empty
projects left behind) and a retried step deletes a half-made one before starting again; a project
deleted in the UI is recreated (and its tasks imported again) by the next poll. Polling reads
``GET /api/projects/<id>/tasks/`` page by page: nothing is created on the server (the export API
would write a file per poll). Labels asked for in rounds submit every input so far each round: the
project exists, so only the inputs it lacks are imported (answers given so far stay).

**Reading answers** (:func:`task_answer`): a submitted choice 0-9 is a label; "unsure", a skip
(``was_cancelled``) and an empty submit are answers without a label ("unsure"); a choice that is not
one of the classes (added in the UI) is reported and counted as unsure, never fatal; two annotators
who disagree leave the input *disputed* (no label, reported), neither the first nor the latest wins.

**Blind labeling** (default): the model's answer is neither in the labeling interface nor in the task
data (the data manager shows task data as columns) unless the cycle sets ``show_model_answer``.

Encoding the PNGs needs Pillow (in the ``pipelines`` extra, so in the pipelines image).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import requests
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from daic.components import cycle_store
from daic.serving import http_client
from daic.storage import KeyNotFound, ObjectStore
from daic.storage.parsed import read_object

from .request import Answers, BackendUnavailable, LabelRequest

log = logging.getLogger(__name__)

CLASSES = tuple(str(c) for c in range(10))
UNSURE = "unsure"
SCHEMES = {"auto": "auto", "personal": "personal", "bearer": "personal", "legacy": "legacy", "token": "legacy"}
PAGE_SIZE = 100
#: The largest answer read from Label Studio: a page of PAGE_SIZE tasks with their PNG data URIs and
#: annotations is well under 1 MiB.
MAX_BODY_BYTES = 32 * 2**20


class LabelStudioError(RuntimeError):
    """A refusal that retrying will not fix (bad credentials, a rejected label config, ...)."""


def label_config(show_model_answer: bool = False) -> str:
    """The labeling interface: the image and one choice per class plus "unsure". Hotkeys are explicit:
    Label Studio numbers choices 1, 2, ..., 9, 0 by position, so pressing "3" would choose "2"."""
    choices = "".join(f'<Choice value="{c}" hotkey="{c}"/>' for c in CLASSES) + f'<Choice value="{UNSURE}" hotkey="u"/>'

    info = '<Text name="info" value="model says $prediction"/>' if show_model_answer else ""
    return ('<View><Image name="image" value="$image" zoom="true"/>'
            f'<Choices name="label" toName="image" choice="single" showInline="true">{choices}</Choices>'
            f"{info}</View>")


def png_data_uri(image: np.ndarray) -> str:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - depends on the image
        raise RuntimeError("the label-studio backend needs Pillow to encode images (pip install pillow)") from None
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# Reading answers (pure) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskAnswer:
    """What one Label Studio task says: ``status`` is open, labeled, unsure, skipped, empty, unknown
    (a choice that is not a class) or disputed; ``label`` is set only when ``status == "labeled"``."""

    status: str
    label: int | None = None
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.status != "open"


def _vote(annotation: dict) -> tuple[str, int | None, str]:
    if annotation.get("was_cancelled"):
        return "skipped", None, ""
    choices = [str(c) for r in annotation.get("result") or [] for c in ((r.get("value") or {}).get("choices") or [])]
    if not choices:
        return "empty", None, ""
    value = choices[0]
    if value == UNSURE:
        return "unsure", None, ""
    if value not in CLASSES:
        return "unknown", None, value
    return "labeled", int(value), ""


def task_answer(task: dict) -> TaskAnswer:
    """Combine a task's annotations (see the module docstring)."""
    votes = [_vote(a) for a in task.get("annotations") or []]
    if not votes:
        return TaskAnswer("open")
    labels = {label for status, label, _ in votes if status == "labeled"}
    if len(labels) > 1:
        return TaskAnswer("disputed", None, "annotators chose " + ", ".join(str(v) for v in sorted(labels)))
    if labels:
        return TaskAnswer("labeled", labels.pop())
    unknown = [detail for status, _, detail in votes if status == "unknown"]
    if unknown:
        return TaskAnswer("unknown", None, f"choice {unknown[0]!r} is not a class")
    # no label from anyone: the most informative of unsure / skipped / empty
    for status in ("unsure", "skipped", "empty"):
        if any(v[0] == status for v in votes):
            return TaskAnswer(status)
    return TaskAnswer("unsure")  # pragma: no cover


# HTTP with authentication and retries ------------------------------------------------------------

def _looks_like_jwt(key: str) -> bool:
    parts = key.split(".")
    return len(parts) == 3 and all(parts)


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (not verified: only used to refresh before the server refuses)."""
    try:
        payload = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


@dataclass
class LabelStudioClient:
    """Label Studio's REST API with authentication (see the module docstring) and retries."""

    url: str
    api_key: str
    auth_scheme: str = "auto"
    timeout_s: float = 30.0
    attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    max_body_bytes: int = MAX_BODY_BYTES
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    session: requests.Session = field(default_factory=requests.Session)
    _access: str | None = field(default=None, init=False, repr=False)
    _access_expires: float | None = field(default=None, init=False, repr=False)
    refreshes: int = field(default=0, init=False)
    retries: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        scheme = SCHEMES.get(self.auth_scheme.strip().lower())
        if scheme is None:
            raise ValueError(f"LABEL_STUDIO_AUTH_SCHEME must be one of {', '.join(SCHEMES)}, got {self.auth_scheme!r}")
        if scheme == "auto":
            scheme = "personal" if _looks_like_jwt(self.api_key) else "legacy"
        self.auth_scheme = scheme

    # authentication
    def _refresh(self) -> None:
        try:
            response = self._send("POST", "/api/token/refresh/", json={"refresh": self.api_key})
        except requests.RequestException as exc:
            raise BackendUnavailable(f"Label Studio {self.url}: token refresh failed: {exc}") from exc
        if response.status_code in (400, 401, 403):
            raise LabelStudioError(
                f"Label Studio {self.url} refused the personal access token at /api/token/refresh/ "
                f"({response.status_code}: {response.text[:200]}); create a new one under Account & Settings, "
                "or set LABEL_STUDIO_AUTH_SCHEME=legacy for a legacy token")
        if response.status_code >= 300:
            raise BackendUnavailable(f"Label Studio {self.url}: token refresh answered {response.status_code}")
        access = body_of(response).get("access")
        if not isinstance(access, str):
            raise LabelStudioError(f"Label Studio {self.url}: /api/token/refresh/ answered without an access token")
        self._access = access
        self._access_expires = _jwt_expiry(self._access)
        self.refreshes += 1

    def _auth_header(self) -> str:
        if self.auth_scheme == "legacy":
            return f"Token {self.api_key}"
        if self._access is None or (self._access_expires is not None and self._access_expires - self.clock() < 30):
            self._refresh()
        return f"Bearer {self._access}"

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request whose answer is read whole within ``timeout_s`` and ``max_body_bytes``
        (daic.serving.http_client); an answer over the size bound is a refusal, not retried."""
        try:
            return http_client.send(self.session, method, self.url + path, timeout_s=self.timeout_s,
                                    max_bytes=self.max_body_bytes, **kwargs)
        except http_client.AnswerTooLarge as exc:
            raise LabelStudioError(f"Label Studio {method} {path}: {exc}") from None

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> requests.Response:
        """One API call, retried with backoff; returns responses whose status is in ``ok``.

        Raises :class:`LabelStudioError` for a refusal and :class:`BackendUnavailable` when the server
        is still unreachable or failing after ``attempts`` tries.
        """
        last = ""
        refreshed = False
        for attempt in range(self.attempts):
            if attempt:
                self.retries += 1
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
                self.sleep(delay * random.uniform(0.5, 1.0))
            try:
                headers = {"Authorization": self._auth_header()}
                response = self._send(method, path, headers=headers, **kwargs)
            except BackendUnavailable as exc:
                last = str(exc)
                continue
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in ok:
                return response
            if response.status_code == 401 and self.auth_scheme == "personal" and not refreshed:
                self._access = None  # expired or revoked access token: refresh once, then try again
                refreshed = True
                continue
            if response.status_code == 401:
                hint = ("legacy tokens are disabled by default since Label Studio 1.22: use a personal access token "
                        "(LABEL_STUDIO_AUTH_SCHEME=personal)" if self.auth_scheme == "legacy"
                        else "the access token was refused right after a refresh")
                raise LabelStudioError(f"Label Studio {method} {path} answered 401: {hint}")
            if response.status_code == 429 or response.status_code >= 500:
                last = f"{response.status_code}: {response.text[:200]}"
                continue
            raise LabelStudioError(f"Label Studio {method} {path} answered {response.status_code}: "
                                   f"{response.text[:300]}")
        raise BackendUnavailable(f"Label Studio {method} {self.url}{path} failed {self.attempts} times; last: {last}")


def body_of(response: requests.Response, expect: type | tuple[type, ...] = dict) -> Any:
    """The JSON body of a Label Studio answer, of the expected type, or a LabelStudioError saying what came
    instead (an HTML login page from a proxy, a truncated body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, expect):
        kinds = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise LabelStudioError(f"Label Studio {response.request.method} {response.url} answered "
                               f"{response.status_code} with no JSON {kinds}: {response.text[:200]!r}")
    return body


# The backend --------------------------------------------------------------------------------------

class ProjectRecord(BaseModel):
    """``cycles/<c>/label-studio.json``: which Label Studio project holds the cycle's tasks, how many
    daic imported, and whether it was wholly made (a record without a state predates states: ready)."""

    model_config = ConfigDict(extra="allow")
    url: StrictStr | None = None
    project: StrictInt = Field(ge=1)
    tasks: StrictInt = Field(default=0, ge=0)
    state: Literal["creating", "ready"] = "ready"


class LabelStudioBackend:
    name = "label-studio"

    def __init__(self, store: ObjectStore, url: str = "", api_key: str = "", auth_scheme: str = "",
                 show_model_answer: bool = False, client: LabelStudioClient | None = None,
                 timeout_s: float = 30.0) -> None:
        self.store = store
        self.show_model_answer = show_model_answer
        if client is None:
            url = url or os.environ.get("LABEL_STUDIO_URL", "")
            key = api_key or os.environ.get("LABEL_STUDIO_API_KEY", "")
            if not url:
                raise ValueError("the label-studio backend needs a server: set label_studio_url or LABEL_STUDIO_URL")
            if not key:
                raise ValueError("the label-studio backend needs LABEL_STUDIO_API_KEY (a personal access token, "
                                 "or a legacy token with LABEL_STUDIO_AUTH_SCHEME=legacy)")
            client = LabelStudioClient(url, key, auth_scheme or os.environ.get("LABEL_STUDIO_AUTH_SCHEME") or "auto",
                                       timeout_s=timeout_s)
        self.client = client
        self.url = client.url
        self.report: Counter[str] = Counter()

    # the record of the project
    def _record_key(self, cycle: str) -> str:
        return cycle_store.key(cycle, "label-studio.json")

    def _record(self, cycle: str) -> dict | None:
        """The cycle's project record (None before the first submit), parsed as ``_create`` writes
        it; CorruptObject naming the key otherwise (a list was an AttributeError, a project of "x"
        a ValueError from int(), neither naming the record)."""
        try:
            return read_object(self.store, self._record_key(cycle), ProjectRecord).model_dump()
        except KeyNotFound:
            return None

    def _title(self, cycle: str) -> str:
        return f"daic {cycle}"

    def _delete_project(self, project: int) -> None:
        self.client.call("DELETE", f"/api/projects/{project}/", ok=(200, 204, 404))

    def _project_exists(self, project: int) -> bool:
        return self.client.call("GET", f"/api/projects/{project}/", ok=(200, 404)).status_code == 200

    def _leftovers(self, cycle: str) -> list[dict]:
        """Projects with this cycle's title that no record points to (a crash between create and record)."""
        response = self.client.call("GET", "/api/projects/", params={"title": self._title(cycle), "page_size": 100})
        body = body_of(response, (dict, list))
        projects = body.get("results", []) if isinstance(body, dict) else body
        return [p for p in projects if p.get("title") == self._title(cycle)]

    def submit(self, request: LabelRequest) -> None:
        record = self._record(request.cycle)
        if record is not None and record.get("state", "ready") == "ready":
            if self._project_exists(int(record["project"])):
                self._add_missing(int(record["project"]), request)  # a further round: new inputs only
                return  # a retried step keeps the project and the answers given so far
            log.warning("Label Studio project %s of cycle %s was deleted; creating it again",
                        record["project"], request.cycle)
            self.report["projects recreated"] += 1
        elif record is not None:  # a half-made project of an earlier attempt
            self._delete_project(int(record["project"]))
        for project in self._leftovers(request.cycle):
            if project.get("num_tasks_with_annotations"):
                raise LabelStudioError(f"Label Studio project {project['id']} ({project['title']!r}) already has "
                                       "answers but no daic record: rename or delete it, then retry")
            self._delete_project(int(project["id"]))
        self._create(request)

    def _create(self, request: LabelRequest) -> None:
        project = body_of(self.client.call("POST", "/api/projects/", json={
            "title": self._title(request.cycle), "label_config": label_config(self.show_model_answer),
            "description": "daic: label the sampled operational inputs (choose 'unsure' when you cannot tell)",
            "show_skip_button": True}))
        if not isinstance(project.get("id"), int):
            raise LabelStudioError(f"Label Studio created a project without an id: {str(project)[:200]}")
        pid = project["id"]
        doc = {"url": self.url, "project": pid, "tasks": len(request.ids), "state": "creating"}
        self.store.put_json(self._record_key(request.cycle), doc)
        tasks = self._task_data(request, range(len(request.ids)))
        try:
            self.client.call("POST", f"/api/projects/{pid}/import", json=tasks)
            count = int(body_of(self.client.call("GET", f"/api/projects/{pid}/")).get("task_number", len(tasks)))
            if count != len(tasks):
                raise LabelStudioError(f"Label Studio project {pid} holds {count} tasks after importing {len(tasks)}")
        except BaseException:
            try:
                self._delete_project(pid)
                self.store.delete(self._record_key(request.cycle))
            except Exception as cleanup:  # the record says "creating": the next attempt deletes it
                log.warning("could not delete the half-made Label Studio project %s: %s", pid, cleanup)
            raise
        self.store.put_json(self._record_key(request.cycle), {**doc, "state": "ready"})

    def _task_data(self, request: LabelRequest, rows) -> list[dict]:
        tasks = []
        for k in rows:
            data = {"image": png_data_uri(request.inputs[k]), "daic_id": str(request.ids[k])}
            if self.show_model_answer:
                data["prediction"] = int(request.predictions[k])
            tasks.append({"data": data})
        return tasks

    def _add_missing(self, project: int, request: LabelRequest) -> None:
        """Import the request's inputs the project lacks (labels asked for in rounds: each round submits
        every input so far); the record's task count follows."""
        if len(request.ids) <= int((self._record(request.cycle) or {}).get("tasks", 0)):
            return
        tasks = self._tasks(project, len(request.ids)) or []
        have = {str((t.get("data") or {}).get("daic_id")) for t in tasks}
        rows = [k for k, i in enumerate(request.ids) if str(i) not in have]
        if rows:
            self.client.call("POST", f"/api/projects/{project}/import", json=self._task_data(request, rows))
            log.info("Label Studio project %s: %d more tasks for cycle %s", project, len(rows), request.cycle)
        record = self._record(request.cycle) or {}
        self.store.put_json(self._record_key(request.cycle), {**record, "tasks": len(request.ids)})

    def _tasks(self, project: int, expected: int) -> list[dict] | None:
        """Every task of the project, page by page; None when the project no longer exists.

        At most ``expected`` tasks (what daic imported) plus one page are read: a server that keeps
        answering full pages past that is an error, not a loop that never ends."""
        tasks: list[dict] = []
        page = 1
        last_page = expected // PAGE_SIZE + 2
        while True:
            response = self.client.call("GET", f"/api/projects/{project}/tasks/", ok=(200, 404),
                                        params={"page": page, "page_size": PAGE_SIZE})
            if response.status_code == 404:  # past the last page, or no such project
                if page == 1 and not self._project_exists(project):
                    return None
                return tasks
            batch = body_of(response, list)
            tasks.extend(batch)
            if len(batch) < PAGE_SIZE:
                return tasks
            if page >= last_page:
                raise LabelStudioError(
                    f"Label Studio project {project} answered {len(tasks)}+ tasks in {page} full pages though daic "
                    f"imported {expected}: it holds tasks daic did not put there, or the server ignores the page "
                    "parameter; daic stops reading here")
            page += 1

    def poll(self, request: LabelRequest) -> Answers:
        record = self._record(request.cycle)
        if record is None:
            raise LabelStudioError(f"cycle {request.cycle!r} was never submitted to Label Studio")
        if record.get("state") != "ready":
            self.submit(request)
            return {}
        tasks = self._tasks(int(record["project"]), len(request.ids))
        if tasks is None:
            self.submit(request)  # recreates the deleted project
            return {}
        answers: Answers = {}
        report: Counter[str] = Counter()
        for task in tasks:
            daic_id = (task.get("data") or {}).get("daic_id")
            if daic_id is None:
                continue
            answer = task_answer(task)
            if not answer.answered:
                continue
            report[answer.status] += 1
            if answer.status in ("unknown", "disputed"):
                log.warning("Label Studio task %s (input %s): %s; counted as unsure", task.get("id"), daic_id,
                            answer.detail)
            answers[str(daic_id)] = answer.label
        report["projects recreated"] = self.report["projects recreated"]
        self.report = report
        return answers
