"""Benchmark: the sampling step at production scale (issue 22).

Writes synthetic operational records with the sidecar's own writer (`daic.sidecar.records.write_batch`,
Parquet parts of 1,000 rows = one 10 s flush at 100 requests/s; real MNIST training images, a
128-d ReLU embedding, one part in 500 written twice as a crash replay would), then runs the real
sampling step (`components/sample_operational` ``run``: scan, stratified draw of 200, fetch of the
drawn images, the cycle's record) in a fresh process per size, on windows holding 10k ... 10M
rows, against ``file://`` and a local SeaweedFS (``s3://``). Per run: wall time, the process's
peak RSS, bytes and requests the readers passed (``/proc/self/io`` rchar as a cross-check on
file://), the pool's bytes per row; then log-log slopes over the sizes. Last, the objects one
cycle reads with its window (the last hour, cycles hourly) and without (``since=0``: the history).

    nice -n 10 .venv/bin/python benchmarks/scale.py --sizes 10000,100000,1000000,10000000 \\
        --s3-sizes 10000,100000,1000000 --workdir /tmp/daic-scale

``--keep`` keeps the generated records for a re-run (``--reuse``). Records take about 730 B a row
on disk (10M rows: ~7.3 GB; the s3 sizes again in SeaweedFS).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 100.0              # requests per second, one input each
PART_ROWS = 1000          # one flush every 10 s
T0 = 1_767_225_600.0      # 2026-01-01T00:00:00Z
REPLAY_EVERY = 500        # every 500th part is written twice (at-least-once)
DEPLOYMENT = "scale"
EMBED_DIM = 128


# -- synthetic records --------------------------------------------------------------------------

def _images():
    from daic.data.mnist import load_split

    return load_split("train").images  # (60000, 28, 28) float32 in [0, 1]


def make_part(index: int, images: np.ndarray):
    from daic.sidecar.records import OperationalRecords

    rng = np.random.default_rng(index)
    n = PART_ROWS
    first = index * n
    rows = np.arange(first, first + n)
    logits = rng.standard_normal((n, 10), dtype=np.float32)
    pred = rng.integers(0, 10, n)
    logits[np.arange(n), pred] += 4.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return OperationalRecords(
        ids=[f"{r // 4:024x}:{r % 4}" for r in rows.tolist()], request_ids=[f"{r // 4:024x}" for r in rows.tolist()],
        times=T0 + rows / RATE, inputs=images[rows % images.shape[0]], predictions=pred, probs=probs,
        embeddings=np.maximum(rng.standard_normal((n, EMBED_DIM), dtype=np.float32), 0.0),
        shadow_probs=probs, p_correct=rng.beta(8, 2, n).astype(np.float32),
        drift=rng.random(n, dtype=np.float32), model_version=np.full(n, "v0001"))


def _write_range(args):
    url, start, stop = args
    from daic.sidecar.records import write_batch
    from daic.storage import open_store

    store, images = open_store(url), _images()
    for i in range(start, stop):
        part = make_part(i, images)
        write_batch(store, DEPLOYMENT, part, seq=i)
        if i % REPLAY_EVERY == REPLAY_EVERY - 1:
            write_batch(store, DEPLOYMENT, part, seq=10_000_000 + i)
    return stop - start


def generate_file(url: str, rows: int, workers: int) -> float:
    parts = rows // PART_ROWS
    start = time.perf_counter()
    bounds = np.linspace(0, parts, workers * 4 + 1).astype(int)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_range, [(url, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]))
    return time.perf_counter() - start


def copy_to_s3(src_root: Path, store, rows: int) -> float:
    """The file store's parts of the first ``rows`` rows, byte for byte, into the S3 store."""
    from daic.sidecar.records import list_parts

    from daic.storage import open_store

    src = open_store(f"file://{src_root}")
    keys = list_parts(src, DEPLOYMENT, T0, T0 + rows / RATE)
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put_bytes(k, (src_root / k).read_bytes()), keys))
    return time.perf_counter() - start


# -- one run of the step, in a fresh process ----------------------------------------------------

