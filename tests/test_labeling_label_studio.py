"""The label-studio backend against the real Label Studio (PyPI 1.23.2 in .venv-labelstudio, started
on loopback by the test, with its defaults: legacy tokens off). A whole labeling round: sidecar
records, the sample-operational component, the collect-labels component waiting while a labeler,
logged in through the login form like a browser, answers through the API the web app uses
(``POST /api/tasks/<id>/annotations/`` with the session cookie and CSRF token): labels, a skip, an
empty submit, "unsure", a choice added to the interface later, a disagreeing second opinion. Then
the faults a real server can show: an access token refused (401 -> refresh), legacy tokens off and
on, a deleted project, a restart while the step waits. Faults that need injection (N failed calls, a
failed import) are in components/collect_labels/test_label_studio.py against the stand-in."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import requests

from daic.components import cycle_store
from daic.components.collect_labels.label_studio import LabelStudioBackend, LabelStudioClient, LabelStudioError
from daic.components.collect_labels.logic import CollectConfig, wait_for_answers
from daic.components.collect_labels.logic import run as collect
from daic.components.collect_labels.request import BackendUnavailable, LabelRequest
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.storage import open_store
from fakes.waiting import wait_for
from labeling_server import LabelStudio
from test_labeling_browser import browser, log_requests  # noqa: F401 (browser: a fixture)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    with LabelStudio(tmp_path_factory.mktemp("label-studio")) as server:
        server.token = server.personal_access_token()
        yield server


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path / 'store'}")


def _client(server, **kw):
    return LabelStudioClient(server.url, server.token, sleep=lambda s: None, **kw)


def _sampled(store, cycle, budget=12):
    truth = log_requests(store, n_requests=8)
    sample(store, SampleConfig(sampler="srs", budget=budget, cycle=cycle, seed=3))
    ids, inputs = cycle_store.read_sample_inputs(store, cycle)
    return truth, LabelRequest(cycle=cycle, ids=ids, inputs=inputs, predictions=np.zeros(len(ids), np.int64),
                               confidences=np.full(len(ids), 0.5))


def _project(store, cycle):
    return int(store.get_json(cycle_store.key(cycle, "label-studio.json"))["project"])


def _tasks(browser, server, project):
    r = browser.get(f"{server.url}/api/projects/{project}/tasks/", params={"page_size": 100}, timeout=30)
    r.raise_for_status()
    return r.json()


def _annotate(browser, server, task_id, choice=None, cancelled=False):
    result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]
    r = browser.post(f"{server.url}/api/tasks/{task_id}/annotations/", timeout=30,
                     json={"result": result, "was_cancelled": cancelled, "lead_time": 2.5})
    assert r.status_code == 201, r.text


def _exports(server):
    folder = server.data / "export"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_whole_labeling_round(label_studio, store, monkeypatch):
    server = label_studio
    truth, request = _sampled(store, "c-ls")
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)  # the personal token, as the UI hands it out
    monkeypatch.delenv("LABEL_STUDIO_AUTH_SCHEME", raising=False)
    exports_before = _exports(server)
    result = {}
    step = threading.Thread(target=lambda: result.update(r=collect(store, "c-ls", CollectConfig(
        backend="label-studio", timeout_s=600, poll_s=0.5))), daemon=True)
    step.start()
    wait_for(lambda: store.exists(cycle_store.key("c-ls", "label-studio.json"))
             and store.get_json(cycle_store.key("c-ls", "label-studio.json"))["state"] == "ready",
             timeout=120, what="the component's project")
    browser = server.browser()
    project = _project(store, "c-ls")
    config = browser.get(f"{server.url}/api/projects/{project}/", timeout=30).json()["label_config"]
    assert "$prediction" not in config  # blind by default
    tasks = sorted(_tasks(browser, server, project), key=lambda t: t["id"])
    assert len(tasks) == len(request.ids) and all(set(t["data"]) == {"image", "daic_id"} for t in tasks)
    assert all(t["data"]["image"].startswith("data:image/png;base64,") for t in tasks)
    # the interface gets a choice daic does not know (an administrator edits the labeling config)
    patched = browser.patch(f"{server.url}/api/projects/{project}/", timeout=30,
                            json={"label_config": config.replace("</Choices>", '<Choice value="seven"/></Choices>')})
    assert patched.status_code == 200 and '"seven"' in patched.json()["label_config"], patched.text
    special = {0: dict(cancelled=True), 1: dict(choice=None), 2: dict(choice="unsure"), 3: dict(choice="seven")}
    # tasks 4 and 5 get a second opinion (4: disagreeing, 5: agreeing); they are answered first, so the
    # step, which returns once every task has an answer, cannot finish before both opinions are in
    order = [4, 5] + [k for k in range(len(tasks)) if k not in (4, 5)]
    for k in order:
        i = tasks[k]["data"]["daic_id"]
        _annotate(browser, server, tasks[k]["id"], **special.get(k, {"choice": str(truth[i])}))
        if k == 4:
            _annotate(browser, server, tasks[k]["id"], str((truth[i] + 1) % 10))
        if k == 5:
            _annotate(browser, server, tasks[k]["id"], str(truth[i]))
    step.join(timeout=300)
    assert not step.is_alive() and "r" in result
    n = len(tasks)
    assert (result["r"].n_labeled, result["r"].n_unsure) == (n - 5, 5)
    labels = cycle_store.read_labels(store, "c-ls")
    expected = {t["data"]["daic_id"]: truth[t["data"]["daic_id"]] for k, t in enumerate(tasks) if k not in (0, 1, 2, 3, 4)}
    assert labels == expected
    assert _exports(server) == exports_before  # polling left no export files behind


def test_an_access_token_the_server_refuses_is_refreshed(label_studio):
    client = _client(label_studio)
    client.call("GET", "/api/projects/")
    assert client.refreshes == 1
    client._access = client._access[:-4] + "AAAA"  # as after its five minutes: Label Studio answers 401
    assert client.call("GET", "/api/projects/").status_code == 200
    assert client.refreshes == 2
    with pytest.raises(LabelStudioError, match="refused the personal access token"):
        LabelStudioClient(label_studio.url, "x.y.z").call("GET", "/api/projects/")


def test_legacy_tokens_are_off_by_default_and_work_when_enabled(label_studio):
    legacy = LabelStudioClient(label_studio.url, label_studio.LEGACY_TOKEN, sleep=lambda s: None)
    assert legacy.auth_scheme == "legacy"
    with pytest.raises(LabelStudioError, match="legacy tokens are disabled by default"):
        legacy.call("GET", "/api/projects/")
    browser = label_studio.browser()
    on = browser.post(f"{label_studio.url}/api/jwt/settings", timeout=30,
                      json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": True})
    assert on.status_code in (200, 201), on.text
    try:
        assert legacy.call("GET", "/api/projects/").status_code == 200
    finally:
        browser.post(f"{label_studio.url}/api/jwt/settings", timeout=30,
                     json={"api_tokens_enabled": True, "legacy_api_tokens_enabled": False})


def test_a_deleted_project_comes_back_and_a_restart_is_waited_out(label_studio, store):
    server = label_studio
    truth, request = _sampled(store, "c-ls-faults", budget=6)
    backend = LabelStudioBackend(store, client=_client(server, attempts=2))
    backend.submit(request)
    backend.submit(request)  # a retried step: still one project
    browser = server.browser()
    first = _project(store, "c-ls-faults")
    titles = [p["title"] for p in browser.get(f"{server.url}/api/projects/", params={"page_size": 100},
                                              timeout=30).json()["results"]]
    assert titles.count("daic c-ls-faults") == 1
    assert browser.delete(f"{server.url}/api/projects/{first}/", timeout=30).status_code == 204  # in the UI
    assert backend.poll(request) == {}
    second = _project(store, "c-ls-faults")
    assert second != first and len(_tasks(browser, server, second)) == len(request.ids)
    for task in _tasks(browser, server, second):
        _annotate(browser, server, task["id"], str(truth[task["data"]["daic_id"]]))
    server.stop()  # an outage while the step waits
    try:
        with pytest.raises(BackendUnavailable):
            backend.poll(request)
        clock = [0.0]
        restarted = []

        def sleep_then_restart(seconds):  # the server comes back while the step sleeps between polls
            clock[0] += seconds
            if not restarted:
                restarted.append(server.start(fresh=False))

        answers, _ = wait_for_answers(backend, request, timeout_s=3600, poll_s=60, clock=lambda: clock[0],
                                      sleep=sleep_then_restart)
    finally:
        if server._proc is None:
            server.start(fresh=False)
    assert answers == {str(i): truth[str(i)] for i in request.ids}
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_the_labeler_sees_the_input_and_the_digit_keys_choose_their_digit(label_studio, store, browser):  # noqa: F811
    """In Label Studio's own web app (Chromium): the image the labeler sees decodes to the input's
    pixels, the model's answer is nowhere on the page, and pressing "3" chooses "3" (Label Studio
    numbers choices 1..9, 0 by position unless the config names hotkeys)."""
    server = label_studio
    truth, request = _sampled(store, "c-ls-browser", budget=4)
    LabelStudioBackend(store, client=_client(server)).submit(request)
    project = _project(store, "c-ls-browser")
    page = browser.new_page()
    page.goto(f"{server.url}/user/login/")
    page.fill("input[name=email]", server.EMAIL)
    page.fill("input[name=password]", server.PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)
    page.goto(f"{server.url}/projects/{project}/data?labeling=1")
    # the image element Label Studio shows (it may turn the data URI into a blob: URL)
    shown = ("() => [...document.querySelectorAll('img')].find(i => /^(data:image\\/png|blob:)/.test(i.src) "
             "&& i.complete && i.naturalWidth > 0)")
    page.wait_for_function(f"() => Boolean(({shown})())", timeout=120_000)
    grey = page.evaluate(f"""() => {{
        const img = ({shown})();
        const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, c.width, c.height).data.filter((_, k) => k % 4 == 0));
    }}""")
    expected = (np.clip(request.inputs, 0, 1) * 255).round().astype(np.int64).reshape(len(request.ids), -1)
    assert len(grey) == 28 * 28
    error = np.abs(expected - np.array(grey, np.int64)).max(axis=1)
    k = int(error.argmin())
    assert error[k] <= 1  # the pixels of one of the cycle's inputs, exactly
    shown_id = str(request.ids[k])
    (task,) = [t for t in _tasks(server.browser(), server, project) if t["data"]["daic_id"] == shown_id]
    assert "model says" not in page.inner_text("body")
    digit = str(truth[task["data"]["daic_id"]])
    page.keyboard.press(digit)
    page.click("button:has-text('Submit')")
    wait_for(lambda: _tasks(server.browser(), server, project) and any(
        t["id"] == task["id"] and t["annotations"] for t in _tasks(server.browser(), server, project)),
        timeout=60, what="the submitted annotation")
    (annotated,) = [t for t in _tasks(server.browser(), server, project) if t["id"] == task["id"]]
    assert annotated["annotations"][0]["result"][0]["value"]["choices"] == [digit]
    page.close()
