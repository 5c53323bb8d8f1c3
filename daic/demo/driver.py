"""Runs the demo: model → serving → traffic → controller → pipeline → promotion → report.

With ``remedy`` ``both`` (the default) the serving graph has the input filter's TRANSFORMER node
in front of the model (pass-through until a filter is in service), and the cycle puts the adapted
filter in while retraining runs, then promotes the retrained model (which takes the filter out)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from daic.data.scenarios import Scenario, ScenarioSpec
from daic.report.build import Summary, build_report, summarise
from daic.report.cycles import load_cycle
from daic.report.timeline import Timeline, TimelinePoint
from daic.storage import open_store
from daic.training.progress import Watcher, describe, listen, progress_key

from .config import DemoConfig
from .controller_watch import ControllerWatch
from .cycle_file import cycle_resource, write_cycle_file
from .model import ensure_generic_filter, ensure_initial_model
from .traffic import TrafficClient, read_estimate

DRIFT_STEPS = 60  # distinct drifted batches; streaming cycles over them while the cycle runs


@dataclass(frozen=True)
class DemoResult:
    report: Path
    summary: Summary
    timeline: Timeline
    completed: bool  # the cycle finished (promotion or a documented refusal)


def scenario_spec(cfg: DemoConfig) -> ScenarioSpec:
    n_steps = cfg.clean_steps + DRIFT_STEPS
    common = dict(batch_size=cfg.batch_size, n_steps=n_steps, drift_start=cfg.clean_steps, seed=cfg.seed,
                  share=cfg.share)
    if cfg.scenario == "mixture":
        return ScenarioSpec(name="mixture", mixture=cfg.mixture, **common)
    if cfg.scenario == "gradual":
        return ScenarioSpec(name="gradual", corruption=cfg.corruption, severity=cfg.severity,
                            drift_end=cfg.clean_steps + 10, **common)
    return ScenarioSpec(name=cfg.scenario, corruption=cfg.corruption, severity=cfg.severity, **common)


def scenario_step(cfg: DemoConfig, k: int) -> int:
    """Traffic step k → scenario step: clean first, then the drifted steps, cycling."""
    return k if k < cfg.clean_steps else cfg.clean_steps + (k - cfg.clean_steps) % DRIFT_STEPS


@contextmanager
def background(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A child process in its own session (so Ctrl-C reaches it through us), stopped on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    from daic.serving.manifest import FILTER_MODEL_CLASS
    from daic.serving.stack import LocalStack, StackConfig

    store = open_store(cfg.store_url)
    run_dir = cfg.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    echo(f"[1/5] model — store {store.url}")
    show_epoch = lambda m: echo(f"      training {describe(m)}")  # noqa: E731 - every epoch, as it ends
    with listen(show_epoch):
        champion = ensure_initial_model(store, cfg.model_name, cfg.epochs, echo)
    generic = None
    if cfg.remedy != "retrain":
        generic = ensure_generic_filter(store, cfg.model_name, champion, cfg.filter_generic_epochs,
                                        cfg.filter_generic_base, echo)

    spec = scenario_spec(cfg)
    scenario = Scenario(spec)
    timeline = Timeline(run=cfg.run, deployment=cfg.model_name, scenario=f"{cfg.scenario} (seed {cfg.seed})")
    stack_cfg = StackConfig(store_url=store.url, model_name=cfg.model_name, deployment="mnist",
                            gateway_port=cfg.gateway_port, model_port=cfg.model_port,
                            model_metrics_port=cfg.metrics_port, sidecar_port=cfg.sidecar_port,
                            sidecar_ingest_port=cfg.sidecar_ingest_port,
                            state_dir=run_dir / "sidecar", log_dir=run_dir / "logs", reload_interval_s=2.0,
                            # the sidecar fits its oracles on the champion's reference at start-up
                            # (about a minute of CPU; several on a busy machine)
                            startup_timeout_s=900.0,
                            # the input filter's TRANSFORMER node: pass-through until the operator puts
                            # a filter in service (it follows the store's filter service record)
                            **({} if cfg.remedy == "retrain" else dict(
                                transformer_class=FILTER_MODEL_CLASS,
                                transformer_parameters={"model_name": cfg.model_name, "reload_interval_s": "2.0"},
                                transformer_port=cfg.transformer_port,
                                transformer_metrics_port=cfg.transformer_metrics_port)))
    echo(f"[2/5] serving — Seldon microservice :{cfg.model_port}"
         + (f" behind the input filter TRANSFORMER :{cfg.transformer_port}" if cfg.remedy != "retrain" else "")
         + f", sidecar :{cfg.sidecar_port}, gateway :{cfg.gateway_port} (logs in {stack_cfg.log_dir})")
    completed = False
    with ExitStack() as stack:
        local = stack.enter_context(LocalStack(stack_cfg))
        stack.enter_context(listen(show_epoch))
        retraining: dict[str, Watcher] = {}  # a cycle's retraining runs in the pipeline's process
        if cfg.labeler == "web":
            from daic.labeling.auth import Labelers, login_url

            labelers = run_dir / "labelers.json"
            token = Labelers.load(labelers).issue("demo")  # the page needs a labeler's token
            stack.enter_context(background(
                [sys.executable, "-m", "daic.cli", "label", "serve", "--store", store.url, "--port", str(cfg.label_port),
                 "--labelers", str(labelers), "--no-login"],
                run_dir / "logs" / "labeling.log"))
            echo(f"      labeling page: {login_url(f'http://127.0.0.1:{cfg.label_port}', token)} "
                 "(open it and label there when a cycle asks)")
        client = TrafficClient(stack_cfg.gateway_url)
        stack.callback(client.close)
        watch = ControllerWatch(run_dir / "controller" / "status.json")
        echo(f"[3/5] traffic — {cfg.clean_steps} clean batches of {cfg.batch_size}, then the drift "
             f"({spec.name}: {', '.join(f'{c}@{s}' for c, s in spec.mixture) if spec.name == 'mixture' else f'{spec.corruption}@{spec.severity}'})")
        controller = None
        drift_started = None
        recovery_left = None
        k = 0
        while True:
            served = client.send(scenario.batch(scenario_step(cfg, k)))
            est = read_estimate(local.config.sidecar_url)
            timeline.points.append(TimelinePoint(
                step=k, true_accuracy=served.accuracy, estimate=est.get("accuracy"), lower=est.get("lower"),
                upper=est.get("upper"), drift=est.get("drift_score"), trusted=bool(est.get("trusted", True)),
                model_version=served.model_version))
            new_events = watch.poll(k) if controller is not None else []
            timeline.events.extend(new_events)
            for e in new_events:
                echo(f"      step {k}: {e.kind} {e.cycle or ''} {e.detail}".rstrip())
                if e.kind == "trigger" and e.cycle:
                    retraining[e.cycle] = Watcher(store, progress_key(cfg.model_name, "", {"cycle": e.cycle}))
            for progress in retraining.values():
                progress.poll()  # its epochs so far, each shown once
            online = f"{100 * est['accuracy']:.1f}%" if est.get("accuracy") is not None else "—"
            serving = (served.model_version or "?") + (f"+filter:{served.filter_version}" if served.filter_version else "")
            echo(f"step {k:3d}  {serving:18s} truth {100 * served.accuracy:5.1f}%  "
                 f"online {online:>6s}{'' if est.get('trusted', True) else ' (untrusted)'}  "
                 f"controller {watch.describe if controller else 'not started'}")
            if k % 5 == 0:
                timeline.save(store)  # a crash keeps what was streamed so far

            if drift_started is None and k + 1 >= cfg.clean_steps:
                drift_started = time.time()
                resource = cycle_resource(cfg, spec, local.config.sidecar_url, store.url, since=drift_started,
                                          generic_filter=generic)
                path = write_cycle_file(run_dir / "cycle.yaml", resource)
                echo(f"[4/5] controller — AssessmentCycle {path} (threshold {cfg.threshold:.2f}, "
                     f"{cfg.labeler} labels, budget {cfg.budget}, remedy {cfg.remedy})")
                controller = stack.enter_context(background(
                    [sys.executable, "-m", "daic.cli", "controller", "--cycle", str(path),
                     "--state-dir", str(run_dir / "controller"), "--store", store.url, "--interval", "2",
                     "--exit-after-cycles", "1"],
                    run_dir / "logs" / "controller.log"))
            elif recovery_left is None and watch.finished:
                completed = True
                recovery_left = cfg.recovery_steps
                echo(f"[5/5] cycle finished ({watch.finished[0].get('decision')}); streaming {recovery_left} more batches")
            elif recovery_left is not None:
                recovery_left -= 1
                if recovery_left <= 0:
                    break
            elif drift_started is not None and (time.time() - drift_started > cfg.cycle_timeout_s
                                                or k - cfg.clean_steps >= cfg.max_drift_steps):
                echo(f"the cycle did not finish within {cfg.cycle_timeout_s:.0f}s / {cfg.max_drift_steps} "
                     f"batches; see {run_dir / 'logs' / 'controller.log'}")
                break
            if controller is not None and controller.poll() not in (None, 0):
                echo(f"the controller exited with {controller.returncode}; see {run_dir / 'logs' / 'controller.log'}")
                break
            k += 1
            time.sleep(cfg.step_interval_s)  # traffic arrives over time, not as fast as possible
    timeline.save(store)
    cycles = sorted({e.cycle for e in timeline.events if e.cycle})
    summary = summarise(timeline, [load_cycle(store, c) for c in cycles])
    report = build_report(store, run_dir / "report", cfg.run)
    return DemoResult(report=report, summary=summary, timeline=timeline, completed=completed)
