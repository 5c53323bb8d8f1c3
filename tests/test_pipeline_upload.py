"""``daic pipeline upload``: the real ``kfp.Client`` against the project's fake Kubeflow API over HTTP.

tests/fakes/kfp.py serves KFP experiments and runs; the pipeline-upload endpoints this command
needs are added here by :class:`PipelinesKube` (a subclass, so the shared fake stays as it is):
``GET pipelines`` (display_name filter), ``POST pipelines/upload`` (multipart, creates the
pipeline and a first version named after it, as KFP does), ``POST pipelines/upload_version``
(409 for a version name the pipeline has), ``GET pipelines/<id>/versions`` (filter) and
``GET pipelines/<id>/versions/<vid>`` (with the stored spec).
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner
from fakes.kfp import FakeKfp, _filter_name, _now

from daic import __version__
from daic.cli import main
from daic.pipelines.submit import PACKAGE


def _stored(text: str) -> dict:
    """What KFP keeps of a package: the pipeline spec, with the platform spec when there is one."""
    docs = list(yaml.safe_load_all(text))
    return docs[0] if len(docs) == 1 else {"pipeline_spec": docs[0], "platform_spec": docs[1]}


class PipelinesKube(FakeKfp):
    def __init__(self) -> None:
        super().__init__()
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict[str, dict]] = {}  # pipeline id -> version id -> version
        self.before_upload_version = None  # a test's hook: another uploader gets there first

    def _add_version(self, pipeline_id: str, name: str, text: str) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": uuid.uuid4().hex, "display_name": name,
                   "created_at": _now(), "pipeline_spec": _stored(text)}
        self.versions[pipeline_id][version["pipeline_version_id"]] = version
        return version

    async def _kfp(self, request: web.Request, tail: str) -> web.StreamResponse:
        method, query, parts = request.method, request.query, tail.split("/")
        if tail == "pipelines" and method == "GET":
            wanted = _filter_name(query.get("filter"))
            found = [p for p in self.pipelines.values() if wanted is None or p["display_name"] == wanted]
            return web.json_response({"pipelines": found, "total_size": len(found)})
        if tail in ("pipelines/upload", "pipelines/upload_version") and method == "POST":
            form = await request.post()
            text = form["uploadfile"].file.read().decode()
            if tail == "pipelines/upload":
                if any(p["display_name"] == query["name"] for p in self.pipelines.values()):
                    return web.json_response({"message": "pipeline exists"}, status=409)
                pipeline = {"pipeline_id": uuid.uuid4().hex, "display_name": query["name"],
                            "description": query.get("description", ""), "created_at": _now()}
                self.pipelines[pipeline["pipeline_id"]] = pipeline
                self.versions[pipeline["pipeline_id"]] = {}
                self._add_version(pipeline["pipeline_id"], query["name"], text)
                return web.json_response(pipeline)
            pipeline_id = query["pipelineid"]
            if pipeline_id not in self.pipelines:
                return web.json_response({"message": f"pipeline {pipeline_id} not found"}, status=404)
            if self.before_upload_version is not None:
                self.before_upload_version(self, pipeline_id, query["name"])
            if any(v["display_name"] == query["name"] for v in self.versions[pipeline_id].values()):
                return web.json_response({"message": "version exists"}, status=409)
            return web.json_response(self._add_version(pipeline_id, query["name"], text))
        if len(parts) >= 3 and parts[0] == "pipelines" and parts[2] == "versions" and method == "GET":
            versions = self.versions.get(parts[1])
            if versions is None:
                return web.json_response({"message": "pipeline not found"}, status=404)
            if len(parts) == 4:
                found = versions.get(parts[3])
                return web.json_response(found) if found else web.json_response({"message": "no version"}, status=404)
            wanted = _filter_name(query.get("filter"))
            listed = [{k: v for k, v in ver.items() if k != "pipeline_spec"} for ver in versions.values()
                      if wanted is None or ver["display_name"] == wanted]
            return web.json_response({"pipeline_versions": listed, "total_size": len(listed)})
        return await super()._kfp(request, tail)


def _upload(kube, *args: str):
    return CliRunner().invoke(main, ["pipeline", "upload", "--host", kube.url, *args])


def _posts(kube) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path, _ in kube.requests if method == "POST"]


def test_first_upload_creates_the_pipeline_and_the_version_then_does_nothing():
    with PipelinesKube() as kube:
        first = _upload(kube, "--package", str(PACKAGE), "--name", "assess-and-improve", "--version", "0.1.0")
        assert first.exit_code == 0, first.output
        assert "uploaded assess-and-improve version 0.1.0" in first.output
        (pipeline,) = kube.pipelines.values()
        versions = kube.versions[pipeline["pipeline_id"]].values()
        # KFP names a new pipeline's first version after the pipeline; ours is added next to it
        assert sorted(v["display_name"] for v in versions) == ["0.1.0", "assess-and-improve"]
        ours = next(v for v in versions if v["display_name"] == "0.1.0")
        assert ours["pipeline_spec"] == _stored(PACKAGE.read_text())
        assert _posts(kube) == ["upload", "upload_version"]

        again = _upload(kube, "--package", str(PACKAGE), "--name", "assess-and-improve", "--version", "0.1.0")
        assert again.exit_code == 0, again.output
        assert "exists already" in again.output and "warning" not in again.output
        assert _posts(kube) == ["upload", "upload_version"]  # nothing written the second time
        assert len(kube.versions[pipeline["pipeline_id"]]) == 2


def test_defaults_are_the_compiled_package_and_the_release_version():
    with PipelinesKube() as kube:
        out = _upload(kube)
        assert out.exit_code == 0, out.output
        (pipeline,) = kube.pipelines.values()
        assert pipeline["display_name"] == "assess-and-improve"
        assert __version__ in {v["display_name"] for v in kube.versions[pipeline["pipeline_id"]].values()}


def test_a_new_version_joins_the_existing_pipeline():
    with PipelinesKube() as kube:
        assert _upload(kube, "--version", "0.1.0").exit_code == 0
        out = _upload(kube, "--version", "0.2.0")
        assert out.exit_code == 0, out.output
        assert len(kube.pipelines) == 1
        (versions,) = kube.versions.values()
        assert sorted(v["display_name"] for v in versions.values()) == ["0.1.0", "0.2.0", "assess-and-improve"]


def test_an_existing_version_with_another_spec_is_left_alone_and_reported(tmp_path):
    changed = tmp_path / "changed.yaml"
    docs = list(yaml.safe_load_all(PACKAGE.read_text()))
    docs[0]["pipelineInfo"]["description"] = "changed after 0.1.0 was published"
    changed.write_text(yaml.safe_dump_all(docs))
    with PipelinesKube() as kube:
        assert _upload(kube, "--version", "0.1.0").exit_code == 0
        out = _upload(kube, "--version", "0.1.0", "--package", str(changed))
        assert out.exit_code == 0, out.output
        assert "exists already" in out.output
        assert "differs from" in out.stderr and "new --version" in out.stderr
        (versions,) = kube.versions.values()
        stored = next(v for v in versions.values() if v["display_name"] == "0.1.0")["pipeline_spec"]
        assert stored == _stored(PACKAGE.read_text())


def test_losing_a_race_to_another_uploader_counts_as_exists():
    def other_uploader(kube, pipeline_id, name):
        kube._add_version(pipeline_id, name, PACKAGE.read_text())
        kube.before_upload_version = None

    with PipelinesKube() as kube:
        assert _upload(kube, "--version", "0.1.0").exit_code == 0
        kube.before_upload_version = other_uploader
        out = _upload(kube, "--version", "0.2.0")
        assert out.exit_code == 0, out.output
        assert "exists already" in out.output
        (versions,) = kube.versions.values()
        assert [v["display_name"] for v in versions.values()].count("0.2.0") == 1


@pytest.mark.parametrize("package,message", [
    ("missing.yaml", "does not exist"),
    ("not-a-pipeline.yaml", "not a compiled KFP pipeline"),
])
def test_bad_package_is_named(tmp_path, package, message):
    (tmp_path / "not-a-pipeline.yaml").write_text(json.dumps({"kind": "ConfigMap"}))
    with PipelinesKube() as kube:
        out = _upload(kube, "--package", str(Path(tmp_path, package)))
        assert out.exit_code == 2, out.output
        assert message in out.output and "--package" in out.output
        assert not kube.pipelines
