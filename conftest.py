"""Fixtures shared by tests/ and components/ (one definition, so one instance per session)."""
# `kube`: a real kube-apiserver + etcd per session, or the cluster in $DAIC_TEST_KUBECONFIG (tests/cluster).
from cluster.fixtures import kube  # noqa: F401
