"""Abstain where even the filter cannot help (issue 21, item 4): the pure decision and the spec field."""
from __future__ import annotations

import math

import numpy as np
import pytest

from daic.operators.spec import InvalidSpec, parse_spec
from daic.serving.abstain import (DECIDED, TAG_ABSTAIN, TAG_ASSESSOR, TAG_BOUND, TAG_P_CORRECT, TAG_STATUS,
                                  abstain_mask, abstain_tags, abstained_of, check_bound, selective)


def test_mask_is_p_correct_strictly_below_the_bound():
    p = np.array([0.0, 0.29, 0.3, 0.31, 1.0])
    assert abstain_mask(p, 0.3).tolist() == [True, True, False, False, False]
    assert abstain_mask(p, 0.99).tolist() == [True, True, True, True, False]
    assert abstain_mask(np.zeros(0), 0.5).shape == (0,)


@pytest.mark.parametrize("bound", [0, 1, -0.1, 1.5, math.nan, math.inf, True, "0.5", None])
def test_bad_bound_is_a_clear_error(bound):
    with pytest.raises(ValueError, match=r"bound must be a number in \(0, 1\)"):
        abstain_mask(np.array([0.5]), bound)
    with pytest.raises(ValueError, match=r"spec.abstain.bound must be"):
        check_bound(bound, "spec.abstain.bound")


@pytest.mark.parametrize("p, where", [([0.5, math.nan], 1), ([-0.01], 0), ([0.2, 0.3, 1.01], 2)])
def test_bad_p_correct_is_refused_naming_the_position(p, where):
    with pytest.raises(ValueError, match=f"at position {where}"):
        abstain_mask(np.array(p), 0.5)
    with pytest.raises(ValueError, match="1-d"):
        abstain_mask(np.zeros((2, 2)), 0.5)


def test_tags_of_a_decision_and_of_no_decision():
    tags = abstain_tags(3, 0.5, np.array([0.1, 0.5, 0.912345678]), assessor="mnist-filter/v0052/gated")
    assert tags == {TAG_ABSTAIN: [1, 0, 0], TAG_P_CORRECT: [0.1, 0.5, 0.9123], TAG_BOUND: 0.5,
                    TAG_ASSESSOR: "mnist-filter/v0052/gated", TAG_STATUS: DECIDED}
    none = abstain_tags(2, 0.5, reason="no assessor loaded yet")
    assert none[TAG_ABSTAIN] == [0, 0] and none[TAG_P_CORRECT] is None and none[TAG_STATUS] == "no assessor loaded yet"
    with pytest.raises(ValueError, match="needs the reason"):
        abstain_tags(2, 0.5)
    with pytest.raises(ValueError, match="one value per input"):
        abstain_tags(2, 0.5, np.array([0.1]))


def test_reading_the_tag_back_never_trusts_a_broken_one():
    assert abstained_of({TAG_ABSTAIN: [1, 0, 1]}, 3).tolist() == [True, False, True]
    for broken in (None, {}, {TAG_ABSTAIN: [1, 0]}, {TAG_ABSTAIN: "1,0,1"}, {TAG_ABSTAIN: [1, 0, 2]},
                   {TAG_ABSTAIN: [1.0, 0, 1]}, [1, 0, 1]):
        assert abstained_of(broken, 3).tolist() == [False, False, False]


def test_selective_accuracy_and_coverage():
    correct = np.array([True, False, True, True])
    assert selective(correct, np.array([True, False, True, False])) == (0.5, 1.0)
    cov, acc = selective(correct, np.zeros(4, bool))
    assert cov == 0.0 and math.isnan(acc)
    with pytest.raises(ValueError, match="one shape"):
        selective(correct, np.ones(3, bool))


def _spec(**abstain):
    raw = {"deployment": {"name": "mnist"}, "estimate": {"url": "http://127.0.0.1:8300/estimate"},
           "trigger": {"threshold": 0.9}}
    if abstain:
        raw["abstain"] = abstain
    return raw


def test_spec_field_is_off_by_default_and_takes_a_bound():
    spec = parse_spec(_spec())
    assert spec.abstain.enabled is False and spec.abstain.bound == 0.5
    spec = parse_spec(_spec(enabled=True, bound=0.3))
    assert spec.abstain.enabled is True and spec.abstain.bound == 0.3
    assert spec.model_dump(by_alias=True)["abstain"] == {"enabled": True, "bound": 0.3}


@pytest.mark.parametrize("abstain, message", [
    ({"bound": 0}, "spec.abstain.bound: Input should be greater than 0"),
    ({"bound": 1}, "spec.abstain.bound: Input should be less than 1"),
    ({"bound": "high"}, "spec.abstain.bound: Input should be a valid number"),
    ({"enabled": "sometimes"}, "spec.abstain.enabled: Input should be a valid boolean"),
    ({"enable": True}, "spec.abstain.enable: Extra inputs are not permitted"),
])
def test_bad_spec_values_name_the_field(abstain, message):
    with pytest.raises(InvalidSpec) as err:
        parse_spec(_spec(**abstain))
    assert message in str(err.value)
