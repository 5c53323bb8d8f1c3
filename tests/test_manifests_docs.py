"""docs/cluster.md agrees with the manifests: the paths and files it names exist, the defaults it
lists are the rendered ones, the Secrets it creates have the keys the code reads, and the overlay
it shows under "Settings" builds and changes what it says it changes.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from daic.deploy.render import kustomize
from daic.pipelines.assess_and_improve import STORE_SECRET_KEYS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cluster.md"


@functools.cache
def text() -> str:
    return DOCS.read_text()


@functools.cache
def render(overlay: str) -> tuple:
    return tuple(kustomize(ROOT / "manifests" / "overlays" / overlay))


def config(name: str) -> dict[str, str]:
    return next(o for o in render("gpu") if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)["data"]


def test_install_commands_name_real_overlays():
    targets = re.findall(r"kubectl apply -k (manifests/[\w/-]+)", text())
    assert "manifests/overlays/gpu" in targets and "or manifests/overlays/dev" in text()
    for target in targets:
        assert (ROOT / target / "kustomization.yaml").is_file(), target


def test_files_the_docs_name_exist():
    names = set(re.findall(r"`((?:manifests|images|components|pipelines|daic|docs|requirements)/[\w./-]+?)`", text()))
    names |= set(re.findall(r"\b((?:manifests|images)/[\w/-]+\.(?:yaml|json|md))\b", text()))
    missing = [n for n in sorted(names) if "<" not in n and not (ROOT / n.rstrip("/")).exists()]
    missing = [n for n in missing if n != "docs/operator.md"]  # the operator engineer's page
    assert not missing, f"docs/cluster.md names files that do not exist: {missing}"


def test_settings_table_lists_the_rendered_defaults():
    rows = re.findall(r"^\| `(daic-[a-z]+)` `([A-Z_]+)` \| `([^`]+)` \|", text(), flags=re.M)
    assert len(rows) >= 4
    for config_map, key, value in rows:
        assert config(config_map)[key] == value, f"{config_map} {key}"


def test_run_namespace_secret_has_the_keys_the_pipeline_reads():
    commands = re.findall(r"kubectl -n kubeflow create secret generic daic-store(?:[^\n]*\\\n)*[^\n]*", text())
    assert commands, "docs/cluster.md must show the daic-store Secret for KFP's namespace"
    keys = set(re.findall(r"--from-literal=([a-z]+)=", commands[0]))
    assert keys == set(STORE_SECRET_KEYS)
    assert "--from-literal=url=" + config("daic-storage")["DAIC_STORE"] in commands[0]
    assert "--from-literal=endpoint=" + config("daic-storage")["MINIO_ENDPOINT"] in commands[0]


def test_licence_and_versions_are_stated():
    assert "Business Source License 1.1" in text()
    ray = next(o for o in render("gpu") if o["kind"] == "RayCluster")["spec"]["rayVersion"]
    assert f'rayVersion: "{ray}"' in text()


def test_names_in_the_docs_are_installed():
    objects = render("gpu")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for kind, name in (("Service", "mnist-default-oracle"), ("Service", "mnist-canary-oracle"),
                       ("Job", "daic-upload-pipeline"), ("Job", "daic-create-bucket"), ("RayCluster", "daic-ray"),
                       ("RoleBinding", "daic-pipeline-steps"), ("ServiceMonitor", "daic-oracle"),
                       ("Deployment", "daic-operator"), ("SeldonDeployment", "mnist")):
        assert (kind, name) in names, f"{kind} {name}"
        assert name in text(), f"docs/cluster.md does not mention {name}"


def test_settings_overlay_builds_and_changes_what_it_says(tmp_path):
    block = re.search(r"`my-daic/kustomization.yaml`:\n\n```yaml\n(.*?)```", text(), flags=re.S)
    assert block, "the Settings example is missing"
    os.symlink(ROOT, tmp_path / "daic")
    (tmp_path / "my-daic").mkdir()
    (tmp_path / "my-daic" / "kustomization.yaml").write_text(block.group(1))
    objects = kustomize(tmp_path / "my-daic")
    storage = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "daic-storage")
    assert storage["data"]["MINIO_ENDPOINT"] == "http://seaweedfs.kubeflow.svc.cluster.local:8333"
    assert storage["data"]["DAIC_STORE"] == config("daic-storage")["DAIC_STORE"], "merge keeps the other keys"
    cluster = next(o for o in objects if o["kind"] == "RayCluster")
    images = {c["image"] for c in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/daic/daic-train:0.1.0"}


def test_multi_user_patch_applies(tmp_path):
    block = re.search(r"## Multi-user Kubeflow.*?```yaml\n(.*?)```", text(), flags=re.S)
    assert block
    os.symlink(ROOT, tmp_path / "daic")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "kustomization.yaml").write_text(
        "resources:\n  - ../daic/manifests/overlays/dev\n" + block.group(1).replace("<profile>", "team-a"))
    binding = next(o for o in kustomize(tmp_path / "mine") if o["kind"] == "RoleBinding"
                   and o["metadata"]["name"] == "daic-pipeline-steps")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor", "namespace": "team-a"}]
