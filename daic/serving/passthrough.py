"""A Seldon ``TRANSFORMER`` that gives every request back unchanged (for the seldon-core wrapper).

It stands where an input filter stands in the graph (issue 21's remedy) when only the graph's
shape matters: the serving benchmark and the contract tests run a real two-node graph with it
(``LocalStack(StackConfig(transformer_class="daic.serving.passthrough.Passthrough"))``), so the
executor's four events per prediction reach the sidecar through real microservices.
"""
from __future__ import annotations

from typing import Any


class Passthrough:
    def transform_input_raw(self, request: Any) -> Any:
        """The request as it came (the wrapper answers it as JSON)."""
        return request

    def health_status_raw(self) -> dict:
        return {"status": {"status": "SUCCESS"}}
