package virtual_test

import (
	"log/slog"
	"testing"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/internal/conformance"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The virtual connector behaves as every connector must.
func TestConformance(t *testing.T) {
	conformance.Run(t, newConformancePair)
}

func newConformancePair(t *testing.T, cat *messages.Catalog, setupA, setupB func(*link.Link)) (*link.Link, *link.Link) {
	t.Helper()
	ca, cb := virtual.Pair()
	quiet := link.WithLogger(slog.New(slog.DiscardHandler))
	a, err := link.New(ca, conformance.AddrA, conformance.AddrB, cat, quiet)
	conformance.NoErr(t, err, "new link A")
	b, err := link.New(cb, conformance.AddrB, conformance.AddrA, cat, quiet)
	conformance.NoErr(t, err, "new link B")
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	setupA(a)
	setupB(b)
	conformance.NoErr(t, b.Start(), "start B")
	conformance.NoErr(t, a.Start(), "start A")
	return a, b
}
