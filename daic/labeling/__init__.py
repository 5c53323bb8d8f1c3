"""Human labeling of sampled operational inputs: the task format, the answers, and the web page.

A cycle's labeling task lives at ``cycles/<cycle>/labeling/task.json`` (+ ``task-inputs.npz``); each
answer is its own object ``cycles/<cycle>/labeling/answers/<key>.json`` (``<key>``: the input id through
:func:`daic.storage.keys.id_to_key_part`) written atomically, so answers survive a page reload, a server
restart and two people labeling at once. The page (:mod:`.app`) authenticates labelers by token
(:mod:`.auth`) and is blind by default. ``LabelBook.export_batch`` turns the
answers into a batch under ``labels/<cycle>/`` in the format the trainer reads (docs/CONTRACTS.md).
"""
from .book import LabelBook, LabelingTask, UNSURE

__all__ = ["LabelBook", "LabelingTask", "UNSURE"]
