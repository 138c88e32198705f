package linktest_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// counted is a connector of its own: connector/virtual's, counting what it
// sends. A connector that wraps another (for metrics, tracing, injected
// faults) must keep every promise of the one it wraps, and the suite
// checks that it does. It carries no Go values (it is no
// link.ValueCarrier), so its links exchange JSON.
type counted struct {
	link.Connector
	sent *atomic.Int64
}

func (c counted) Send(ctx context.Context, m *link.Envelope) error {
	c.sent.Add(1)
	return c.Connector.Send(ctx, m)
}

// newCountedPair is the suite's NewPair for counted: two links over a new
// virtual pair, set up as the suite asks, started, and closed with the
// test.
func newCountedPair(t *testing.T, cat *messages.Catalog, setupA, setupB func(*link.Link)) (*link.Link, *link.Link) {
	t.Helper()
	ca, cb := virtual.Pair()
	var sent atomic.Int64
	quiet := link.WithLogger(slog.New(slog.DiscardHandler))
	a, err := link.New(counted{ca, &sent}, linktest.AddrA, linktest.AddrB, cat, quiet)
	if err != nil {
		t.Fatal(err)
	}
	b, err := link.New(counted{cb, &sent}, linktest.AddrB, linktest.AddrA, cat, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	setupA(a)
	setupB(b)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// A connector's test runs the suite over pairs of links that the
// connector joins; here, the counted connector above (TestCounted runs
// it).
func ExampleRun() {
	conformance := func(t *testing.T) {
		linktest.Run(t, newCountedPair, linktest.Features{})
	}
	_ = conformance // in a connector's package: func TestConformance(t *testing.T)
}

// The counted connector behaves as every connector must.
func TestCounted(t *testing.T) {
	linktest.Run(t, newCountedPair, linktest.Features{})
}
