package nats_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// A request the master forwards to another slave with ForwardRequestAsync,
// over NATS both ways, is answered from the Node's routing goroutine, with
// no goroutine of the link's waiting meanwhile; it is counted in flight
// until answered, so that the Node's graceful Close waits for it and the
// answer still goes out.
func TestAsyncForwardOverNATS(t *testing.T) {
	s := runServer(t, 0, nil)
	other := link.Address{Type: messages.Slave, ID: "4"}
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	held := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
			started <- struct{}{}
			select {
			case <-release:
				return messages.Empty{}, nil
			case <-ctx.Done():
				return messages.Empty{}, ctx.Err()
			}
		})
	})
	connect(t, s, other, held.option())

	var onward atomic.Pointer[link.Link] // the master's link to slave 4
	forwarders := newAcceptor(t, func(l *link.Link) {
		l.HandleRequestAsync(linktest.Hold, func(ctx context.Context, req *link.Envelope, reply link.Reply) {
			onward.Load().ForwardRequestAsync(ctx, req, reply)
		})
	})
	master := connect(t, s, masterAddr, forwarders.option(), lfnats.WithDrainTimeout(10*time.Second))
	onward.Store(dial(t, master, other, nil))
	ping(t, onward.Load())
	held.next(t)

	slave := connect(t, s, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	m := forwarders.next(t)

	res := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, 30*time.Second), a, linktest.Hold, messages.Empty{})
		res <- err
	}()
	testkit.Recv(t, started, prompt, "the request at slave 4")
	st := m.Stats()
	if st.Goroutines != 0 || st.Handling != 1 {
		t.Errorf("the forwarding link runs %d goroutines and handles %d requests, want 0 and 1", st.Goroutines, st.Handling)
	}
	closed := make(chan error, 1)
	go func() { closed <- master.Close() }()
	testkit.WaitFor(t, prompt, "the master to refuse new requests", func() bool {
		_, err := link.Request(testkit.Ctx(t, 2*time.Second), a, messages.Ping, messages.Empty{})
		return err != nil
	})
	close(release)
	testkit.NoErr(t, testkit.Recv(t, res, prompt, "the forwarded request"), "the request forwarded during Close")
	testkit.NoErr(t, testkit.Recv(t, closed, prompt, "Close"), "the master's Close")
}
