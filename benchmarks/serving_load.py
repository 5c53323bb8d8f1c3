"""Benchmark: what the pseudo-oracle sidecar costs the serving path, and whether every request is
accounted for (issue 6).

A bounded closed-loop load on loopback: ``--clients`` concurrent clients, each sending one
prediction request after the other for ``--duration`` seconds, against the local stack
(``LocalStack``: seldon-core-microservice + gateway) *without* and *with* the sidecar. The two
configurations alternate ``--repeats`` times so slow drift of the machine's load hits both alike;
the table shows every run and the medians.

For the runs with the sidecar, after the load it waits (with a deadline) until the gateway has sent
everything it queued, flushes the sidecar and counts: requests answered 200, events the gateway
queued / delivered / dropped, events the sidecar received / joined / dropped, and inputs found in
the object store. "accounted" holds when every request's two events were delivered or counted as
dropped, and every joined prediction's inputs are in the store.

    .venv/bin/python benchmarks/serving_load.py --clients 8 --duration 20 --repeats 3 [--layout isolated]
        [--transformer]

``--transformer`` serves a two-node graph, as ``daic serve manifest`` renders one with an input
filter: a ``TRANSFORMER`` (``daic.serving.passthrough.Passthrough``, its own seldon-core
microservice) before the ``MODEL``, the logger on the root, so four events per prediction reach
the sidecar; "accounted" then checks that every prediction was joined into one record.

Needs both virtualenvs (``make venv venv-serving``). The model: ``--store`` with a champion, else
a small SmallCNN/ShadowNet pair trained here for one pass over 3,000 images and registered in a
temporary store (serving cost does not depend on how accurate the weights are).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".daic" / "bench-cache" / "serving"


# -- the model --------------------------------------------------------------------------------
def _small_model_store(path: Path):
    """A file:// store with a small registered champion (weights cached between runs)."""
    import torch
    from torch.nn import functional as F

    from daic.data.mnist import load_split
    from daic.models.card import DataLineage
    from daic.models.networks import build
    from daic.models.reference import ReferenceConfig
    from daic.models.registry import ModelRegistry
    from daic.models.weights import network_from_bytes, state_dict_to_bytes
    from daic.storage import open_store

    n = 3000
    blobs = []
    for arch in ("small_cnn", "shadow_net"):
        cached = CACHE / f"{arch}-{n}.pt"
        if not cached.exists():
            train = load_split("train")
            x = torch.from_numpy(np.ascontiguousarray(train.images[:n]))
            y = torch.from_numpy(np.ascontiguousarray(train.labels[:n]))
            torch.manual_seed(0)
            net = build(arch)
            opt = torch.optim.Adam(net.parameters(), lr=2e-3)
            net.train()
            for i in range(0, n, 50):
                loss = F.cross_entropy(net(x[i:i + 50]), y[i:i + 50])
                opt.zero_grad()
                loss.backward()
                opt.step()
            CACHE.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(state_dict_to_bytes(net.eval()))
        blobs.append(network_from_bytes(arch, cached.read_bytes()))
    store = open_store(f"file://{path}")
    registry = ModelRegistry(store, "mnist")
    card = registry.register(model=blobs[0], shadow=blobs[1], data=DataLineage(dataset="mnist", base_count=n),
                             reference_config=ReferenceConfig(val_limit=2000, shift_per_condition=50,
                                                              corruptions=("gaussian_noise", "contrast",
                                                                           "translate", "rotate")))
    registry.promote(card.version)
    return store


def _free_ports(k: int) -> list[int]:
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- the load ---------------------------------------------------------------------------------
@dataclass
class Run:
    config: str
    repeat: int
    requests: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    accounting: dict = field(default_factory=dict)
    cpu_ms_per_request: dict = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def _load(url: str, bodies: list[bytes], clients: int, duration: float, run: Run,
                rate: float | None = None) -> None:
    """Closed loop (each client sends its next request when the last is answered) or, with
    ``rate``, a fixed schedule: the clients together send ``rate`` requests/s, each request's
    latency counted from its *scheduled* time, so a stall shows up in the latency of everything
    it delayed (no coordinated omission)."""
    import aiohttp
    from tqdm import tqdm

    stop_at = time.perf_counter() + duration
    period = clients / rate if rate else 0.0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def client(k: int) -> None:
            i = k
            due = time.perf_counter() + k * period / clients
            while time.perf_counter() < stop_at:
                body = bodies[i % len(bodies)]
                i += clients
                if period:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    t0, due = due, due + period
                else:
                    t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    status = -1
                run.requests += 1
                if status == 200:
                    run.ok += 1
                    run.latencies_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    run.errors += 1

        async def ticker() -> None:
            with tqdm(total=int(duration), desc=f"{run.config} #{run.repeat}", unit="s", leave=False) as bar:
                while time.perf_counter() < stop_at:
                    await asyncio.sleep(1)
                    bar.update(1)
                    bar.set_postfix(ok=run.ok, err=run.errors)

        start = time.perf_counter()
        await asyncio.gather(ticker(), *(client(k) for k in range(clients)))
        run.seconds = time.perf_counter() - start


