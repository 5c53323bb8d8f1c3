"""A real Kubernetes control plane for the tests: kube-apiserver and etcd, as kubebuilder's envtest.

The binaries are built from their Go modules at the versions pinned in ``tests/cluster/k8sbin`` and
``tests/cluster/etcdbin`` (``make control-plane``, into ``.cache/k8s/``). :mod:`.control_plane`
starts them on loopback ports with certificates made by :mod:`.certs`; :mod:`.upstream` fetches
the CRDs of Seldon Core, KubeRay and the Prometheus Operator from the Go module proxy at pinned
versions; :mod:`.fixtures` is the pytest session fixture. There is no kubelet, scheduler or
controller-manager: objects are stored, validated, defaulted, authorised and watched for real,
but no pod ever runs and no built-in controller acts (a Namespace is never finalised on delete).

With ``DAIC_TEST_KUBECONFIG`` set, the same tests run against that cluster instead (docs/cluster.md).
"""
