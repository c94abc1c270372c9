#!/usr/bin/env bash
# Builds the real Kubernetes programs the lab runs, from Go modules, into a
# cache outside the clone keyed by version, so a second run reuses them:
#   $WGMESH_CACHE/bin/<name>-<version>   (plus a stable symlink $WGMESH_CACHE/bin/<name>)
# Usage: build-k8s.sh [program...]   (default: etcd kube-apiserver kube-controller-manager)
# Programs: etcd kube-apiserver kube-controller-manager kubelet kubectl kube-proxy kube-scheduler
#           containerd containerd-shim-runc-v2 ctr cnitool coredns kube-router-netpol
#           e2e.test agnhost (Kubernetes' e2e suite and its test image's program: make conformance)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CNI_VERSION=${CNI_VERSION:-v1.3.1}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
# kube-router's network policy controller, as k3s embeds it; its main is
# test/e2e/tools/netpol (a module of its own, which pins the version).
NETPOL_DIR=$(cd "$(dirname "$0")/netpol" && pwd)
CACHE=${WGMESH_CACHE:-$HOME/.cache/wgmesh}
BIN=$CACHE/bin
mkdir -p "$BIN" "$CACHE/src"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

# One builder at a time per cache (parallel test packages may all ask).
exec 9>"$CACHE/.build.lock"
flock 9

progs=("$@")
[ ${#progs[@]} -gt 0 ] || progs=(etcd kube-apiserver kube-controller-manager)

# k8s build module: pins each staging module that k8s.io/kubernetes replaces
# with ./staging/... to the published version (v1.X.Y -> v0.X.Y).
k8s_module() {
	local dir=$CACHE/src/k8s-$K8S_VERSION
	if [ ! -f "$dir/.ready" ]; then
		rm -rf "$dir"; mkdir -p "$dir"
		(cd "$dir" && go mod init k8sbin >/dev/null 2>&1 && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null)
		local mod
		mod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
		local staging=v0.${K8S_VERSION#v1.}
		{
			echo "module k8sbin"
			echo
			echo "go 1.26"
			echo
			echo "require k8s.io/kubernetes $K8S_VERSION"
			echo
			echo "replace ("
			grep '=> ./staging' "$mod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
			echo ")"
		} >"$dir/go.mod"
		cat >"$dir/tools.go" <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
		(cd "$dir" && go mod tidy >/dev/null)
		touch "$dir/.ready"
	fi
	echo "$dir"
}

simple_module() { # name module@version
	local dir=$CACHE/src/$1
	if [ ! -f "$dir/.ready" ]; then
		rm -rf "$dir"; mkdir -p "$dir"
		(cd "$dir" && go mod init "build$RANDOM" >/dev/null 2>&1 && printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$3" >tools.go && go get "$2" >/dev/null 2>&1 && go mod tidy >/dev/null)
		touch "$dir/.ready"
	fi
	echo "$dir"
}

build() { # name version dir pkg [go command: "build" (default) or "test -c" for a test binary]
	local out=$BIN/$1-$2
	if [ ! -x "$out" ]; then
		echo "build-k8s: building $1 $2 (cached in $BIN)" >&2
		# shellcheck disable=SC2086 # "test -c" is two words
		(cd "$3" && go ${5:-build} -trimpath -ldflags='-s -w' -o "$out.tmp" "$4") && mv "$out.tmp" "$out"
	fi
	ln -sfn "$1-$2" "$BIN/$1"
}

for p in "${progs[@]}"; do
	case $p in
	etcd)
		d=$(simple_module etcd-$ETCD_VERSION go.etcd.io/etcd/server/v3@$ETCD_VERSION go.etcd.io/etcd/server/v3)
		build etcd "$ETCD_VERSION" "$d" go.etcd.io/etcd/server/v3 ;;
	kube-apiserver|kube-controller-manager|kubelet|kubectl|kube-proxy|kube-scheduler)
		d=$(k8s_module)
		build "$p" "$K8S_VERSION" "$d" "k8s.io/kubernetes/cmd/$p" ;;
	agnhost)
		d=$(k8s_module)
		build agnhost "$K8S_VERSION" "$d" k8s.io/kubernetes/test/images/agnhost ;;
	e2e.test)
		# The suite is a test binary (~13 CPU-minutes cold). -mod=mod lets go
		# add its own requirements (ginkgo, gomega) to the build module.
		d=$(k8s_module)
		build e2e.test "$K8S_VERSION" "$d" k8s.io/kubernetes/test/e2e "test -c" ;;
	containerd|containerd-shim-runc-v2|ctr)
		d=$(simple_module containerd-$CONTAINERD_VERSION github.com/containerd/containerd/v2@$CONTAINERD_VERSION github.com/containerd/containerd/v2/cmd/containerd)
		build "$p" "$CONTAINERD_VERSION" "$d" "github.com/containerd/containerd/v2/cmd/$p" ;;
	coredns)
		d=$(simple_module coredns-$COREDNS_VERSION github.com/coredns/coredns@$COREDNS_VERSION github.com/coredns/coredns)
		build coredns "$COREDNS_VERSION" "$d" github.com/coredns/coredns ;;
	kube-router-netpol)
		# Keyed by kube-router's version and the main's own source.
		v=$(awk '$1 == "github.com/cloudnativelabs/kube-router/v2" {print $2}' "$NETPOL_DIR/go.mod")-$(cat "$NETPOL_DIR"/go.mod "$NETPOL_DIR"/go.sum "$NETPOL_DIR"/*.go | sha256sum | cut -c1-8)
		build kube-router-netpol "$v" "$NETPOL_DIR" . ;;
	cnitool)
		d=$(simple_module cnitool-$CNI_VERSION github.com/containernetworking/cni@$CNI_VERSION github.com/containernetworking/cni/cnitool)
		build cnitool "$CNI_VERSION" "$d" github.com/containernetworking/cni/cnitool ;;
	*) echo "build-k8s: unknown program $p" >&2; exit 2 ;;
	esac
done
