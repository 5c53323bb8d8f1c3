"""``daic pipeline``: parameters are typed by their defaults and unknown ones are refused."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from daic.cli import main
from daic.commands.pipeline import parse_params


def test_params_lists_every_parameter_with_its_default():
    out = CliRunner().invoke(main, ["pipeline", "params"])
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split()[-1] for line in out.output.splitlines()}
    assert rows["budget"] == "200" and rows["labeling_backend"] == '"simulated"'


def test_values_are_typed_by_the_default():
    params = parse_params(("budget=300", "level=0.9", "threshold=1", "train_node_selector={gpu: a100}",
                           "train_tolerations=[{key: gpu, operator: Exists}]", "since=1700000000"))
    assert params == {"budget": 300, "level": 0.9, "threshold": 1.0, "train_node_selector": {"gpu": "a100"},
                      "train_tolerations": [{"key": "gpu", "operator": "Exists"}], "since": "1700000000"}
    assert isinstance(params["threshold"], float)


@pytest.mark.parametrize("arg,message", [
    ("budget=abc", "budget must be a int"),
    ("budgett=3", "unknown parameter 'budgett'"),
    ("budget", "is not name=value"),
    ("train_tolerations={a: 1}", "train_tolerations must be a list"),
])
def test_bad_parameters_are_named(arg, message):
    out = CliRunner().invoke(main, ["pipeline", "run", "-p", arg])
    assert out.exit_code == 2
    assert message in out.output


def test_compile_writes_the_yaml(tmp_path):
    out = CliRunner().invoke(main, ["pipeline", "compile", "--out-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "assess_and_improve.yaml").read_text().startswith("# PIPELINE DEFINITION")
