"""The label-studio backend against the stand-in (daic.components.testing.label_studio_standin, real
HTTP on loopback) for the faults the real server cannot be made to show on demand: outages, dropped
connections, revoked access tokens, failed imports, deleted projects. The same round against the real
Label Studio is tests/test_labeling_label_studio.py. Backoff waits go through an injected sleep."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.label_studio import (LabelStudioBackend, LabelStudioClient, LabelStudioError,
                                                         label_config, task_answer)
from daic.components.collect_labels.logic import CollectConfig, run, wait_for_answers
from daic.components.collect_labels.request import BackendUnavailable, LabelRequest
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.components.testing.label_studio_standin import StandInServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sampled(operational_store):
    store, stream = operational_store
    sample(store, SampleConfig(sampler="stratified", budget=40, cycle="c1", seed=2))
    truth = dict(zip(stream.ids, stream.labels.tolist()))
    ids, inputs = cycle_store.read_sample_inputs(store, "c1")
    request = LabelRequest(cycle="c1", ids=ids, inputs=inputs, predictions=np.arange(len(ids)) % 10,
                           confidences=np.full(len(ids), 0.5))
    return store, truth, request


@pytest.fixture
def server():
    with StandInServer() as s:
        yield s


def backend_for(store, server, key=None, scheme="", **kw):
    client = LabelStudioClient(server.url, key or server.standin.personal_token, scheme or "auto",
                               sleep=lambda s: None, **kw)
    return LabelStudioBackend(store, client=client)


def annotate_all(standin, project, truth, choose=None):
    for task in standin.tasks(project):
        i = task["data"]["daic_id"]
        standin.annotate(task, choose(i) if choose else str(truth[i]))


def test_a_personal_access_token_is_exchanged_and_refreshed(sampled, server):
    """Label Studio's default: the personal token is a refresh token (as Bearer it is refused)."""
    store, truth, request = sampled
    backend = backend_for(store, server)
    assert backend.client.auth_scheme == "personal"
    backend.submit(request)
    assert server.standin.refreshes == 1
    server.standin.expire_access_tokens()  # five minutes later: the access token is no longer valid
    assert backend.poll(request) == {}
    assert server.standin.refreshes == 2
    annotate_all(server.standin, 1, truth)
    assert backend.poll(request) == {str(i): truth[str(i)] for i in request.ids}


def test_legacy_tokens_work_when_enabled_and_name_the_cause_when_not(sampled):
    store, _, request = sampled
    with StandInServer(legacy_enabled=True) as server:
        backend = backend_for(store, server, key=server.standin.legacy_token)
        assert backend.client.auth_scheme == "legacy"
        backend.submit(request)
        assert server.standin.refreshes == 0
    with StandInServer(legacy_enabled=False) as server:
        with pytest.raises(LabelStudioError, match="legacy tokens are disabled by default"):
            backend_for(store, server, key=server.standin.legacy_token).submit(request)
        with pytest.raises(LabelStudioError, match="refused the personal access token"):
            backend_for(store, server, key="a.b.c").submit(request)
        with pytest.raises(ValueError, match="LABEL_STUDIO_AUTH_SCHEME must be one of"):
            backend_for(store, server, scheme="Basic")


def test_the_auth_scheme_comes_from_the_environment(sampled, server, monkeypatch):
    store, _, _ = sampled
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.standin.personal_token)
    monkeypatch.setenv("LABEL_STUDIO_AUTH_SCHEME", "legacy")
    assert LabelStudioBackend(store).client.auth_scheme == "legacy"
    monkeypatch.setenv("LABEL_STUDIO_AUTH_SCHEME", "Bearer")
    assert LabelStudioBackend(store).client.auth_scheme == "personal"


