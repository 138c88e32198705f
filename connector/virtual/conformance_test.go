package virtual_test

import (
	"log/slog"
	"testing"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// The virtual connector behaves as every connector must.
func TestConformance(t *testing.T) {
	linktest.Run(t, newConformancePair, linktest.Features{})
}

func newConformancePair(t *testing.T, cat *messages.Catalog, setupA, setupB func(*link.Link)) (*link.Link, *link.Link) {
	t.Helper()
	ca, cb := virtual.Pair()
	quiet := link.WithLogger(slog.New(slog.DiscardHandler))
	a, err := link.New(ca, linktest.AddrA, linktest.AddrB, cat, quiet)
	testkit.NoErr(t, err, "new link A")
	b, err := link.New(cb, linktest.AddrB, linktest.AddrA, cat, quiet)
	testkit.NoErr(t, err, "new link B")
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	setupA(a)
	setupB(b)
	testkit.NoErr(t, b.Start(), "start B")
	testkit.NoErr(t, a.Start(), "start A")
	return a, b
}
