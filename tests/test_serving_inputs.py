"""Request decoding and validation shared by the model server and the sidecar."""
from __future__ import annotations

import numpy as np
import pytest

from daic.serving.inputs import InputError, decode_request
from daic.serving.protocol import TAG_EMBEDDINGS, TAG_SHADOW, TAG_VERSION, build_response, parse_response


def _imgs(n, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 1, 28, 28), (3, 784)])
def test_ndarray_shapes_accepted(shape):
    x = _imgs(3)
    out = decode_request({"data": {"ndarray": x.reshape(shape).tolist()}})
    assert out.encoding == "ndarray"
    assert out.images.shape == (3, 28, 28) and out.images.dtype == np.float32
    np.testing.assert_allclose(out.images, x, rtol=1e-6)


def test_tensor_accepted_and_reshaped():
    x = _imgs(2)
    out = decode_request({"data": {"tensor": {"shape": [2, 784], "values": x.ravel().tolist()}}})
    assert out.encoding == "tensor"
    np.testing.assert_allclose(out.images, x, rtol=1e-6)


@pytest.mark.parametrize("payload, field, words", [
    ([1, 2], "request", "JSON object"),
    ({"strData": "x"}, "strData", "not supported"),
    ({"data": {"names": []}}, "data", "'ndarray' or a 'tensor'"),
    ({"data": {"ndarray": [[0.1] * 28] * 27}}, "data.ndarray", "expected [N, 28, 28]"),
    ({"data": {"ndarray": [[[0.1] * 28] * 28, [[0.1] * 28] * 27]}}, "data.ndarray", "ragged"),
    ({"data": {"ndarray": [["a"] * 784]}}, "data.ndarray", "strings"),
    ({"data": {"ndarray": [[None] * 784]}}, "data.ndarray", "null"),
    ({"data": {"ndarray": [[True] * 784]}}, "data.ndarray", "booleans"),
    ({"data": {"ndarray": []}}, "data.ndarray", "expected"),
    ({"data": {"tensor": {"shape": [1, 784], "values": [0.5] * 783}}}, "data.tensor.values", "needs 784"),
    ({"data": {"tensor": {"shape": "1,784", "values": [0.5] * 784}}}, "data.tensor.shape", "list"),
    ({"data": {"tensor": [1]}}, "data.tensor", "object"),
])
def test_bad_payloads_name_the_field(payload, field, words):
    with pytest.raises(InputError) as info:
        decode_request(payload)
    assert info.value.field == field
    assert words in str(info.value)


def test_nan_named_with_its_input_index():
    x = _imgs(4)
    x[2, 5, 5] = np.nan
    with pytest.raises(InputError, match="input 2 contains NaN"):
        decode_request({"data": {"ndarray": x.tolist()}})
    x[2, 5, 5] = np.inf
    with pytest.raises(InputError, match="input 2 contains NaN or infinite"):
        decode_request({"data": {"ndarray": x.tolist()}})


def test_out_of_range_named_with_input_and_range():
    x = _imgs(3)
    x[1] *= 255.0
    with pytest.raises(InputError, match=r"\[0, 1\].*input 1 has range \[0\.\d+, 25\d"):
        decode_request({"data": {"ndarray": x.tolist()}})


def test_oversized_and_empty_batches():
    with pytest.raises(InputError, match="holds 5 inputs, more than the limit of 4"):
        decode_request({"data": {"ndarray": _imgs(5).tolist()}}, max_batch=4)
    with pytest.raises(InputError, match="batch size 0"):
        decode_request({"data": {"tensor": {"shape": [0, 28, 28], "values": []}}})


def test_response_round_trip_both_encodings():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    emb = rng.random((3, 128))
    for enc in ("ndarray", "tensor"):
        msg = build_response(probs, emb, probs[::-1], model="mnist", version="v0007", encoding=enc,
                             request_meta={"puid": "abc", "tags": {"client": "t"}})
        assert msg["meta"]["puid"] == "abc"
        assert msg["meta"]["tags"]["client"] == "t"
        assert msg["meta"]["tags"][TAG_VERSION] == "v0007"
        assert msg["data"]["names"] == [str(i) for i in range(10)]
        out = parse_response(msg)
        assert out.version == "v0007" and out.model == "mnist"
        np.testing.assert_allclose(out.probs, probs, atol=1e-6)
        np.testing.assert_allclose(out.embeddings, emb, atol=1e-6)
        np.testing.assert_allclose(out.shadow_probs, probs[::-1], atol=1e-6)


def test_parse_response_rejects_foreign_responses():
    with pytest.raises(ValueError, match="lacks daic.model_version"):
        parse_response({"data": {"ndarray": [[0.5, 0.5]]}, "meta": {}})
    msg = build_response(np.full((2, 10), 0.1), np.zeros((2, 4)), np.full((2, 10), 0.1), model="m", version="v")
    msg["meta"]["tags"][TAG_EMBEDDINGS] = [[0.0] * 4]
    with pytest.raises(ValueError, match=TAG_EMBEDDINGS):
        parse_response(msg)
    msg["meta"]["tags"][TAG_EMBEDDINGS] = [[0.0] * 4] * 2
    msg["meta"]["tags"][TAG_SHADOW] = [[0.1] * 9] * 2
    with pytest.raises(ValueError, match=TAG_SHADOW):
        parse_response(msg)
