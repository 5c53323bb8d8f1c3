"""The labeling page in a real headless Chromium (Debian's package, driven by Playwright)."""
from __future__ import annotations

import shutil

import pytest

from daic.storage import open_store
from labeling_server import ServerThread
from test_labeling import make_task

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


def test_label_with_keyboard_and_buttons_survives_reload(browser, tmp_path):
    store = open_store(f"file://{tmp_path}")
    book = make_task(store, n=4)
    with ServerThread(store) as server:
        page = browser.new_page()
        page.goto(f"{server.url}/")  # one task: redirected to its page
        page.wait_for_selector("text=0 of 4 labeled")
        page.keyboard.press("3")
        page.wait_for_selector("text=1 of 4 labeled")
        page.click("#classes button[data-label='8']")
        page.wait_for_selector("text=2 of 4 labeled")
        page.keyboard.press("u")
        page.wait_for_selector("text=3 of 4 labeled")
        page.screenshot(path=str(tmp_path / "labeling.png"))
        page.reload()
        page.wait_for_selector("text=3 of 4 labeled")
        assert "model says" in page.inner_text("#meta")
        page.keyboard.press("1")
        page.wait_for_selector("#done:not([hidden])")
        page.close()
    answers = book.answers()
    assert {a: answers[a].label for a in answers} == {"r0": 3, "r1": 8, "r2": None, "r3": 1}
    png = (tmp_path / "labeling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
