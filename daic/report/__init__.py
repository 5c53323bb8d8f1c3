"""``report.html``: what happened in a run, from the records in the object store.

Everything is read back from the store (``runs/<run>/timeline.json``, ``cycles/<id>/``,
``labels/<id>/``, ``models/``), so ``daic report`` works after any run, local or on a cluster.
"""
from .build import build_report

__all__ = ["build_report"]
