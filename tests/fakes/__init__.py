"""Small fakes at HTTP/process boundaries the operator tests cannot have for real here.

No Kubernetes API server, Kubeflow Pipelines backend or pseudo-oracle sidecar can run on the test
machines, so these serve just the HTTP endpoints the operator calls, with the real client
libraries (kopf, kubernetes, kfp, requests) on the other side. Nothing of daic itself is faked.
"""
