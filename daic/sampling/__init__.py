"""Offline assessment: which operational inputs humans label, and what those labels say.

When the online side raises a doubt, a design picks inputs from the logged pool for labeling and
its estimator turns the labels into an accuracy estimate with a confidence interval, using as few
labels as possible while finding many mispredictions (what retraining needs).

Modules (one job each):
    pool            `Pool`: ids, the oracle's per-input p_correct, predictions; `SampledPool`
    scan            a window's pool read from the Parquet records by column (locally or on Ray Data)
    sample          `Sample`, `Estimate` and the `Design` protocol (draw / estimate / max_draws)
    srs             simple random sampling, Clopper–Pearson interval (the baseline)
    stratified      strata on the oracle score, Neyman allocation, Korn–Graubard interval
    failure_seeking DeepEST-like adaptive failure-proportional sampling, Hansen–Hurwitz estimator
    active          active, model-assisted sampling with a difference (PPI-style) estimator
    dual            teach and measure: a mixture of active and failure-seeking draws, mixture weights
    pps             with-replacement PPS machinery and the skew-corrected interval they share
    calibration     recalibrating the oracle from the labels seen so far
    intervals       Clopper–Pearson, Wilson, and the Wilson label count of SRS
    sequential      batches of labels until the target half-width or the budget
    record          the assessment record and the label batches in the object store
    simulate        pools with known truth, for tests and benchmarks only

Figures: benchmarks/offline_estimation.py, recorded in docs/benchmarks/offline.md.
"""
