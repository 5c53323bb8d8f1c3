"""``daic pipeline submit``: the real ``kfp.Client`` against the project's fake Kubeflow Pipelines
REST API over HTTP (tests/fakes/kfp.py, KFP v2beta1 experiments and runs)."""
from __future__ import annotations

from click.testing import CliRunner
from fakes.kfp import FakeKfp

from daic.cli import main


def test_submit_creates_a_run_with_the_compiled_spec_and_parameters():
    with FakeKfp() as api:
        out = CliRunner().invoke(main, ["pipeline", "submit", "--host", api.url, "-p", "budget=321",
                                        "-p", "cycle_id=c-submit-1", "-p", "labeling_backend=web"])
        assert out.exit_code == 0, out.output
        runs = list(api.runs.values())
    assert len(runs) == 1
    run = runs[0]
    assert run["run_id"] == out.output.strip().splitlines()[-1]  # kfp prints links first
    assert run["display_name"] == "c-submit-1"
    # with a platform spec (kfp-kubernetes settings), kfp sends both documents together
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "assess-and-improve"
    assert "exec-train" in run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"]
    params = run["runtime_config"]["parameters"]
    assert params["budget"] == 321 and params["cycle_id"] == "c-submit-1" and params["labeling_backend"] == "web"
    assert [e["display_name"] for e in api.experiments.values()] == ["daic"]
