"""Images: one Dockerfile per image in components/images.py, and one set of names and tags.

components/images.py is the one place naming images, tags and the setup.py extras each image
installs. The Dockerfiles (their OCI labels and `pip install ".[extras]"`), the kustomize
`images:` list and every container of every rendered object must agree with it. The Dockerfiles
are linted for daic's image rules (no container engine here, so they are not built).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml

from daic import __version__
from daic.components.images import IMAGES, REGISTRY, TAG
from daic.deploy.dockerfile import installed_extras, labels, lint, parse, pip_installs
from daic.deploy.pods import container_sites
from daic.deploy.render import kustomize

ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = ROOT / "images"
LOCKS = ROOT / "requirements"
MANIFESTS = ROOT / "manifests"
REFS = {image.ref for image in IMAGES.values()}


@functools.cache
def render(overlay: str) -> tuple:
    return tuple(kustomize(MANIFESTS / "overlays" / overlay))


def lock_pin(lock: str, package: str) -> str:
    for line in (LOCKS / lock).read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and re.sub(r"[-_.]+", "-", name.strip().lower()) == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in requirements/{lock}")


def test_one_dockerfile_per_image():
    folders = {p.parent.name for p in IMAGES_DIR.glob("*/Dockerfile")}
    assert folders == set(IMAGES), "images/<key>/Dockerfile for each key of components/images.py IMAGES"


@pytest.mark.parametrize("key", sorted(IMAGES))
def test_dockerfile_matches_components_images(key):
    image = IMAGES[key]
    instructions = parse((IMAGES_DIR / key / "Dockerfile").read_text())
    found = labels(instructions)
    assert found["org.opencontainers.image.title"] == image.name
    assert found["org.opencontainers.image.version"] == TAG
    assert installed_extras(instructions) == set(image.extras), \
        f"images/{key}/Dockerfile installs other extras than components/images.py says"
    # serving has its own pins; the train image adds ray[default]'s dependencies (train-image.lock).
    locks = {"serving.lock"} if "serving" in image.extras else {"main.lock"}
    if key == "train":
        locks.add("train-image.lock")
    for _, args in pip_installs(instructions):
        assert any(f"requirements/{lock}" in args for lock in locks), \
            f"images/{key}: every pip install uses one of requirements/{sorted(locks)}"


@pytest.mark.parametrize("key", sorted(IMAGES))
def test_dockerfile_follows_the_image_rules(key):
    problems = lint(IMAGES_DIR / key / "Dockerfile", LOCKS)
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("key", sorted(IMAGES))
def test_dockerfile_copies_only_what_exists_and_the_context_holds(key):
    """Every COPY source exists in the repository and is let through the Dockerfile's
    .dockerignore (which excludes everything, then re-includes with `!path`)."""
    instructions = parse((IMAGES_DIR / key / "Dockerfile").read_text())
    ignore = (IMAGES_DIR / key / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore
    for ins in instructions:
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        *sources, _dest = ins.args.split()
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"images/{key}: COPY {source}: no such path"
            assert any(source == a or source.startswith(a + "/") for a in allowed), \
                f"images/{key}: COPY {source} is excluded by Dockerfile.dockerignore"


def test_torch_and_ray_in_images_are_the_locked_versions():
    train = (IMAGES_DIR / "train" / "Dockerfile").read_text()
    assert f'"torch=={lock_pin("main.lock", "torch")}+cu128"' in train
    assert f'"ray[default]=={lock_pin("main.lock", "ray")}"' in train
    serving = (IMAGES_DIR / "serving" / "Dockerfile").read_text()
    assert f'"torch=={lock_pin("serving.lock", "torch")}+cpu"' in serving
    # KubeRay's default probes run `wget ... | grep success` in every Ray container.
    assert "wget" in train


def test_kustomize_images_are_the_same_names_and_tags():
    common = yaml.safe_load((MANIFESTS / "overlays" / "common" / "kustomization.yaml").read_text())
    listed = {entry["name"]: entry for entry in common["images"]}
    assert set(listed) == {f"{REGISTRY}/{image.name}" for image in IMAGES.values()}
    for entry in listed.values():
        assert entry["newTag"] == TAG and "newName" not in entry
    assert TAG == __version__, "an image tag names the daic version it contains"


@pytest.mark.parametrize("overlay", ["dev", "gpu"])
def test_every_rendered_container_runs_a_daic_image(overlay):
    wrong = sorted({f"{o['kind']}/{o['metadata']['name']}: {s.container.get('image')}"
                    for o in render(overlay) for s in container_sites(o) if s.container.get("image") not in REFS})
    assert not wrong, f"images not in components/images.py ({sorted(REFS)}):\n" + "\n".join(wrong)


def test_ray_cluster_runs_the_train_image_and_the_locked_ray():
    cluster = next(o for o in render("gpu") if o["kind"] == "RayCluster")
    assert cluster["spec"]["rayVersion"] == lock_pin("main.lock", "ray")
    assert {s.container["image"] for s in container_sites(cluster)} == {IMAGES["train"].ref}


def test_lint_catches_each_rule(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest AS build\n"
        "ENV AWS_SECRET_ACCESS_KEY=abc\n"
        "ADD https://example.com/x.tar.gz /x\n"
        "RUN curl -s https://example.com/i.sh | sh\n"
        "RUN pip install numpy \\\n    && pip install -c requirements/nope.lock \"scipy<2\" \".[train]\"\n"
        "FROM ubuntu\n"
        "USER daic\n"
    )
    messages = [p.message for p in lint(bad, LOCKS)]
    expected = ["'latest' is not a pin", "name a tag or digest", "sets a credential",
                "ADD of a URL", "piped into a shell", "without -c", "no such lock file",
                "pin it exactly", "give the user as a number", "no LABEL org.opencontainers.image.title"]
    for part in expected:
        assert any(part in m for m in messages), f"lint did not report {part!r}: {messages}"
    rootless = tmp_path / "Dockerfile.norun"
    rootless.write_text("FROM python:3.11-slim-bookworm\nLABEL org.opencontainers.image.title=x "
                        "org.opencontainers.image.version=1\n")
    assert [p.message for p in lint(rootless)] == ["the final stage sets no USER: the image would run as root"]
