"""``web``: the labeling web page (``daic label serve``, :mod:`daic.labeling`).

The task and the answers live in the object store (``cycles/<cycle>/labeling/task.json``, one answer
per object under ``cycles/<cycle>/labeling/answers/``, keyed by the encoded input id), so the page and this step need no connection to each
other: submitting writes the task, polling reads the answers. A further round of the same cycle
(labels asked for in rounds) submits the inputs so far plus the new ones: the task grows in place
and the page, which re-reads the task when everything shown is answered, offers the new inputs.
"""
from __future__ import annotations

from daic.labeling import LabelBook, LabelingTask
from daic.storage import KeyNotFound, ObjectStore

from .request import Answers, LabelRequest


class WebBackend:
    name = "web"

    def __init__(self, store: ObjectStore, show_model_answer: bool = False) -> None:
        self.store = store
        self.show_model_answer = show_model_answer

    def submit(self, request: LabelRequest) -> None:
        book = LabelBook(self.store, request.cycle)
        try:
            existing = book.task
        except KeyNotFound:
            existing = None
        wanted = [str(i) for i in request.ids]
        if existing is not None:
            if list(existing.ids) == wanted:
                return  # a retried step keeps the answers given so far
            if list(existing.ids) != wanted[:len(existing.ids)]:
                raise ValueError(f"cycle {request.cycle!r} already has a labeling task for other inputs")
            # a further round (labels in rounds): the task grows, the answers given so far stay
        task = LabelingTask(cycle=request.cycle, ids=[str(i) for i in request.ids],
                            predictions=[int(p) for p in request.predictions],
                            confidences=[float(min(1.0, max(0.0, c))) for c in request.confidences],
                            budget=len(request.ids), show_model_answer=self.show_model_answer)
        LabelBook.create(self.store, task, request.inputs)

    def poll(self, request: LabelRequest) -> Answers:
        return {i: a.label for i, a in LabelBook(self.store, request.cycle).answers().items()}
