"""Run the pipeline on this machine with ``kfp.local``, and return the cycle's result record.

``kfp.local`` (kfp >= 2.16) runs whole pipelines, ``dsl.If`` included, each step in a subprocess.
With ``SubprocessRunner(use_venv=False)`` the subprocess is this interpreter (``sys.executable``
replaces ``python3`` in the component command), so run it from the environment daic is installed
in (``.venv/bin/daic pipeline run``): nothing is pip-installed, the components import ``daic``.
kfp.local ignores resource requests, GPUs, node selectors, tolerations and Secrets.

:func:`run_pipeline` is also the operator's local runner entry point
(``daic.operators.runners.local.DEFAULT_CALLABLE``): parameters in, the run result
(``cycles/<cycle>/result.json``) out.
"""
from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from daic.components import cycle_store
from daic.operators.runners.kfp_stages import reporting_task_stages
from daic.storage import default_url, open_store

log = logging.getLogger(__name__)


def pipeline_parameters() -> dict[str, Any]:
    """The pipeline's parameters and their defaults."""
    from daic.pipelines.assess_and_improve import assess_and_improve

    signature = inspect.signature(assess_and_improve.pipeline_func)
    return {name: p.default for name, p in signature.parameters.items()}


def resolve_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Check names, fill the store URL and a fresh cycle id; values keep their defaults otherwise."""
    params = dict(params or {})
    known = pipeline_parameters()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    params["store_url"] = params.get("store_url") or default_url()
    params["cycle_id"] = cycle_store.check_cycle(params.get("cycle_id") or params.get("run_name")
                                                 or cycle_store.new_cycle_id())
    return params


def run_pipeline(params: dict[str, Any] | None = None, pipeline_root: str | os.PathLike[str] | None = None) -> dict:
    """Run assess-and-improve locally; returns the result record (plus ``cycle``)."""
    from kfp import local

    from daic.pipelines.assess_and_improve import assess_and_improve

    params = resolve_params(params)
    root = Path(pipeline_root or Path.cwd() / ".daic" / "kfp-local").resolve()
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    # Expected locally, said once in the docs instead of once per step: kfp.local ignores resource
    # requests, and the components name cluster images while running in this interpreter.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    log.info("running %s locally: cycle %s, store %s", "assess-and-improve", params["cycle_id"], params["store_url"])
    with reporting_task_stages():  # `daic status` shows which step runs (no-op outside a local run)
        assess_and_improve(**params)
    store = open_store(params["store_url"])
    result = store.get_json(cycle_store.key(params["cycle_id"], "result.json"))
    return {"cycle": params["cycle_id"], **result}
