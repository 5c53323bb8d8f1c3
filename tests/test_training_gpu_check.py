"""benchmarks/gpu_check.py runs end to end on CPU at small sizes (the same steps it runs on a GPU:
device plan, throughput with the data on and off the device, a Ray Train fit split into its costs,
the pipeline's train step), so the script a GPU session will run is known to work. Real Ray, real
store, real step; only the sizes are small."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _rows(out: str, section: str) -> list[list[str]]:
    return [line.split(" | ")[1:] for line in out.splitlines() if line.startswith(section + " | ")]


@pytest.fixture(scope="module")
def cpu_run():
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--base-limit", "256", "--epochs", "2",
                           "--batches", "32,64", "--shift-per-condition", "0"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_it_prints_the_device_and_the_plan(cpu_run):
    (device,) = _rows(cpu_run, "device")
    assert device[0] == "cpu"
    (plan,) = _rows(cpu_run, "plan")
    assert plan[0] == "precision fp32" and plan[1] == "batch 128"
    assert len(_rows(cpu_run, "plan-reason")) == 5


def test_it_measures_each_batch_with_the_data_on_and_off_the_device(cpu_run):
    header, *rows = _rows(cpu_run, "throughput")
    assert header[0] == "batch"
    assert {(r[0], r[1]) for r in rows} == {("32", "device"), ("32", "pinned host"), ("64", "device"),
                                            ("64", "pinned host")}
    assert all(float(r[3].replace(",", "")) > 0 for r in rows)


def test_it_splits_a_ray_fit_into_start_fixed_cost_and_epochs(cpu_run):
    header, *rows = _rows(cpu_run, "ray fit")
    assert header[1:4] == ["Ray start s", "fit wall s", "fixed s"]
    (process,) = [r for r in rows if r[0] == "Ray worker process"]
    (local,) = [r for r in rows if r[0].startswith("in-process")]
    assert float(process[1]) > 0 and float(local[1]) == 0.0  # Ray started for the first, not the second
    for row in (process, local):
        assert float(row[6]) > 0  # epochs took time
        assert float(row[2]) >= float(row[6])  # fit wall covers the epochs


def test_it_runs_a_whole_retrain_through_the_train_step(cpu_run):
    header, row = _rows(cpu_run, "retrain")
    assert header[:2] == ["version", "wall s"] and row[0] == "v0002" and float(row[1]) > 0
    assert cpu_run.splitlines()[-1].startswith("done | ")


def test_without_a_gpu_it_says_so_and_stops():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--cpu" in proc.stderr
