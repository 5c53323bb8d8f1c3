"""A person's path, end to end: `daic demo --labeler web` with quick settings, and a person who
labels on the labeling page in a real headless Chromium (Debian's package, driven by Playwright)
through a whole cycle: login link from the demo's output, the task the cycle asks for (every round
of it), the retraining, the promotion.

The "person" knows each digit's truth the way a human would by looking: here by finding the
page's input in the scenario stream that produced the traffic (as the simulated labeler does).
Minutes of CPU (the first model, the sidecar's oracles, a retraining).
"""
from __future__ import annotations

import re
import shutil
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from daic.data.scenarios import Scenario, materialise
from daic.labeling import LabelBook
from daic.storage import open_store
from daic.storage.seaweedfs import free_port
from fakes.waiting import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _truth_by_image(spec):
    stream = materialise(Scenario(spec))
    flat = stream.images.reshape(len(stream.images), -1)
    sq = (flat**2).sum(axis=1)

    def truth(image: np.ndarray) -> int:
        x = image.reshape(-1).astype(np.float32)
        k = int(np.argmin(sq - 2 * flat @ x))
        assert np.abs(flat[k] - x).max() < 1e-3, "the page's input is not from the demo's scenario"
        return int(stream.labels[k])

    return truth


def test_demo_web_cycle_labeled_in_a_browser_to_promotion(tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    from daic.commands import demo as demo_command
    from daic.demo.config import DemoConfig
    from daic.demo.driver import scenario_spec

    if not shutil.which("chromium"):
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium package")
    store_url = f"file://{tmp_path / 'store'}"
    ports = {name: free_port() for name in ("gateway_port", "model_port", "metrics_port", "sidecar_port",
                                            "sidecar_ingest_port", "label_port", "transformer_port",
                                            "transformer_metrics_port")}
    original = DemoConfig.quick_defaults

    def quick_on_free_ports():  # the CLI's --quick settings, on ports no other test holds
        return {**original(), **ports, "work_dir": tmp_path / "demo", "run": "demo-web-e2e", "budget": 120,
                # two rounds of 60: with 60 labels in all (rounds of 30) the evaluation's held-out draws
                # were so few that a better one-epoch challenger (58 % vs 48 % [36, 61]) was refused by
                # chance (seen once in a full run); the rounds are what this test is about, not the budget
                "label_round_size": 60,
                # promotion is the retrained challenger's: with "both", --quick's one-epoch challenger may
                # lose to the input filter in front of the champion (a documented outcome, tested elsewhere)
                "remedy": "retrain",
                # a busy machine (a shared CI runner) may need more than the demo's 400 batches / 15 min
                "max_drift_steps": 5000, "cycle_timeout_s": 2400}

    monkeypatch.setattr(DemoConfig, "quick_defaults", staticmethod(quick_on_free_ports))
    lines: list[str] = []
    result = {}

    def demo():
        runner = CliRunner()
        r = runner.invoke(demo_command.command, ["--labeler", "web", "--quick", "--store", store_url],
                          catch_exceptions=True)
        result["exit"], result["output"], result["exc"] = r.exit_code, r.output, r.exception

    # echo the demo's lines as they come (the login link is one of them)
    import click

    real_echo = click.echo

    def echo(message=None, *args, **kwargs):
        lines.append(str(message))
        return real_echo(message, *args, **kwargs)

    monkeypatch.setattr(click, "echo", echo)
    thread = threading.Thread(target=demo, daemon=True)
    thread.start()
    link = wait_for(lambda: next((m.group(0) for line in lines
                                  if (m := re.search(r"http://127\.0\.0\.1:\d+/login#token=\S+", line))), None),
                    timeout=1800, what="the demo's labeling link")
    cfg = DemoConfig(labeler="web", **quick_on_free_ports())
    truth = _truth_by_image(scenario_spec(cfg))
    store = open_store(store_url)
    cycle = wait_for(lambda: next((k.split("/")[1] for k in store.list("cycles/")
                                   if k.endswith("/labeling/task.json")), None),
                     timeout=1800, what="a cycle's labeling task (the trigger firing)")
    labeled = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(link)
        page.wait_for_url(f"**/label/{cycle}", timeout=60_000)  # one task: the index opens it
        book = LabelBook(store, cycle)
        while thread.is_alive():
            text = page.inner_text("#progress")
            answered, total = (int(x) for x in re.match(r"(\d+) of (\d+)", text).groups())
            if answered < total:
                # the page shows the first unanswered input; its id is in the task at that position
                meta = page.inner_text("#meta")
                pos = int(re.match(r"#(\d+)", meta).group(1)) - 1
                sample_id = LabelBook(store, cycle).task.ids[pos]
                page.keyboard.press(str(truth(book.input_of(sample_id) if sample_id in book.task.ids
                                              else LabelBook(store, cycle).input_of(sample_id))))
                page.wait_for_selector(f"text={answered + 1} of", timeout=60_000)
                labeled += 1
                continue
            # everything shown is answered: the cycle goes on (another round appears here, or training)
            try:
                page.wait_for_function(
                    f"() => !/^{total} of {total} /.test(document.getElementById('progress').textContent)",
                    timeout=5_000)
            except Exception:  # noqa: BLE001 - no new round within 5 s: look whether the demo finished
                pass
        browser.close()
    thread.join(timeout=60)
    output = result.get("output", "")
    (tmp_path / "demo-output.txt").write_text(output)  # the whole run, for a failure's post-mortem
    assert result.get("exit") == 0, f"{result.get('exc')!r}\n{output[-4000:]}"
    # two rounds of 60, both labeled on the page (the second appeared there by itself)
    rounds = store.get_json(f"cycles/{cycle}/rounds.json")["rounds"]
    assert [r["n_draws"] for r in rounds] == [60, 120] and rounds[-1]["stop"] == "budget"
    assert labeled == len(LabelBook(store, cycle).task.ids) > 60
    assert re.search(r"cycle finished \(promoted\)", output), output[-4000:]
    # training was not a silent minute: a line per epoch, for the first model and the retraining
    epoch_line = re.compile(r"training epoch \d+/\d+: loss -?[0-9.]+, .*samples/s")
    trigger_at = output.index(": trigger ")
    assert epoch_line.search(output[:trigger_at]), output[:trigger_at][-4000:]  # the first model
    assert epoch_line.search(output[trigger_at:]), output[trigger_at:][-4000:]  # the cycle's retraining
