package fabric_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// TestEndpointGoroutines: the goroutines an endpoint starts are a few of
// its own and one per link, however many requests are in flight (their
// handlers run on the links' bounded pools), and none is left once the
// endpoint has closed.
func TestEndpointGoroutines(t *testing.T) {
	hold := messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "holding:hold",
		Links: []messages.Direction{messages.ControlToMaster}, Permission: "holding.hold"})
	plugin := fabric.WithPlugins(messages.Plugin{Name: "holding", Messages: []messages.Message{hold}})
	release := make(chan struct{})
	var held atomic.Int64
	b := startBroker(t)
	m := startMaster(t, b.ClientURL(), "*=*", plugin, fabric.WithHandlers(messages.Control, func(l *link.Link) {
		link.HandleRequest(l, hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
			held.Add(1)
			select {
			case <-release:
				return messages.Empty{}, nil
			case <-ctx.Done():
				return messages.Empty{}, ctx.Err()
			}
		})
	}))
	s := startSlave(t, b.ClientURL(), 1, "101:alpha", plugin)
	ctl, _ := dialControl(t, b.ClientURL(), "admin", plugin)

	// The master's run, its term's watchPeers and keepStamps, and a
	// watcher for each of the two links (watchStart ends once slave 1 has
	// registered).
	const want = 5
	testkit.Eventually(t, waitLong, "the master's goroutines", func() error {
		if n := m.Goroutines(); n != want {
			return fmt.Errorf("%d goroutines, want %d", n, want)
		}
		return nil
	})
	const requests = 40
	ctx := testkit.Ctx(t, waitLong)
	var wg sync.WaitGroup
	for range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := link.Request(ctx, ctl.Link(), hold, messages.Empty{}); err != nil {
				t.Errorf("hold: %v", err)
			}
		}()
	}
	testkit.WaitFor(t, waitLong, "every request in its handler", func() bool { return held.Load() == requests })
	if n := m.Goroutines(); n != want {
		t.Errorf("with %d requests in flight the master runs %d goroutines of its own, want %d", requests, n, want)
	}
	close(release)
	wg.Wait()

	cctx, cancel := closeCtx()
	defer cancel()
	testkit.NoErr(t, ctl.Close(cctx), "close the control")
	testkit.NoErr(t, s.Close(cctx), "close the slave")
	testkit.NoErr(t, m.Close(cctx), "close the master")
	for name, n := range map[string]int{"master": m.Goroutines(), "slave": s.Goroutines(), "control": ctl.Goroutines()} {
		if n != 0 {
			t.Errorf("the %s runs %d goroutines after Close, want none", name, n)
		}
	}
}
