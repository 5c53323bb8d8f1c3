"""The labeling task and its answers, on the object store (no HTTP here).

Every answer is its own object, ``cycles/<cycle>/labeling/answers/<key part>.json``, where the key
part is the input id through :func:`daic.storage.keys.id_to_key_part` (ids such as the sidecar's
``<request id>:<row>`` are not key characters); the object holds the id itself.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from daic.storage.parsed import CorruptObject, parse_object
from daic.storage import KeyNotFound, ObjectStore
from daic.storage.keys import id_to_key_part

UNSURE = "unsure"
_CYCLE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


def check_cycle(cycle: object) -> str:
    """A cycle name usable as one key part (letters, digits, ``._-``, not starting with ``.``); ValueError."""
    if not isinstance(cycle, str) or not _CYCLE.fullmatch(cycle):
        raise ValueError(f"invalid cycle name {str(cycle)[:80]!r}: use 1-128 letters, digits and ._- "
                         "(not starting with '.')")
    return cycle


class LabelingTask(BaseModel):
    """What humans are asked to label in one cycle.

    ``show_model_answer`` (default False): labeling is blind unless the cycle asks otherwise. A
    labeler who sees "model says 8" is pulled towards 8 (anchoring), which biases the offline
    accuracy estimate upwards exactly where the model is wrong.
    """

    cycle: str
    ids: list[str] = Field(min_length=1)
    predictions: list[int]
    confidences: list[float]
    classes: list[str] = Field(default_factory=lambda: [str(d) for d in range(10)], min_length=2)
    budget: int | None = Field(None, ge=1)
    show_model_answer: bool = False
    created: float = Field(default_factory=time.time)

    @field_validator("cycle")
    @classmethod
    def _cycle_name(cls, v: str) -> str:
        return check_cycle(v)

    @field_validator("ids")
    @classmethod
    def _ids_are_keys(cls, v: list[str]) -> list[str]:
        for i in v:
            id_to_key_part(i)  # refused here, when the task is made, not when an answer arrives
        return v

    @model_validator(mode="after")
    def _same_lengths(self) -> "LabelingTask":
        n = len(self.ids)
        if len(self.predictions) != n or len(self.confidences) != n:
            raise ValueError(f"ids, predictions and confidences must have the same length "
                             f"({n}, {len(self.predictions)}, {len(self.confidences)})")
        if len(set(self.ids)) != n:
            raise ValueError("ids must be unique")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be unique")
        if any(not 0 <= p < len(self.classes) for p in self.predictions):
            raise ValueError(f"predictions must be class indices 0..{len(self.classes) - 1}")
        return self

    @field_validator("confidences")
    @classmethod
    def _in_unit_interval(cls, v: list[float]) -> list[float]:
        if any(not (0.0 <= c <= 1.0) for c in v):
            raise ValueError("confidences must lie in [0, 1]")
        return v


class Answer(BaseModel):
    """One labeler's answer to one input (None = unsure / skipped)."""

    id: str
    label: int | None  # None = unsure/skip
    labeler: str = "anonymous"
    time: float = Field(default_factory=time.time)


