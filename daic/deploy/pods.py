"""Find every pod spec inside a manifest, whatever its kind.

Containers hide in many places: ``spec.template.spec`` of a Deployment or Job, the head and worker
group templates of a RayCluster (and of the cluster a RayJob embeds), the ``componentSpecs`` of a
SeldonDeployment predictor. Rather than a table of kinds that a new kind would slip past, the
object is walked and every mapping with a ``containers`` list is taken as a PodSpec; the mapping
holding it under ``spec`` is its template (with the pod's ``metadata``). A CRD's schema never
matches, since there ``containers`` is a schema (a mapping), not a list.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from daic.deploy.problems import join


@dataclass(frozen=True)
class PodSite:
    """One pod spec: ``path`` is where the PodSpec sits in the object (``spec.template.spec``);
    ``metadata`` the pod template's metadata (``{}`` when there is none)."""

    path: str
    spec: dict[str, Any] = field(hash=False)
    metadata: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class ContainerSite:
    """One container or init container of a pod spec."""

    path: str
    container: dict[str, Any] = field(hash=False)
    pod: PodSite = field(hash=False)


def pod_sites(obj: dict[str, Any]) -> list[PodSite]:
    """Every pod spec in ``obj`` (a Pod's own spec included), in document order."""
    return list(_walk(obj, "", None))


def _walk(node: Any, path: str, parent: dict[str, Any] | None) -> Iterator[PodSite]:
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            meta = parent.get("metadata") if parent is not None and path.endswith("spec") else None
            yield PodSite(path=path, spec=node, metadata=meta if isinstance(meta, dict) else {})
            return  # a pod spec holds no further pod specs
        for key, value in node.items():
            yield from _walk(value, join(path, key), node)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, join(path, i), None)


def container_sites(obj: dict[str, Any]) -> list[ContainerSite]:
    """Every container and init container of every pod spec in ``obj``."""
    out: list[ContainerSite] = []
    for pod in pod_sites(obj):
        for key in ("initContainers", "containers"):
            for i, container in enumerate(pod.spec.get(key) or []):
                if isinstance(container, dict):
                    out.append(ContainerSite(join(pod.path, key, i), container, pod))
    return out


def as_pod_template(site: PodSite) -> dict[str, Any]:
    """A ``v1/PodTemplate`` object wrapping ``site``, so the Kubernetes schema of a pod template
    can check a pod spec that sits inside a custom resource."""
    meta = {k: v for k, v in site.metadata.items() if k in ("labels", "annotations", "name")}
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "embedded"},
        "template": {"metadata": meta, "spec": site.spec},
    }
