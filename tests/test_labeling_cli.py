"""``daic label serve`` as a user runs it (a real subprocess): it prints a login link whose token
works, and with ``--no-login`` (as the demo's ``--labeler web`` runs it) it accepts tokens issued
beforehand; ``daic label token`` issues and revokes tokens the running page picks up at once."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import requests
from click.testing import CliRunner

from daic.cli import main
from daic.labeling import LabelBook, LabelingTask
from daic.labeling.auth import Labelers
from daic.storage import open_store
from daic.storage.seaweedfs import free_port
from fakes.waiting import wait_for


@pytest.fixture
def store(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    LabelBook.create(store, LabelingTask(cycle="c1", ids=["a:0", "a:1"], predictions=[1, 2], confidences=[0.5, 0.5]),
                     np.zeros((2, 28, 28), np.float32))
    return store


def _serve(store, labelers, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "daic.cli", "label", "serve", "--store", store.url,
                             "--port", str(port), "--labelers", str(labelers), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    lines = []

    def ready():
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return proc.poll() is not None  # died: stop waiting, the assertion below says so

    wait_for(ready, timeout=60, what="daic label serve")
    assert proc.poll() is None, proc.stdout.read()
    while len(lines) < (1 if "--no-login" in extra else 2):
        lines.append(proc.stdout.readline())
    return proc, url, lines


def test_serve_prints_a_login_link_that_works(store, tmp_path):
    proc, url, lines = _serve(store, tmp_path / "labelers.json", "--labeler", "ann")
    try:
        link = next(line for line in lines if "log in as ann" in line)
        token = re.search(r"/login#token=(\S+)", link).group(1)
        assert link.split(": ", 1)[1].startswith(f"{url}/login#token=")
        ok = requests.get(f"{url}/api/c1/task", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["labeler"] == "ann"
        assert requests.get(f"{url}/api/c1/task", timeout=10).status_code == 401
        # a token issued while the page runs works at once; a revoked one stops at once
        runner = CliRunner()
        issued = runner.invoke(main, ["label", "token", "bob", "--labelers", str(tmp_path / "labelers.json"),
                                      "--url", url])
        assert issued.exit_code == 0, issued.output
        bob = issued.output.strip().split("#token=")[1]
        auth = {"Authorization": f"Bearer {bob}"}
        assert requests.get(f"{url}/api/c1/task", headers=auth, timeout=10).json()["labeler"] == "bob"
        revoked = runner.invoke(main, ["label", "token", "bob", "--revoke", "--labelers", str(tmp_path / "labelers.json")])
        assert revoked.exit_code == 0
        assert requests.get(f"{url}/api/c1/task", headers=auth, timeout=10).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_no_login_accepts_tokens_issued_beforehand_as_the_demo_does(store, tmp_path):
    labelers = tmp_path / "run" / "labelers.json"
    token = Labelers.load(labelers).issue("demo")
    proc, url, lines = _serve(store, labelers, "--no-login")
    try:
        assert not any("#token=" in line for line in lines)
        resp = requests.post(f"{url}/api/c1/labels", json={"id": "a:1", "label": 4},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert LabelBook(store, "c1").answers()["a:1"].labeler == "demo"


@pytest.mark.parametrize("args,message", [
    (["label", "token", "../x"], "invalid labeler name"),
    (["label", "progress", ".."], "invalid cycle name"),
    (["label", "token", "nobody", "--revoke"], "no labeler 'nobody'"),
])
def test_cli_errors_name_the_problem(args, message, tmp_path):
    result = CliRunner().invoke(main, [*args, "--labelers", str(tmp_path / "l.json")] if args[1] == "token" else
                                [*args, "--store", f"file://{tmp_path}"])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_a_broken_labelers_file_is_a_clear_error(tmp_path, store):
    bad = tmp_path / "labelers.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(main, ["label", "token", "ann", "--labelers", str(bad)])
    assert result.exit_code != 0 and "not a labelers file" in result.output