def _cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """User + system CPU of the live processes in each named process group (Linux /proc); the
    gateway's request-logger child is counted on its own, as "logger"."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {pgid: name for name, pgid in groups.items()}
    total = dict.fromkeys([*groups, "logger"], 0.0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        name = names.get(int(fields[2]))  # fields after the command: state, ppid, pgrp, ...
        if name is None:
            continue
        if b"daic.serving.request_logger" in cmdline:
            name = "logger"
        total[name] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _account(stack, store, deployment: str, run: Run, timeout_s: float = 120.0) -> dict:
    """Wait until the gateway delivered its queue, flush the sidecar, count everything."""
    import requests

    from daic.sidecar.records import read_operational

    stats = stack.wait_logged(timeout_s)
    stack.flush(timeout_s)  # the gateway has settled (above): this only has the sidecar write
    metrics = requests.get(stack.sidecar_url + "/metrics", timeout=10).text
    records = read_operational(store, deployment)
    received = _metric(metrics, "daic_sidecar_events_received_total")
    joined = _metric(metrics, "daic_sidecar_events_joined_total")
    sidecar_dropped = _metric(metrics, "daic_sidecar_events_dropped_total")
    gateway_dropped = stats.get("events_dropped_queue_full", 0)
    rejected = sum(v for k, v in stats.items() if k.startswith("events_rejected"))
    failed = stats.get("events_failed", 0)
    pending = _metric(metrics, "daic_sidecar_pending_joins")
    duplicates = _metric(metrics, "daic_sidecar_events_duplicate_total")
    skipped = _metric(metrics, "daic_sidecar_events_skipped_total")
    incomplete = _metric(metrics, "daic_sidecar_predictions_incomplete_total")
    # events the executor (here the gateway) logs per answered prediction: a request and a response
    # per stage of the logged root (two stages with a transformer before the model)
    per = 4 if stack.config.transformer_class else 2
    expected_events = per * run.ok + (run.requests - run.ok)  # a failed first stage logs its request only
    accounted = (stats.get("events_queued", 0) + gateway_dropped == expected_events
                 and stats.get("events_sent", 0) == received
                 and received == per * joined + pending + duplicates + skipped + sidecar_dropped - rejected
                 and joined == run.ok and incomplete == run.requests - run.ok
                 and len(records) == joined)  # one input per request in this benchmark
    return {"requests_ok": run.ok, "events_expected": expected_events, "gateway_queued": stats.get("events_queued", 0),
            "gateway_sent": stats.get("events_sent", 0), "gateway_dropped": gateway_dropped,
            "gateway_rejected": rejected, "gateway_failed": failed, "sidecar_received": int(received),
            "sidecar_joined": int(joined), "sidecar_dropped": int(sidecar_dropped), "pending": int(pending),
            "sidecar_skipped": int(skipped), "incomplete": int(incomplete),
            "records_in_store": len(records), "accounted": bool(accounted)}


def _layout_cpus(layout: str) -> dict[str, tuple[int, ...]]:
    """``shared``: every process may run on every core (what a laptop does). ``isolated``: the
    sidecar and the gateway's request-logger child get a core of their own and the model server,
    gateway and load generator share the others — on one machine, the closest thing to the
    SeldonDeployment, where the sidecar is its own container with its own CPU request
    (manifests/serving) and cannot take CPU from the model container. The request logger stands
    for the executor's logger workers (Go goroutines in a cluster, which cost a small fraction of
    what Python's HTTP client costs here); putting it beside the sidecar means the serving cores
    pay for handing each event over (a pipe write), not for posting it. Its CPU is reported in its
    own column either way."""
    if layout == "shared":
        return {}
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--layout isolated needs at least 2 CPUs")
    rest = tuple(cpus[:-1])
    return {"sidecar": (cpus[-1],), "logger": (cpus[-1],), "model": rest, "gateway": rest}


def _one_run(args, store, config_name: str, repeat: int, bodies: list[bytes], workdir: Path) -> Run:
    from daic.serving.stack import LocalStack, StackConfig

    with_sidecar = config_name == "with sidecar"
    ports = _free_ports(7)
    deployment = f"bench-{repeat}"
    transformer = "daic.serving.passthrough.Passthrough" if args.transformer else None
    config = StackConfig(store_url=store.url, deployment=deployment, with_sidecar=with_sidecar,
                         gateway_port=ports[0], model_port=ports[1], model_metrics_port=ports[2],
                         sidecar_port=ports[3], sidecar_ingest_port=ports[6], transformer_class=transformer,
                         transformer_port=ports[4],
                         transformer_metrics_port=ports[5], state_dir=workdir / f"state-{repeat}",
                         log_dir=workdir / "logs", threads=args.threads, workers=args.workers,
                         sidecar_options={"flush_interval": 5}, cpus=args.cpus)
    run = Run(config_name, repeat)
    with LocalStack(config) as stack:
        url = stack.gateway_url + "/api/v1.0/predictions"
        warm = Run(config_name, repeat)
        asyncio.run(_load(url, bodies, args.clients, args.warmup, warm, args.rate))
        pids = stack.pids()
        cpu0 = _cpu_seconds(pids)
        own0 = time.process_time()
        asyncio.run(_load(url, bodies, args.clients, args.duration, run, args.rate))
        cpu1 = _cpu_seconds(pids)
        cpu1["load generator"], cpu0["load generator"] = time.process_time(), own0
        run.cpu_ms_per_request = {name: (cpu1[name] - cpu0[name]) * 1000 / max(run.ok, 1) for name in cpu1}
        if with_sidecar:
            # the warm-up's requests were logged too: count them in the books, not in the timing
            books = Run(config_name, repeat, requests=run.requests + warm.requests, ok=run.ok + warm.ok)
            run.accounting = _account(stack, store, deployment, books)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measured run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads of the model server")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers of the model server")
    parser.add_argument("--store", default=None, help="a store with a champion (default: train a small one)")
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop: send this many requests/s in all (default: closed loop, as fast as answered)")
    parser.add_argument("--layout", choices=("shared", "isolated"), default="shared",
                        help="shared: all processes on all cores; isolated: the sidecar on a core of its own, "
                             "everything else (load generator included) on the others")
    parser.add_argument("--transformer", action="store_true",
                        help="serve TRANSFORMER -> MODEL (a pass-through transformer, the logger on the root)")
    args = parser.parse_args()
    args.cpus = _layout_cpus(args.layout)
    if args.cpus:
        os.sched_setaffinity(0, args.cpus["model"])  # the load generator shares the model's cores
    from rich.console import Console
    from rich.table import Table

    from daic.data.mnist import load_split
    from daic.storage import open_store

    workdir = Path(tempfile.mkdtemp(prefix="daic-serving-bench-"))
    try:
        store = open_store(args.store) if args.store else _small_model_store(workdir / "store")
        test = load_split("test")
        bodies = [json.dumps({"data": {"ndarray": np.round(test.images[i:i + 1].astype(np.float64), 4).tolist()}}).encode()
                  for i in range(500)]
        runs: list[Run] = []
        for repeat in range(1, args.repeats + 1):
            for name in ("without sidecar", "with sidecar"):
                runs.append(_one_run(args, store, name, repeat, bodies, workdir))
        _report(Console(width=170), Table, runs, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _report(console, Table, runs: list[Run], args) -> None:
    layout = args.cpus
    where = (f"sidecar on CPU {layout['sidecar']}, the rest on CPUs {layout['model']}" if layout
             else "all processes share all cores")
    loop = f"open loop at {args.rate:g} req/s" if args.rate else "closed loop"
    graph = "TRANSFORMER -> MODEL graph" if args.transformer else "MODEL graph"
    table = Table(title=f"serving load: {graph}, {args.clients} clients x {args.duration:.0f} s, {loop}, 1 image/request, "
                        f"{args.workers} worker(s) x {args.threads} threads; {where}; "
                        f"load avg {os.getloadavg()[0]:.1f}")
    for col in ("config", "run", "requests ok", "errors", "req/s", "p50 ms", "p99 ms", "events sent/expected",
                "dropped (gw+sidecar)", "inputs in store (incl. warm-up)", "accounted"):
        table.add_column(col, justify="right" if col not in ("config", "accounted") else "left")
    for r in runs:
        a = r.accounting
        table.add_row(r.config, str(r.repeat), f"{r.ok:,}", str(r.errors), f"{r.throughput:,.1f}",
                      f"{r.pct(50):.2f}", f"{r.pct(99):.2f}",
                      f"{a['gateway_sent']:,}/{a['events_expected']:,}" if a else "-",
                      f"{a['gateway_dropped'] + a['gateway_rejected'] + a['gateway_failed']}+{a['sidecar_dropped']}" if a else "-",
                      f"{a['records_in_store']:,}" if a else "-",
                      ("yes" if a["accounted"] else "NO") if a else "-")
    console.print(table)
    med = {}
    for name in ("without sidecar", "with sidecar"):
        sel = [r for r in runs if r.config == name]
        med[name] = (statistics.median(r.throughput for r in sel), statistics.median(r.pct(50) for r in sel),
                     statistics.median(r.pct(99) for r in sel))
    (t0, p50_0, p99_0), (t1, p50_1, p99_1) = med["without sidecar"], med["with sidecar"]
    cost = (t0 - t1) / t0 * 100 if t0 else float("nan")
    summary = Table(title="medians and the goals (sidecar cost <= 5 % throughput, <= 2 ms p99)")
    for col in ("", "req/s", "p50 ms", "p99 ms"):
        summary.add_column(col, justify="right")
    summary.add_row("without sidecar", f"{t0:,.1f}", f"{p50_0:.2f}", f"{p99_0:.2f}")
    summary.add_row("with sidecar", f"{t1:,.1f}", f"{p50_1:.2f}", f"{p99_1:.2f}")
    summary.add_row("sidecar cost", f"{cost:+.1f} % ({'met' if cost <= 5 else 'NOT met'})", f"{p50_1 - p50_0:+.2f}",
                    f"{p99_1 - p99_0:+.2f} ({'met' if p99_1 - p99_0 <= 2 else 'NOT met'})")
    console.print(summary)
    _paired(console, Table, runs)
    cpu = Table(title=f"CPU per answered request (ms, medians over runs; {where})")
    names = ["model", "gateway", "logger", "sidecar", "load generator"]
    cpu.add_column("")
    for name in names:
        cpu.add_column(name, justify="right")
    for config in ("without sidecar", "with sidecar"):
        sel = [r for r in runs if r.config == config]
        cpu.add_row(config, *[f"{statistics.median(r.cpu_ms_per_request.get(n, 0.0) for r in sel):.2f}"
                              if any(n in r.cpu_ms_per_request for r in sel) else "-" for n in names])
    console.print(cpu)
    books = [r for r in runs if r.accounting]
    console.print(f"every request accounted for in {sum(r.accounting['accounted'] for r in books)}/{len(books)} "
                  "runs with the sidecar")
    for r in books:
        console.print(f"  run {r.repeat}: {json.dumps(r.accounting)}")


def _paired(console, Table, runs: list[Run]) -> None:
    """Each repeat runs both configurations back to back, so the machine's slow drift hits both
    alike: the per-repeat ratio of throughputs and difference of p99 are the comparable figures.
    Their median with a 95% bootstrap interval (scipy) says whether the run can resolve the goal
    at all: an interval wider than 5 points cannot."""
    from scipy.stats import bootstrap

    pairs = [(w, s) for w in runs if w.config == "without sidecar"
             for s in runs if s.config == "with sidecar" and s.repeat == w.repeat]
    if len(pairs) < 3:
        console.print("paired comparison: needs --repeats >= 3")
        return
    cost = np.array([(w.throughput - s.throughput) / w.throughput * 100 for w, s in pairs])
    p99 = np.array([s.pct(99) - w.pct(99) for w, s in pairs])
    table = Table(title=f"paired by repeat ({len(pairs)} pairs): median and 95% bootstrap interval")
    for col in ("", "median", "95% interval", "per repeat"):
        table.add_column(col, justify="right")
    for name, values, unit in (("throughput cost", cost, "%"), ("p99 added", p99, " ms")):
        ci = bootstrap((values,), np.median, confidence_level=0.95, n_resamples=2000, method="percentile",
                       random_state=0).confidence_interval
        table.add_row(name, f"{np.median(values):+.1f}{unit}", f"[{ci.low:+.1f}, {ci.high:+.1f}]{unit}",
                      " ".join(f"{v:+.1f}" for v in values))
    console.print(table)


if __name__ == "__main__":
    main()