def test_outages_while_waiting_are_retried_not_fatal(sampled, server):
    store, truth, request = sampled
    backend = backend_for(store, server)
    server.standin.fail("POST", "/api/projects/", 502, "drop")
    backend.submit(request)  # created after a 502 and a dropped connection
    annotate_all(server.standin, 1, truth)
    server.standin.fail("GET", "/api/projects/1/tasks/", *([503] * 6))  # one poll's worth of retries
    now = [0.0]

    def tick(seconds):
        now[0] += seconds

    answers, _ = wait_for_answers(backend, request, timeout_s=600, poll_s=30, clock=lambda: now[0], sleep=tick)
    assert len(answers) == len(request.ids) and now[0] == 30  # the failed poll cost one round, no more
    assert backend.client.retries >= 7
    server.standin.fail("GET", "/api/projects/1/tasks/", *([500] * 6))
    with pytest.raises(BackendUnavailable, match="failed 6 times; last: 500"):
        backend.poll(request)


def test_skips_empty_submits_unknown_choices_and_disagreements(sampled, server):
    store, truth, request = sampled
    backend = backend_for(store, server)
    backend.submit(request)
    tasks = server.standin.tasks(1)
    ids = [t["data"]["daic_id"] for t in tasks]
    s = server.standin
    s.annotate(tasks[0], None, cancelled=True)          # skipped
    s.annotate(tasks[1], None)                          # submitted with nothing chosen
    s.annotate(tasks[2], "unsure")
    s.annotate(tasks[3], "seven")                       # a choice added in the UI
    s.annotate(tasks[4], "3"), s.annotate(tasks[4], "5")  # a second opinion that disagrees
    s.annotate(tasks[5], "3"), s.annotate(tasks[5], "3")  # a second opinion that agrees
    s.annotate(tasks[6], None, cancelled=True), s.annotate(tasks[6], "4")  # one skipped, one answered
    answers = backend.poll(request)
    assert answers == {ids[0]: None, ids[1]: None, ids[2]: None, ids[3]: None, ids[4]: None, ids[5]: 3, ids[6]: 4}
    assert backend.report == {"skipped": 1, "empty": 1, "unsure": 1, "unknown": 1, "disputed": 1, "labeled": 2,
                              "projects recreated": 0}
    for task in tasks[7:]:
        s.annotate(task, str(truth[task["data"]["daic_id"]]))
    result = run(store, "c1", CollectConfig(backend="label-studio", timeout_s=1, poll_s=1), backend=backend)
    assert (result.n_labeled, result.n_unsure) == (len(ids) - 5, 5)


@pytest.mark.parametrize("annotations,expected", [
    ([], ("open", None)),
    ([{"was_cancelled": True, "result": [{"value": {"choices": ["2"]}}]}], ("skipped", None)),
    ([{"result": [{"value": {"choices": ["2"]}}]}, {"result": [{"value": {"choices": ["2"]}}]}], ("labeled", 2)),
    ([{"result": [{"value": {"choices": ["2"]}}]}, {"result": [{"value": {"choices": ["9"]}}]}], ("disputed", None)),
    ([{"result": [{"value": {"choices": ["2"]}}]}, {"result": []}], ("labeled", 2)),
    ([{"result": [{"value": {"choices": ["x"]}}]}], ("unknown", None)),
    ([{"result": [{"value": {}}]}], ("empty", None)),
])
def test_task_answer_table(annotations, expected):
    answer = task_answer({"annotations": annotations})
    assert (answer.status, answer.label) == expected


def test_a_failed_import_leaves_no_project_and_a_retry_succeeds(sampled, server):
    store, _, request = sampled
    backend = backend_for(store, server)
    server.standin.fail("POST", "/api/projects/1/import", *([500] * 6))
    with pytest.raises(BackendUnavailable):
        backend.submit(request)
    assert server.standin.projects == {} and not store.exists(cycle_store.key("c1", "label-studio.json"))
    backend.submit(request)
    assert list(server.standin.projects) == [2] and len(server.standin.tasks(2)) == len(request.ids)
    backend.submit(request)  # a retried step: no second project
    assert list(server.standin.projects) == [2]


def test_a_half_made_project_and_an_unrecorded_leftover_are_replaced(sampled, server):
    store, _, request = sampled
    backend = backend_for(store, server)
    backend.submit(request)
    key = cycle_store.key("c1", "label-studio.json")
    store.put_json(key, {**store.get_json(key), "state": "creating"})  # crashed before "ready"
    backend.submit(request)
    assert list(server.standin.projects) == [2]
    store.delete(key)  # crashed between creating the project and writing the record
    backend.submit(request)
    assert list(server.standin.projects) == [3] and store.get_json(key)["state"] == "ready"


