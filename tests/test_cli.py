"""The `daic` command: help lists every subcommand, store commands work and fail clearly."""
from __future__ import annotations

from click.testing import CliRunner

from daic.cli import SUBCOMMANDS, main


def test_help_names_every_subcommand_available_or_planned():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name, _ in SUBCOMMANDS:
        assert name in result.output


def test_unknown_subcommand_is_an_error():
    result = CliRunner().invoke(main, ["no-such-thing"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_store_ls_and_cat(tmp_path):
    from daic.storage import open_store

    url = f"file://{tmp_path}"
    store = open_store(url)
    store.put_json("cycles/c1/assessment.json", {"estimate": 0.9})
    store.put_arrays("labels/c1/batch-0.npz", labels=[1, 2, 3])
    runner = CliRunner()
    ls = runner.invoke(main, ["store", "ls", "cycles/", "--store", url])
    assert ls.exit_code == 0 and "cycles/c1/assessment.json" in ls.output
    cat = runner.invoke(main, ["store", "cat", "cycles/c1/assessment.json", "--store", url])
    assert cat.exit_code == 0 and '"estimate": 0.9' in cat.output
    npz = runner.invoke(main, ["store", "cat", "labels/c1/batch-0.npz", "--store", url])
    assert npz.exit_code == 0 and "labels: shape=(3,)" in npz.output


def test_store_errors_name_the_url(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["store", "ls", "--store", "gs://bucket"])  # a usage error, naming the option
    assert bad.exit_code == 2 and "'--store'" in bad.output and "gs://bucket" in bad.output
    assert "Traceback" not in bad.output
    for command in (["report", "--out", str(tmp_path / "r.html")], ["models", "list"], ["store", "cat", "x.json"]):
        wrong = runner.invoke(main, [*command, "--store", "ftp://host/x"])
        assert wrong.exit_code == 2 and "'--store'" in wrong.output and "unsupported store URL" in wrong.output, command
    missing = runner.invoke(main, ["store", "cat", "nope.json", "--store", f"file://{tmp_path}"])
    assert missing.exit_code == 1 and "no object 'nope.json'" in missing.output
