"""The AssessmentCycle operator (installed as ``daic.operators``; docs/operator.md).

The decisions are one pure function (:mod:`.reconcile`) over typed spec, status, observations and
actions; adapters (:mod:`.estimates`, :mod:`.runners`, :mod:`.seldon`, :mod:`.local_deployment`)
talk to the outside; :mod:`.driver` runs one pass with them; :mod:`.handlers` (kopf) and
:mod:`.local_controller` (``daic controller``) drive passes on a cluster and on one machine.
"""
