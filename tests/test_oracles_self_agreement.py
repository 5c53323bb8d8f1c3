"""Self-agreement under test-time transforms (daic.oracles.self_agreement) and its use by the
assessor, with known truth."""
import numpy as np
import pytest
import torch
from torch import nn

from daic.oracles.combiner import FEATURES, SELF_AGREEMENT_FEATURE
from daic.oracles.pipeline import AssessorConfig, OnlineAssessor, ShiftedReference
from daic.oracles.reference import OracleReference
from daic.oracles.self_agreement import VIEWS, _apply, for_assessor, parse_views, self_agreement, view_probs
from daic.oracles.window_model import WindowSynthesis


class PixelModel(nn.Module):
    """Logits: class 0 gets the brightness of pixel (10, 10) x 50, class 1 a constant 25: an
    image lit only at (10, 10) is class 0 as long as a view keeps that pixel lit."""

    def forward(self, x):
        x = x.reshape(len(x), 28, 28)
        return torch.stack([50.0 * x[:, 10, 10], torch.full((len(x),), 25.0)], dim=1)


def test_shift_views_move_pixels_exactly_and_pad_with_black():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5, 7] = 1.0
    x[0, 0, 27, 27] = 1.0
    right = _apply(x, "shift_x", 1.0)
    down = _apply(x, "shift_y", 1.0)
    assert right[0, 0, 5, 8] == 1.0 and right.sum() == 1.0  # the edge pixel left the image
    assert down[0, 0, 6, 7] == 1.0 and down.sum() == 1.0
    assert torch.allclose(_apply(x, "rotate", 0.0), x, atol=1e-6)
    with pytest.raises(ValueError, match="unknown view"):
        _apply(x, "flip", 1.0)


def test_the_stretch_view_undoes_an_affine_intensity_change_and_leaves_a_flat_image():
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(rng.random((3, 1, 28, 28), dtype=np.float32))
    clean[:, :, 0, 0], clean[:, :, 0, 1] = 0.0, 1.0  # each image spans [0, 1], as a clean digit does
    faded = clean * 0.3 + 0.4  # contrast lowered towards a grey, brightness raised
    assert torch.allclose(_apply(faded, "stretch", 0.0), clean, atol=1e-5)
    assert torch.allclose(_apply(clean, "stretch", 0.0), clean, atol=1e-6)
    flat = torch.full((1, 1, 28, 28), 0.6)
    assert torch.equal(_apply(flat, "stretch", 0.0), flat)  # no range to stretch: unchanged, no NaN
    # The model is sure only once the stretch restores pixel (10, 10)'s full brightness.
    dim = np.zeros((1, 28, 28), np.float32)
    dim[0, 10, 10], dim[0, 0, 0] = 0.45, 0.05
    probs = view_probs(PixelModel(), dim, (("stretch", 0.0),))
    assert probs.shape == (1, 1, 2) and probs[0, 0, 0] > 0.999  # 50 x 1.0 against 25


def test_the_tophat_view_removes_a_smooth_background_under_thin_strokes():
    # Known truth: strokes of width 2 on black, then a smooth haze and a lower contrast on top.
    clean = torch.zeros(2, 1, 28, 28)
    clean[0, 0, 6:22, 13:15] = 1.0  # a "1"
    clean[1, 0, 6:8, 6:22] = 1.0  # a bar and a stem: a "7"
    clean[1, 0, 8:22, 18:20] = 1.0
    rows = torch.linspace(0, 1, 28)
    haze = 0.5 * (rows[:, None] + rows[None, :]) / 2  # rises smoothly towards one corner
    hazy = 0.6 * clean + 0.3 + haze  # fog-like: a background that is not flat, and fainter strokes
    restored = _apply(hazy, "tophat", 7.0)
    assert torch.allclose(restored, clean, atol=0.2) and (restored[clean == 0] < 0.2).all()
    assert (_apply(hazy, "stretch", 0.0)[clean == 0] > 0.3).any()  # the plain stretch keeps the haze
    assert torch.allclose(_apply(clean, "tophat", 7.0), clean, atol=1e-6)  # a clean digit is left as it is
    flat = torch.full((1, 1, 28, 28), 0.6)
    assert torch.isfinite(_apply(flat, "tophat", 7.0)).all()


