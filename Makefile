# wgmesh: WireGuard pod network for k3s.
#
#   make build      binaries into bin/
#   make test       THE test command (unit, root integration in netns, brief fuzz)
#   make e2e        multi-node lab scenarios with a real kube-apiserver
#   make lab        start the 3-node lab and leave it running (make lab-down)
#   make lab KUBELET=1  the same with kubelet + containerd on every node, pods through the API
#   make bench      benchmarks, printed as one table
#   make image      container image (needs a Docker engine; IMAGE=name:tag)
#   make e2e-kind   kind cluster + deploy/ + connectivity (skips without Docker/kind)
#   make conformance  Kubernetes' own e2e suite against the kubelet lab (FOCUS=, SKIP=, RESULTS=)
#   make conformance-netpol  its NetworkPolicy suites (results/netpol/)

GO        ?= go
BIN       := $(CURDIR)/bin
REF_BIN   := $(BIN)/ref
# Kubernetes programs are built once into a cache outside the clone.
WGMESH_CACHE ?= $(HOME)/.cache/wgmesh
# A count, not a duration: Go 1.26's fuzz coordinator can fail a duration-bounded
# run with a spurious "context deadline exceeded" on a loaded machine (go.dev/issue/75804).
FUZZTIME  ?= 3000x
export WGMESH_CACHE

CMDS := ./plugins/wgmesh ./cmd/wgmesh-ipam ./cmd/wgmesh-agent ./cmd/wgmesh-hostprep

REF_PLUGINS := \
	github.com/containernetworking/plugins/plugins/ipam/host-local \
	github.com/containernetworking/plugins/plugins/main/bridge \
	github.com/containernetworking/plugins/plugins/main/loopback \
	github.com/containernetworking/plugins/plugins/meta/bandwidth \
	github.com/containernetworking/plugins/plugins/meta/portmap

.PHONY: all build ref-plugins k8s-bin conformance-bin test unit fuzz lint e2e lab lab-down bench bench-cni clean image e2e-kind conformance conformance-netpol

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(wildcard $(CMDS))

