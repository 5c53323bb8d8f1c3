"""One assess-and-improve cycle at full size: the drifted stream before, the models after.

Usage (the commands docs/benchmarks/pipeline.md records):

    daic train --store file:///tmp/daic-cycle/store                       # the champion
    python benchmarks/pipeline_cycle.py stream --store file:///tmp/daic-cycle/store
    daic pipeline run --store file:///tmp/daic-cycle/store -p cycle_id=bench-1 \\
        -p simulated_scenario='<the JSON "stream" printed>' -p since=<printed> 2>&1 | tee run.log
    python benchmarks/pipeline_cycle.py compare --store file:///tmp/daic-cycle/store --cycle bench-1 --log run.log

``stream`` logs a drifted scenario (default: ``sudden``, translated digits from step 10 of 30,
100 inputs a step) through the champion, as the sidecar would (:mod:`daic.components.testing.operational`),
and prints the pipeline parameters that sample only the drifted part and label it with the
scenario's truth. ``compare`` reads what the cycle did (estimate, train, evaluation, deploy) and
measures the champion before and the champion after on

* held-out drifted inputs: test images the stream never drew, translated like its drifted steps
  with another noise seed (:func:`daic.components.testing.drifted.drifted_holdout`) -- neither
  labeled nor trained on;
* the clean test split (10,000 images);

and, with ``--log`` (the output of ``daic pipeline run``), each step's wall time from kfp.local's
"Executing task" / "finished" lines.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import datetime, timedelta

T0 = 1_700_000_000.0
STEP_SECONDS = 60.0
DEFAULT_SPEC = {"name": "sudden", "seed": 0, "batch_size": 100, "n_steps": 30, "drift_start": 10,
                "corruption": "translate", "severity": 3}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream", help="log a drifted stream through the champion")
    s.add_argument("--store", required=True)
    s.add_argument("--deployment", default="mnist")
    s.add_argument("--model", default="mnist")
    s.add_argument("--spec", default=json.dumps(DEFAULT_SPEC), help="ScenarioSpec fields as JSON")
    c = sub.add_parser("compare", help="the champion before vs after a cycle")
    c.add_argument("--store", required=True)
    c.add_argument("--cycle", required=True)
    c.add_argument("--model", default="mnist")
    c.add_argument("--spec", default=json.dumps(DEFAULT_SPEC), help="the spec the stream was written with")
    c.add_argument("--holdout", type=int, default=5000, help="held-out drifted inputs (at most the unused test images)")
    c.add_argument("--log", default=None, help="output of `daic pipeline run` (for per-step wall times)")
    return p.parse_args(argv)


def stream(args: argparse.Namespace) -> None:
    from daic.components.testing.operational import torch_predictor, write_operational
    from daic.data.scenarios import Scenario, ScenarioSpec
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store

    store = open_store(args.store)
    registry = ModelRegistry(store, args.model)
    champion = registry.champion()
    model, _shadow = registry.load_networks(champion)
    spec = ScenarioSpec(**json.loads(args.spec))
    truth = write_operational(store, args.deployment, Scenario(spec), torch_predictor(model),
                              model_version=champion, t0=T0, step_seconds=STEP_SECONDS)
    drifted = truth.meta["step"] >= spec.drift_start
    print(f"logged {len(truth.labels)} inputs ({int(drifted.sum())} drifted) served by {args.model} {champion}")
    print("pipeline parameters:")
    print(f"  -p since={int(T0 + spec.drift_start * STEP_SECONDS)}")
    print(f"  -p simulated_scenario='{json.dumps(json.loads(args.spec))}'")


_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task '([^']+)'|Task '([^']+)' finished with status (\w+))")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def step_times(log_text: str) -> list[tuple[str, float, str]]:
    """(task, wall seconds, status) per task, from kfp.local's log lines."""
    started: dict[str, datetime] = {}
    out = []
    for raw in log_text.splitlines():
        m = _LINE.match(_ANSI.sub("", raw).strip())
        if not m:
            continue
        stamp = datetime.strptime(m.group(1), "%H:%M:%S.%f")
        if m.group(2):
            started[m.group(2)] = stamp
        elif m.group(3) in started:
            delta = stamp - started.pop(m.group(3))
            if delta < timedelta(0):  # past midnight
                delta += timedelta(days=1)
            out.append((m.group(3), delta.total_seconds(), m.group(4)))
    return out


def compare(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from daic.components.testing.drifted import drifted_holdout
    from daic.data.mnist import load_split
    from daic.data.scenarios import Scenario, ScenarioSpec, materialise
    from daic.models.inference import accuracy
    from daic.models.registry import ModelRegistry
    from daic.storage import open_store

    store = open_store(args.store)
    registry = ModelRegistry(store, args.model)
    key = lambda name: f"cycles/{args.cycle}/{name}"  # noqa: E731
    estimate = store.get_json(key("estimate.json"))
    train = store.get_json(key("train.json")) if store.exists(key("train.json")) else None
    evaluation = store.get_json(key("evaluation.json")) if store.exists(key("evaluation.json")) else None
    deploy = store.get_json(key("deploy.json")) if store.exists(key("deploy.json")) else None
    before = evaluation["champion_version"] if evaluation else registry.champion()
    after = deploy["champion_version"] if deploy else before

    spec = ScenarioSpec(**json.loads(args.spec))
    images, labels = drifted_holdout(spec, materialise(Scenario(spec)), n=args.holdout)
    test = load_split("test")
    rows = []
    for role, version in tqdm([("champion before", before), ("challenger", train and train["version"]),
                               ("champion after", after)], desc="measure"):
        if not version:
            continue
        model, _ = registry.load_networks(version)
        rows.append((role, version, accuracy(model, images, labels), accuracy(model, test.images, test.labels)))

    console = Console(width=120)
    est = estimate["estimate"]
    console.print(f"cycle {args.cycle}: offline estimate {est['accuracy']:.4f} [{est['lower']:.4f}, {est['upper']:.4f}] "
                  f"from {est['n_labels']} labels ({est['method']}); SRS would have needed "
                  f"{estimate['srs_labels_needed']}; drop {estimate['decision']['outcome']}")
    if evaluation:
        console.print(f"evaluate: {evaluation['decision']['reason']} -> promote={evaluation['decision']['promote']}")
    table = Table(title=f"accuracy before/after ({len(labels)} held-out {spec.corruption}/{spec.severity} inputs "
                        "not in the stream; clean = 10,000 test images)")
    for col in ("model", "version", f"drifted ({spec.corruption}/{spec.severity})", "clean test"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for role, version, drifted, clean in rows:
        table.add_row(role, version, f"{100 * drifted:.2f}%", f"{100 * clean:.2f}%")
    console.print(table)
    if args.log:
        with open(args.log, encoding="utf-8", errors="replace") as fh:
            times = step_times(fh.read())
        steps = Table(title="wall time per step (kfp.local)")
        for col in ("step", "seconds", "status"):
            steps.add_column(col, justify="left" if col != "seconds" else "right")
        for task, seconds, status in times:
            steps.add_row(task, f"{seconds:.1f}", status)
        steps.add_row("total", f"{sum(s for _, s, _ in times):.1f}", "")
        console.print(steps)
    if train:
        card = registry.card(train["version"])
        console.print(f"{train['version']}: parent {card.parent}, {card.data.base_count} base + "
                      f"{card.data.operational_count} labeled (x{card.data.operational_oversample}); "
                      f"Ray start {card.metrics['ray_start_s']:.1f} s, fit {card.metrics['train_wall_s']:.1f} s")


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = _parse(argv)
    {"stream": stream, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
