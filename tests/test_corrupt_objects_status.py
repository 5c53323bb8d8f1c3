"""`daic status` on a controller state directory whose *contents* are wrong.

``status.json`` and ``events.jsonl`` are written by a real ``LocalController`` that finished one
cycle (the sidecar's ``GET /estimate`` is the scripted stand-in of tests/fakes/sidecar.py: an HTTP
service that cannot run here for real; the pipeline is the fake pipeline the controller tests use).
The status file is then replaced by seeded corrupted variants (tests/corrupt_variants.py): ``daic
status`` must show it (a variant still valid) or exit 1 with one line naming the file, never a
JSONDecodeError/AttributeError/KeyError traceback. A torn last line of the event log (a controller
killed inside its append) is skipped and counted, and the status is still shown.
"""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from corrupt_variants import json_variants
from daic.cli import main
from test_corrupt_objects_controller import finished, state  # noqa: F401 - the shared fixtures

SEEDS = (0, 1, 2)


def _status(*args):
    return CliRunner().invoke(main, ["status", *args], env={"COLUMNS": "200"})


def _shown_or_named(result, path):
    """None when ``daic status`` showed the status or failed with one line naming ``path``;
    else what went wrong."""
    if result.exit_code == 0:
        return None
    if result.exit_code == 1 and str(path) in result.output and "Traceback" not in result.output \
            and isinstance(result.exception, SystemExit):
        return None
    return f"exit {result.exit_code}: {type(result.exception).__name__}: {result.output[-300:]!r}"


@pytest.mark.parametrize("seed", SEEDS)
def test_status_file_variants(state, seed):
    path = state / "controller" / "status.json"
    original = path.read_bytes()
    assert _status("--state-dir", str(state / "controller")).exit_code == 0
    failures = []
    for what, data in json_variants(original, seed):
        path.write_bytes(data)
        for args in (("--state-dir", str(state / "controller")), ("--cycle", str(state / "cycle.yaml"))):
            for extra in ((), ("--json",)):
                problem = _shown_or_named(_status(*args, *extra), path)
                if problem:
                    failures.append(f"{what} {args[0]} {extra}: {problem}")
    path.write_bytes(original)
    assert _status("--state-dir", str(state / "controller")).exit_code == 0
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("content", [b"[]", b'{"metadata": 5}', b'{"metadata": {"name": "local"}, "status": []}',
                                     b'{"metadata": {"name": "local"}, "spec": {"deployment": "mnist"}}'])
def test_the_reported_shapes_are_one_line_naming_the_file(state, content):
    path = state / "controller" / "status.json"
    path.write_bytes(content)
    for args in (("--state-dir", str(state / "controller")), ("--cycle", str(state / "cycle.yaml"))):
        result = _status(*args)
        assert result.exit_code == 1 and str(path) in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_truncated_status_names_the_file_and_the_way_out(state):
    path = state / "controller" / "status.json"
    path.write_bytes(path.read_bytes()[:100])
    result = _status("--state-dir", str(state / "controller"))
    assert result.exit_code == 1 and str(path) in result.output and "not a readable JSON file" in result.output
    assert "daic controller` rewrites it" in result.output


def test_a_torn_event_line_is_skipped_and_counted(state):
    log = state / "controller" / "events.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) >= 2
    last = json.loads(lines[-1])
    log.write_text("\n".join(lines[:-1] + ['{"time": "2025-01-01T00:00:00Z", "type": "Normal", "rea', '[1, 2]']) + "\n")
    result = _status("--state-dir", str(state / "controller"), "--events", "5")
    assert result.exit_code == 0, result.output
    assert "phase " in result.output and "2 unreadable line(s)" in result.output
    assert json.loads(lines[-2])["reason"] in result.output and last["message"] not in result.output
