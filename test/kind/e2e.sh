#!/usr/bin/env bash
# e2e.sh: wgmesh on a 3-node kind cluster. Builds the image, creates the
# cluster (test/kind/kind-config.yaml), loads the image, applies
# deploy/overlays/kubelet (kind uses /opt/cni/bin and /etc/cni/net.d), then
# checks pod-to-pod traffic across nodes, a large transfer (MTU), a Service
# and DNS, and `wgmesh-agent status` on every node.
#
# Where Docker, a Docker engine, kind or kubectl is missing it prints why and
# exits 0: it must never fail a normal test run on machines without them.
#
#   IMAGE                 image to build and load (default wgmesh:e2e)
#   WGMESH_KIND_CLUSTER   cluster name (default wgmesh-e2e)
#   WGMESH_KIND_KEEP=1    keep the cluster afterwards
#   WGMESH_DOCKER, WGMESH_KIND, WGMESH_KUBECTL   the commands to use
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
docker=${WGMESH_DOCKER:-docker}
kind=${WGMESH_KIND:-kind}
kubectl=${WGMESH_KUBECTL:-kubectl}
image=${IMAGE:-wgmesh:e2e}
cluster=${WGMESH_KIND_CLUSTER:-wgmesh-e2e}
testimage=busybox:1.36

skip() {
	echo "e2e-kind: SKIP: $*"
	exit 0
}

command -v "$docker" >/dev/null 2>&1 || skip "docker is not installed"
"$docker" info >/dev/null 2>&1 || skip "no Docker engine is running ('$docker info' failed)"
command -v "$kind" >/dev/null 2>&1 || skip "kind is not installed (https://kind.sigs.k8s.io)"
command -v "$kubectl" >/dev/null 2>&1 || skip "kubectl is not installed"

log() { echo "e2e-kind: $*"; }
fail() {
	echo "e2e-kind: FAIL: $*" >&2
	"$kubectl" --context "kind-$cluster" -n kube-system logs ds/wgmesh -c agent --tail=50 >&2 || true
	exit 1
}
k() { "$kubectl" --context "kind-$cluster" "$@"; }

log "building $image"
"$docker" build -t "$image" "$repo"
"$docker" pull -q "$testimage" >/dev/null

log "creating kind cluster $cluster"
"$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
"$kind" create cluster --name "$cluster" --config "$repo/test/kind/kind-config.yaml"
cleanup() {
	if [ "${WGMESH_KIND_KEEP:-}" = 1 ]; then
		log "keeping cluster $cluster (kind delete cluster --name $cluster)"
	else
		"$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT
"$kind" load docker-image --name "$cluster" "$image" "$testimage"

log "applying deploy/overlays/kubelet with image $image"
work=$(mktemp -d)
trap 'rm -rf "$work"; cleanup' EXIT
cp -r "$repo/deploy" "$work/deploy"
cat >"$work/kustomization.yaml" <<KUST
resources: [deploy/overlays/kubelet]
images:
  - name: ghcr.io/wgmesh/wgmesh
    newName: ${image%:*}
    newTag: ${image##*:}
KUST
k apply -k "$work"
k -n kube-system rollout status ds/wgmesh --timeout=5m || fail "wgmesh DaemonSet did not become ready"
k wait --for=condition=Ready nodes --all --timeout=5m || fail "nodes did not become Ready (is the conflist written?)"

log "agent status on every node"
for pod in $(k -n kube-system get pods -l app.kubernetes.io/name=wgmesh -o name); do
	k -n kube-system exec "$pod" -c agent -- wgmesh-agent status || fail "$pod: wgmesh-agent status"
done

log "pods on two different workers"
workers=($(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[*].metadata.name}'))
[ "${#workers[@]}" -ge 2 ] || fail "want 2 worker nodes, have ${workers[*]}"
for i in 0 1; do
	k apply -f - <<POD
apiVersion: v1
kind: Pod
metadata:
  name: wgmesh-e2e-$i
  labels: {app: wgmesh-e2e-$i}
spec:
  nodeName: ${workers[$i]}
  containers:
    - name: web
      image: $testimage
      imagePullPolicy: IfNotPresent
      command: ["sh", "-c", "mkdir -p /www && head -c 8388608 /dev/urandom > /www/big && httpd -f -p 8080 -h /www"]
POD
done
k expose pod wgmesh-e2e-1 --name wgmesh-e2e-svc --port 80 --target-port 8080
k wait --for=condition=Ready pod/wgmesh-e2e-0 pod/wgmesh-e2e-1 --timeout=3m || fail "test pods not ready"
ip1=$(k get pod wgmesh-e2e-1 -o jsonpath='{.status.podIP}')

log "ping across nodes ($ip1)"
k exec wgmesh-e2e-0 -- ping -c 3 -W 2 "$ip1" || fail "pod-to-pod ping across nodes"
log "8 MiB over HTTP across nodes (a stall here is an MTU problem)"
k exec wgmesh-e2e-0 -- sh -c "wget -q -T 20 -O /tmp/big http://$ip1:8080/big && test \$(wc -c </tmp/big) -eq 8388608" || fail "large transfer across nodes"
log "Service and DNS"
k exec wgmesh-e2e-0 -- wget -q -T 10 -O /dev/null http://wgmesh-e2e-svc.default.svc.cluster.local/big || fail "Service by DNS name"

k delete pod wgmesh-e2e-0 wgmesh-e2e-1 --wait=false >/dev/null
k delete svc wgmesh-e2e-svc >/dev/null
log "PASS"
