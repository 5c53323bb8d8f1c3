"""The process behind one local run: ``python -m daic.operators.runners.local_worker PREPARED FINAL``.

It claims the run by renaming the prepared directory to its final name (atomic; it fails if a run
of that name exists, and then this worker exits without doing anything), runs the callable named
in ``request.json`` on ``params.json`` and records the outcome. The callable may call
``report_stage("training")`` to say what it is doing; the controller shows it as the run's stage.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from daic.operators.runners.local import write_json_atomic

RUN_DIR_ENV = "DAIC_RUN_DIR"


def report_stage(stage: str) -> None:
    """Tell the controller which step of the pipeline runs now (no-op outside a local run)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        path = Path(run_dir) / "stage"
        tmp = path.with_name(".stage.tmp")
        tmp.write_text(stage)
        os.replace(tmp, path)


def load_callable(ref: str) -> Callable[[dict[str, Any]], Any]:
    """``package.module:function`` or ``/path/to/file.py:function``."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ValueError(f"callable {ref!r} must look like 'module:function' or '/path/file.py:function'")
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {target}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ImportError(f"{target} has no callable {attr!r}")
    return fn


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _finish(run_dir: Path, phase: str, **extra: Any) -> None:
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text())
    if state["phase"] != "RUNNING":  # cancelled meanwhile: keep that outcome
        return
    state.update(phase=phase, finished_at=_now(), **extra)
    write_json_atomic(state_path, state)


def main(prepared: str, final: str) -> int:
    prep, run_dir = Path(prepared), Path(final)
    request = json.loads((prep / "request.json").read_text())
    write_json_atomic(prep / "state.json", {"phase": "RUNNING", "pid": os.getpid(), "started_at": _now(),
                                            "callable": request["callable"], "run_name": request["run_name"]})
    try:
        os.rename(prep, run_dir)
    except OSError:  # another worker claimed this run name first
        for child in prep.iterdir():
            child.unlink()
        prep.rmdir()
        return 0
    os.environ[RUN_DIR_ENV] = str(run_dir)
    os.environ["DAIC_RUN_NAME"] = request["run_name"]
    try:
        fn = load_callable(request["callable"])
        params = json.loads((run_dir / "params.json").read_text())
        result = fn(params)
        if not isinstance(result, dict):
            raise TypeError(f"{request['callable']} returned {type(result).__name__}, expected a dict result")
        write_json_atomic(run_dir / "result.json", result)
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded as the run's outcome
        (run_dir / "error.txt").write_text(traceback.format_exc() + f"\n{type(exc).__name__}: {exc}\n")
        _finish(run_dir, "FAILED")
        return 1
    _finish(run_dir, "SUCCEEDED")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m daic.operators.runners.local_worker PREPARED_DIR FINAL_DIR")
    sys.exit(main(sys.argv[1], sys.argv[2]))
