"""The pseudo-oracle sidecar: receives what Seldon's request logger posts, scores each prediction
with the fitted pseudo-oracles, keeps the online accuracy estimate, exports it (Prometheus, JSON)
and appends operational records to the object store. Runs in the main environment.

Import from the submodules; this package stays import-light.
"""
