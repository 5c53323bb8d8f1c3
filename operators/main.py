"""Entry point for ``kopf run -m daic.operators.main``: the handlers on kopf's default registry,
configured from the environment (see ``OperatorConfig``)."""
from __future__ import annotations

import kopf

from daic.operators.handlers import OperatorConfig, build_registry

registry, operator = build_registry(OperatorConfig.from_env(), kopf.get_default_registry())
