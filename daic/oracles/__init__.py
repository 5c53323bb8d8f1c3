"""Pseudo-oracles and the online accuracy estimator (the low-cost half of DAIC).

Import from the submodules (``daic.oracles.reference``, ``daic.oracles.pipeline`` ...); this
package stays import-light so the registry can import the reference without scikit-learn.
"""
