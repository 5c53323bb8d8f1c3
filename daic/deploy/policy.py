"""daic's own rules for what it installs: every container runs as non-root, cannot escalate
privileges and asks for CPU and memory; no manifest carries a secret value.

Security (in the spirit of the Kubernetes "restricted" Pod Security Standard):

- ``runAsNonRoot: true`` on the container or its pod, and no ``runAsUser: 0``;
- ``allowPrivilegeEscalation: false`` on the container (the field has no pod-level form);
- no ``privileged: true``;
- ``resources.requests`` for ``cpu`` and ``memory`` (the scheduler and the cluster autoscaler
  size nodes from requests, and a GPU worker group scales from zero only when Ray's pods declare
  what they need);
- a pinned image: a digest, or a tag naming a full X.Y.Z release (:mod:`daic.deploy.pinning`; no
  ``latest``, no untagged image, no moving series tag such as ``3.11-slim``);
- extended resources such as ``nvidia.com/gpu`` set as limits, with requests (if given) equal
  to the limits, which is all Kubernetes accepts for them;
- every pod under the ``RuntimeDefault`` seccomp profile (on the pod, or on each container);
- ``automountServiceAccountToken: false`` on every pod that makes no Kubernetes API call: only
  the pods in :data:`API_CLIENTS` keep a token (a stolen token is worth what its account may do).

RBAC: no Role or ClusterRole grants ``*`` (every verb, resource or API group), and none reads
Secrets: each grant names what it needs.

Secrets: the user creates the one Secret daic reads (docs/cluster.md); manifests only refer to
it. So no ``Secret`` object may carry ``data``/``stringData``, a credential-like environment
variable (a name containing KEY, SECRET, PASSWORD, PASSWD, TOKEN or CREDENTIAL) must come from a
``secretKeyRef`` rather than a literal ``value`` or a ConfigMap, no ConfigMap may hold a
credential-like key, and no string anywhere may look like a credential (an AWS access key id, a
private key block, a JWT). Names ending in ``_PATH``, ``_FILE``, ``_DIR``, ``_NAME`` or ``_REF`` point *to*
a credential (where it is mounted, which Secret holds it) and are allowed.
"""
from __future__ import annotations

import re
from typing import Any

from daic.deploy.pinning import pin_problem
from daic.deploy.pods import container_sites, pod_sites
from daic.deploy.problems import Problem, describe, join

_EXTENDED_PREFIXES = ("nvidia.com/", "amd.com/", "gpu.intel.com/")
_CREDENTIAL_WORDS = {"KEY", "SECRET", "PASSWORD", "PASSWD", "TOKEN", "CREDENTIAL", "CREDENTIALS", "APIKEY"}
_POINTER_SUFFIXES = {"PATH", "FILE", "DIR", "NAME", "REF"}
_LOOKS_SECRET = (
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), "a JSON Web Token"),
)


