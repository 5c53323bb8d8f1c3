"""Seeded fuzzing of the HTTP surfaces added after tests/test_fuzz_bad_input.py: the sidecar's loopback
``POST /assess`` (abstaining, issue 21 item 4), the input filter as a Seldon TRANSFORMER
(daic.serving.filter.InputFilter) and the model server's abstain path (the client's request meta is
echoed into the response the model server posts to ``/assess``).

Each surface gets thousands of mutated valid messages, random JSON, raw bytes that are not JSON,
oversized bodies, wrong content types, NaN/Infinity and wrong image shapes and dtypes. Every body must
be answered with 2xx or a 4xx whose JSON names the problem (never a 500, never traceback text), and
afterwards the server answers a valid request exactly as before. The generators are the ones of
test_fuzz_bad_input.py (fixed seeds; a failure names its seed, case and body, so it replays exactly).
"""
from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import OrderedDict

import numpy as np
import pytest

from test_fuzz_bad_input import _encode, mutate, random_json
from test_serving_support import mnist_test_images
from test_sidecar_service import _event, _pair, _post, _run, registry  # noqa: F401 - the module fixture

JSON = {"Content-Type": "application/json"}
CONTENT_TYPES = ["application/json", "text/plain", "application/octet-stream", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", ""]


def hostile_bytes(rng: random.Random) -> bytes:
    """A body that is not a JSON document: random bytes, bad UTF-8, NaN/Infinity literals, deep nesting."""
    roll = rng.random()
    if roll < 0.3:
        return rng.randbytes(rng.randint(0, 300))
    if roll < 0.5:
        return rng.choice([b'{"data": {"ndarray": [[NaN]]}}', b'{"data": {"ndarray": [[Infinity]]}}',
                           b'{"data": {"ndarray": [[-Infinity]]}}', b'\xff\xfe{"data": 1}', b'{"a": "\xc3\x28"}',
                           b"[" * 5000 + b"]" * 5000, b'{"meta": ' * 600 + b"1" + b"}" * 600, b"", b"null",
                           b"\x00" * 64, b'"just a string"', b"1e999", b'{"data": {"ndarray": [[1e999]]}}'])
    if roll < 0.75:
        return json.dumps(random_json(rng)).encode("utf-8", "surrogatepass")
    return json.dumps(random_json(rng)).encode("utf-8", "surrogatepass")[: rng.randint(0, 40)]


def shape_variants(rng: random.Random, valid: dict) -> tuple[dict, object]:
    """(a copy of ``valid``, a wrong value: a shape, dtype or non-finite content) to put in one of its fields."""
    doc = copy.deepcopy(valid)
    choice = rng.choice([[], [[]], [[[0.5]]], [[0.5] * 9], [[0.5] * 11], [[0.5] * 10] * 3, [["0.5"] * 10],
                         [[True] * 10], [[None] * 10], [[{"x": 1}] * 10], [[1e308] * 10], [[-1e308] * 10],
                         [[2 ** 70] * 10], [[0.5] * 10, [0.5] * 9], [[[0.5] * 10]], "x", 7, {"x": [1]}, None,
                         [[float("nan")] * 10], [[float("inf")] * 10], np.full((1, 28, 28), 0.5).tolist(),
                         [[0.5] * 10] * 2000])
    return doc, choice


def _check(status: int, text: str, where: str) -> None:
    assert status < 500 or status == 503 and "not loaded yet" in text, where
    assert "Traceback" not in text and 'File "' not in text, where
    if status >= 400:
        error = json.loads(text).get("error")
        assert isinstance(error, str) and len(error) > 10, where


# -- the sidecar's POST /assess -------------------------------------------------------------------------------
def _assess_bodies(rng: random.Random, valid: list[dict], n: int):
    """(body, headers) for the fuzz cases of /assess."""
    for i in range(n):
        roll = rng.random()
        if roll < 0.6:
            doc = mutate(rng.choice(valid), rng)
            body = _encode(doc, rng)
        elif roll < 0.75:
            doc, value = shape_variants(rng, rng.choice(valid))
            where = rng.choice([("data", "ndarray"), ("meta", "tags", "daic.embeddings"),
                                ("meta", "tags", "daic.shadow_probs"), ("meta", "tags", "daic.model_version"),
                                ("meta", "tags", "daic.filter"), ("meta", "tags", "daic.filter.gate"),
                                ("data", "tensor"), ("meta", "tags"), ("meta",), ("data",)])
            parent = doc
            for step in where[:-1]:
                parent = parent.setdefault(step, {}) if isinstance(parent, dict) else parent
            if isinstance(parent, dict):
                parent[where[-1]] = value
            body = json.dumps(doc).encode()  # NaN/Infinity as the literals Python writes
        elif roll < 0.9:
            body = hostile_bytes(rng)
        else:
            body = json.dumps(random_json(rng)).encode("utf-8", "surrogatepass")
        headers = {"Content-Type": rng.choice(CONTENT_TYPES)} if rng.random() < 0.3 else dict(JSON)
        yield i, body, headers


def test_assess_answers_every_mutated_response_with_2xx_or_a_named_4xx(registry, tmp_path, monkeypatch):  # noqa: F811
    """The real sidecar app (in process, the module's registry and assessors): responses as the model
    server posts them (plain and behind a filter, ndarray and tensor) mutated, then what must still work."""
    from daic.serving.protocol import build_response

    from test_abstain_serving import _Marked, _tagged

    pool = registry["pool"]
    own = pool.get(registry["v1"])
    monkeypatch.setattr(pool, "_wrapped", OrderedDict({("v0042", "gated"): _Marked(own, 0.25)}))
    images, _ = mnist_test_images(3)
    _, plain, _ = _pair(registry, registry["v1"], images)
    behind = _tagged(plain, **{"daic.filter": "v0042", "daic.filter.gate": "gated"})
    served = registry["served"][registry["v1"]]
    probs, emb, shadow = served.predict(images[:2].astype(np.float32))
    tensor = build_response(probs, emb, shadow, model="mnist", version=registry["v1"], encoding="tensor",
                            request_meta={"puid": "p", "tags": {"client": "x"}})
    valid = [json.loads(plain), json.loads(behind), tensor]
    seed, n = 51, 2000

    async def scenario(client, service):
        before = await client.post("/assess", data=plain, headers=JSON)
        expected = await before.json()
        seen = {}
        for i, body, headers in _assess_bodies(random.Random(seed), valid, n):
            resp = await client.post("/assess", data=body, headers=headers)
            text = await resp.text()
            seen[resp.status] = seen.get(resp.status, 0) + 1
            _check(resp.status, text, f"seed {seed} case {i}: {resp.status} {text[:300]} for {body[:400]!r}")
            if resp.status == 200:
                answer = json.loads(text)
                assert all(0.0 <= p <= 1.0 for p in answer["p_correct"]), f"seed {seed} case {i}: {text[:300]}"
        big = await client.post("/assess", data=b'{"data": "' + b"x" * (service.config.max_body_bytes + 1) + b'"}',
                                headers=JSON)
        seen["oversized"] = (big.status, (await big.json())["error"])
        after = await client.post("/assess", data=plain, headers=JSON)
        behind_after = await client.post("/assess", data=behind, headers=JSON)
        live = await client.get("/health/live")
        return expected, seen, (after.status, await after.json()), await behind_after.json(), live.status

    expected, seen, after, behind_after, live = _run(registry, tmp_path, scenario, max_body_bytes=64 * 1024)
    assert after == (200, expected) and expected["assessor"] == "mnist/v0001", (expected, after)
    assert behind_after == {"p_correct": [0.25] * 3, "assessor": "mnist-filter/v0042/gated"}
    assert live == 200
    status, error = seen.pop("oversized")
    assert status == 413 and "max_body_bytes" in error
    assert seen.get(200, 0) > 50 and seen.get(400, 0) > 500, seen


# Regression (found by the fuzz above, seed 51 case 6): a daic tag or the data holding an object, a
# shape that is not a list of integers, or meta/tags that are not objects raised TypeError or
# AttributeError out of daic.serving.protocol.parse_response: a 500 from /assess, and in a logged
# response event a failure of the sidecar's whole processing (liveness 500, flushes refused).
MALFORMED = [
    ("data.ndarray", lambda d: d["data"].__setitem__("ndarray", {})),
    ("data.ndarray", lambda d: d["data"].__setitem__("ndarray", [[{}] * 10])),
    ("data.tensor", lambda d: d["data"].update(tensor={"shape": "x", "values": [0.1] * 10})
     or d["data"].pop("ndarray")),
    ("data.tensor", lambda d: d["data"].update(tensor={"shape": {}, "values": [0.1] * 10}) or d["data"].pop("ndarray")),
    ("meta", lambda d: d.__setitem__("meta", [1])),
    ("meta.tags", lambda d: d["meta"].__setitem__("tags", ["daic.model_version", "daic.embeddings",
                                                           "daic.shadow_probs"])),
    ("daic.embeddings", lambda d: d["meta"]["tags"].__setitem__("daic.embeddings", {"x": 1})),
    ("daic.shadow_probs", lambda d: d["meta"]["tags"].__setitem__("daic.shadow_probs", [[None, {}]])),
]


@pytest.mark.parametrize("field, edit", MALFORMED)
def test_parse_response_names_the_malformed_field_with_a_value_error(field, edit):
    from daic.serving.protocol import parse_response

    doc = {"data": {"ndarray": [[0.1] * 10]}, "meta": {"tags": {"daic.model_version": "v0001",
                                                                "daic.embeddings": [[0.5] * 4],
                                                                "daic.shadow_probs": [[0.1] * 10]}}}
    parse_response(doc)
    edit(doc)
    with pytest.raises(ValueError, match=field.split(".")[-1].replace(".", r"\.")):
        parse_response(doc)


def test_malformed_responses_get_a_400_from_assess_and_do_not_stop_the_sidecar(registry, tmp_path):  # noqa: F811
    images, _ = mnist_test_images(2)
    request, plain, _ = _pair(registry, registry["v1"], images)
    registry["pool"].get(registry["v1"])
    bodies = []
    for _field, edit in MALFORMED:
        doc = json.loads(plain)
        edit(doc)
        bodies.append(json.dumps(doc).encode())

    async def scenario(client, service):
        answers = []
        for i, body in enumerate(bodies):
            resp = await client.post("/assess", data=body, headers=JSON)
            answers.append((resp.status, await resp.text()))
            # the same response logged by the executor, after its (valid) request
            await _post(client, _event("request", f"bad-{i}", request))
            await _post(client, _event("response", f"bad-{i}", body))
        await _post(client, _event("request", "good", request))
        await _post(client, _event("response", "good", plain))
        flushed = await client.post("/admin/flush")
        live = await client.get("/health/live")
        return answers, (flushed.status, await flushed.text()), live.status

    answers, flushed, live = _run(registry, tmp_path, scenario)
    for (field, _edit), (status, text) in zip(MALFORMED, answers):
        assert status == 400 and field.split(".")[-1] in json.loads(text)["error"], (field, status, text)
    assert flushed[0] == 200 and live == 200, flushed
    from daic.sidecar.records import read_operational

    records = read_operational(registry["store"], tmp_path.name)
    assert list(records.request_ids) == ["good", "good"]  # the malformed ones were refused, not recorded


# -- the input filter (TRANSFORMER) in process ----------------------------------------------------------------
def _filter_store(path):
    from test_filter_serving import _blanking_filter, _register
    from test_serving_support import registered_store

    store = registered_store(path)
    return store, _register(store, _blanking_filter(), threshold=0.05)


def test_the_filter_transform_raises_only_input_errors_and_hands_the_model_a_valid_request(tmp_path):
    """``InputFilter.transform`` on thousands of mutated requests: only InputError (the wrapper's 400
    naming the field), and whatever it accepts it hands on as a request the model decodes, with one
    ``daic.filtered`` flag per input and the filter's tags."""
    from daic.serving.filter import InputFilter
    from daic.serving.inputs import InputError, decode_request

    store, version = _filter_store(tmp_path / "store")
    gated = InputFilter(store_url=store.url, filter_version=version, gate="gated")
    gated.refresh()
    passing = InputFilter(store_url=store.url)  # no filter in service: pass-through
    passing.refresh()
    valid = [{"data": {"ndarray": np.full((2, 28, 28), 0.5).tolist()}, "meta": {"puid": "p", "tags": {"c": "x"}}},
             {"data": {"names": ["x"], "tensor": {"shape": [1, 784], "values": [0.25] * 784}}, "meta": {"tags": {}}},
             {"data": {"ndarray": np.full((1, 1, 28, 28), 0.9).tolist()}}]
    seed, rng, accepted = 61, random.Random(61), 0
    for i in range(2500):
        roll = rng.random()
        if roll < 0.75:
            doc = mutate(rng.choice(valid), rng)
        elif roll < 0.85:
            doc, value = shape_variants(rng, rng.choice(valid))
            doc.setdefault("data", {})["ndarray"] = value
        else:
            doc = random_json(rng)
        served = gated if i % 2 else passing
        try:
            out = served.transform(copy.deepcopy(doc))
        except InputError as exc:
            assert str(exc), f"seed {seed} case {i}: an InputError without a message"
            continue
        except Exception as exc:  # noqa: BLE001 - what the test looks for: the wrapper's 500
            pytest.fail(f"seed {seed} case {i}: {type(exc).__name__}: {exc} for {json.dumps(doc)[:400]}")
        accepted += 1
        n = len(decode_request(doc).images)
        handed = decode_request(out)  # the model must be able to read what the filter hands it
        tags = out["meta"]["tags"]
        where = f"seed {seed} case {i}: {json.dumps(out)[:300]}"
        assert len(handed.images) == n and len(tags["daic.filtered"]) == n, where
        assert tags["daic.filter"] == (version if served is gated else None), where
    assert accepted > 100, accepted
    images = np.zeros((2, 28, 28), np.float32)
    images[1] = 0.9
    assert gated.transform({"data": {"ndarray": images.tolist()}})["meta"]["tags"]["daic.filtered"] == [0, 1]


# Regression (found by the filter fuzz above, seed 61): ``meta.tags`` that is not an object (a list, a
# string) passed the decoder and then failed in ``dict(meta["tags"])`` in the filter's transform and in
# the model's build_response: TypeError/ValueError, a 500 from either microservice. The one decoder now
# refuses it, naming meta.tags (400).
@pytest.mark.parametrize("tags", [[1], ["ab", "cd", "e"], "tags", 5, True, [[]]])
def test_meta_tags_that_are_not_an_object_are_an_input_error_naming_them(tmp_path, tags):
    from daic.serving.filter import InputFilter
    from daic.serving.inputs import InputError, decode_request

    request = {"data": {"ndarray": np.full((1, 28, 28), 0.5).tolist()}, "meta": {"puid": "p", "tags": tags}}
    with pytest.raises(InputError, match="meta.tags: must be an object"):
        decode_request(request)
    served = InputFilter(store_url=f"file://{tmp_path}")
    served.refresh()
    with pytest.raises(InputError, match="meta.tags"):
        served.transform(request)
    for fine in (None, {}, {"client": "x"}):  # absent, empty or an object: as before
        request["meta"]["tags"] = fine
        assert decode_request(request).images.shape == (1, 28, 28)
