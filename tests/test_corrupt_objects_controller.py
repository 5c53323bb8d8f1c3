"""`daic controller` starting on a state directory whose ``status.json`` *contents* are wrong.

The state is written by a real ``LocalController`` that finished one cycle (the sidecar's ``GET
/estimate`` is the scripted stand-in of tests/fakes/sidecar.py: an HTTP service that cannot run
here for real; the pipeline is the fake pipeline the controller tests use). ``status.json`` is then
replaced by seeded corrupted variants (tests/corrupt_variants.py) and ``daic controller`` runs one
pass: it must run (a variant still valid) or exit 1 with one line naming the file and saying to
move it aside, never an AttributeError/JSONDecodeError/ValidationError traceback, and it must not
overwrite the unreadable file (a person may want it back).
"""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from corrupt_variants import json_variants
from daic.cli import main
from daic.operators.local_controller import LocalController
from fakes.sidecar import FakeSidecar, drifted_stream
from test_operator_local_controller import FAKE_PIPELINE, write_cycle

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A state directory after one finished cycle, its cycle file and its store."""
    tmp = tmp_path_factory.mktemp("controller")
    (tmp / "release").write_text("go")
    with FakeSidecar(drifted_stream(1, 10_000)) as sidecar:
        cycle = write_cycle(tmp / "cycle.yaml", sidecar.url, tmp)
        LocalController(cycle, tmp / "controller", f"file://{tmp / 'store'}", FAKE_PIPELINE).run(
            interval=0.05, exit_after_cycles=1)
    return tmp


@pytest.fixture
def state(finished, tmp_path):
    shutil.copytree(finished / "controller", tmp_path / "controller")
    shutil.copy(finished / "cycle.yaml", tmp_path / "cycle.yaml")
    return tmp_path


def _controller(state):
    # The scripted sidecar is gone: the pass records an estimate error and goes on, which is all a
    # start needs (the state file is read before anything else).
    return CliRunner().invoke(main, [
        "controller", "--cycle", str(state / "cycle.yaml"), "--state-dir", str(state / "controller"),
        "--store", f"file://{state / 'store'}", "--pipeline-callable", FAKE_PIPELINE,
        "--champion-switch", "none", "--passes", "1", "--interval", "0.01"], env={"COLUMNS": "200"})


def _ran_or_refused(result, path, data):
    """None when the controller ran its pass, or refused with one line naming ``path`` and the way
    out and left the file as it was; else what went wrong."""
    if result.exit_code == 0:
        return None
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    if (result.exit_code == 1 and isinstance(result.exception, SystemExit) and len(errors) == 1
            and str(path) in errors[0] and "move it aside" in errors[0] and "Traceback" not in result.output
            and path.read_bytes() == data):
        return None
    return f"exit {result.exit_code}: {type(result.exception).__name__}: {result.output[-400:]!r}"


@pytest.mark.parametrize("seed", SEEDS)
def test_status_file_variants(state, seed):
    path = state / "controller" / "status.json"
    original = path.read_bytes()
    assert _controller(state).exit_code == 0
    failures = []
    for what, data in json_variants(original, seed):
        path.write_bytes(data)
        problem = _ran_or_refused(_controller(state), path, data)
        if problem:
            failures.append(f"{what}: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("content", [b"[]", b'{"metadata": 5}', b'{"metadata": {"name": "local"}, "status": []}',
                                     b'{"metadata": {"name": "local", "generation": "2"}}',
                                     b'{"metadata": {"name": "local"}, "status": {"cycleCount": -1}}'])
def test_the_reported_shapes_are_one_line_naming_the_file(state, content):
    path = state / "controller" / "status.json"
    path.write_bytes(content)
    result = _controller(state)
    assert _ran_or_refused(result, path, content) is None and result.exit_code == 1, result.output


def test_a_truncated_state_names_the_file_and_the_way_out(state):
    path = state / "controller" / "status.json"
    data = path.read_bytes()[:100]
    path.write_bytes(data)
    result = _controller(state)
    assert result.exit_code == 1 and "not a readable JSON file" in result.output, result.output
    assert f"mv {path} {path}.bad" in result.output and path.read_bytes() == data
    path.rename(path.with_suffix(".json.bad"))  # the way out the message gives works
    assert _controller(state).exit_code == 0 and path.is_file()
