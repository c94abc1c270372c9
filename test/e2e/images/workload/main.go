// Command workload is the lab's test pod program, packed into a local image
// by test/e2e/kubenode. It makes a pod probeable from anywhere in the mesh:
//
//	HTTP GET /        -> "pod=<name> ip=<address>\n"  (who answered, from where)
//	HTTP GET /healthz -> "ok\n"
//	HTTP GET /client  -> "client=<address>\n"  (the source address the request arrived from)
//	HTTP GET /resolve?name=NAME -> "addrs=<a>,<b>\n" (NAME through the pod's own resolver:
//	                     the resolv.conf the kubelet wrote, its search list and ndots)
//	UDP  <any bytes>  -> the same bytes back (echo)
//
// The pod name comes from $POD_NAME (downward API) or the hostname, the
// address from $POD_IP or the first global unicast address of the pod.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	httpAddr := flag.String("http", ":8080", "HTTP listen address")
	udpAddr := flag.String("udp", ":8081", "UDP echo listen address")
	flag.Parse()

	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	ip := os.Getenv("POD_IP")
	if ip == "" {
		ip = firstGlobalAddr()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	pc, err := net.ListenPacket("udp", *udpAddr)
	if err != nil {
		log.Error("listen udp", "addr", *udpAddr, "err", err)
		os.Exit(1)
	}
	go echo(pc, log)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "pod=%s ip=%s\n", name, ip)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /client", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "client=%s\n", host)
	})
	mux.HandleFunc("GET /resolve", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := net.DefaultResolver.LookupHost(r.Context(), r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "addrs=%s\n", strings.Join(addrs, ","))
	})
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		log.Error("listen http", "addr", *httpAddr, "err", err)
		os.Exit(1)
	}
	go func() {
		if err := http.Serve(ln, mux); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Error("serve http", "err", err)
			os.Exit(1)
		}
	}()
	log.Info("serving", "pod", name, "ip", ip, "http", *httpAddr, "udp", *udpAddr)

	// As PID 1 the default SIGTERM disposition is "ignore": exit on it
	// explicitly so pod deletion does not wait for the grace period.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}

// echo sends every datagram back to its sender.
func echo(pc net.PacketConn, log *slog.Logger) {
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Error("read udp", "err", err)
			return
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			log.Warn("write udp", "to", from, "err", err)
		}
	}
}

// firstGlobalAddr returns the first global unicast address of the pod, or "".
func firstGlobalAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}
