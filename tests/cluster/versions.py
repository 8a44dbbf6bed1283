"""Every pinned version of the local test cluster, in one place.

Bumping a pin here changes the cache key, so the next ``build`` rebuilds only
what changed and old builds stay usable until removed.
"""

from __future__ import annotations

# Kubernetes 1.34 is the newest line that still supports containerd 1.6 and
# cgroup v1, which is what Debian bookworm ships.
KUBERNETES = "v1.34.4"
# Staging modules (k8s.io/api, client-go, ...) are published as v0.<minor>.<patch>.
KUBERNETES_STAGING = "v0." + KUBERNETES.removeprefix("v1.")
ETCD = "v3.6.16"
KWOK = "v0.8.0"
COREDNS = "v1.14.7"
# NetworkPolicy enforcement (its firewall controller only). v2.1.0 is the newest
# release the Go module proxy serves under the v2 module path.
KUBE_ROUTER = "v2.1.0"

# Used only when the machine has no Go >= 1.24 (fetched from the Go module
# proxy as the golang.org/toolchain module, as `GOTOOLCHAIN` would).
GO_TOOLCHAIN = "go1.26.8"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
