"""Human labeling of sampled operational inputs: the task format, the answers, and the web page.

A cycle's labeling task lives at ``cycles/<cycle>/labeling/task.json`` (+ ``task-inputs.npz``); each
answer is its own object ``cycles/<cycle>/labeling/answers/<id>.json`` written atomically, so answers survive a page
reload, a server restart and two people labeling at once. ``LabelBook.export_batch`` turns the
answers into a batch under ``labels/<cycle>/`` in the format the trainer reads (docs/CONTRACTS.md).
"""
from .book import LabelBook, LabelingTask, UNSURE

__all__ = ["LabelBook", "LabelingTask", "UNSURE"]