def test_the_median_view_removes_thin_marks_and_keeps_strokes():
    # Known truth: a "1" of width 3 on black, then one-pixel dots (impulse noise) and a one-pixel
    # line across it (a scribble).
    clean = torch.zeros(1, 1, 28, 28)
    clean[0, 0, 6:22, 12:15] = 1.0
    marked = clean.clone()
    marked[0, 0, 3, 3] = marked[0, 0, 25, 20] = marked[0, 0, 10, 5] = 1.0  # dots
    marked[0, 0, 18, 2:26] = 1.0  # a one-pixel line
    restored = _apply(marked, "median", 3.0)
    assert torch.equal(restored[0, 0, 7:21, 12:15], clean[0, 0, 7:21, 12:15])  # the stroke is kept
    near = torch.zeros_like(clean, dtype=torch.bool)
    near[0, 0, 5:23, 11:16] = True  # where the line meets the stroke, the median keeps a bulge
    assert restored[~near].max() == 0.0  # every dot and the line elsewhere are gone
    assert torch.isfinite(_apply(torch.full((1, 1, 28, 28), 0.6), "median", 3.0)).all()
    assert parse_views("median:3") == (("median", 3.0),)
    # the 3x3 sorting network is the median of every window, exactly (against sorting them)
    from torch.nn import functional as F

    from daic.oracles.self_agreement import _median, _median3

    noisy = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    windows = F.unfold(F.pad(noisy, (1, 1, 1, 1), mode="replicate"), 3)
    assert torch.equal(_median3(noisy), windows.median(dim=1).values.view_as(noisy))
    assert torch.equal(_median(noisy, 3), _median3(noisy))


def test_views_parse_from_text_and_a_bad_one_is_named():
    assert parse_views("stretch:0, rotate:-10,shift_x") == (("stretch", 0.0), ("rotate", -10.0), ("shift_x", 0.0))
    with pytest.raises(ValueError, match="unknown view 'flip'"):
        parse_views("stretch:0,flip:1")
    with pytest.raises(ValueError, match="'rotate:ten'"):
        parse_views("rotate:ten")


def test_view_probs_and_self_agreement_known_truth():
    # Image A: a blob around (10, 10) that survives one-pixel shifts and small rotations;
    # image B: a single lit pixel at (10, 10), which every shift moves away (class flips).
    a = np.zeros((28, 28), np.float32)
    a[8:13, 8:13] = 1.0
    b = np.zeros((28, 28), np.float32)
    b[10, 10] = 1.0
    images = np.stack([a, b])
    model = PixelModel()
    views = view_probs(model, images, views=(("shift_x", 1.0), ("shift_y", 1.0)))
    assert views.shape == (2, 2, 2) and np.allclose(views.sum(-1), 1.0, atol=1e-5)
    probs = torch.softmax(model(torch.from_numpy(images)), 1).numpy()
    assert (probs.argmax(1) == 0).all()  # both predicted class 0 untransformed
    sa = self_agreement(probs, views)
    assert sa[0] > 0.99 and sa[1] < 0.01
    assert view_probs(model, images).shape == (2, len(VIEWS), 2)
    with pytest.raises(ValueError, match="views must have shape"):
        self_agreement(probs, views[:, :, :1])
    with pytest.raises(ValueError, match="images must have shape"):
        view_probs(model, np.zeros((2, 2, 28, 28, 1), np.float32))


def _synthetic(n, rng, noise=0.0, shift=0.0):
    """Two classes; the model errs on a share ``0.02 + noise``; its confidence does not show the
    errors (confidently wrong), the shadow agrees with it always, but self-agreement is low on
    errors: only self-agreement separates them."""
    labels = rng.integers(0, 2, size=n)
    emb = np.where(labels[:, None] == 1, [1.0, 0, 0, 0], [-1.0, 0, 0, 0]) + rng.normal(scale=0.3, size=(n, 4))
    emb[:, 1] += shift
    flip = rng.uniform(size=n) < 0.02 + noise
    pred = np.where(flip, 1 - labels, labels)
    conf = rng.uniform(0.9, 1.0, n)
    probs = np.where(pred[:, None] == 1, np.column_stack([1 - conf, conf]), np.column_stack([conf, 1 - conf]))
    sa = np.where(flip, rng.uniform(0.0, 0.5, n), rng.uniform(0.6, 1.0, n))
    return OracleReference(probs, emb, labels, probs.copy()), sa


def _shifted(rng):
    parts = [_synthetic(300, rng, noise=nz, shift=s) for s, nz in ((0.3, 0.1), (0.6, 0.3), (1.0, 0.5))]
    ref = OracleReference(*(np.concatenate([getattr(r, f) for r, _ in parts])
                            for f in ("probs", "embeddings", "labels", "shadow_probs")))
    return ref, np.concatenate([sa for _, sa in parts]), np.repeat(["a/1", "b/1", "c/1"], 300)


