"""``daic assess``: a simulated assessment end to end, its record in a file:// store, and bad input."""
import json

from click.testing import CliRunner

from daic.cli import main
from daic.commands import assess
from daic.sampling.simulate import SCENARIOS, STRESS_SCENARIOS


def test_cli_names_match_the_library():
    assert set(assess.SCENARIO_NAMES) == set(SCENARIOS) | set(STRESS_SCENARIOS)
    assert {assess.make_design(n).name for n in assess.DESIGN_NAMES} == set(assess.DESIGN_NAMES)


def test_simulate_then_show(tmp_path):
    url = f"file://{tmp_path}/store"
    r = CliRunner().invoke(main, ["assess", "simulate", "--scenario", "drifted", "--design", "stratified",
                                  "--pool-size", "3000", "--target", "0.05", "--cycle", "c1", "--store", url])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "store" / "cycles" / "c1" / "assessment.json").read_text())
    assert doc["stop_reason"] == "target" and doc["half_width"] <= 0.05
    assert doc["n_labels"] == len(doc["sampled_ids"]) and doc["design"]["name"] == "stratified"
    assert "SRS would need" in r.output
    r = CliRunner().invoke(main, ["assess", "show", "c1", "--store", url])
    assert r.exit_code == 0 and f"accuracy {doc['accuracy']:.4f}" in r.output


def test_bad_input_is_refused(tmp_path):
    url = f"file://{tmp_path}/store"
    r = CliRunner().invoke(main, ["assess", "simulate", "--target", "0.7", "--store", url])
    assert r.exit_code == 2 and "--target" in r.output
    r = CliRunner().invoke(main, ["assess", "simulate", "--cycle", "../x", "--store", url])
    assert r.exit_code == 2 and "cycle id" in r.output
    r = CliRunner().invoke(main, ["assess", "simulate", "--pool-size", "100", "--budget", "200",
                                  "--design", "srs", "--no-save"])
    assert r.exit_code == 1 and "exceeds the 100 inputs" in r.output
    r = CliRunner().invoke(main, ["assess", "show", "nope", "--store", url])
    assert r.exit_code == 1 and "nope" in r.output