def step_main(args) -> None:
    """Child: run the sampling step once and print what it cost as JSON."""
    from daic.components.sample_operational import logic

    captured = {}
    real_scan = logic.scan_pool

    def scan_and_keep(*a, **kw):
        captured["scan"] = real_scan(*a, **kw)
        return captured["scan"]

    logic.scan_pool = scan_and_keep  # instrumentation only: keep the pool to measure its size
    io_before = _rchar()
    start = time.perf_counter()
    result = logic.run(args.store, logic.SampleConfig(
        deployment=DEPLOYMENT, sampler=args.sampler, budget=200, seed=1, since=args.since, until=args.until,
        cycle=args.cycle, ray_address=args.ray_address))
    wall = time.perf_counter() - start
    scan = captured["scan"]
    pool = scan.pool
    pool_bytes = pool.ids.nbytes + pool.p_correct.nbytes + pool.predictions.nbytes + scan.part_of.nbytes
    if "order_by_p" in pool.__dict__:
        pool_bytes += pool.order_by_p.nbytes
    print(json.dumps({
        "rows": result.pool_size, "wall_s": wall, "scan_s": scan.stats.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes_read": scan.stats.bytes_read, "requests": scan.stats.requests,
        "rchar": None if io_before is None else _rchar() - io_before,
        "parts_listed": scan.stats.parts_listed, "parts_read": scan.stats.parts_read,
        "duplicates": scan.stats.duplicates_dropped, "pool_bytes_per_row": pool_bytes / pool.size,
        "n_labels": result.n_labels}))


def _rchar() -> int | None:
    try:
        for line in open("/proc/self/io"):
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_step(url: str, since: float, until: float | None, env: dict, cycle: str, ray_address: str = "") -> dict:
    cmd = [sys.executable, __file__, "_step", "--store", url, "--since", repr(since),
           "--until", "" if until is None else repr(until), "--cycle", cycle, "--ray-address", ray_address]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"step failed ({url}, {cycle}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the report ---------------------------------------------------------------------------------

def slope(xs, ys) -> float:
    xs, ys = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) >= 2 else float("nan")


def table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'rows':>10} {'wall s':>8} {'scan s':>7} {'peak RSS MB':>11} {'read MB':>8} {'B/row read':>10} "
          f"{'rchar MB':>8} {'requests':>8} {'parts':>6} {'dups':>5} {'pool B/row':>10}")
    for r in rows:
        read = r["bytes_read"]
        print(f"{r['rows']:>10,} {r['wall_s']:>8.2f} {r['scan_s']:>7.2f} {r['peak_rss_mb']:>11.0f} "
              f"{(read or 0) / 1e6:>8.1f} {(read or 0) / r['rows']:>10.1f} "
              f"{(r['rchar'] or 0) / 1e6:>8.1f} {r['requests'] or 0:>8} {r['parts_read']:>6} {r['duplicates']:>5} "
              f"{r['pool_bytes_per_row']:>10.1f}")
    if len(rows) >= 2:
        n = [r["rows"] for r in rows]
        print(f"log-log slopes over {n[0]:,}..{n[-1]:,} rows: wall {slope(n, [r['wall_s'] for r in rows]):.2f}, "
              f"scan {slope(n, [r['scan_s'] for r in rows]):.2f}, peak RSS {slope(n, [r['peak_rss_mb'] for r in rows]):.2f}, "
              f"bytes read {slope(n, [max(r['bytes_read'] or 1, 1) for r in rows]):.2f}")


# -- the assessor (issue 22 item 5) ---------------------------------------------------------------

def synthetic_reference(n: int, seed: int = 0, shift: float = 0.0):
    """An oracle reference of ``n`` rows in the 128-d embedding space (daic.oracles.synthetic)."""
    from daic.oracles.synthetic import synthetic_reference as make

    return make(n, seed, shift, d=EMBED_DIM)


def _per_input_ms(fn, queries, batch: int) -> float:
    """CPU time of this thread per input (ms): on a machine shared with other work, wall time
    measures the contention as much as the code."""
    from daic.oracles.threads import single_thread

    with single_thread():
        start = time.thread_time()
        for i in range(0, len(queries[0]), batch):
            fn(*(q[i:i + batch] for q in queries))
        return (time.thread_time() - start) / len(queries[0]) * 1e3


def knn_crossover(banks: list[int], batch: int) -> list[dict]:
    """Per-input kNN query cost, exact vs IVF, one thread, at bank sizes ``banks``: where the
    index starts to pay (daic.oracles.ann.EXACT_BELOW)."""
    from daic.oracles.ann import KNNIndex
    from daic.oracles.distance import l2_normalise

    q = l2_normalise(synthetic_reference(2000, seed=9).embeddings)
    rows = []
    for n in banks:
        bank = l2_normalise(synthetic_reference(n).embeddings)
        exact, ivf = KNNIndex(bank, 10, exact_below=10**12), KNNIndex(bank, 10, exact_below=1)
        rows.append({"bank": n, "exact_ms": _per_input_ms(exact.query, (q,), batch),
                     "ivf_ms": _per_input_ms(ivf.query, (q,), batch)})
    return rows


