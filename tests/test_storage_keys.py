"""Ids as key parts (daic.storage.keys): property tests on seeded random ids (hypothesis is not in the
lock), on the ids the sidecar makes (``<Seldon puid>:<row>``), unicode, ``/``, ``..`` and NUL; and
every encoded id stored and read back through both real stores (a directory and SeaweedFS's S3)."""
from __future__ import annotations

import hashlib
import random
import uuid

import pytest

from daic.storage import check_key, open_store
from daic.storage.keys import MAX_KEY_PART, id_to_key_part, is_hashed, key_part_to_id

SPECIAL = ["/", "..", ".", "\x00", ":", "%", "=", "=41", "@", "+", " ", "\\", "~", "\n", "é", "数字", "🙂",
           "\u202e", "\ufeff", "a/../../etc/passwd", "../x", "./", "-", "_", "..."]


def _random_ids(seed: int, n: int = 400) -> list[str]:
    rng = random.Random(seed)
    ids = [f"{uuid.UUID(int=rng.getrandbits(128), version=4)}:{rng.randrange(256)}" for _ in range(n // 4)]
    for _ in range(n - len(ids)):
        length = rng.randrange(1, 24)
        pieces = []
        for _ in range(length):
            kind = rng.random()
            if kind < 0.4:
                pieces.append(chr(rng.randrange(0x20, 0x7F)))
            elif kind < 0.6:
                pieces.append(rng.choice(SPECIAL))
            elif kind < 0.8:
                pieces.append(chr(rng.randrange(0x80, 0xD800)))
            else:
                pieces.append(chr(rng.randrange(0xE000, 0x110000)))
        ids.append("".join(pieces)[:40] * rng.choice([1, 1, 1, 8]))  # some long enough to be hashed
    return ids


def _encoded_length(sample_id: str) -> int:
    """What the encoding's length must be, computed independently: 1 or 3 characters per UTF-8 byte."""
    raw = sample_id.encode()
    return sum(1 if (chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_-" or (chr(b) == "." and k > 0)))
               else 3 for k, b in enumerate(raw))


@pytest.mark.parametrize("seed", range(5))
def test_every_id_maps_to_one_valid_key_part_and_back(seed):
    ids = list(dict.fromkeys(_random_ids(seed)))
    parts = [id_to_key_part(i) for i in ids]
    assert len(set(parts)) == len(ids)  # injective
    long = 0
    for sample_id, part in zip(ids, parts):
        assert "/" not in part and part not in (".", "..") and not part.startswith(".")
        assert len(part) <= MAX_KEY_PART
        check_key(f"cycles/c/labeling/answers/{part}.json")
        if _encoded_length(sample_id) <= MAX_KEY_PART:
            assert not is_hashed(part) and len(part) == _encoded_length(sample_id)
            assert key_part_to_id(part) == sample_id
        else:  # hashed form: a readable head, '==', the SHA-256 of the id
            long += 1
            assert is_hashed(part) and part.endswith(hashlib.sha256(sample_id.encode()).hexdigest())
            assert id_to_key_part(sample_id[:len(sample_id) // 2]).startswith(part.split("==")[0][:20])
            with pytest.raises(ValueError, match="hashed form"):
                key_part_to_id(part)
    assert long > 0


@pytest.mark.parametrize("sample_id", ["3f0c8d56-1b1e-4c53-9f3e-0a4b1de8a1d7:0", "/", "..", ".", "\x00", "a\x00b",
                                       "../../etc/passwd", "数字:3", "🙂", "=", "=41", ".hidden", "a.b"])
def test_named_ids(sample_id):
    part = id_to_key_part(sample_id)
    assert key_part_to_id(part) == sample_id
    check_key(f"x/{part}")


def test_plain_ids_encode_to_themselves():
    """Stores written before the encoding existed (ids without a colon) read back unchanged."""
    for sample_id in ["r0", "s0-12", "batch_3-a.b", "A-Z_09"]:
        assert id_to_key_part(sample_id) == sample_id


@pytest.mark.parametrize("bad,match", [("", "must not be empty"), (None, "must be a string"),
                                       ("\ud800", "lone surrogate"), ("a\udfffb", "lone surrogate")])
def test_ids_that_cannot_be_keys_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        id_to_key_part(bad)


@pytest.mark.parametrize("part", ["", ".", "..", ".x", "a/b", "=4", "=zz", "=41", "=2e", "a b", "=FF", "=C3", "a==b"])
def test_decoding_accepts_only_what_encoding_makes(part):
    with pytest.raises(ValueError):
        key_part_to_id(part)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_encoded_ids_are_stored_and_listed_by_both_backends(backend, tmp_path, request):
    if backend == "file":
        store = open_store(f"file://{tmp_path}")
    else:
        request.getfixturevalue("s3_env")
        store = open_store(f"s3://daic-test/{uuid.uuid4().hex}", create_bucket=True)
    ids = list(dict.fromkeys(_random_ids(7, n=80) + ["..", "/", "\x00", "a/../b", "x" * 5000, "x" * 5001]))
    for sample_id in ids:
        store.put_json(f"answers/{id_to_key_part(sample_id)}.json", {"id": sample_id})
    listed = store.list("answers/")
    stored = [store.get_json(k)["id"] for k in listed]  # hashed forms: the id is in the object
    assert sorted(stored) == sorted(ids)
    for key, sample_id in zip(listed, stored):
        part = key[len("answers/"):-len(".json")]
        assert part == id_to_key_part(sample_id)
        assert is_hashed(part) or key_part_to_id(part) == sample_id