@dataclass
class LabelBook:
    """Reads and writes one cycle's task and answers."""

    store: ObjectStore
    cycle: str
    _task: LabelingTask | None = field(default=None, init=False, repr=False)
    _inputs: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_cycle(self.cycle)

    @property
    def prefix(self) -> str:
        # Under cycles/, not labels/: the trainer reads every batch under labels/.
        return f"cycles/{self.cycle}/labeling/"

    @classmethod
    def create(cls, store: ObjectStore, task: LabelingTask, inputs: np.ndarray) -> "LabelBook":
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.shape != (len(task.ids), 28, 28):
            raise ValueError(f"inputs must have shape ({len(task.ids)}, 28, 28), got {inputs.shape}")
        book = cls(store, task.cycle)
        store.put_arrays(book.prefix + "task-inputs.npz", inputs=inputs, ids=np.array(task.ids))
        store.put_json(book.prefix + "task.json", task.model_dump())  # written last: marks the task complete
        return book

    @property
    def task(self) -> LabelingTask:
        """The cycle's task; KeyNotFound when there is none, CorruptObject (a StorageError: the page
        answers 503 naming the key) when ``task.json`` is not a task of this cycle."""
        if self._task is None:
            key = self.prefix + "task.json"
            try:
                raw = self.store.get_json(key)
            except KeyNotFound:
                raise KeyNotFound(f"no labeling task for cycle {self.cycle!r} in {self.store.url}") from None
            task = parse_object(self.store, key, LabelingTask, raw)
            if task.cycle != self.cycle:
                raise CorruptObject(f"{self.store.url}: object {key!r} is the task of cycle {task.cycle!r}")
            self._task = task
        return self._task

    @property
    def inputs(self) -> np.ndarray:
        """(n, 28, 28) images, one per task id; CorruptObject naming the key when they are not."""
        if self._inputs is None:
            key = self.prefix + "task-inputs.npz"
            arrays = self.store.get_arrays(key)
            inputs = arrays.get("inputs")
            want = (len(self.task.ids), 28, 28)
            if inputs is None or inputs.shape != want or inputs.dtype.kind != "f" or not np.isfinite(inputs).all():
                got = "no array 'inputs'" if inputs is None else f"{inputs.dtype} of shape {inputs.shape}"
                raise CorruptObject(f"{self.store.url}: object {key!r}: 'inputs' must be finite numbers of "
                                    f"shape {want}, got {got}")
            self._inputs = inputs
        return self._inputs

    def input_of(self, sample_id: str) -> np.ndarray:
        return self.inputs[self._index(sample_id)]

    def check_id(self, sample_id: str) -> None:
        """ValueError naming the id when it is not one of the task's inputs."""
        self._index(sample_id)

    def _index(self, sample_id: str) -> int:
        try:
            return self.task.ids.index(sample_id)
        except ValueError:
            raise ValueError(f"id {sample_id!r} is not part of cycle {self.cycle!r}'s task") from None

    def record(self, sample_id: str, label: int | str | None, labeler: str = "anonymous") -> Answer:
        """Store one answer (a class index, or "unsure"/None); later answers replace earlier ones."""
        self._index(sample_id)
        if label is None or label == UNSURE:
            value = None
        else:
            if isinstance(label, bool) or not isinstance(label, int):
                raise ValueError(f"label must be a class index 0..{len(self.task.classes) - 1} or 'unsure', got {label!r}")
            if not 0 <= label < len(self.task.classes):
                raise ValueError(f"label {label} out of range 0..{len(self.task.classes) - 1}")
            value = label
        answer = Answer(id=sample_id, label=value, labeler=labeler)
        self.store.put_json(self.answer_key(sample_id), answer.model_dump())
        return answer

    def answer_key(self, sample_id: str) -> str:
        return f"{self.prefix}answers/{id_to_key_part(sample_id)}.json"

    def answers(self) -> dict[str, Answer]:
        """id -> answer; if an id has two objects (a store written before ids were encoded), the later wins."""
        keys = self.store.list(self.prefix + "answers/")
        out: dict[str, Answer] = {}
        for answer in (self._answer(k) for k in keys):
            if answer.id not in out or answer.time >= out[answer.id].time:
                out[answer.id] = answer
        return out

    def _answer(self, key: str) -> Answer:
        """One stored answer, checked against the task: an answer to an input of the task, stored
        under that input's key, with a label among the task's classes; CorruptObject naming the
        key otherwise (a label 99 would otherwise be exported as a training label)."""
        answer = parse_object(self.store, key, Answer, self.store.get_json(key))
        # the key of its input; before ids were encoded, the raw id (the docstring of answers())
        if answer.id not in set(self.task.ids) or key not in (self.answer_key(answer.id),
                                                              f"{self.prefix}answers/{answer.id}.json"):
            raise CorruptObject(f"{self.store.url}: object {key!r} answers {answer.id[:80]!r}, which is not "
                                f"the input this key holds answers to")
        if answer.label is not None and not 0 <= answer.label < len(self.task.classes):
            raise CorruptObject(f"{self.store.url}: object {key!r}: label {answer.label} is not a class "
                                f"index 0..{len(self.task.classes) - 1}")
        return answer

    def progress(self) -> tuple[int, int]:
        """(answered, total): unsure counts as answered — a person looked at it."""
        return len(self.answers()), len(self.task.ids)

    def labeled(self) -> tuple[list[str], np.ndarray]:
        """Ids and labels of answered, non-unsure inputs, in task order."""
        answers = self.answers()
        ids = [i for i in self.task.ids if i in answers and answers[i].label is not None]
        return ids, np.array([answers[i].label for i in ids], dtype=np.int64)

    def export_batch(self, name: str = "batch-web.npz") -> str:
        """Write the labeled inputs as a trainer batch (images, labels, ids); returns the key."""
        ids, labels = self.labeled()
        if not ids:
            raise ValueError(f"cycle {self.cycle!r} has no labeled inputs yet")
        images = np.stack([self.input_of(i) for i in ids]).astype(np.float32)
        key = f"labels/{self.cycle}/{name}"
        self.store.put_arrays(key, images=images, labels=labels, ids=np.array(ids))
        return key
