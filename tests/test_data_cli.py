"""`daic data show` / `daic data scenarios` and `python -m daic.data`."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from daic.cli import main
from daic.commands import data as data_cmd
from daic.data import mnist
from daic.data.corruptions import CORRUPTIONS
from daic.data.scenarios import SCENARIOS


def test_cli_choices_match_the_library():
    assert data_cmd._DATASETS == mnist.DATASETS
    assert data_cmd._SPLITS == mnist.SPLITS


def test_show_writes_png_and_prints_ascii(tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        main, ["data", "show", "-n", "2", "--corruption", "rotate", "--corruption", "stripe",
               "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rotate (severity 3)" in result.output and "stripe (severity 3)" in result.output
    assert "@" in result.output  # bright strokes drawn


def test_show_png_has_a_row_per_corruption(tmp_path):
    import matplotlib.image

    out = tmp_path / "all.png"
    result = CliRunner().invoke(main, ["data", "show", "--no-ascii", "-n", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    height, width = matplotlib.image.imread(out).shape[:2]
    assert height > width * len(CORRUPTIONS) / 8  # tall grid: one row per corruption, 6 columns


def test_show_rejects_unknown_corruption(tmp_path):
    result = CliRunner().invoke(main, ["data", "show", "--corruption", "snow",
                                       "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "unknown corruption(s) snow" in result.output
    assert not (tmp_path / "x.png").exists()


def test_scenarios_table_lists_every_scenario():
    result = CliRunner().invoke(main, ["data", "scenarios", "--n-steps", "9", "--batch-size", "5"])
    assert result.exit_code == 0, result.output
    for name in SCENARIOS:
        assert name in result.output
    assert "···███" in result.output  # sudden: clean for 3 steps, then drift


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "daic.data", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "show" in proc.stdout and "scenarios" in proc.stdout
