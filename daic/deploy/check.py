"""All manifest checks over a rendered install, as one list of problems.

Each object is checked by what it is: a kind whose CRD is part of the install against that CRD's
schema; a kind of another operator (Seldon, KubeRay, Prometheus) by :mod:`operator_rules` plus
the Kubernetes schema of every pod spec inside it; anything else against the Kubernetes schemas
of each version in :data:`~daic.deploy.schemas.KUBERNETES_VERSIONS` (an unknown kind fails
there, so nothing passes unchecked). Then daic's policy (security, secrets, RBAC, who may connect to the
sidecar and the operator: :mod:`daic.deploy.network`) and the references
between objects (a ConfigMap, Secret or ServiceAccount a pod names must be installed too, or be
one the user creates).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from daic.deploy.network import exposure_problems, policy_problems
from daic.deploy.operator_rules import rules_for
from daic.deploy.pods import pod_sites
from daic.deploy.policy import rbac_problems, secret_problems, security_problems
from daic.deploy.problems import Problem, describe, join
from daic.deploy.schemas import KUBERNETES_VERSIONS, crd_validator, validate_builtin, validate_embedded_pods

CRD_API = "apiextensions.k8s.io/v1"

#: Objects the user creates before installing (docs/cluster.md); manifests only refer to them.
USER_CREATED: dict[str, set[str]] = {"Secret": {"daic-store"}}


def crd_validators(objects: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """``{(apiVersion, kind): validator}`` for every CRD among ``objects``."""
    out = {}
    for obj in objects:
        if obj.get("apiVersion") == CRD_API and obj.get("kind") == "CustomResourceDefinition":
            validate = crd_validator(obj)
            group, kind = obj["spec"]["group"], obj["spec"]["names"]["kind"]
            for version in obj["spec"]["versions"]:
                out[(f"{group}/{version['name']}", kind)] = validate
    return out


def check_objects(objects: list[dict[str, Any]], *, versions: tuple[str, ...] = KUBERNETES_VERSIONS,
                  extra_crds: Iterable[dict[str, Any]] = (),
                  external: dict[str, set[str]] | None = None) -> list[Problem]:
    """Every problem of a rendered install. ``extra_crds`` validate custom resources whose CRD is
    installed separately; ``external`` names objects the user creates (``{"Secret": {...}}``)."""
    custom = crd_validators([*objects, *extra_crds])
    problems: list[Problem] = []
    for obj in objects:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if key in custom:
            problems += custom[key](obj)
        elif (rule := rules_for(obj)) is not None:
            problems += rule(obj)
            for version in versions:
                problems += validate_embedded_pods(obj, version)
        else:
            for version in versions:
                problems += validate_builtin(obj, version)
        problems += security_problems(obj)
        problems += secret_problems(obj)
        problems += rbac_problems(obj)
        problems += policy_problems(obj)
    problems += exposure_problems(objects)
    problems += reference_problems(objects, external or {})
    return _unique(problems)


def reference_problems(objects: list[dict[str, Any]], external: dict[str, set[str]]) -> list[Problem]:
    """ConfigMaps, Secrets and ServiceAccounts that pods name but nobody installs."""
    present: dict[str, set[str]] = {}
    for obj in objects:
        present.setdefault(obj.get("kind", ""), set()).add((obj.get("metadata") or {}).get("name", ""))
    for kind, names in external.items():
        present.setdefault(kind, set()).update(names)
    out = []
    for obj in objects:
        for site in pod_sites(obj):
            for path, kind, name in _references(site.spec, site.path):
                if name not in present.get(kind, set()):
                    out.append(Problem(describe(obj), path, f"{kind} {name!r} is neither installed nor "
                                                            "one the user is told to create"))
    return out


def _references(spec: dict[str, Any], path: str):
    if spec.get("serviceAccountName"):
        yield join(path, "serviceAccountName"), "ServiceAccount", spec["serviceAccountName"]
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            cpath = join(path, key, i)
            for j, src in enumerate(c.get("envFrom") or []):
                for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if ref in src and not src[ref].get("optional"):
                        yield join(cpath, "envFrom", j, ref), kind, src[ref].get("name")
            for j, env in enumerate(c.get("env") or []):
                vf = env.get("valueFrom") or {}
                for ref, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if ref in vf and not vf[ref].get("optional"):
                        yield join(cpath, "env", j, "valueFrom", ref), kind, vf[ref].get("name")
    for i, vol in enumerate(spec.get("volumes") or []):
        vpath = join(path, "volumes", i)
        if "configMap" in vol and not vol["configMap"].get("optional"):
            yield join(vpath, "configMap"), "ConfigMap", vol["configMap"].get("name")
        if "secret" in vol and not vol["secret"].get("optional"):
            yield join(vpath, "secret"), "Secret", vol["secret"].get("secretName")
        for j, source in enumerate((vol.get("projected") or {}).get("sources") or []):
            if "configMap" in source:
                yield join(vpath, "projected.sources", j, "configMap"), "ConfigMap", source["configMap"].get("name")
            if "secret" in source:
                yield join(vpath, "projected.sources", j, "secret"), "Secret", source["secret"].get("name")


def _unique(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out