SMALL = AssessorConfig(k=5, cv_folds=3, synthesis=WindowSynthesis(n_windows=90, min_size=50, max_size=100))


def test_assessor_uses_self_agreement_when_the_references_carry_it():
    rng = np.random.default_rng(3)
    ref, ref_sa = _synthetic(3000, rng)
    sref, s_sa, conds = _shifted(rng)
    plain = ShiftedReference(sref, conds)
    with_sa = plain.with_self_agreement(s_sa, ref_sa)
    # Arrays round-trip; type exclusion keeps the rows' self-agreement aligned.
    back = ShiftedReference.from_arrays(with_sa.to_arrays())
    assert np.array_equal(back.self_agreement, s_sa) and np.array_equal(back.reference_self_agreement, ref_sa)
    assert not ShiftedReference.from_arrays(plain.to_arrays()).has_self_agreement
    kept = with_sa.without_types(["b"])
    assert np.array_equal(kept.self_agreement, s_sa[conds != "b/1"])
    with pytest.raises(ValueError, match="both"):
        ShiftedReference(sref, conds, s_sa, None)
    with pytest.raises(ValueError, match="lie in"):
        plain.with_self_agreement(s_sa + 2, ref_sa)

    a_sa = OnlineAssessor(SMALL).fit(ref, with_sa)
    a_plain = OnlineAssessor(SMALL).fit(ref, plain)
    assert a_sa.uses_self_agreement and not a_plain.uses_self_agreement
    assert not OnlineAssessor(AssessorConfig(k=5, cv_folds=3, self_agreement=False,
                                             synthesis=SMALL.synthesis)).fit(ref, with_sa).uses_self_agreement
    test, t_sa = _synthetic(2000, rng, noise=0.3, shift=0.6)
    with pytest.raises(ValueError, match="pass self_agreement"):
        a_sa.score(test.probs, test.embeddings, test.shadow_probs)
    s = a_sa.score(test.probs, test.embeddings, test.shadow_probs, t_sa)
    assert np.array_equal(s.components["self_agreement"], t_sa)
    assert a_sa.features(__import__("daic.oracles.batch", fromlist=["OracleBatch"]).OracleBatch(
        test.probs, test.embeddings, test.shadow_probs, t_sa)).shape[1] == len(FEATURES) + 1
    assert SELF_AGREEMENT_FEATURE not in FEATURES
    # Only self-agreement separates errors here: with it the per-input P(correct) ranks errors
    # far better than without (AUROC), and the plain assessor ignores the argument.
    p_plain = a_plain.score(test.probs, test.embeddings, test.shadow_probs, t_sa).p_correct

    def auroc(p, y):
        pos, neg = p[y], p[~y]
        return (pos[:, None] > neg[None, :]).mean()

    assert auroc(s.p_correct, test.correct) > 0.95 > auroc(p_plain, test.correct) + 0.2
    refit = a_sa.refit_with_labels(test.probs[:200], test.embeddings[:200], test.shadow_probs[:200],
                                   test.labels[:200], t_sa[:200])
    assert refit.score(test.probs, test.embeddings, test.shadow_probs, t_sa).p_correct.shape == (2000,)
    with pytest.raises(ValueError, match="pass self_agreement"):
        a_sa.refit_with_labels(test.probs[:200], test.embeddings[:200], test.shadow_probs[:200], test.labels[:200])


def test_the_one_rule_takes_the_self_agreement_only_over_the_assessors_views():
    class Scoring:
        uses_self_agreement = True
        self_agreement_views = "stretch:0"

    parts = [(np.array([0.1, 0.2]), "stretch:0"), (np.array([0.3]), "stretch:0")]
    np.testing.assert_array_equal(for_assessor(Scoring(), parts, "a part"), [0.1, 0.2, 0.3])
    assert for_assessor(Scoring(), [], "a part").shape == (0,)
    with pytest.raises(ValueError, match="but a part carries none"):
        for_assessor(Scoring(), parts + [(None, None)], "a part")
    with pytest.raises(ValueError, match="a part's self-agreement is over views 'stretch:0,tophat:7', "
                                         "the assessor's reference over 'stretch:0'"):
        for_assessor(Scoring(), [(np.array([0.5]), "stretch:0,tophat:7")], "a part")
    unrecorded = Scoring()
    unrecorded.self_agreement_views = None  # a reference that did not record its views is not trusted
    with pytest.raises(ValueError, match="over None"):
        for_assessor(unrecorded, parts, "a part")
    assert for_assessor(object(), [(None, None)], "a part") is None  # an assessor without it takes none
