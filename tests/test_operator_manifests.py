"""The operator's manifests: rendered with kustomize, valid for Kubernetes (daic.deploy's checks:
schemas, security policy, references), and saying what the operator needs - one standalone
replica scoped to its namespace, non-root with a read-only root file system, requests/limits,
probes on kopf's liveness endpoint, and the entry point they run really registers the handlers.
(The Role's rules are checked against the requests the operator makes in test_operator_handlers.)
"""
from __future__ import annotations

import shutil

import pytest

from daic.deploy.check import USER_CREATED, check_objects
from daic.deploy.render import kustomize
from fakes.crd_schema import REPO

OPERATOR = REPO / "manifests" / "operator"
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")


def _objects():
    return list(kustomize(OPERATOR)) + list(kustomize(REPO / "manifests" / "crd"))


def test_operator_and_crd_pass_the_deploy_checks():
    external = {**USER_CREATED, "ConfigMap": {"daic-storage", "daic-kfp"}}   # installed by base/ and storage/
    problems = check_objects(_objects(), external=external)
    assert not problems, "\n".join(map(str, problems))


def test_deployment_runs_one_standalone_namespaced_non_root_replica_with_probes():
    (dep,) = [o for o in _objects() if o["kind"] == "Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "daic-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    cmd = c["command"]
    assert cmd[:2] == ["kopf", "run"] and "--standalone" in cmd and "daic.operators.main" in cmd
    assert "--namespace=$(WATCH_NAMESPACE)" in cmd
    env = {e["name"]: e for e in c["env"]}
    assert env["WATCH_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["DAIC_OPERATOR_PEERING"]["value"] == "false"
    liveness = next(a for a in cmd if a.startswith("--liveness="))
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["health"]
    assert liveness == f"--liveness=http://0.0.0.0:{port}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts and env["HOME"]["value"] == "/tmp"


def test_rbac_is_namespaced_and_binds_the_operator_account():
    objs = _objects()
    kinds = {o["kind"] for o in objs}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "daic-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "daic-operator"}]
    (role,) = [o for o in objs if o["kind"] == "Role"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "delete" not in rule["verbs"]


def test_the_entry_point_registers_every_handler_on_kopfs_default_registry():
    import kopf

    import daic.operators.main as entry

    registry = kopf.get_default_registry()
    assert entry.registry is registry
    ids = {h.id for h in registry._changing.get_all_handlers()}
    assert any("_pass" in i for i in ids) and any("cancel_on_delete" in i for i in ids)
    assert registry._spawning.get_all_handlers(), "the timer"
    assert registry._activities.get_all_handlers(), "startup, login and the probe"


def _rules(path) -> set[tuple[str, str, str]]:
    import yaml

    role = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Role")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def _verbs_used(requests_seen) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of requests to /apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]."""
    used = set()
    for method, path, _body in requests_seen:
        parts = path.split("?")[0].strip("/").split("/")
        group, plural, named = parts[1], parts[5], len(parts) > 6
        verb = {"GET": "get" if named else "list", "POST": "create", "PATCH": "patch",
                "DELETE": "delete", "PUT": "update"}[method]
        used.add((group, plural, verb))
    return used


def test_the_pipeline_runners_role_grants_exactly_what_the_pipeline_steps_request():
    """The train step's RayJob calls, made for real (kubernetes client, over HTTP) against the
    components' Kubernetes API stand-in (daic.components.testing.fake_kube, in which the test
    plays KubeRay), both the fresh and the already-created case; the deploy step makes no
    Kubernetes call when the operator promotes (promote_by=operator, what the operator passes).
    The Role in manifests/base must grant exactly these verbs: nothing on SeldonDeployments."""
    from daic.components.testing.fake_kube import FakeKube
    from daic.components.train.rayjob import PLURAL, submit_rayjob
    from daic.operators.reconcile import pipeline_params
    from fakes.world import IDENT, make_spec, reading

    manifest = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "retrain-c1"},
                "spec": {"entrypoint": "python -m daic.training.job"}}
    done = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    seen = []
    with FakeKube() as kube:
        kube.on_get = lambda obj: obj.__setitem__("status", dict(done))
        submit_rayjob(kube.api(), "daic", manifest, timeout_s=60, poll_s=0)
        submit_rayjob(kube.api(), "daic", manifest, timeout_s=60, poll_s=0)  # exists: 409, then reads
        seen += kube.requests
    params = pipeline_params(make_spec(), IDENT, "demo-c1", 0.9, reading(0.8, 1))
    assert params["promote_by"] == "operator"
    granted = _rules(REPO / "manifests" / "base" / "pipeline-runner-rbac.yaml")
    assert _verbs_used(seen) == granted == {("ray.io", PLURAL, "create"), ("ray.io", PLURAL, "get")}


def test_pods_without_api_calls_mount_no_token_and_every_pod_runs_under_runtime_default_seccomp():
    import copy

    from daic.deploy.policy import pod_problems
    from daic.serving.manifest import DeploymentParams, render_seldon_deployment

    sdep = render_seldon_deployment(DeploymentParams())
    assert pod_problems(sdep) == []
    (component,) = sdep["spec"]["predictors"][0]["componentSpecs"]
    assert component["spec"]["automountServiceAccountToken"] is False
    assert component["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    bare = copy.deepcopy(sdep)
    spec = bare["spec"]["predictors"][0]["componentSpecs"][0]["spec"]
    del spec["automountServiceAccountToken"], spec["securityContext"]["seccompProfile"]
    assert sorted(p.path.rsplit(".", 1)[-1] for p in pod_problems(bare)) == ["automountServiceAccountToken",
                                                                          "seccompProfile"]
    # The operator calls the API: it keeps its token, and only it among daic's own pods.
    (dep,) = [o for o in _objects() if o["kind"] == "Deployment"]
    assert "automountServiceAccountToken" not in dep["spec"]["template"]["spec"] and pod_problems(dep) == []
    renamed = copy.deepcopy(dep)
    renamed["metadata"]["name"] = renamed["spec"]["template"]["spec"]["serviceAccountName"] = "something-else"
    assert [p.path for p in pod_problems(renamed)] == ["spec.template.spec.automountServiceAccountToken"]