def assessor_point(n: int, mode: str, batch: int) -> dict:
    """Fit an OnlineAssessor on an n-row clean reference (bank n/2) with the exact search or the
    index, then score 3,000 inputs in batches of ``batch`` (what the sidecar scores together)."""
    import daic.oracles.ann as ann
    from daic.oracles.pipeline import OnlineAssessor

    ann.EXACT_BELOW = 10**12 if mode == "exact" else 1
    reference = synthetic_reference(n)
    start, cpu = time.perf_counter(), time.process_time()
    assessor = OnlineAssessor().fit(reference)
    fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    q = synthetic_reference(3000, seed=11, shift=0.3)
    ms = _per_input_ms(assessor.score, (q.probs, q.embeddings, q.shadow_probs), batch)
    scores = assessor.score(q.probs, q.embeddings, q.shadow_probs)
    return {"n": n, "mode": mode, "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "score_ms": ms, "kind": assessor.knn.index_kind,
            "drift": scores.drift, "p_correct": scores.p_correct, "assessor": assessor}


def swap_gap(n: int, batch: int, workdir: Path) -> dict:
    """A champion change under load: a thread scores batches of the old and the new version
    without pause while the pool fits the new version's assessor (no stored one: the worst case)
    on an n-row reference. Returns the largest gap between two scoring calls during the fit, the
    fit's time (what scoring waited under the old pool's lock), and the calls made meanwhile."""
    import threading

    from daic.models.card import DataLineage, ModelCard
    from daic.sidecar.assessment import AssessorPool
    from daic.storage import open_store

    shutil.rmtree(workdir, ignore_errors=True)
    store = open_store(f"file://{workdir}")
    for i, version in enumerate(("v0001", "v0002")):
        reference = synthetic_reference(n, seed=i)
        store.put_arrays(f"models/scale/{version}/oracle_reference.npz", **reference.to_arrays())
        store.put_json(f"models/scale/{version}/card.json", ModelCard(
            name="scale", version=version, code_version="bench",
            data=DataLineage(dataset="mnist", base_count=n)).model_dump(mode="json"))
    pool = AssessorPool(store, "scale", window=500)
    pool.get("v0001")
    q = synthetic_reference(4000, seed=11)
    stop = threading.Event()
    stamps: list[float] = []

    def traffic():
        i = 0
        while not stop.is_set():
            rows = slice((i * batch) % 3000, (i * batch) % 3000 + batch)
            for version in ("v0001", "v0002"):
                assessor, _own = pool.for_scoring(version)
                assessor.score(q.probs[rows], q.embeddings[rows], q.shadow_probs[rows])
            stamps.append(time.perf_counter())
            i += 1

    scorer = threading.Thread(target=traffic, name="scorer")
    scorer.start()
    while len(stamps) < 5:
        time.sleep(0.01)
    start = time.perf_counter()
    pool.prepare("v0002").result()
    fit_s = time.perf_counter() - start
    stop.set()
    scorer.join()
    during = [t for t in stamps if start <= t <= start + fit_s]
    edges = [max(t for t in stamps if t < start)] + during + [min([t for t in stamps if t > start + fit_s] or [start + fit_s])]
    shutil.rmtree(workdir, ignore_errors=True)
    return {"fit_s": fit_s, "max_gap_ms": 1e3 * float(np.max(np.diff(edges))), "calls": len(during),
            "median_call_ms": 1e3 * float(np.median(np.diff(stamps)))}