def is_credential_name(name: str) -> bool:
    """Whether an environment variable or ConfigMap key names a credential itself."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", name) if w]
    upper = [w.upper() for w in words]
    if not upper or upper[-1] in _POINTER_SUFFIXES:
        return False
    # "ACCESSKEY", "SECRETKEY" (one word) count too; "KEYBOARD" does not.
    return any(w.endswith(c) or (w.startswith(c) and c != "KEY") for w in upper for c in _CREDENTIAL_WORDS)


#: Pods that call the Kubernetes API and so need their ServiceAccount token: (kind, where the pod
#: spec sits or the ServiceAccount it runs as) -> why.
API_CLIENTS: dict[tuple[str, str], str] = {
    ("Deployment", "daic-operator"): "the kopf operator watches and patches AssessmentCycles",
    ("RayCluster", "spec.headGroupSpec.template.spec"): "KubeRay's autoscaler in the head pod scales workers",
}


def _calls_the_api(obj: dict[str, Any], path: str, spec: dict[str, Any]) -> bool:
    kind = obj.get("kind", "")
    return (kind, path) in API_CLIENTS or (kind, str(spec.get("serviceAccountName", ""))) in API_CLIENTS


def pod_problems(obj: dict[str, Any]) -> list[Problem]:
    """Pods without the RuntimeDefault seccomp profile, or mounting a token they do not use."""
    where = describe(obj)
    out: list[Problem] = []
    for site in pod_sites(obj):
        spec = site.spec
        pod_profile = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
        each = all((((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type") == "RuntimeDefault")
                   for c in containers)
        if pod_profile != "RuntimeDefault" and not each:
            out.append(Problem(where, join(site.path, "securityContext.seccompProfile"),
                               "the pod runs without the RuntimeDefault seccomp profile"))
        if spec.get("automountServiceAccountToken") is not False and not _calls_the_api(obj, site.path, spec):
            out.append(Problem(where, join(site.path, "automountServiceAccountToken"),
                               "must be false: the pod makes no Kubernetes API call (daic.deploy.policy.API_CLIENTS)"))
    return out


def security_problems(obj: dict[str, Any]) -> list[Problem]:
    """Containers that may run as root, escalate privileges, ask for no CPU/memory or run an
    unpinned image; pods without seccomp or with a token they do not need."""
    where = describe(obj)
    out: list[Problem] = pod_problems(obj)
    for site in container_sites(obj):
        c, pod_sc = site.container, site.pod.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        name = c.get("name", "?")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(Problem(where, site.path, f"container {name!r}: runAsNonRoot is not true (set it on the "
                                                 "container or the pod securityContext)"))
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(Problem(where, site.path, f"container {name!r}: runAsUser is 0 (root)"))
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(Problem(where, join(site.path, "securityContext.allowPrivilegeEscalation"),
                               f"container {name!r}: must be false"))
        if sc.get("privileged") is True:
            out.append(Problem(where, join(site.path, "securityContext.privileged"), f"container {name!r}: privileged"))
        unpinned = pin_problem(str(c.get("image", "")))
        if unpinned:
            out.append(Problem(where, join(site.path, "image"), f"container {name!r}: image {unpinned}"))
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        missing = [r for r in ("cpu", "memory") if r not in requests]
        if missing:
            out.append(Problem(where, join(site.path, "resources.requests"),
                               f"container {name!r}: no request for {' and '.join(missing)}"))
        for res in set(requests) | set(limits):
            if res.startswith(_EXTENDED_PREFIXES):
                if res not in limits:
                    out.append(Problem(where, join(site.path, "resources.limits"),
                                       f"container {name!r}: {res} must be set as a limit"))
                elif res in requests and str(requests[res]) != str(limits[res]):
                    out.append(Problem(where, join(site.path, "resources"),
                                       f"container {name!r}: {res} request {requests[res]} differs from its limit {limits[res]}"))
    return out


def secret_problems(obj: dict[str, Any]) -> list[Problem]:
    """Secret values in a manifest: inline Secret data, literal credentials, credential look-alikes."""
    where = describe(obj)
    out: list[Problem] = []
    if obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1":
        for field in ("data", "stringData"):
            if obj.get(field):
                out.append(Problem(where, field, "a Secret with values in a manifest; create it with "
                                                 "kubectl create secret instead and refer to it by name"))
    if obj.get("kind") == "ConfigMap" and obj.get("apiVersion") == "v1":
        for field in ("data", "binaryData"):
            for key in (obj.get(field) or {}):
                if is_credential_name(key):
                    out.append(Problem(where, join(field, key), "a credential-like key in a ConfigMap; keep "
                                                                "credentials in a Secret"))
    for site in container_sites(obj):
        for i, env in enumerate(site.container.get("env") or []):
            name = env.get("name", "")
            if not is_credential_name(name):
                continue
            path = join(site.path, "env", i)
            if "value" in env:
                out.append(Problem(where, path, f"{name} has a literal value; take it from a Secret "
                                                "(valueFrom.secretKeyRef)"))
            elif "secretKeyRef" not in (env.get("valueFrom") or {}):
                out.append(Problem(where, path, f"{name} must come from valueFrom.secretKeyRef"))
    for path, text in _strings(obj, ""):
        for pattern, what in _LOOKS_SECRET:
            if pattern.search(text):
                out.append(Problem(where, path, f"looks like {what}"))
    return out


def _strings(node: Any, path: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, join(path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, join(path, i))
    elif isinstance(node, str):
        yield path, node


def rbac_problems(obj: dict[str, Any]) -> list[Problem]:
    """Roles that grant everything (``*``) or reach Secrets."""
    if obj.get("apiVersion") != "rbac.authorization.k8s.io/v1" or obj.get("kind") not in ("Role", "ClusterRole"):
        return []
    where = describe(obj)
    out = []
    for i, rule in enumerate(obj.get("rules") or []):
        path = join("rules", i)
        for field in ("verbs", "resources", "apiGroups"):
            if "*" in (rule.get(field) or []):
                out.append(Problem(where, join(path, field), "'*' grants everything; name what is needed"))
        if "" in (rule.get("apiGroups") or []) and "secrets" in (rule.get("resources") or []):
            out.append(Problem(where, join(path, "resources"), "daic's identities never need to read Secrets"))
    return out
