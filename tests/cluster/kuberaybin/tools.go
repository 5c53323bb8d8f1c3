//go:build tools

package kuberaybin

import _ "github.com/ray-project/kuberay/ray-operator"