def assessor_section(sizes: list[int], exact_max: int, banks: list[int], batch: int, swap_n: int,
                     workdir: Path) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    from daic.oracles import ann

    print(f"\nkNN query, ms of CPU per input, one thread, batches of {batch} (bank = the distance oracles' half "
          "of the reference)")
    print(f"{'bank rows':>10} {'exact ms':>9} {'IVF ms':>8} {'exact/IVF':>9}")
    for r in knn_crossover(banks, batch):
        print(f"{r['bank']:>10,} {r['exact_ms']:>9.4f} {r['ivf_ms']:>8.4f} {r['exact_ms'] / r['ivf_ms']:>9.1f}")
    print(f"(the sidecar uses the exact search below daic.oracles.ann.EXACT_BELOW = {ann.EXACT_BELOW:,} bank rows)")

    points = []
    for n in sizes:
        for mode in ("exact", "ivf"):
            if mode == "exact" and n > exact_max:
                continue
            r = assessor_point(n, mode, batch)
            points.append(r)
            print(f"  fitted {n:,} rows {mode}: fit {r['fit_s']:.1f} s wall, {r['fit_cpu_s']:.1f} s CPU; "
                  f"scoring {r['score_ms']:.4f} ms CPU per input", flush=True)
    print(f"\nthe assessor: fit on a clean n-row reference (no shifted reference; wall s and CPU s: the machine is "
          f"shared), scoring (ms of CPU per input, batches of {batch}, one thread); differences IVF - exact on "
          "3,000 shifted inputs")
    print(f"{'rows':>8} {'fit exact':>14} {'fit IVF':>14} {'score exact':>11} {'score IVF':>9} "
          f"{'|d drift| mean':>14} {'d window drift':>14} {'|d P(correct)| mean':>19}")
    by = {(p["n"], p["mode"]): p for p in points}
    nan = float("nan")
    for n in sizes:
        e, i = by.get((n, "exact")), by[(n, "ivf")]
        diff = ("", "", "") if e is None else (
            f"{np.abs(i['drift'] - e['drift']).mean():.4f}", f"{abs(i['drift'].mean() - e['drift'].mean()):.4f}",
            f"{np.abs(i['p_correct'] - e['p_correct']).mean():.4f}")
        fe = f"{e['fit_s']:.1f} / {e['fit_cpu_s']:.1f}" if e else "-"
        print(f"{n:>8,} {fe:>14} {i['fit_s']:>7.1f} / {i['fit_cpu_s']:<4.1f} "
              f"{e['score_ms'] if e else nan:>11.4f} {i['score_ms']:>9.4f} {diff[0]:>14} {diff[1]:>14} {diff[2]:>19}")
    for mode in ("exact", "ivf"):
        pts = [p for p in points if p["mode"] == mode]
        if len(pts) >= 2:
            n = [p["n"] for p in pts]
            print(f"log-log slopes, {mode} over {n[0]:,}..{n[-1]:,} rows: fit {slope(n, [p['fit_s'] for p in pts]):.2f} "
                  f"(CPU {slope(n, [p['fit_cpu_s'] for p in pts]):.2f}), scoring {slope(n, [p['score_ms'] for p in pts]):.2f}; "
                  f"last step {n[-2]:,}->{n[-1]:,}: fit CPU {slope(n[-2:], [p['fit_cpu_s'] for p in pts[-2:]]):.2f}, "
                  f"scoring {slope(n[-2:], [p['score_ms'] for p in pts[-2:]]):.2f}")
    ex = [p for p in points if p["mode"] == "exact"]
    if len(ex) >= 2 and max(sizes) > exact_max:
        n = [p["n"] for p in ex]
        for key, unit in (("fit_cpu_s", "s of CPU"), ("score_ms", "ms per input")):
            b = slope(n[-2:], [p[key] for p in ex[-2:]])
            proj = ex[-1][key] * (max(sizes) / n[-1]) ** b
            print(f"exact at {max(sizes):,} rows, projected from the last step's slope {b:.2f}: "
                  f"{key.split('_')[0]} {proj:.1f} {unit}")

    if swap_n:
        g = swap_gap(swap_n, batch, workdir / "swap-store")
        print(f"\nchampion change under load ({swap_n:,}-row references, the new one fitted in the sidecar's "
              f"background thread, the worst case: nothing stored): fit {g['fit_s']:.1f} s; meanwhile "
              f"{g['calls']} scoring rounds (old + new version, {batch} inputs each), median round "
              f"{g['median_call_ms']:.1f} ms, largest gap between rounds {g['max_gap_ms']:.1f} ms "
              f"(the old pool held its lock across the fit: a {g['fit_s']:.1f} s pause)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--s3-sizes", default="10000,100000,1000000")
    parser.add_argument("--ray-sizes", default="", help="also on Ray Data (a private local Ray), file://")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: file,s3,window "
                        "(all three: no records are written)")
    parser.add_argument("--assessor-sizes", default="", help="reference rows for the assessor section, "
                        "e.g. 5000,20000,100000,500000")
    parser.add_argument("--assessor-exact-max", type=int, default=100_000,
                        help="largest reference fitted with the exact search (larger: projected)")
    parser.add_argument("--knn-banks", default="1000,2500,5000,10000,20000,50000")
    parser.add_argument("--swap-rows", type=int, default=100_000, help="reference rows of the champion change "
                        "under load (0: skip)")
    parser.add_argument("--score-batch", type=int, default=256, help="inputs scored together (the sidecar's "
                        "score_batch)")
    parser.add_argument("--workdir", default="/tmp/daic-scale")
    parser.add_argument("--workers", type=int, default=2, help="processes writing the records")
    parser.add_argument("--reuse", action="store_true", help="records already written by a --keep run")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    s3_sizes = sorted(int(s) for s in args.s3_sizes.split(",") if s)
    work = Path(args.workdir)
    file_root = work / "store"
    url = f"file://{file_root}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("DAIC_SAMPLING_RAY_ADDRESS", None)
    skip = set(args.skip.split(","))
    records = not {"file", "s3", "window"} <= skip or bool(args.ray_sizes)
    if not args.reuse and records:
        shutil.rmtree(work, ignore_errors=True)
        file_root.mkdir(parents=True)
        gen = generate_file(url, max(sizes + s3_sizes), args.workers)
        size = sum(p.stat().st_size for p in file_root.rglob("*.parquet"))
        print(f"wrote {max(sizes + s3_sizes):,} rows with the sidecar's writer in {gen:.0f} s: "
              f"{size / 1e9:.2f} GB, {size / max(sizes + s3_sizes):.0f} B a row")

    if "file" not in skip:
        file_rows = [run_step(url, T0, T0 + n / RATE, env, f"file-{n}") for n in sizes]
        table("sampling step end to end, file:// (stratified, 200 draws; window = the first N rows)", file_rows)

    ray_sizes = sorted(int(s) for s in args.ray_sizes.split(",") if s)
    if ray_sizes:
        ray_rows = [run_step(url, T0, T0 + n / RATE, env, f"ray-{n}", ray_address="local") for n in ray_sizes]
        table("the same on Ray Data (a private local Ray on this machine's CPUs; wall includes ray.init)", ray_rows)

    s3_rows = []
    if s3_sizes and "s3" not in skip:
        from daic.storage import open_store
        from daic.storage.seaweedfs import SeaweedS3

        with SeaweedS3(workdir=work / "seaweed") as server:
            s3_env = {**env, **server.env()}
            os.environ.update(server.env())
            store = open_store("s3://daic-scale/records", create_bucket=True)
            copied = copy_to_s3(file_root, store, max(s3_sizes))
            print(f"\ncopied {max(s3_sizes):,} rows' parts to SeaweedFS in {copied:.0f} s")
            s3_rows = [run_step(store.url, T0, T0 + n / RATE, s3_env, f"s3-{n}") for n in s3_sizes]
        table("sampling step end to end, s3:// (local SeaweedFS, same records)", s3_rows)

    if "window" not in skip:
        biggest = max(sizes)
        end = T0 + biggest / RATE
        hourly = run_step(url, end - 3600, end, env, "window-hour")
        history = run_step(url, 0.0, None, env, "window-none")
        print(f"\nobjects one cycle reads at {biggest:,} rows logged ({biggest / RATE / 3600:.1f} h at {RATE:.0f}/s), file://")
        print(f"{'window':>28} {'rows':>10} {'parts listed':>12} {'parts read':>10} {'read MB':>8} {'wall s':>7}")
        for name, r in (("last hour (hourly cycles)", hourly), ("none (since=0)", history)):
            print(f"{name:>28} {r['rows']:>10,} {r['parts_listed']:>12} {r['parts_read']:>10} "
                  f"{(r['bytes_read'] or 0) / 1e6:>8.1f} {r['wall_s']:>7.2f}")
    assessor_sizes = sorted(int(s) for s in args.assessor_sizes.split(",") if s)
    if assessor_sizes:
        assessor_section(assessor_sizes, args.assessor_exact_max, [int(b) for b in args.knn_banks.split(",") if b],
                         args.score_batch, args.swap_rows, work)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_step":
        p = argparse.ArgumentParser()
        p.add_argument("_step")
        p.add_argument("--store", required=True)
        p.add_argument("--since", default="")
        p.add_argument("--until", default="")
        p.add_argument("--cycle", required=True)
        p.add_argument("--sampler", default="stratified")
        p.add_argument("--ray-address", default="")
        step_main(p.parse_args())
    else:
        main()
