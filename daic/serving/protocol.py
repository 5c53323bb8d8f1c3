"""The model server's response, in the Seldon Core v1 JSON protocol (pure; numpy only).

``data`` carries the class probabilities (N, 10) with ``names`` "0".."9", in the encoding the
request used (``ndarray`` or ``tensor``). What the pseudo-oracles need besides the probabilities
travels in ``meta.tags`` (a ``google.protobuf.Value`` map in the Seldon proto, so nested lists
survive the REST and gRPC paths and the executor's request logger unchanged):

=====================  ===========================================================
``daic.model``         model name in the registry (``mnist``)
``daic.model_version`` the version that produced this response (``v0003``)
``daic.embeddings``    (N, D) penultimate activations of the champion
``daic.shadow_probs``  (N, 10) softmax of the shadow model (disagreement oracle)
``daic.self_agreement`` (N,) the champion's agreement with itself under test-time
                       views (daic.oracles.self_agreement); absent when the server
                       is set to compute none (``self_agreement_views: off``)
``daic.self_agreement.views`` the views it was computed over, as text (``stretch:0``)
=====================  ===========================================================

The shadow model runs inside the model server, next to the champion, so every response already
holds both outputs and the sidecar needs no second model call (docs/serving.md).

**Every ``daic.*`` tag is reserved** (:func:`is_reserved`): the sidecar scores, records and queues
for labeling by them, so a client must not be able to set one. Who may set which:

=============================================  ==============================================
the model server (set after the strip)         ``daic.model``, ``daic.model_version``,
                                               ``daic.embeddings``, ``daic.shadow_probs``,
                                               ``daic.self_agreement`` and its ``.views``, the
                                               abstain decision (:mod:`daic.serving.abstain`)
the input filter TRANSFORMER in front          ``daic.filter``, ``daic.filter.gate``,
(:mod:`daic.serving.filter`)                   ``daic.filtered`` (:data:`TRANSFORMER_TAGS`)
=============================================  ==============================================

The filter drops every ``daic.*`` tag of the client's request before it sets its own; the model
server echoes the request's other tags, and of its ``daic.*`` tags only :data:`TRANSFORMER_TAGS`
and only when told the input filter stands in front (its ``behind_filter`` parameter,
daic.serving.config, rendered by daic.serving.manifest and daic.serving.stack; default off).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

TAG_MODEL = "daic.model"
TAG_VERSION = "daic.model_version"
TAG_EMBEDDINGS = "daic.embeddings"
TAG_SHADOW = "daic.shadow_probs"
TAG_SELF_AGREEMENT = "daic.self_agreement"
TAG_SELF_AGREEMENT_VIEWS = "daic.self_agreement.views"
#: The longest views text read from a response (the model server's is validated at start).
MAX_VIEWS_CHARS = 200
#: Tags of the input filter TRANSFORMER (daic.serving.filter): the version served (None: pass-through),
#: its gate mode (with the version: which assessor the sidecar scores with), per input 0/1 filtered.
TAG_FILTER = "daic.filter"
TAG_FILTER_GATE = "daic.filter.gate"
TAG_FILTERED = "daic.filtered"
#: The ``daic.*`` tags a model server behind the input filter takes from its request (the filter's).
TRANSFORMER_TAGS = frozenset({TAG_FILTER, TAG_FILTER_GATE, TAG_FILTERED})
RESERVED_PREFIX = "daic."
CLASS_NAMES = [str(i) for i in range(10)]
#: Decimal places kept in JSON: float32 carries ~7 significant digits; more only lengthens
#: the payload.
_DECIMALS = 6


def _rounded(array: np.ndarray) -> list:
    return np.round(np.asarray(array, dtype=np.float64), _DECIMALS).tolist()


def is_reserved(tag: Any) -> bool:
    """Whether ``tag`` is in daic's namespace (``daic.``, in any case: a look-alike is refused too)."""
    return isinstance(tag, str) and tag.lower().startswith(RESERVED_PREFIX)


def without_reserved(tags: Any, keep: Iterable[str] = ()) -> dict:
    """``tags`` (a request's ``meta.tags``; None or not an object: none) without the reserved ``daic.*``
    tags, except those named in ``keep`` (exact names)."""
    if not isinstance(tags, dict):
        return {}
    keep = frozenset(keep)
    return {k: v for k, v in tags.items() if k in keep or not is_reserved(k)}


def build_response(
    probs: np.ndarray,
    embeddings: np.ndarray,
    shadow_probs: np.ndarray,
    *,
    model: str,
    version: str,
    encoding: str = "ndarray",
    request_meta: dict | None = None,
    metrics: list[dict] | None = None,
    trusted_tags: Iterable[str] = (),
    self_agreement: np.ndarray | None = None,
    self_agreement_views: str | None = None,
) -> dict:
    """A SeldonMessage dict; ``puid`` and request tags from ``request_meta`` are echoed as the
    seldon-core wrapper does for its default path, except the reserved ``daic.*`` tags: of those only
    ``trusted_tags`` (:data:`TRANSFORMER_TAGS` behind the input filter), and the model's own are set
    here, after the strip."""
    probs = np.asarray(probs)
    if encoding == "tensor":
        data: dict[str, Any] = {"tensor": {"shape": list(probs.shape), "values": _rounded(probs.ravel())}}
    elif encoding == "ndarray":
        data = {"ndarray": _rounded(probs)}
    else:
        raise ValueError(f"encoding must be 'ndarray' or 'tensor', got {encoding!r}")
    data["names"] = list(CLASS_NAMES)
    request_meta = request_meta if isinstance(request_meta, dict) else {}
    tags = without_reserved(request_meta.get("tags"), trusted_tags)
    tags.update({
        TAG_MODEL: model,
        TAG_VERSION: version,
        TAG_EMBEDDINGS: _rounded(embeddings),
        TAG_SHADOW: _rounded(shadow_probs),
    })
    if (self_agreement is None) != (self_agreement_views is None):
        raise ValueError("give both self_agreement and self_agreement_views, or neither")
    if self_agreement is not None:
        tags[TAG_SELF_AGREEMENT] = _rounded(self_agreement)
        tags[TAG_SELF_AGREEMENT_VIEWS] = self_agreement_views
    meta: dict[str, Any] = {"tags": tags}
    if request_meta.get("puid"):
        meta["puid"] = request_meta["puid"]
    if metrics:
        meta["metrics"] = metrics
    return {"data": data, "meta": meta}