# The reference plugins the conflist chains (portmap, bandwidth) and that the
# tests and benchmarks compare against (bridge, host-local), at go.mod's version.
ref-plugins:
	@mkdir -p $(REF_BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(REF_BIN)/ $(REF_PLUGINS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Integration tests find the binaries through WGMESH_BIN / WGMESH_REF_BIN.
unit: build ref-plugins
	WGMESH_BIN=$(BIN) WGMESH_REF_BIN=$(REF_BIN) $(GO) test -count=1 -p 1 ./...

# Each fuzz target runs briefly; `make fuzz FUZZTIME=5m` for a real session.
FUZZ_TARGETS := $(shell git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort -u)
fuzz:
	@set -e; for f in $(FUZZ_TARGETS); do \
		dir=./$$(dirname $$f); \
		for fn in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
			echo "fuzz $$dir $$fn ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$dir; \
		done; \
	done

test: lint unit fuzz

# ADD+DEL latency of wgmesh+wgmesh-ipam vs the reference bridge+host-local,
# sequential and 16 concurrent, through libcni in network namespaces (root).
BENCH_CNI_N ?= 200
bench-cni: build ref-plugins
	WGMESH_BIN=$(BIN) WGMESH_REF_BIN=$(REF_BIN) $(GO) test -count=1 -run '^$$' -bench '^BenchmarkCNIAddDel$$' \
		-benchtime $(BENCH_CNI_N)x ./plugins/wgmesh/

# Every benchmark as one table (pod setup vs the reference plugins, pod
# throughput/latency vs the tunnel and the underlay, agent at scale,
# convergence), printed and written to results/bench.{md,json}. Root; all
# traffic stays in network namespaces it creates. BENCH_FLAGS, e.g.
# "-only net -seconds 5" (see bin/wgmesh-bench -h).
BENCH_FLAGS ?=
bench: ref-plugins
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./plugins/wgmesh ./cmd/wgmesh-ipam
	# Built as the agent is (no cgo): its agent-like processes stand for the agent.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/wgmesh-bench ./test/bench
	$(BIN)/wgmesh-bench -repo $(CURDIR) -bin $(BIN) -ref-bin $(REF_BIN) -out $(CURDIR)/results $(BENCH_FLAGS)

# The lab: real etcd, kube-apiserver, kube-controller-manager (built once
# from Go modules into $(WGMESH_CACHE)/bin) and N nodes in network namespaces,
# each running the real wgmesh-agent. Root; never touches the host network.
K8S_PROGS := etcd kube-apiserver kube-controller-manager kubectl
# Kubelet nodes (the kubelet scenarios of make e2e, make lab KUBELET=1) run
# containerd, kubelet and kube-proxy, built and cached the same way.
K8S_PROGS += kubelet kube-proxy kube-scheduler containerd containerd-shim-runc-v2 ctr
# What else a k3s node runs: CoreDNS (a lab image) and k3s's embedded
# network policy controller (kube-router's netpol, test/e2e/tools/netpol).
K8S_PROGS += coredns kube-router-netpol
LAB_DIR   ?= $(CURDIR)/test/e2e/.lab
k8s-bin:
	test/e2e/tools/build-k8s.sh $(K8S_PROGS)

e2e: build ref-plugins k8s-bin conformance-bin
	WGMESH_BIN=$(BIN) WGMESH_REF_BIN=$(REF_BIN) $(GO) test -tags e2e -v -count=1 -p 1 -timeout 30m ./test/e2e/...

lab: build ref-plugins k8s-bin
	WGMESH_BIN=$(BIN) WGMESH_REF_BIN=$(REF_BIN) $(GO) run ./test/e2e/cmd/wgmesh-lab up -dir $(LAB_DIR) $(if $(KUBELET),-kubelet)

lab-down:
	$(GO) run ./test/e2e/cmd/wgmesh-lab down -dir $(LAB_DIR)

# Kubernetes' own e2e suite (e2e.test) and its test image's program,
# cached like the programs above (e2e.test: ~13 CPU-minutes cold). make e2e
# runs a subset of the suite (docs/conformance.md).
CONFORMANCE_PROGS := e2e.test agnhost
conformance-bin:
	test/e2e/tools/build-k8s.sh $(CONFORMANCE_PROGS)

# The suite against a kubelet lab: results/$(RESULTS)/{summary.md,junit_01.xml,e2e.log}
# (RESULTS names the run, so that one focus's report does not replace another's).
FOCUS   ?= \[sig-network\].*\[Conformance\]
SKIP    ?=
RESULTS ?= conformance
conformance: build ref-plugins k8s-bin conformance-bin
	WGMESH_BIN=$(BIN) WGMESH_REF_BIN=$(REF_BIN) $(GO) run ./test/e2e/cmd/wgmesh-conformance \
		-out $(CURDIR)/results/$(RESULTS) -focus '$(FOCUS)' -skip '$(SKIP)'

# The NetworkPolicy suites (Netpol, NetworkPolicy API) against the lab's
# kube-router policy controller: results/netpol/ (docs/conformance.md).
conformance-netpol:
	$(MAKE) conformance FOCUS='\[sig-network\] (Netpol|NetworkPolicy)' RESULTS=netpol

clean:
	rm -rf $(BIN)

# The image needs a Docker engine; without one this fails with a message
# (an image that was not built is not a success). No other target needs Docker.
IMAGE  ?= wgmesh:dev
DOCKER ?= docker
image:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make image: $(DOCKER) is not installed; build the image on a machine with Docker: make image IMAGE=registry/wgmesh:tag" >&2; exit 2; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make image: no Docker engine answers ($(DOCKER) info failed); build the image on a machine with Docker: make image IMAGE=registry/wgmesh:tag" >&2; exit 2; }
	$(DOCKER) build -t $(IMAGE) .

# kind cluster with deploy/overlays/kubelet and connectivity checks. Skips
# (exit 0, with the reason) where Docker or kind is missing.
e2e-kind:
	IMAGE=$(IMAGE) test/kind/e2e.sh
