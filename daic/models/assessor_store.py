"""A version's fitted assessor, stored with the version: fitted once, off the serving path.

Fitting a version's :class:`~daic.oracles.pipeline.OnlineAssessor` (kNN bank, drift calibration,
cross-fitted combiner and window model) takes about a minute of CPU at the default reference and
grew with the square of the reference before the index of :mod:`daic.oracles.ann` (issue 22). The
sidecar used to pay it when a version first showed up, while scoring waited. Now it is paid once
per version when the version is registered (``ModelRegistry.register(fit_assessor=True)``, which
the training step uses, or :func:`fit_and_store` as a step of its own: ``python -m
daic.models.assessor_store --store URL --model mnist --version v0002 [--ray-address auto]``), and
stored next to the weights::

    models/<name>/<version>/assessor.pkl

The file is a pickle of ``{"format", "code", "libraries", "reference", "assessor"}``. The sidecar
(:class:`daic.sidecar.assessment.AssessorPool`) loads it only when ``code`` (a hash of the
``daic.oracles`` sources) and ``libraries`` (numpy, scikit-learn, faiss versions) match its own:
an assessor pickled by other code is refitted instead, in the background. Trust: unpickling runs
code, so ``models/`` must be writable only by the pipeline's service account, as it already must be
for the weights and the champion pointer (docs/scale.md, "The assessor").
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import logging
import pickle
from pathlib import Path

from daic.storage import KeyNotFound, ObjectStore

log = logging.getLogger(__name__)

ASSESSOR_FILE = "assessor.pkl"
FORMAT = 1


def key(name: str, version: str) -> str:
    return f"models/{name}/{version}/{ASSESSOR_FILE}"


@functools.cache
def code_fingerprint() -> str:
    """Hash of the daic.oracles sources (taken once per process: the code that was loaded)."""
    import daic.oracles

    digest = hashlib.sha256()
    for path in sorted(Path(daic.oracles.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of the libraries whose objects a fitted assessor pickles."""
    import numpy
    import sklearn

    out = {"numpy": numpy.__version__, "scikit-learn": sklearn.__version__}
    try:
        import faiss

        out["faiss"] = faiss.__version__
    except ImportError:
        out["faiss"] = "absent"
    return out


def fit(reference, shifted=None, config=None):
    """An :class:`OnlineAssessor` fitted on ``reference`` (and ``shifted``)."""
    from daic.oracles.pipeline import OnlineAssessor

    return OnlineAssessor(config).fit(reference, shifted)


def dumps(assessor, reference_fingerprint: str = "") -> bytes:
    buf = io.BytesIO()
    pickle.dump({"format": FORMAT, "code": code_fingerprint(), "libraries": library_versions(),
                 "reference": reference_fingerprint, "assessor": assessor}, buf, protocol=pickle.HIGHEST_PROTOCOL)
    return buf.getvalue()


def loads(data: bytes, reference_fingerprint: str | None = None):
    """The assessor in ``data``, or None (logged) when it was pickled by other code or libraries,
    was fitted on other references than ``reference_fingerprint`` (when given: references rebuilt
    since, e.g. by a re-registration, make it stale) or is not a stored assessor at all."""
    from daic.oracles.pipeline import OnlineAssessor

    try:
        payload = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means: fit instead
        log.warning("cannot read a stored assessor (%s: %s); fitting instead", type(exc).__name__, exc)
        return None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT \
            or not isinstance(payload.get("assessor"), OnlineAssessor):
        log.warning("a stored assessor has an unknown format; fitting instead")
        return None
    if payload.get("code") != code_fingerprint() or payload.get("libraries") != library_versions():
        log.info("stored assessor was fitted by other code or libraries (%s, %s; here %s, %s); fitting instead",
                 payload.get("code"), payload.get("libraries"), code_fingerprint(), library_versions())
        return None
    if reference_fingerprint is not None and payload.get("reference") != reference_fingerprint:
        log.info("stored assessor was fitted on other references (%s; here %s); fitting instead",
                 payload.get("reference") or "unrecorded", reference_fingerprint)
        return None
    return payload["assessor"]


def store_assessor(store: ObjectStore, name: str, version: str, assessor, reference_fingerprint: str = "") -> str:
    k = key(name, version)
    store.put_bytes(k, dumps(assessor, reference_fingerprint))
    return k


def load(store: ObjectStore, name: str, version: str, reference_fingerprint: str | None = None):
    """The version's stored assessor, or None when there is none or it cannot be used here
    (see :func:`loads`; the sidecar passes the fingerprint of the references it just read)."""
    try:
        data = store.get_bytes(key(name, version))
    except KeyNotFound:
        return None
    return loads(data, reference_fingerprint)


def fit_references_and_store(store: ObjectStore, name: str, version: str, reference, shifted=None, config=None):
    """Fit on the given references and store the result under ``version``; returns the assessor."""
    from daic.sidecar.assessment import reference_fingerprint

    assessor = fit(reference, shifted, config)
    store_assessor(store, name, version, assessor, reference_fingerprint(reference, shifted))
    return assessor


def _fit_remote(store_url: str, name: str, version: str) -> str:
    from daic.storage import open_store

    fit_and_store(open_store(store_url), name, version)
    return key(name, version)


def fit_and_store(store: ObjectStore, name: str, version: str, config=None, ray_address: str | None = None):
    """Fit ``version``'s assessor on its stored oracle references and store it (a pipeline step).
    With ``ray_address`` the fit runs as one Ray task on that cluster (the training image's Ray)
    and this returns None; without, it runs here and returns the assessor."""
    if ray_address:
        import ray

        ray.init(address=ray_address, ignore_reinit_error=True)
        ray.get(ray.remote(num_cpus=2)(_fit_remote).remote(store.url, name, version))
        return None
    from daic.models.registry import ModelRegistry

    reference, shifted = ModelRegistry(store, name).load_oracle_reference(version)
    return fit_references_and_store(store, name, version, reference, shifted, config)


def main(argv: list[str] | None = None) -> None:
    from daic.storage import open_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--version", required=True)
    parser.add_argument("--ray-address", default=None)
    args = parser.parse_args(argv)
    fit_and_store(open_store(args.store), args.model, args.version, ray_address=args.ray_address)
    print(key(args.model, args.version))


if __name__ == "__main__":
    main()
