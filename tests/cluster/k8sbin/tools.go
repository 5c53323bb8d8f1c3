//go:build tools

package k8sbin

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
