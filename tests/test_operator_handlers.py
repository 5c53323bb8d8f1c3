"""The kopf operator in-process (``kopf.testing.KopfRunner``) against the faked API of
tests/fakes/kube.py: the fixtures tests/test_operator_api_faults.py uses to inject faults on cue
(a 409 on one particular write, a 410 Gone at a chosen moment), and the operator's settings.

The operator's behaviour against Kubernetes itself (a whole cycle with the SeldonDeployment patched,
status subresource, conditions, Events, the finalizer, manual approval, an invalid spec, restarts,
its RBAC) is tested against a real kube-apiserver + etcd, with the operator as its own process
under its own ServiceAccount: tests/test_cluster_operator.py and tests/test_cluster_faults.py.
Kubeflow Pipelines' API (tests/fakes/kfp.py, served by the same fake here) and the sidecar
(tests/fakes/sidecar.py) stay fakes at their HTTP boundary: they cannot run on the test machines.
"""
from __future__ import annotations

import contextlib

import pytest
from kopf.testing import KopfRunner

from daic.operators.handlers import OperatorConfig, build_registry
from daic.serving.manifest import DeploymentParams, render_seldon_deployment
from daic.storage import open_store
from fakes.compiled_pipeline import compile_to
from fakes.crd_schema import crd_schema
from fakes.kube import FakeKube
from fakes.sidecar import FakeSidecar, drifted_stream


class Cluster:
    def __init__(self, kube: FakeKube, sidecar: FakeSidecar, store_url: str, package: str):
        self.kube, self.sidecar, self.store_url, self.package = kube, sidecar, store_url, package
        self.store = open_store(store_url)

    def cycle(self, name: str = "demo", **spec_patch) -> dict:
        spec = {"deployment": {"name": "mnist"}, "estimate": {"url": self.sidecar.url},
                "trigger": {"threshold": 0.9, "minWindow": 100},
                "pipeline": {"host": self.kube.url, "package": self.package, "experiment": "daic-test"},
                "promotion": {"mode": "auto", "canaryShare": 20, "canarySeconds": 0}}
        for key, value in spec_patch.items():
            spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
        return self.kube.create({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle",
                                 "metadata": {"name": name, "namespace": "default"}, "spec": spec})

    def status(self, name: str = "demo") -> dict:
        obj = self.kube.get("assessmentcycles", name)
        return (obj or {}).get("status") or {}

    def phase_is(self, phase: str, name: str = "demo"):
        return lambda: self.status(name).get("phase") == phase and self.status(name)

    @contextlib.contextmanager
    def operator(self, liveness_port: int | None = None):
        registry, _ = build_registry(OperatorConfig(interval=0.2, store_url=self.store_url))
        args = ["run", "--standalone", "--namespace", "default"]
        if liveness_port:
            args.append(f"--liveness=http://127.0.0.1:{liveness_port}/healthz")
        with KopfRunner(args, registry=registry, timeout=30) as runner:
            yield runner
        assert runner.exit_code == 0, runner.output[-3000:]

    def only_run(self) -> dict:
        runs = list(self.kube.runs.values())
        return runs[0] if len(runs) == 1 else None


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return compile_to(tmp_path_factory.mktemp("pkg") / "assess-and-improve.yaml")


@pytest.fixture
def cluster(tmp_path, monkeypatch, package):
    with FakeKube(crd_schema()) as kube, FakeSidecar(drifted_stream(2, 10_000, model_version="v0001")) as sidecar:
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        kube.create(render_seldon_deployment(DeploymentParams(name="mnist", namespace="default",
                                                              model_version="v0001")))
        yield Cluster(kube, sidecar, f"file://{tmp_path / 'store'}", package)
        assert kube.rejected == [], "the operator or kopf wrote something the CRD schema refuses"


def test_operator_config_from_environment(monkeypatch):
    monkeypatch.setenv("DAIC_OPERATOR_INTERVAL", "7.5")
    monkeypatch.setenv("DAIC_OPERATOR_CANCEL_ON_DELETE", "false")
    cfg = OperatorConfig.from_env()
    assert (cfg.interval, cfg.cancel_on_delete, cfg.peering) == (7.5, False, False)
    monkeypatch.setenv("DAIC_OPERATOR_INTERVAL", "often")
    with pytest.raises(ValueError, match="DAIC_OPERATOR_INTERVAL='often'"):
        OperatorConfig.from_env()
    monkeypatch.setenv("DAIC_OPERATOR_INTERVAL", "5")
    monkeypatch.setenv("DAIC_OPERATOR_PEERING", "sometimes")
    with pytest.raises(ValueError, match="DAIC_OPERATOR_PEERING='sometimes'"):
        OperatorConfig.from_env()
