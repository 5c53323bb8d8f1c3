"""``daic demo``: the whole DAIC cycle on one machine, on real data, with a report at the end.

Train a first model on Ray, serve it (Seldon microservice + pseudo-oracle sidecar + gateway),
stream a clean then drifting scenario through it, let the local AssessmentCycle controller notice
the drop, run assess-and-improve with kfp.local (simulated or human labels), promote the better
model and keep streaming so the recovery shows; then write report.html.
"""
