"""One operator test's world on the real API server: a namespace with daic's operator RBAC
(manifests/operator, installed with kustomize as a user would), a kubeconfig with the operator's
ServiceAccount token, the SeldonDeployment ``daic serve`` renders, and the two peers that stay
fakes at their HTTP boundary because they cannot run here: Kubeflow Pipelines' REST API
(tests/fakes/kfp.py) and the pseudo-oracle sidecar's ``/estimate`` (tests/fakes/sidecar.py).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from daic.operators.spec import GROUP, KIND, PLURAL, VERSION
from daic.serving.manifest import DeploymentParams, render_seldon_deployment
from daic.storage import open_store

from .client import Kube
from .operator import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
SELDON = ("machinelearning.seldon.io", "v1", "seldondeployments")
OPERATOR_SA = "daic-operator"


def install_operator_rbac(kube: Kube, namespace: str, folder: Path) -> None:
    """manifests/operator in ``namespace`` through a kustomization that sets it (subjects too)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": namespace,
        "resources": [os.path.relpath(REPO / "manifests" / "operator", folder)]}))
    kube.kubectl("apply", "--server-side", "--validate=strict", "-k", str(folder))


class World:
    def __init__(self, kube: Kube, tmp_path: Path, kfp: Any, sidecar: Any, package: str):
        self.kube, self.kfp, self.sidecar, self.package = kube, kfp, sidecar, package
        self.tmp_path = tmp_path
        self.namespace = kube.namespace("op")
        install_operator_rbac(kube, self.namespace, tmp_path / "operator-kustomization")
        self.kubeconfig = kube.service_account_kubeconfig(self.namespace, OPERATOR_SA)
        self.user = f"system:serviceaccount:{self.namespace}:{OPERATOR_SA}"
        self.store_url = f"file://{tmp_path / 'store'}"
        self.store = open_store(self.store_url)
        kube.custom().create_namespaced_custom_object(
            *SELDON[:2], self.namespace, SELDON[2],
            render_seldon_deployment(DeploymentParams(name="mnist", namespace=self.namespace, model_version="v0001")))

    # -- the AssessmentCycle --------------------------------------------------------------------

    def create_cycle(self, name: str = "demo", **spec_patch: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "deployment": {"name": "mnist"}, "estimate": {"url": self.sidecar.url},
            "trigger": {"threshold": 0.9, "minWindow": 100},
            "pipeline": {"host": self.kfp.url, "package": self.package, "experiment": "daic-test"},
            "promotion": {"mode": "auto", "canaryShare": 20, "canarySeconds": 0}}
        for key, value in spec_patch.items():
            spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}
        return self.kube.custom().create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get_cycle(self, name: str = "demo") -> dict[str, Any] | None:
        import kubernetes

        try:
            return self.kube.custom().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str = "demo") -> dict[str, Any]:
        return (self.get_cycle(name) or {}).get("status") or {}

    def phase_is(self, phase: str, name: str = "demo"):
        def check():
            status = self.status(name)
            return status.get("phase") == phase and status
        return check

    def wait_phase(self, phase: str, name: str = "demo", timeout: float = 90.0) -> dict[str, Any]:
        """The status once the phase is ``phase``; on a timeout the error shows the last status."""
        from fakes.waiting import wait_for

        try:
            return wait_for(self.phase_is(phase, name), timeout, f"{name} in phase {phase}")
        except AssertionError as exc:
            exc.add_note(f"status of {name} then: {self.status(name)}")
            raise

    def seldon(self) -> dict[str, Any]:
        return self.kube.custom().get_namespaced_custom_object(*SELDON[:2], self.namespace, SELDON[2], "mnist")

    def events(self, name: str = "demo") -> list[Any]:
        items = self.kube.core().list_namespaced_event(self.namespace).items
        return [e for e in items if e.involved_object.name == name]

    def reasons(self, name: str = "demo") -> list[str]:
        return [e.reason for e in self.events(name)]

    # -- the operator ---------------------------------------------------------------------------

    def operator(self, log_name: str = "operator.log", interval: float = 0.5) -> OperatorProcess:
        return OperatorProcess(self.kubeconfig, self.namespace, self.store_url, self.tmp_path / log_name,
                               interval=interval)

    @contextlib.contextmanager
    def running_operator(self, **kwargs: Any):
        op = self.operator(**kwargs)
        with op:
            try:
                yield op
            except BaseException as exc:
                exc.add_note(op.tail())
                raise
