"""The labeling page in a real headless Chromium (Debian's package, driven by Playwright), on a cycle
made the way the pipeline makes it: the sidecar's record writer logs requests (ids ``<Seldon
puid>:<row>``), the sample-operational component samples them, and the collect-labels component
(web backend) writes the task and waits while a person logs in with their link and labels in the
browser; the component then returns the labels."""
from __future__ import annotations

import shutil
import threading
import uuid

import numpy as np
import pytest

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.data.mnist import load_split
from daic.labeling import LabelBook
from daic.sidecar.records import OperationalRecords, write_batch
from daic.storage import open_store
from fakes.waiting import wait_for
from labeling_server import ServerThread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def log_requests(store, n_requests=6, rows=4, seed=0):
    """What the sidecar writes for ``n_requests`` predictions of ``rows`` MNIST test digits each."""
    rng = np.random.default_rng(seed)
    test = load_split("test")
    truth = {}
    for r in range(n_requests):
        puid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        pick = rng.choice(len(test.images), rows, replace=False)
        probs = rng.dirichlet(np.ones(10), rows).astype(np.float32)
        ids = [f"{puid}:{k}" for k in range(rows)]
        truth.update(zip(ids, test.labels[pick].tolist()))
        write_batch(store, "mnist", OperationalRecords(
            ids=ids, request_ids=[puid] * rows, times=1.7e9 + r + np.arange(rows) / 10,
            inputs=test.images[pick], predictions=probs.argmax(1), probs=probs,
            embeddings=rng.normal(size=(rows, 8)), shadow_probs=probs, p_correct=probs.max(1),
            drift=np.zeros(rows), model_version=["v0001"] * rows), seq=r)
    return truth


def test_a_pipeline_cycle_is_labeled_in_the_browser(browser, tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    truth = log_requests(store)
    sample(store, SampleConfig(sampler="srs", budget=6, cycle="c-web", seed=1))
    result = {}
    step = threading.Thread(target=lambda: result.update(r=collect(
        store, "c-web", CollectConfig(backend="web", timeout_s=300, poll_s=0.2))), daemon=True)
    step.start()
    book = LabelBook(store, "c-web")
    wait_for(lambda: store.exists(book.prefix + "task.json"), timeout=60, what="the component's task")
    ids = book.task.ids
    assert all(":" in i for i in ids)  # the sidecar's ids, which the store's key pattern cannot hold
    with ServerThread(store) as server:
        page = browser.new_page()
        page.goto(f"{server.url}/label/c-web")
        page.wait_for_url("**/login")  # no token yet: sent to the login page
        page.goto(server.login_url)  # the link `daic label serve` prints
        page.wait_for_url("**/label/c-web")
        n = len(ids)
        page.wait_for_selector(f"text=0 of {n} labeled")
        assert "model says" not in page.inner_text("#meta")  # blind by default
        # the image the labeler sees is the first input's pixels
        page.wait_for_function("() => document.getElementById('input').complete "
                               "&& document.getElementById('input').naturalWidth > 0")
        grey = page.evaluate("""() => {
            const img = document.getElementById("input");
            const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext("2d"); ctx.drawImage(img, 0, 0);
            return Array.from(ctx.getImageData(0, 0, c.width, c.height).data.filter((_, k) => k % 4 == 0));
        }""")
        expected = (np.clip(book.input_of(ids[0]), 0, 1) * 255).astype(np.int64).ravel()
        assert len(grey) == 28 * 28 and np.abs(np.array(grey) - expected).max() <= 1
        # the page shows inputs in task order; answer the truth by keyboard, one by button, one unsure
        for k, sample_id in enumerate(ids):
            if k == 1:
                page.click(f"#classes button[data-label='{truth[sample_id]}']")
            elif k == 2:
                page.keyboard.press("u")
            else:
                page.keyboard.press(str(truth[sample_id]))
            page.wait_for_selector(f"text={k + 1} of {n} labeled")
            if k == 2:
                page.screenshot(path=str(tmp_path / "labeling.png"))
                page.reload()
                page.wait_for_selector(f"text={k + 1} of {n} labeled")
        page.wait_for_selector("#done:not([hidden])")
        page.close()
    step.join(timeout=60)
    assert not step.is_alive()
    assert (result["r"].n_requested, result["r"].n_labeled, result["r"].n_unsure) == (n, n - 1, 1)
    labels = cycle_store.read_labels(store, "c-web")
    assert labels == {i: truth[i] for k, i in enumerate(ids) if k != 2}
    assert {a.labeler for a in book.answers().values()} == {"ann"}
    png = (tmp_path / "labeling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_another_site_cannot_answer_from_a_logged_in_browser(browser, tmp_path):
    """A page on another origin (here: another loopback port, the same *site*, so the SameSite
    cookie is even sent) posts an answer the two ways that need no CORS preflight (a text/plain
    fetch and a form) and one JSON fetch; none is recorded."""
    import http.server
    import json

    from daic.labeling import LabelingTask

    store = open_store(f"file://{tmp_path / 'store'}")
    ids = [f"{uuid.uuid4()}:0", f"{uuid.uuid4()}:1"]
    LabelBook.create(store, LabelingTask(cycle="c", ids=ids, predictions=[1, 2], confidences=[0.5, 0.5]),
                     np.zeros((2, 28, 28), np.float32))
    with ServerThread(store) as server:
        target = f"{server.url}/api/c/labels"
        body = json.dumps({"id": ids[0], "label": 3})
        evil = f"""<!doctype html><form id=f method=post action="{target}" enctype="text/plain">
<input name='{body[:-1]}, "x": "' value='"}}'></form><script>
const opts = {{method: "POST", credentials: "include", mode: "no-cors"}};
Promise.allSettled([
  fetch("{target}", {{...opts, headers: {{"Content-Type": "text/plain"}}, body: {json.dumps(body)}}}),
  fetch("{target}", {{method: "POST", credentials: "include", headers: {{"Content-Type": "application/json"}},
                      body: {json.dumps(body)}}}),
]).then(() => {{ document.title = "sent"; document.getElementById("f").submit(); }});
</script>"""

        class Evil(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                data = evil.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        evil_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
        threading.Thread(target=evil_server.serve_forever, daemon=True).start()
        try:
            page = browser.new_page()
            page.goto(server.login_url)
            page.wait_for_url("**/label/c")
            page.wait_for_selector("text=0 of 2 labeled")
            with page.expect_navigation(url=target):  # the form's post is the last thing the page does
                page.goto(f"http://127.0.0.1:{evil_server.server_port}/")
            assert "not accepted" in page.content()
            page.close()
        finally:
            evil_server.shutdown()
            evil_server.server_close()
    assert LabelBook(store, "c").answers() == {}
