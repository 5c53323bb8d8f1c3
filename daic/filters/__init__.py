"""The second remedy (Scanflow, Bravo-Rocca et al. 2021): an input filter in front of the champion.

A small restoration network (:mod:`daic.filters.network`) maps corrupted inputs back towards the
training distribution, so the unchanged champion classifies them again; a parameter-free canonical
form around it (contrast stretch, centre-of-mass re-centring) and a test-time alignment search
scored by the wrapped classifier's entropy (rotations; re-centring as a candidate) carry it to
corruptions it was never trained on. It is trained on Ray Train
by the same trainer as the classifier (:func:`daic.training.trainer.run_training` with the
filter's own per-worker loop, :mod:`daic.filters.worker`), registered as a version of its own
(``models/<classifier>-filter/``) with lineage to the classifier version it wraps
(:mod:`daic.filters.registry`), and served as a Seldon ``TRANSFORMER`` node
(:mod:`daic.serving.filter`).

Objectives (:mod:`daic.filters.objective`):

* on clean training images under generic corruption families (never the held-out ones): restore
  the clean image (MSE) and keep the frozen classifier right on the restored image (cross-entropy
  with the training labels: no new labels);
* on the cycle's unlabeled operational pool: information maximisation on the frozen classifier's
  outputs (SHOT, Liang et al. 2020): confident per input, diverse over the pool.

Per input, the gate (:mod:`daic.filters.gate`) sends only inputs that look off-distribution
through the filter: the filter's own correction above a clean-calibrated bound, or the wrapped
classifier uncertain about the raw input. The sidecar scores the wrapped model with an assessor
fitted on filtered references (:mod:`daic.filters.assessor`).
"""
