"""The container images the pipeline's components run in: one place for names, tags and contents.

One image per setup.py extra that a component needs (DESIGN.md: the serving image cannot share an
environment with kfp, so the images are split by extra). Every component image installs the
``pipelines`` extra too, because lightweight KFP components run ``python -m kfp.dsl.executor_main``
inside the image (they are declared with ``install_kfp_package=False``: nothing is pip-installed at
run time, so a cluster without internet runs them).

The manifests (Dockerfiles, kustomize image overrides) read :data:`IMAGES`; the pipeline reads
:func:`image_for`. The tag follows the package version so a compiled pipeline names the exact
images it was compiled against. Change :data:`REGISTRY` (or retag with kustomize) to publish
elsewhere; recompile the pipeline afterwards (``make compile-pipelines``).
"""
from __future__ import annotations

from dataclasses import dataclass

from daic import __version__

REGISTRY = "ghcr.io/daic-dev"
TAG = __version__


@dataclass(frozen=True)
class Image:
    """A container image: its name and the setup.py extras installed into it (``pip install daic[...]``)."""

    name: str
    extras: tuple[str, ...]
    purpose: str

    @property
    def ref(self) -> str:
        return f"{REGISTRY}/{self.name}:{TAG}"


IMAGES: dict[str, Image] = {
    "pipelines": Image(
        name="daic-pipelines",
        extras=("storage", "pipelines"),
        purpose="sampling, labeling, estimation and deployment steps (numpy/scipy, kfp, kubernetes client)",
    ),
    "train": Image(
        name="daic-train",
        extras=("storage", "pipelines", "train"),
        purpose="retraining and evaluation (torch, ray[train]); a CUDA build of torch on GPU nodes",
    ),
    "operator": Image(
        name="daic-operator",
        extras=("storage", "operator"),
        purpose="the kopf operator that starts pipeline runs",
    ),
    "oracle": Image(
        name="daic-oracle",
        extras=("storage", "oracle"),
        purpose="the pseudo-oracle sidecar",
    ),
    "serving": Image(
        name="daic-serving",
        extras=("serving",),
        purpose="the Seldon model server (seldon-core 1.18; never together with kfp)",
    ),
}

#: Which image each pipeline component runs in (component name as in the compiled YAML).
COMPONENT_IMAGES: dict[str, str] = {
    "sample-operational": "pipelines",
    "collect-labels": "pipelines",
    "estimate-accuracy": "pipelines",
    "train": "train",
    "evaluate": "train",
    "fit-filter": "train",  # the input filter's label-free adaptation (torch, ray[train]); issue 21
    "deploy": "pipelines",
}


def image_for(component: str) -> str:
    """The image reference a component runs in; ValueError names unknown components."""
    try:
        return IMAGES[COMPONENT_IMAGES[component]].ref
    except KeyError:
        raise ValueError(
            f"unknown component {component!r}; known: {', '.join(sorted(COMPONENT_IMAGES))}"
        ) from None
