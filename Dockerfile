# wgmesh image: wgmesh-agent (and its `install` step), the wgmesh and
# wgmesh-ipam CNI plugins, wgmesh-hostprep, and the reference portmap,
# bandwidth and loopback plugins for runtimes whose CNI bin dir lacks them
# (k3s with --flannel-backend=none uses a bare /opt/cni/bin).
#
#   make image IMAGE=registry.example.com/wgmesh:v0.1.0
#   docker build -t wgmesh:dev .

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries: the plugins are copied onto hosts of any distribution and
# run there, outside this image.
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags="-s -w" -o /out/ \
        ./plugins/wgmesh ./cmd/wgmesh-ipam ./cmd/wgmesh-agent ./cmd/wgmesh-hostprep \
    && go build -trimpath -ldflags="-s -w" -o /out/ \
        github.com/containernetworking/plugins/plugins/meta/portmap \
        github.com/containernetworking/plugins/plugins/meta/bandwidth \
        github.com/containernetworking/plugins/plugins/main/loopback

# Not distroless: the agent programs iptables through the iptables binaries
# (coreos/go-iptables executes them), and must use the host's backend (nft or
# legacy), which wgmesh-entrypoint picks with update-alternatives. Debian
# bookworm ships both backends and ip6tables in one package; iproute2 and
# wireguard-tools are there for `kubectl exec ... ip route` / `wg show`.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables iproute2 wireguard-tools \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
COPY deploy/wgmesh-entrypoint /usr/local/bin/wgmesh-entrypoint
CMD ["wgmesh-agent", "--help"]
