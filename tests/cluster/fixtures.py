"""pytest fixtures for the real control plane (imported by tests/conftest.py).

``kube`` (session): the test control plane, started once per session, with the upstream CRDs and
daic's AssessmentCycle CRD installed; or, with ``DAIC_TEST_KUBECONFIG`` set, that cluster as is
(it must already have, or let the admin install, those CRDs). Without the binaries (pytest run
without ``make test``), the tests that use it are skipped with the command that builds them.
When any test of the session failed, the control plane's log files are printed at the end.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from .binaries import Binaries
from .client import Kube
from .control_plane import ControlPlane
from .upstream import UpstreamUnavailable, all_crds

REPO = Path(__file__).resolve().parents[2]
AC_CRD = REPO / "manifests" / "crd" / "assessmentcycles.daic.dev.yaml"


@pytest.fixture(scope="session")
def kube(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    external = os.environ.get("DAIC_TEST_KUBECONFIG")
    plane = None
    if not external:
        binaries = Binaries.default()
        if binaries.missing():
            pytest.skip(f"no test control plane ({', '.join(p.name for p in binaries.missing())} missing): "
                        "run `make control-plane` (make test does)")
    with ThreadPoolExecutor(1) as pool:
        fetching = pool.submit(all_crds)  # from the Go module proxy, while the control plane starts
        if external:
            cluster = Kube(Path(external), workdir)
        else:
            plane = ControlPlane(workdir / "control-plane", binaries)
            plane.__enter__()
            cluster = Kube(plane.kubeconfig, workdir, plane)
    try:
        try:
            crds, notes = fetching.result()
        except UpstreamUnavailable as exc:
            pytest.fail(f"upstream CRDs could not be fetched: {exc}")
        if external:  # never replace a CRD the user's cluster has (a real Seldon one, say)
            crds = [c for c in crds if not cluster.has_crd(c["metadata"]["name"])]
        cluster.install_crds(crds + [yaml.safe_load(AC_CRD.read_text())])
        cluster.notes.extend(notes)
        yield cluster
    finally:
        if plane is not None:
            plane.stop()
            if request.session.testsfailed:
                reporter = request.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.write_line(f"test control plane logs (kept): {', '.join(map(str, plane.logs()))}")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The compiled assess-and-improve pipeline the operator submits (to the fake KFP)."""
    from fakes.compiled_pipeline import compile_to

    return compile_to(tmp_path_factory.mktemp("pkg") / "assess-and-improve.yaml")


@pytest.fixture
def world(kube, tmp_path, package):
    """The operator's surroundings: the real API server, KFP and the sidecar faked at their HTTP
    boundary (neither can run here), a drifted estimate from model v0001."""
    from fakes.kfp import FakeKfp
    from fakes.sidecar import FakeSidecar, drifted_stream

    from .world import World

    with FakeKfp() as kfp, FakeSidecar(drifted_stream(2, 10_000, model_version="v0001")) as sidecar:
        yield World(kube, tmp_path, kfp, sidecar, package)
