"""The served self-agreement (issue 17): the model server computes the champion's agreement with
itself on the served views (stretch and median), sends it in ``daic.self_agreement`` with its views, and the sidecar
scores with it only when the views are the ones the version's assessor was fitted with.

The model server's side under the real seldon-core microservice is in tests/test_serving_model.py;
here the pieces are checked one by one, then the sidecar end to end on a registered version."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from daic.oracles.pipeline import OnlineAssessor, ShiftedReference
from daic.oracles.reference import OracleReference
from daic.oracles.self_agreement import SERVED_VIEWS, parse_views, self_agreement, view_probs, views_text
from daic.serving.config import MAX_VIEWS, ServerConfig
from daic.serving.loading import load_served_model
from daic.serving.protocol import TAG_SELF_AGREEMENT, TAG_SELF_AGREEMENT_VIEWS, build_response, parse_response
from daic.sidecar.app import build_app
from daic.sidecar.assessment import AssessorPool, self_agreement_of
from daic.sidecar.config import SidecarConfig
from daic.sidecar.events import encode_cloudevent
from daic.sidecar.records import read_operational
from daic.sidecar.service import SidecarService
from test_serving_support import mnist_test_images, registered_store, seldon_request


# -- the views and the server's setting ---------------------------------------------------------
def test_the_served_views_are_the_stretch_and_the_median_and_their_text_round_trips():
    assert SERVED_VIEWS == (("stretch", 0.0), ("median", 3.0)) and views_text(SERVED_VIEWS) == "stretch:0,median:3"
    views = (("stretch", 0.0), ("rotate", -10.0), ("shift_x", 1.0))
    assert parse_views(views_text(views)) == views


@pytest.mark.parametrize("text, words", [("", "non-empty"), ("rotate:nan", "finite"), ("rotate:inf", "finite"),
                                         ("blur:1", "unknown view 'blur'")])
def test_a_bad_views_text_is_named(text, words):
    with pytest.raises(ValueError, match=words):
        parse_views(text)


def test_the_model_servers_setting_defaults_to_the_served_views_and_can_be_off():
    assert ServerConfig().views == SERVED_VIEWS
    assert ServerConfig(self_agreement_views="off").views == ()
    assert ServerConfig.resolve({}, env={"DAIC_SELF_AGREEMENT_VIEWS": "rotate:10"}).views == (("rotate", 10.0),)
    assert ServerConfig.resolve({"self_agreement_views": "OFF"}, env={}).views == ()


@pytest.mark.parametrize("value, words", [
    ("flip:1", "self_agreement_views: unknown view 'flip'"),
    (",".join(["stretch:0"] * (MAX_VIEWS + 1)), f"at most {MAX_VIEWS}"),
    ("stretch:0," * 40, "at most 200 characters"),
    (3, "must be text"),
])
def test_a_bad_setting_fails_the_server_at_start_naming_it(value, words):
    with pytest.raises(ValueError, match=words):
        ServerConfig(self_agreement_views=value)


# -- the response's tags ------------------------------------------------------------------------
def _outputs(n=3, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(10), size=n)
    return probs, rng.random((n, 4)), probs[::-1].copy()


def test_the_tags_round_trip_and_are_absent_when_the_server_computes_none():
    probs, emb, shadow = _outputs()
    sa = np.array([0.25, 1.0, 0.0])
    out = parse_response(build_response(probs, emb, shadow, model="m", version="v0001", self_agreement=sa,
                                        self_agreement_views="stretch:0"))
    np.testing.assert_allclose(out.self_agreement, sa)
    assert out.self_agreement_views == "stretch:0"
    none = build_response(probs, emb, shadow, model="m", version="v0001")
    assert TAG_SELF_AGREEMENT not in none["meta"]["tags"] and TAG_SELF_AGREEMENT_VIEWS not in none["meta"]["tags"]
    parsed = parse_response(none)
    assert parsed.self_agreement is None and parsed.self_agreement_views is None
    with pytest.raises(ValueError, match="both"):
        build_response(probs, emb, shadow, model="m", version="v0001", self_agreement=sa)


def test_a_client_cannot_set_the_tags():
    probs, emb, shadow = _outputs()
    forged = {"tags": {TAG_SELF_AGREEMENT: [1.0, 1.0, 1.0], TAG_SELF_AGREEMENT_VIEWS: "stretch:0"}}
    tags = build_response(probs, emb, shadow, model="m", version="v0001", request_meta=forged)["meta"]["tags"]
    assert TAG_SELF_AGREEMENT not in tags and TAG_SELF_AGREEMENT_VIEWS not in tags


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.pop(TAG_SELF_AGREEMENT_VIEWS), "daic.self_agreement needs meta.tags.daic.self_agreement.views"),
    (lambda t: t.pop(TAG_SELF_AGREEMENT), "daic.self_agreement.views needs meta.tags.daic.self_agreement"),
    (lambda t: t.update({TAG_SELF_AGREEMENT: [0.5, 0.5]}), r"must be \(3,\)"),
    (lambda t: t.update({TAG_SELF_AGREEMENT: [0.5, 1.5, 0.5]}), r"must lie in \[0, 1\]"),
    (lambda t: t.update({TAG_SELF_AGREEMENT: [0.5, None, 0.5]}), "must lie in|not a numeric"),
    (lambda t: t.update({TAG_SELF_AGREEMENT: "high"}), "not a numeric array"),
    (lambda t: t.update({TAG_SELF_AGREEMENT_VIEWS: 7}), "non-empty text"),
    (lambda t: t.update({TAG_SELF_AGREEMENT_VIEWS: "x" * 201}), "at most 200"),
])
def test_a_malformed_tag_is_refused_naming_it(edit, words):
    probs, emb, shadow = _outputs()
    body = build_response(probs, emb, shadow, model="m", version="v0001", self_agreement=np.full(3, 0.5),
                          self_agreement_views="stretch:0")
    edit(body["meta"]["tags"])
    with pytest.raises(ValueError, match=words):
        parse_response(json.loads(json.dumps(body)))


# -- the references carry their views; the assessor keeps them -----------------------------------
def _reference(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) - shift * rng.random((n, 1))
    logits[np.arange(n), labels] += 2.5 - shift
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return OracleReference(probs=probs, embeddings=rng.normal(size=(n, 4)) + shift, labels=labels,
                           shadow_probs=probs[:, ::-1])


def test_the_views_survive_the_reference_file_and_reach_the_assessor():
    ref = _reference(400, 1)
    shifted_ref = _reference(600, 2, shift=1.5)
    rng = np.random.default_rng(3)
    shifted = ShiftedReference(shifted_ref, np.repeat(["a/1", "b/2", "c/3"], 200), rng.random(600), rng.random(400),
                               self_agreement_views="stretch:0")
    back = ShiftedReference.from_arrays(shifted.to_arrays())
    assert back.self_agreement_views == "stretch:0"
    assert back.without_types(["a"]).self_agreement_views == "stretch:0"
    with pytest.raises(ValueError, match="does not carry"):
        ShiftedReference(shifted_ref, shifted.conditions, self_agreement_views="stretch:0")
    arrays = {**shifted.to_arrays(), "self_agreement_views": np.array(["stretch:0", "rotate:10"])}
    with pytest.raises(ValueError, match="one text"):
        ShiftedReference.from_arrays(arrays)
    from daic.oracles.pipeline import AssessorConfig, WindowSynthesis

    small = AssessorConfig(k=5, cv_folds=3, replicates=1, window_model=False, band_model=False, change=None,
                           synthesis=WindowSynthesis(n_windows=50))
    assessor = OnlineAssessor(small).fit(ref, back)
    assert assessor.uses_self_agreement and assessor.self_agreement_views == "stretch:0"


class _Outputs:
    def __init__(self, sa, views):
        self.self_agreement, self.self_agreement_views = sa, views


class _Assessor:
    uses_self_agreement = True
    self_agreement_views = "stretch:0"


def test_the_sidecar_takes_the_self_agreement_only_over_the_assessors_views():
    a, b = _Outputs(np.array([0.1, 0.2]), "stretch:0"), _Outputs(np.array([0.3]), "stretch:0")
    np.testing.assert_array_equal(self_agreement_of(_Assessor(), [a, b]), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="but a response carries none .meta.tags.daic.self_agreement"):
        self_agreement_of(_Assessor(), [a, _Outputs(None, None)])
    with pytest.raises(ValueError, match="over views 'rotate:10', the assessor's reference over 'stretch:0'"):
        self_agreement_of(_Assessor(), [_Outputs(np.array([0.5]), "rotate:10")])
    unrecorded = _Assessor()
    unrecorded.self_agreement_views = None  # a reference that did not record its views: not trusted
    with pytest.raises(ValueError, match="over None"):
        self_agreement_of(unrecorded, [a])

    class Plain:
        uses_self_agreement = False

    assert self_agreement_of(Plain(), [_Outputs(None, None)]) is None
    assert self_agreement_of(object(), [a]) is None


# -- end to end: a registered version's references, the served outputs, the sidecar -------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = registered_store(tmp_path_factory.mktemp("served-sa") / "store")
    return {"store": store, "served": load_served_model(store, "mnist", "v0001"),
            "pool": AssessorPool(store, "mnist", window=100)}


def test_the_registry_builds_the_references_over_the_served_views(world):
    from daic.models.registry import load_oracle_reference

    reference, shifted = load_oracle_reference(world["store"], "mnist", "v0001")
    assert shifted.self_agreement_views == views_text(SERVED_VIEWS)
    assert shifted.reference_self_agreement.shape == (len(reference),)
    images, _ = mnist_test_images(6, start=900)
    out = world["served"].outputs(images.astype(np.float32))
    expected = self_agreement(out["probs"], view_probs(world["served"].model, images, SERVED_VIEWS))
    np.testing.assert_allclose(out["self_agreement"], expected, atol=1e-6)
    assert out["self_agreement_views"] == views_text(SERVED_VIEWS)
    off = world["served"].outputs(images.astype(np.float32), views=())
    assert off["self_agreement"] is None and off["self_agreement_views"] is None
    np.testing.assert_array_equal(off["probs"], out["probs"])


def test_the_sidecar_scores_only_responses_over_its_assessors_views(world, tmp_path):
    images, _ = mnist_test_images(6, start=900)
    bodies = {}
    for i, variant in enumerate(("served", "off", "other views")):
        x = images[2 * i:2 * i + 2].astype(np.float32)
        outputs = world["served"].outputs(x, views=() if variant == "off" else None)
        if variant == "other views":
            outputs["self_agreement_views"] = "rotate:10"
        bodies[variant] = (seldon_request(images[2 * i:2 * i + 2]),
                           json.dumps(build_response(**outputs, model="mnist", version="v0001")).encode())

    async def main():
        config = SidecarConfig(store_url=world["store"].url, state_dir=tmp_path / "state", deployment="sa",
                               flush_interval_s=600)
        service = SidecarService(config, world["store"], world["pool"])
        async with TestClient(TestServer(build_app(service))) as client:
            estimates = []
            for puid, (request, response) in bodies.items():
                for kind, body in (("request", request), ("response", response)):
                    headers, data = encode_cloudevent(kind, puid, body, source="http://executor", model_id="classifier")
                    assert (await client.post("/", data=data, headers=headers)).status == 200
                await client.post("/admin/flush")
                estimates.append(await (await client.get("/estimate")).json())
            metrics = await (await client.get("/metrics")).text()
            assessed = {"unscored": sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                                        if line.startswith("daic_sidecar_inputs_unscored_total{")),
                        "estimates": estimates}
            for variant in ("served", "off"):
                resp = await client.post("/assess", data=bodies[variant][1], headers={"Content-Type": "application/json"})
                assessed[variant] = (resp.status, await resp.json())
            return assessed

    assessed = asyncio.run(main())
    records = read_operational(world["store"], "sa")
    p_correct = {puid: records.p_correct[records.request_ids == puid] for puid in bodies}
    assert all(len(p) == 2 for p in p_correct.values())  # every input recorded, none lost
    assert np.all(np.isfinite(p_correct["served"]))
    assert np.all(np.isnan(p_correct["off"])) and np.all(np.isnan(p_correct["other views"]))  # unscored, not misread
    assert assessed["unscored"] == 4  # counted where an operator looks: the sidecar's metrics
    assert assessed["served"][0] == 200 and len(assessed["served"][1]["p_correct"]) == 2
    status, answer = assessed["off"]
    assert status == 400 and "daic.self_agreement" in answer["error"]
    # GET /estimate says why, and its estimate does not pose as fresh: the timestamp is the newest
    # *scored* input's, so an operator sees it stand still and the reason beside it
    served, off, other = assessed["estimates"]
    assert served["unscored_inputs"] == 0 and served["unscored_reason"] is None
    assert off["unscored_inputs"] == 2 and "carries none" in off["unscored_reason"]
    assert other["unscored_inputs"] == 4 and "'rotate:10'" in other["unscored_reason"]
    assert other["sidecar"]["unscored"] == {"v0001": {"inputs": 4, "reason": other["unscored_reason"]}}
    assert off["timestamp"] == other["timestamp"] == served["timestamp"] is not None
    assert other["n"] == served["n"] == 2
