package nats_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
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

// ForwardRequestAsync never waits: while RequestWindow requests to the
// peer are unanswered since the oldest still waiting, the next one is
// refused at once (unavailable, not sent), rather than holding up the
// goroutine that would deliver the responses making room (over NATS, the
// Node's routing goroutine). Once the peer answers, requests go again.
func TestAsyncForwardRefusedWhileWindowFull(t *testing.T) {
	s := runServer(t, 0, nil)
	release := make(chan struct{})
	held := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return messages.Empty{}, nil
		})
	})
	connect(t, s, masterAddr, held.option())
	slave := connect(t, s, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	held.next(t)

	ctx := testkit.Ctx(t, time.Minute)
	ended := make(chan error, delivery.RequestWindow+1)
	req := &link.Envelope{Kind: messages.KindRequest, Type: linktest.Hold.Name(), Data: []byte("{}")}
	var refused error
	for i := 0; i <= delivery.RequestWindow && refused == nil; i++ {
		var now atomic.Pointer[error]
		var returned atomic.Bool // done called before ForwardRequestAsync returned, or after
		a.ForwardRequestAsync(ctx, req, func(_ []byte, err error) {
			if !returned.Load() {
				now.Store(&err)
			}
			ended <- err
		})
		returned.Store(true)
		if p := now.Load(); p != nil && *p != nil {
			refused = *p
		}
	}
	if refused == nil {
		t.Fatalf("%d requests forwarded with the oldest unanswered, and none refused at once", delivery.RequestWindow+1)
	}
	if !errors.Is(refused, &link.Error{Code: link.CodeUnavailable}) || !strings.Contains(refused.Error(), "not sent") {
		t.Fatalf("a forward ended before it returned with %v; want unavailable, not sent", refused)
	}
	close(release)
	// The window moves again once the peer answers.
	testkit.WaitFor(t, 30*time.Second, "a request to go through again", func() bool {
		_, err := link.Request(testkit.Ctx(t, 10*time.Second), a, linktest.Hold, messages.Empty{})
		return err == nil
	})
}
