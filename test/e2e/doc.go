// Package e2e holds wgmesh's end-to-end scenarios: a real control plane
// (etcd, kube-apiserver, kube-controller-manager) and nodes running the real
// wgmesh-agent and CNI plugins, all inside network namespaces made by package
// lab. The scenarios are behind the build tag e2e (make e2e):
//
//	go test -tags e2e -v -count=1 ./test/e2e/...
//
// They need root, the binaries of make build and make ref-plugins, and the
// Kubernetes programs of test/e2e/tools/build-k8s.sh.
package e2e
