"""Checks for daic's cluster install (``manifests/``, ``images/``) that need no cluster.

No Kubernetes API server runs on a development machine, so what ``kubectl apply -k`` would
reject, or what an operator would reject later, is checked here, offline:

- :mod:`daic.deploy.render`: build a kustomization with ``kubectl kustomize`` into objects.
- :mod:`daic.deploy.pods`: find every pod template inside any object (built-in or custom kind).
- :mod:`daic.deploy.schemas`: built-in kinds against the Kubernetes OpenAPI schemas
  (``kubernetes-validate``), custom resources against a CRD's ``openAPIV3Schema``.
- :mod:`daic.deploy.operator_rules`: what Seldon Core v1, KubeRay and the Prometheus Operator
  require of their resources beyond their (loose) CRD schemas.
- :mod:`daic.deploy.policy`: daic's own rules (non-root, no privilege escalation, resource
  requests, no secret values in manifests).
- :mod:`daic.deploy.dockerfile`: a small Dockerfile reader and the image rules.

Every check returns a list of ``Problem`` (empty when all is well) rather than raising on the
first, so one run shows everything to fix. ``python -m daic.deploy check DIR`` runs them all.
"""
from __future__ import annotations

from daic.deploy.problems import Problem

__all__ = ["Problem"]
