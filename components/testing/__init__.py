"""Test support for the pipeline components (not used by the product code path).

:mod:`.operational` writes operational records from a :mod:`daic.data.scenarios` stream through a
real classifier, the way the sidecar logs them; :mod:`.drifted` draws held-out inputs from a
scenario's drifted distribution (for measuring a model before and after a cycle); :mod:`.registry`
registers cheap untrained versions; :mod:`.fake_kube` is a tiny Kubernetes API server (custom
objects only, over real HTTP) for the cluster paths of ``train`` and ``deploy``.
"""