@dataclass(frozen=True)
class ModelOutputs:
    """What the sidecar reads back from a logged response."""

    probs: np.ndarray  # (N, C) float64
    embeddings: np.ndarray  # (N, D) float64
    shadow_probs: np.ndarray  # (N, C) float64
    model: str
    version: str
    #: (N,) float64 in [0, 1] and the views' text, both or neither (a server set to compute none)
    self_agreement: np.ndarray | None = None
    self_agreement_views: str | None = None


def _array(value: Any, field: str, shape: Any = None) -> np.ndarray:
    """``value`` as float64 (reshaped to ``shape`` when given); ValueError naming ``field`` when it is
    not a numeric array (objects, strings, ragged rows, a shape that does not fit)."""
    try:
        array = np.asarray(value, dtype=np.float64)
        return array if shape is None else array.reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{field} is not a numeric array: {exc}") from None


def parse_response(message: Any) -> ModelOutputs:
    """Read probabilities and the daic tags from a response message; ValueError names what is
    missing or malformed (a response from a model server that is not daic's, for example)."""
    if not isinstance(message, dict):
        raise ValueError(f"response must be a JSON object, got {type(message).__name__}")
    data = message.get("data")
    if not isinstance(data, dict):
        raise ValueError("response has no 'data' object")
    if "ndarray" in data:
        probs = _array(data["ndarray"], "response data.ndarray")
    elif "tensor" in data and isinstance(data["tensor"], dict):
        tensor = data["tensor"]
        probs = _array(tensor.get("values"), "response data.tensor", tensor.get("shape"))
    else:
        raise ValueError("response data has neither 'ndarray' nor 'tensor'")
    if probs.ndim != 2:
        raise ValueError(f"response probabilities must be (N, C), got shape {probs.shape}")
    meta = message.get("meta") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("tags") or {}, dict):
        raise ValueError("response meta and meta.tags must be objects")
    tags = meta.get("tags") or {}
    missing = [t for t in (TAG_VERSION, TAG_EMBEDDINGS, TAG_SHADOW) if t not in tags]
    if missing:
        raise ValueError(f"response meta.tags lacks {', '.join(missing)} (not a daic model server?)")
    embeddings = _array(tags[TAG_EMBEDDINGS], f"meta.tags.{TAG_EMBEDDINGS}")
    shadow = _array(tags[TAG_SHADOW], f"meta.tags.{TAG_SHADOW}")
    n = probs.shape[0]
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise ValueError(f"meta.tags.{TAG_EMBEDDINGS} must be ({n}, D), got {embeddings.shape}")
    if shadow.shape != probs.shape:
        raise ValueError(f"meta.tags.{TAG_SHADOW} must be {probs.shape}, got {shadow.shape}")
    self_agreement, views = _self_agreement(tags, n)
    return ModelOutputs(
        probs=probs,
        embeddings=embeddings,
        shadow_probs=shadow,
        model=str(tags.get(TAG_MODEL, "")),
        version=str(tags[TAG_VERSION]),
        self_agreement=self_agreement,
        self_agreement_views=views,
    )


def _self_agreement(tags: dict, n: int) -> tuple[np.ndarray | None, str | None]:
    """The optional ``daic.self_agreement`` (n,) in [0, 1] and its views' text, both or neither;
    ValueError naming the tag otherwise."""
    has_values, has_views = TAG_SELF_AGREEMENT in tags, TAG_SELF_AGREEMENT_VIEWS in tags
    if not has_values and not has_views:
        return None, None
    if has_values != has_views:
        present, absent = ((TAG_SELF_AGREEMENT, TAG_SELF_AGREEMENT_VIEWS) if has_values
                           else (TAG_SELF_AGREEMENT_VIEWS, TAG_SELF_AGREEMENT))
        raise ValueError(f"meta.tags.{present} needs meta.tags.{absent} beside it")
    views = tags[TAG_SELF_AGREEMENT_VIEWS]
    if not isinstance(views, str) or not views or len(views) > MAX_VIEWS_CHARS:
        raise ValueError(f"meta.tags.{TAG_SELF_AGREEMENT_VIEWS} must be a non-empty text of at most "
                         f"{MAX_VIEWS_CHARS} characters (like 'stretch:0')")
    values = _array(tags[TAG_SELF_AGREEMENT], f"meta.tags.{TAG_SELF_AGREEMENT}")
    if values.shape != (n,):
        raise ValueError(f"meta.tags.{TAG_SELF_AGREEMENT} must be ({n},), got {values.shape}")
    if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
        raise ValueError(f"meta.tags.{TAG_SELF_AGREEMENT} must lie in [0, 1]")
    return values, views
