"""The compiled pipeline in the cluster: the ConfigMap's copy is the compiled pipeline, the upload
Job calls `daic pipeline upload` with options that command has, and the names agree with what the
operator runs by default.

kustomize reads files only below a kustomization, so manifests/base/pipeline/ holds a copy of
pipelines/compiled/<file>. When the pipeline is recompiled, refresh the copy with the command the
failing test prints.
"""
from __future__ import annotations

import functools
from pathlib import Path

from click.testing import CliRunner

from daic import __version__
from daic.cli import main
from daic.deploy.render import kustomize
from daic.operators.spec import PipelineSpec

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
COMPILED = ROOT / "pipelines" / "compiled"
# `kubectl apply` (client side) keeps the whole object in an annotation limited to 256 KiB.
APPLY_ANNOTATION_LIMIT = 262_144


@functools.cache
def render() -> tuple:
    return tuple(kustomize(MANIFESTS / "overlays" / "gpu"))


def kfp_settings() -> dict[str, str]:
    return next(o for o in render() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "daic-kfp")["data"]


def test_manifest_copy_is_the_compiled_pipeline():
    name = kfp_settings()["DAIC_PIPELINE_FILE"]
    compiled, copy = COMPILED / name, MANIFESTS / "base" / "pipeline" / name
    assert compiled.is_file(), f"{compiled} is missing: run `make compile-pipelines`"
    assert copy.read_bytes() == compiled.read_bytes(), (
        f"{copy.relative_to(ROOT)} differs from the compiled pipeline; refresh it with\n"
        f"  cp {compiled.relative_to(ROOT)} {copy.relative_to(ROOT)}")


def test_pipeline_configmap_holds_the_package_and_fits_kubectl_apply():
    name = kfp_settings()["DAIC_PIPELINE_FILE"]
    cm = next(o for o in render() if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("daic-pipeline-package-"))
    assert cm["data"][name] == (COMPILED / name).read_text()
    assert len(cm["data"][name].encode()) < APPLY_ANNOTATION_LIMIT - 16_384, \
        "the pipeline no longer fits client-side `kubectl apply`; document --server-side"
    job = next(o for o in render() if o["kind"] == "Job" and o["metadata"]["name"] == "daic-upload-pipeline")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["package"]["configMap"]["name"] == cm["metadata"]["name"], "kustomize must rewrite the hashed name"


def test_pipeline_names_agree_with_the_operator_and_the_release():
    settings = kfp_settings()
    assert settings["DAIC_PIPELINE_FILE"] == PipelineSpec().package, \
        "the operator's default spec.pipeline.package must be the file the manifests upload"
    assert settings["DAIC_PIPELINE_VERSION"] == __version__
    assert settings["KFP_HOST"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"


def test_upload_job_uses_options_the_cli_has():
    job = next(o for o in render() if o["kind"] == "Job" and o["metadata"]["name"] == "daic-upload-pipeline")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["daic", "pipeline", "upload"]
    result = CliRunner().invoke(main, ["pipeline", "upload", "--help"])
    assert result.exit_code == 0, f"`daic pipeline upload` is missing or broken:\n{result.output}"
    options = [a for a in container["args"] if a.startswith("--")]
    assert options, "the upload Job passes its settings as options"
    for option in options:
        assert option in result.output, f"`daic pipeline upload` has no {option} option"
