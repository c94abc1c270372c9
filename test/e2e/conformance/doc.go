// Package conformance runs Kubernetes' own e2e suite (e2e.test, built from
// k8s.io/kubernetes by test/e2e/tools/build-k8s.sh) against a kubelet lab
// (test/e2e/lab with test/e2e/kubenode nodes: containerd, kubelet,
// kube-proxy and the wgmesh agent on each), and turns its JUnit report into
// a summary: `make conformance`, and the CI subset in test/e2e.
//
// It owns the lab it starts (removed at the end, even on failure), the
// suite's images it assembles into the lab's directory, and the files it
// writes to its output directory. It never touches the machine's own
// network namespace: the suite runs inside the lab's control-plane
// namespace, where the API server listens.
package conformance
