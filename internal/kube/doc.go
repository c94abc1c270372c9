// Package kube is wgmesh's only door to the Kubernetes API, and the only
// package that imports client-go. It turns Node objects and wgmesh subnet
// Leases into plain mesh.Node values, publishes this node's public key and
// endpoint as Node annotations, reserves a node subnet through a Lease when
// the control plane assigned none, sets the NetworkUnavailable condition,
// and records Events for mesh problems.
//
// It never touches the kernel, never decides what the mesh looks like (that
// is package mesh), and never writes anything to another node's object except
// Events about it.
package kube
