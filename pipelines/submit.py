"""Submit the compiled pipeline to Kubeflow Pipelines with ``kfp.Client`` (``daic pipeline submit``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from daic.components import cycle_store

PACKAGE = Path(__file__).resolve().parent / "compiled" / "assess_and_improve.yaml"


def submit(host: str, params: dict[str, Any], *, experiment: str = "daic", run_name: str | None = None,
           package: str | Path | None = None, namespace: str | None = None, client=None) -> str:
    """Create a run (caching off: a step's inputs are names of objects whose contents change); returns its id.

    A cycle id is chosen here when none is given, so the run name and the records under
    ``cycles/<id>/`` match.
    """
    from daic.pipelines.kfp_client import bounded_kfp_client

    params = dict(params)
    params["cycle_id"] = cycle_store.check_cycle(params.get("cycle_id") or params.get("run_name")
                                                 or cycle_store.new_cycle_id())
    client = client or bounded_kfp_client(host, namespace)
    run = client.create_run_from_pipeline_package(
        str(package or PACKAGE), arguments=params, run_name=run_name or params["cycle_id"],
        experiment_name=experiment, namespace=namespace, enable_caching=False)
    return run.run_id
