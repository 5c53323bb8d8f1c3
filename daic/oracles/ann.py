"""k-nearest-neighbour distances over L2-normalised embeddings: exact on small banks, an
inverted-file index on large ones.

Exact search costs one distance per bank row and query, so scoring grows linearly with the
reference (issue 22 measured 0.040 -> 0.091 -> 0.40 ms per input at 5k, 20k and 100k reference
rows) and the fit's leave-one-out pass with its square. Above ``EXACT_BELOW`` bank rows the
distances come from faiss's IVF-Flat index (Jégou, Douze & Schmid, 2011, "Product quantization for
nearest neighbor search", the inverted file; Johnson, Douze & Jégou, 2019, "Billion-scale
similarity search with GPUs", the library): k-means splits the bank into ``nlist = 4 sqrt(n)``
cells and a query scans only the ``nprobe`` cells nearest to it, so it costs about
``nlist + nprobe * n / nlist`` distances, O(sqrt(n)), and stays flat distances in full precision
(no quantisation of the vectors). Below the threshold the exact search is kept: the distances,
and so the drift percentiles, are then bit-for-bit what they were, at a cost still under half
the 0.1 ms scoring budget per input (measured in benchmarks/scale.py ``--assessor-sizes``: exact
0.03 ms of CPU per input at a 2,500-row bank, 0.085 ms at 10,000; docs/scale.md).

IVF is chosen over HNSW (also in faiss) because its build is a seeded k-means (deterministic on
one thread, a few seconds at 250k rows) where HNSW's graph depends on insertion threads, and
because it measured as fast or faster per query on these 128-d embeddings at the sizes here.
The index pickles (``faiss.serialize_index``), so a fitted assessor is stored with its version.
"""
from __future__ import annotations

import math

import numpy as np

EXACT_BELOW = 5_000    # bank rows: exact while its query costs < half the 0.1 ms goal (docs/scale.md)
NPROBE = 16            # cells scanned per query (kth-distance error measured ~0.3-0.5 % mean)
_CHUNK = 8192          # queries per faiss call in bulk passes (bounds the result arrays)


def _faiss():
    try:
        import faiss  # noqa: PLC0415 - optional until a bank is large
    except ImportError as exc:  # pragma: no cover - faiss-cpu is in the locks
        raise ImportError("an oracle reference bank above EXACT_BELOW rows needs faiss-cpu "
                          "(pinned in requirements/main.lock)") from exc
    return faiss


class KNNIndex:
    """Distances to the k nearest rows of ``points`` (already L2-normalised, float).

    ``kind`` is ``"exact"`` (scikit-learn brute force) when ``len(points) < exact_below``, else
    ``"ivf"`` (faiss IndexIVFFlat, ``nlist = 4 sqrt(n)`` cells, ``nprobe`` probed, k-means seeded by
    ``seed``)."""

    def __init__(self, points: np.ndarray, k: int, exact_below: int = EXACT_BELOW, nprobe: int = NPROBE,
                 seed: int = 0) -> None:
        points = np.asarray(points)
        if points.ndim != 2 or len(points) <= k:
            raise ValueError(f"need a 2-d bank of more than k={k} rows, got shape {points.shape}")
        if exact_below < 1 or nprobe < 1:
            raise ValueError(f"exact_below and nprobe must be >= 1, got {exact_below}, {nprobe}")
        self.k = int(k)
        self.n, self.dim = points.shape
        self.nprobe = int(nprobe)
        if self.n < exact_below:
            from sklearn.neighbors import NearestNeighbors

            self.kind = "exact"
            self._index = NearestNeighbors(n_neighbors=self.k, algorithm="brute").fit(points)
            return
        faiss = _faiss()
        self.kind = "ivf"
        x = np.ascontiguousarray(points, dtype=np.float32)
        self.nlist = max(1, min(int(4 * math.sqrt(self.n)), self.n // 39))
        quantizer = faiss.IndexFlatL2(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_L2)
        index.cp.seed = int(seed)
        train = x
        if self.n > 64 * self.nlist:  # k-means on a seeded sample: faiss's own default cap is 256/cell
            train = x[np.random.default_rng(seed).choice(self.n, 64 * self.nlist, replace=False)]
        index.train(train)
        index.add(x)
        index.nprobe = self.nprobe
        self._index = index
        self._quantizer = quantizer  # the IVF index does not own it: keep it alive

    # -- queries --------------------------------------------------------------------------------
    def _search(self, x: np.ndarray, k: int, threads: int | None) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        if threads is not None:
            faiss.omp_set_num_threads(threads)  # this thread's OpenMP setting only
        dist, ids = [], []
        for start in range(0, len(x), _CHUNK):
            d, i = self._index.search(np.ascontiguousarray(x[start:start + _CHUNK], dtype=np.float32), k)
            dist.append(d)
            ids.append(i)
        d = np.sqrt(np.maximum(np.vstack(dist).astype(np.float64), 0.0))
        i = np.vstack(ids)
        missing = i < 0  # fewer than k rows in the probed cells: count those as infinitely far
        if missing.any():
            d[missing] = np.inf
        return d, i

    def query(self, x: np.ndarray, threads: int | None = 1) -> np.ndarray:
        """(len(x), k) distances to the nearest bank rows, ascending. ``threads`` (ivf only): the
        OpenMP threads of this call (1 for the sidecar's small batches, None: faiss's default)."""
        if self.kind == "exact":
            return self._index.kneighbors(x)[0]
        return self._search(x, self.k, threads)[0]

    def query_self(self, points: np.ndarray, threads: int | None = None) -> np.ndarray:
        """(n, k) distances of every bank row to its k nearest *other* rows (leave-one-out);
        ``points``: the rows the index was built on (the index keeps no copy it can hand back)."""
        if self.kind == "exact":
            return self._index.kneighbors()[0]
        if np.shape(points) != (self.n, self.dim):
            raise ValueError(f"query_self needs the {self.n} x {self.dim} bank, got {np.shape(points)}")
        d, i = self._search(np.asarray(points), self.k + 1, threads)
        own = i == np.arange(self.n)[:, None]
        # Drop each row's own hit; where the approximate search missed it, drop the farthest.
        own[~own.any(axis=1), -1] = True
        first = own.argmax(axis=1)
        own = np.zeros_like(own)
        own[np.arange(self.n), first] = True
        return d[~own].reshape(self.n, self.k)

    # -- pickling ---------------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.kind == "ivf":
            state["_index"] = _faiss().serialize_index(self._index)
            state.pop("_quantizer", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.kind == "ivf":
            faiss = _faiss()
            index = faiss.deserialize_index(state["_index"])
            index.nprobe = self.nprobe
            self._index = index
