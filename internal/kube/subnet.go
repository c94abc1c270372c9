package kube

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Subnet Leases: one coordination.k8s.io/v1 Lease per reserved node subnet.
// The subnet is encoded in the Lease's name, never in a field the holder can
// edit, so the API server's "a name exists once" is what makes a reservation
// exclusive: whoever creates wgmesh-subnet-10-42-3-0-24 first holds
// 10.42.3.0/24, and nobody can create a second one.
const (
	subnetLeasePrefix = "wgmesh-subnet-"
	// LabelSubnetLease marks wgmesh's subnet Leases (the informer selects on it).
	LabelSubnetLease = "wgmesh.io/subnet-lease"
	// AnnotationSubnet repeats the subnet in readable form for people
	// (kubectl get lease -o yaml); the name is what counts.
	AnnotationSubnet = "wgmesh.io/subnet"
)

// SubnetLeaseName is the Lease name for p: wgmesh-subnet-10-42-3-0-24, or for
// IPv6 every group of the expanded address: wgmesh-subnet-fd00-0000-...-0000-64.
// The mapping is one-to-one, so a subnet has exactly one possible Lease.
func SubnetLeaseName(p netip.Prefix) string {
	p = p.Masked()
	var addr string
	if p.Addr().Is4() {
		addr = strings.ReplaceAll(p.Addr().String(), ".", "-")
	} else {
		addr = strings.ReplaceAll(p.Addr().StringExpanded(), ":", "-")
	}
	return subnetLeasePrefix + addr + "-" + strconv.Itoa(p.Bits())
}

// ParseSubnetLeaseName is the inverse of SubnetLeaseName. It accepts only the
// canonical form, so no two names map to the same subnet.
func ParseSubnetLeaseName(name string) (netip.Prefix, bool) {
	rest, ok := strings.CutPrefix(name, subnetLeasePrefix)
	if !ok {
		return netip.Prefix{}, false
	}
	parts := strings.Split(rest, "-")
	var s string
	switch len(parts) {
	case 5:
		s = strings.Join(parts[:4], ".") + "/" + parts[4]
	case 9:
		s = strings.Join(parts[:8], ":") + "/" + parts[8]
	default:
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p != p.Masked() || SubnetLeaseName(p) != name {
		return netip.Prefix{}, false
	}
	return p, true
}

// nextSubnet returns the subnet of the same size right after p, and false
// when p is the last one of its address family.
func nextSubnet(p netip.Prefix) (netip.Prefix, bool) {
	b := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	// Add 1 at bit position bits-1 (counting from the most significant bit).
	i := (bits - 1) / 8
	carry := uint16(1) << (7 - uint((bits-1)%8))
	for ; i >= 0 && carry != 0; i-- {
		sum := uint16(b[i]) + carry
		b[i] = byte(sum)
		carry = sum >> 8
	}
	if carry != 0 {
		return netip.Prefix{}, false
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		if !a.Is4In6() {
			return netip.Prefix{}, false
		}
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, p.Bits()), true
}

// Subnets yields the subnets of size bits inside cluster, in address order,
// calling yield until it returns false.
func Subnets(cluster netip.Prefix, bits int, yield func(netip.Prefix) bool) error {
	cluster = cluster.Masked()
	if bits < cluster.Bits() || bits > cluster.Addr().BitLen() {
		return fmt.Errorf("node subnet size /%d does not fit in cluster CIDR %s", bits, cluster)
	}
	p := netip.PrefixFrom(cluster.Addr(), bits)
	for cluster.Contains(p.Addr()) {
		if !yield(p) {
			return nil
		}
		var ok bool
		if p, ok = nextSubnet(p); !ok {
			return nil
		}
	}
	return nil
}
