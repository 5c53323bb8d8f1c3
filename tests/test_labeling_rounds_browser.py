"""Labels in rounds on the labeling page, in a real headless Chromium (Debian's package, driven by
Playwright): the collect-labels step drives two rounds with the web backend while a person labels
in the browser; when the first round is done the page offers the second round's inputs by itself
(no reload), and the step returns every label."""
from __future__ import annotations

import threading

from daic.components import cycle_store
from daic.components.collect_labels.logic import CollectConfig
from daic.components.collect_labels.logic import run as collect
from daic.components.sample_operational.logic import SampleConfig
from daic.components.sample_operational.logic import run as sample
from daic.labeling import LabelBook
from daic.storage import open_store
from fakes.waiting import wait_for
from labeling_server import ServerThread
from test_labeling_browser import browser, log_requests  # noqa: F401 (browser: a fixture)


def test_the_page_offers_the_next_round_by_itself(browser, tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    truth = log_requests(store, n_requests=10, rows=4)
    sample(store, SampleConfig(sampler="srs", budget=12, round_size=6, cycle="c-rounds", seed=1))
    result = {}
    step = threading.Thread(target=lambda: result.update(r=collect(
        store, "c-rounds", CollectConfig(backend="web", timeout_s=300, poll_s=0.2))), daemon=True)
    step.start()
    book = LabelBook(store, "c-rounds")
    wait_for(lambda: store.exists(book.prefix + "task.json"), timeout=60, what="the first round's task")
    with ServerThread(store) as server:
        page = browser.new_page()
        page.goto(server.login_url)
        page.wait_for_url("**/label/c-rounds")
        page.wait_for_selector("text=0 of 6 labeled")
        for k in range(12):
            if k == 6:  # the first round is done; the second appears on the same page
                page.wait_for_selector("text=6 of 12 labeled", timeout=60_000)
                assert "new round" in page.inner_text("#status")
            pos = int(page.inner_text("#meta").split(" ")[0].lstrip("#")) - 1
            sample_id = LabelBook(store, "c-rounds").task.ids[pos]
            page.keyboard.press(str(truth[sample_id]))
            page.wait_for_selector(f"text={k + 1} of {6 if k < 6 else 12} labeled")
        page.close()
    step.join(timeout=60)
    assert not step.is_alive() and result["r"].n_labeled == 12
    rounds = store.get_json(cycle_store.key("c-rounds", "rounds.json"))["rounds"]
    assert [r["n_draws"] for r in rounds] == [6, 12] and rounds[-1]["stop"] == "budget"
    ids = LabelBook(store, "c-rounds").task.ids
    assert len(ids) == 12 and cycle_store.read_labels(store, "c-rounds") == {i: truth[i] for i in ids}