def test_a_deleted_project_is_recreated_by_the_next_poll(sampled, server):
    store, truth, request = sampled
    backend = backend_for(store, server)
    backend.submit(request)
    del server.standin.projects[1]  # someone deleted it in the UI
    assert backend.poll(request) == {}
    assert list(server.standin.projects) == [2] and len(server.standin.tasks(2)) == len(request.ids)
    assert backend.report["projects recreated"] == 1
    annotate_all(server.standin, 2, truth)
    assert len(backend.poll(request)) == len(request.ids)


def test_polling_leaves_nothing_on_the_server(sampled, server):
    store, _, request = sampled
    backend = backend_for(store, server)
    backend.submit(request)
    before = list(server.standin.requests)
    for _ in range(5):
        backend.poll(request)
    polls = server.standin.requests[len(before):]
    assert server.standin.exports == 0
    assert {m for m, _ in polls} == {"GET"} and all("export" not in p for _, p in polls)


def test_blind_by_default(sampled, server):
    """Neither the interface nor the task data shows the model's answer unless the cycle asks."""
    store, _, request = sampled
    backend_for(store, server).submit(request)
    project = server.standin.projects[1]
    assert "$prediction" not in project["label_config"] and "model says" not in project["label_config"]
    assert all(set(t["data"]) == {"image", "daic_id"} for t in project["tasks"])
    assert "$prediction" in label_config(show_model_answer=True)


def test_pillow_is_in_the_pipelines_image_install_set():
    tree = ast.parse((ROOT / "setup.py").read_text())
    extras = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", "") == "EXTRAS")
    pipelines = next(v for k, v in zip(extras.keys, extras.values) if getattr(k, "value", "") == "pipelines")
    assert any(getattr(e, "value", "").lower().startswith("pillow==") for e in pipelines.elts)
    dockerfile = (ROOT / "images" / "pipelines" / "Dockerfile").read_text()
    assert "pipelines]" in dockerfile


def test_an_outage_when_the_step_starts_is_waited_out(sampled, server):
    """Submitting during an outage (more failures than one call's retries) is tried again each poll."""
    store, truth, request = sampled
    backend = backend_for(store, server)
    server.standin.fail("POST", "/api/projects/", *([503] * 8))  # the first submit's 6 tries and 2 more
    now = [0.0]

    def tick(seconds):  # a labeler answers while the step sleeps, once the project exists
        now[0] += seconds
        if server.standin.projects:
            annotate_all(server.standin, next(iter(server.standin.projects)), truth)

    result = run(store, "c1", CollectConfig(backend="label-studio", timeout_s=3600, poll_s=60), backend=backend,
                 clock=lambda: now[0], sleep=tick)
    assert result.n_labeled == len(request.ids) and list(server.standin.projects) == [1]
    server.standin.fail("POST", "/api/projects/", *([503] * 100))
    store.delete(cycle_store.key("c1", "label-studio.json"))
    del server.standin.projects[1]
    now[0] = 0.0
    with pytest.raises(TimeoutError, match="stayed unavailable for 120s"):
        run(store, "c1", CollectConfig(backend="label-studio", timeout_s=120, poll_s=60), backend=backend,
            clock=lambda: now[0], sleep=tick)


def test_a_body_that_is_not_json_is_named_not_a_traceback(sampled, server):
    store, _, request = sampled
    backend = backend_for(store, server)
    backend.submit(request)
    server.standin.fail("GET", "/api/projects/1/tasks/", "html")
    with pytest.raises(LabelStudioError, match="with no JSON list: '<!doctype html>"):
        backend.poll(request)
    server.standin.fail("POST", "/api/token/refresh/", "html")
    server.standin.expire_access_tokens()
    backend.client._access = None
    with pytest.raises(LabelStudioError, match="no JSON dict"):
        backend.poll(request)
