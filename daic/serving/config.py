"""Settings of the model server, from Seldon graph parameters with environment fallbacks.

Seldon passes the graph's ``parameters`` to the model class's constructor (typed: STRING, INT,
FLOAT); anything not given there is read from the environment, then defaults. Validation lives
here once, so a bad value fails the pod at start with a message naming the setting.

============================  ======================  =========================================
parameter                     environment             meaning
============================  ======================  =========================================
``store_url``                 ``DAIC_STORE``          object store holding the registry
``model_name``                ``DAIC_MODEL_NAME``     registry name (``mnist``)
``model_version``             ``DAIC_MODEL_VERSION``  ``champion`` (follow the pointer, reload
                                                      live) or a version to pin
``reload_interval_s``         ``DAIC_RELOAD_INTERVAL_S`` how often to check the champion pointer
``max_batch``                 ``DAIC_MAX_BATCH``      most inputs per request (HTTP 400 above)
``torch_threads``             ``DAIC_TORCH_THREADS``  intra-op threads per worker
``abstain``                   ``DAIC_ABSTAIN``        ``service`` (follow the abstain policy
                                                      record), ``off`` or a pinned bound
                                                      (daic.serving.abstainer)
``abstain_url``               ``DAIC_ABSTAIN_URL``    the sidecar's loopback ``/assess``
``abstain_timeout_ms``        ``DAIC_ABSTAIN_TIMEOUT_MS`` longest wait for it (then: no abstain)
``behind_filter``             ``DAIC_BEHIND_FILTER``  the input filter TRANSFORMER stands in front:
                                                      keep its ``daic.filter*`` tags from the
                                                      request (default false: every ``daic.*``
                                                      tag of a request is dropped; the manifest
                                                      and the local stack set it with the filter)
``self_agreement_views``      ``DAIC_SELF_AGREEMENT_VIEWS`` the test-time views of the champion's
                                                      self-agreement sent in ``daic.self_agreement``
                                                      (daic.oracles.self_agreement; default the
                                                      served ``stretch:0,median:3``; ``off``: none, and a
                                                      version registered with it is scored
                                                      without its assessor, unscored)
============================  ======================  =========================================
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daic.oracles.self_agreement import SERVED_VIEWS, parse_views, views_text
from daic.serving.inputs import DEFAULT_MAX_BATCH

CHAMPION = "champion"
#: Most self-agreement views: each costs the model server one more forward pass per input.
MAX_VIEWS = 8
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,63}$")


@dataclass(frozen=True)
class ServerConfig:
    store_url: str | None = None
    model_name: str = "mnist"
    model_version: str = CHAMPION
    reload_interval_s: float = 15.0
    max_batch: int = DEFAULT_MAX_BATCH
    torch_threads: int = 1
    abstain: str = "service"
    abstain_url: str = "http://127.0.0.1:8301/assess"
    abstain_timeout_ms: float = 50.0
    behind_filter: bool = False
    self_agreement_views: str = views_text(SERVED_VIEWS)  # "stretch:0,median:3"

    def __post_init__(self) -> None:
        for field in ("model_name", "model_version"):
            value = getattr(self, field)
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValueError(f"{field} must be a name of letters, digits and ._- (at most 63), got {value!r}")
        if not self.reload_interval_s > 0:
            raise ValueError(f"reload_interval_s must be > 0 seconds, got {self.reload_interval_s!r}")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if isinstance(self.torch_threads, bool) or not isinstance(self.torch_threads, int) or self.torch_threads < 1:
            raise ValueError(f"torch_threads must be a positive integer, got {self.torch_threads!r}")
        if not isinstance(self.behind_filter, bool):
            raise ValueError(f"behind_filter must be true or false, got {self.behind_filter!r}")
        self.views  # a bad self_agreement_views fails here, named
        self.abstainer()  # a bad abstain, abstain_url or abstain_timeout_ms fails here, named

    def abstainer(self, read_policy=None):
        """The :class:`daic.serving.abstainer.Abstainer` these settings describe."""
        from daic.serving.abstainer import Abstainer

        return Abstainer(self.abstain, self.abstain_url, self.abstain_timeout_ms / 1000.0, read_policy)

    @property
    def views(self) -> tuple[tuple[str, float], ...]:
        """The parsed ``self_agreement_views``; () for ``off``."""
        if not isinstance(self.self_agreement_views, str):
            raise ValueError(f"self_agreement_views must be text like 'stretch:0' or 'off', "
                             f"got {self.self_agreement_views!r}")
        if self.self_agreement_views.strip().lower() == "off":
            return ()
        if len(self.self_agreement_views) > 200:
            raise ValueError(f"self_agreement_views must be at most 200 characters, got {len(self.self_agreement_views)}")
        try:
            views = parse_views(self.self_agreement_views)
        except ValueError as exc:
            raise ValueError(f"self_agreement_views: {exc}") from None
        if len(views) > MAX_VIEWS:
            raise ValueError(f"self_agreement_views names {len(views)} views; at most {MAX_VIEWS} (each is one more "
                             "forward pass of the champion per input)")
        return views

    @property
    def follows_champion(self) -> bool:
        return self.model_version == CHAMPION

    @classmethod
    def resolve(cls, params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> "ServerConfig":
        """Parameters first, then ``DAIC_*`` environment variables, then defaults."""
        env = os.environ if env is None else env
        unknown = set(params) - set(_ENV)
        if unknown:
            raise ValueError(f"unknown model parameter(s) {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(sorted(_ENV))}")
        values: dict[str, Any] = {}
        for name, (var, kind) in _ENV.items():
            if params.get(name) is not None:
                raw = params[name]
            elif env.get(var):
                raw = env[var]
            else:
                continue
            try:
                values[name] = kind(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{name} ({var}) must be {kind.__name__}, got {raw!r}") from None
        return cls(**values)


def boolean(raw: Any) -> bool:
    """A BOOL graph parameter (seldon-core hands a bool) or an environment string: true/false, 1/0,
    yes/no; ValueError otherwise (``resolve`` names the setting)."""
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("true", "1", "yes"):
        return True
    if word in ("false", "0", "no"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


_ENV: dict[str, tuple[str, Any]] = {
    "store_url": ("DAIC_STORE", str),
    "model_name": ("DAIC_MODEL_NAME", str),
    "model_version": ("DAIC_MODEL_VERSION", str),
    "reload_interval_s": ("DAIC_RELOAD_INTERVAL_S", float),
    "max_batch": ("DAIC_MAX_BATCH", int),
    "torch_threads": ("DAIC_TORCH_THREADS", int),
    "abstain": ("DAIC_ABSTAIN", str),
    "abstain_url": ("DAIC_ABSTAIN_URL", str),
    "abstain_timeout_ms": ("DAIC_ABSTAIN_TIMEOUT_MS", float),
    "behind_filter": ("DAIC_BEHIND_FILTER", boolean),
    "self_agreement_views": ("DAIC_SELF_AGREEMENT_VIEWS", str),
}
