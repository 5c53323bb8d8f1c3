"""RBAC from the API server's mouth (tests/cluster): the install (manifests/overlays/gpu) applied to
a real kube-apiserver, then, for every ServiceAccount the manifests create or bind, a
SubjectAccessReview per request: what the component does is allowed, what it has no business
doing is denied. The train step's real RayJob calls (components/train/rayjob.py) also run under
the pipeline runner's own token, and the audit log shows each was allowed and that it made no
other. (The operator's requests are checked the same way in tests/test_cluster_operator.py.)
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluster.client import request_key

REPO = Path(__file__).resolve().parents[1]
NS = "daic"
RAY = "ray.io"
SELDON = "machinelearning.seldon.io"
DAIC = "daic.dev"

# (group, resource, verb) each component's code makes in its namespace.
NEEDS = {
    ("daic", "daic-operator"): {(DAIC, "assessmentcycles", v) for v in ("get", "list", "watch", "patch")}
    | {(DAIC, "assessmentcycles/status", "patch"), ("", "events", "create"),
       (SELDON, "seldondeployments", "get"), (SELDON, "seldondeployments", "patch")},
    # The train step creates and reads its RayJob. The operator alone promotes (promote_by=operator).
    ("kubeflow", "pipeline-runner"): {(RAY, "rayjobs", "create"), (RAY, "rayjobs", "get")},
    ("daic", "daic-jobs"): set(),   # talks to KFP and the object store, never to the Kubernetes API
}
# What no component needs: each must be denied to every account above (unless in its NEEDS).
NEVER = [
    (SELDON, "seldondeployments", "patch"), (SELDON, "seldondeployments", "update"),
    (SELDON, "seldondeployments", "create"), (SELDON, "seldondeployments", "delete"),
    (DAIC, "assessmentcycles", "create"), (DAIC, "assessmentcycles", "delete"), (DAIC, "assessmentcycles", "update"),
    (DAIC, "assessmentcycles/status", "update"), (RAY, "rayclusters", "create"), (RAY, "rayclusters", "delete"),
    ("", "secrets", "get"), ("", "secrets", "list"), ("", "configmaps", "update"), ("", "pods", "create"),
    ("", "pods/exec", "create"), ("", "serviceaccounts/token", "create"), ("", "events", "delete"),
    ("rbac.authorization.k8s.io", "roles", "create"), ("rbac.authorization.k8s.io", "rolebindings", "create"),
]


@pytest.fixture(scope="module")
def installed(kube):
    """The GPU overlay (the fullest install) applied, and the accounts the manifests bind."""
    kube.kubectl("apply", "--server-side", "--validate=strict", "-k", str(REPO / "manifests/overlays/gpu"))
    rendered = list(yaml.safe_load_all(kube.kubectl("kustomize", str(REPO / "manifests/overlays/gpu")).stdout))
    accounts = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in rendered
                if o and o["kind"] == "ServiceAccount"}
    for o in rendered:
        if o and o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for s in o.get("subjects", []):
                if s["kind"] == "ServiceAccount":
                    accounts.add((s.get("namespace") or o["metadata"].get("namespace", ""), s["name"]))
    for namespace, _ in accounts:  # an account the install binds but does not create (KFP's runner)
        if namespace != NS:
            kube.kubectl("create", "namespace", namespace, check=False)
    for namespace, name in accounts:
        kube.kubectl("-n", namespace, "create", "serviceaccount", name, check=False)
    return accounts


def _split(key: tuple[str, str, str]) -> dict:
    group, resource, verb = key
    resource, _, sub = resource.partition("/")
    return {"group": group, "resource": resource, "subresource": sub, "verb": verb}


def test_every_account_the_manifests_create_or_bind_has_expectations(installed):
    assert installed == set(NEEDS), f"accounts in the manifests: {sorted(installed)}; expectations for {sorted(NEEDS)}"


@pytest.mark.parametrize("account", sorted(NEEDS), ids=lambda a: f"{a[0]}/{a[1]}")
def test_what_each_account_needs_is_allowed_and_nothing_else(kube, installed, account):
    sa_ns, sa = account
    allowed_needs = {k: kube.can(sa_ns, sa, **_split(k), in_namespace=NS) for k in sorted(NEEDS[account])}
    refused = {k: reason for k, (ok, reason) in allowed_needs.items() if not ok}
    assert not refused, f"{sa_ns}/{sa} is refused what it needs: {refused}"
    granted = [k for k in NEVER if k not in NEEDS[account] and kube.can(sa_ns, sa, **_split(k), in_namespace=NS)[0]]
    assert not granted, f"{sa_ns}/{sa} may do what it never needs: {granted}"
    # Nothing outside daic's namespace, even what it needs inside.
    outside = [k for k in sorted(NEEDS[account]) if kube.can(sa_ns, sa, **_split(k), in_namespace="default")[0]]
    assert not outside, f"{sa_ns}/{sa} may act outside {NS}: {outside}"


def test_the_train_steps_rayjob_calls_run_under_the_pipeline_runners_token(kube, installed):
    """submit_rayjob as the pipeline runner: create, then read until KubeRay (here: the test, as
    admin, through the status subresource) reports success."""
    import kubernetes

    from daic.components.train.rayjob import submit_rayjob
    from daic.training.rayjob import RayJobSpec, render_rayjob

    if kube.control_plane is None:
        pytest.skip("the audit log exists only on the test control plane")
    runner = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(
        config_file=str(kube.service_account_kubeconfig("kubeflow", "pipeline-runner"))))
    name = "retrain-rbac-check"
    manifest = render_rayjob(RayJobSpec(name=name, namespace=NS, entrypoint=["daic", "retrain"]))
    kube.kubectl("-n", NS, "delete", "rayjob", name, "--ignore-not-found")

    def kuberay_reports_success(_seconds: float) -> None:
        kube.custom().patch_namespaced_custom_object_status(RAY, "v1", NS, "rayjobs", name, {
            "status": {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}})

    status = submit_rayjob(runner, NS, manifest, timeout_s=60, poll_s=0, sleep=kuberay_reports_success)
    assert status["jobStatus"] == "SUCCEEDED"
    made = kube.requests_by("system:serviceaccount:kubeflow:pipeline-runner")
    codes = {(request_key(e), e["responseStatus"]["code"]) for e in made if e["objectRef"].get("name") == name
             or e["verb"] == "create"}
    assert codes == {((RAY, "rayjobs", "create"), 201), ((RAY, "rayjobs", "get"), 200)}, json.dumps(sorted(codes))
