package nats_test

import (
	"context"
	"errors"
	"testing"
	"time"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// A request that waits for its link behind events when the link closes is
// never handled: its link is gone. It must not count as in flight, or the
// Node's Close would wait the drain timeout for it, and fail.
func TestRequestOfClosedLinkDoesNotHoldClose(t *testing.T) {
	s := runServer(t, 0, nil)
	block := make(chan struct{})
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleEvent(l, linktest.Tick, func(ctx context.Context, _ linktest.TickEvent) error {
			select {
			case <-block:
			case <-ctx.Done():
			}
			return nil
		})
	}, link.WithEventQueue(1))
	const drain = 3 * time.Second
	master := connect(t, s, masterAddr, acc.option(), lfnats.WithDrainTimeout(drain))
	slave := connect(t, s, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	m := acc.next(t)

	// The first event blocks the master's handler, the second fills the
	// link's queue, the rest and the request wait in the connector.
	ctx := testkit.Ctx(t, 30*time.Second)
	for i := range 4 {
		testkit.NoErr(t, link.Emit(ctx, a, linktest.Tick, linktest.TickEvent{Seq: i}), "emit")
	}
	held := make(chan error, 1)
	go func() {
		_, err := link.Request(ctx, a, linktest.Echo, linktest.EchoRequest{Text: "behind the events"})
		held <- err
	}()
	// Once another endpoint's ping has been answered, the master's Node has
	// routed the request: the server delivers to its subscription in order.
	waitRouted := func() {
		other := connect(t, s, link.Address{Type: messages.Slave, ID: "9"})
		if err := other.NATS().Flush(); err != nil {
			t.Fatal(err)
		}
		ping(t, dial(t, other, masterAddr, nil))
	}
	testkit.WaitFor(t, prompt, "the request to be sent", func() bool { return a.Stats().Pending == 1 })
	if err := slave.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	waitRouted()

	_ = m.Close()
	err := testkit.Recv(t, held, prompt, "the request to end")
	if !errors.Is(err, link.ErrSessionLost) {
		t.Errorf("the request ended with %v, want session_lost", err)
	}
	began := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- master.Close() }()
	if err := testkit.Recv(t, closed, drain+5*time.Second, "Close"); err != nil {
		t.Errorf("Close: %v", err)
	}
	if took := time.Since(began); took > drain/2 {
		t.Errorf("Close took %s: it waited for a request no link will answer", took.Round(time.Millisecond))
	}
	close(block)
}
