package nats_test

import (
	"testing"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// The NATS connector behaves as every connector must: A is a slave Node
// that dials the master, B the master's link, made by its accept function
// when A's first message arrives. Each pair has a server of its own.
func TestConformance(t *testing.T) {
	linktest.Run(t, newConformancePair, linktest.Features{})
}

func newConformancePair(t *testing.T, cat *messages.Catalog, setupA, setupB func(*link.Link)) (*link.Link, *link.Link) {
	t.Helper()
	if cat != linktest.Catalog() {
		t.Fatal("the NATS pair is made for the conformance catalog")
	}
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, setupB)
	connect(t, s, linktest.AddrB, acc.option())
	slave := connect(t, s, linktest.AddrA)
	a := dial(t, slave, linktest.AddrB, setupA)
	// B exists once A has spoken: the master's Node accepts it on A's
	// first message.
	ping(t, a)
	b := acc.next(t)
	return a, b
}
