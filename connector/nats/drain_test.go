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

// Closing a Node lets a request already being handled finish: if the
// handler returns within the drain timeout, its requester gets the
// response. Requests that arrive meanwhile are refused as unavailable.
func TestCloseDrains(t *testing.T) {
	s := runServer(t, 0, nil)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	acc := newAcceptor(t, func(l *link.Link) {
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
	master := connect(t, s, masterAddr, acc.option(), lfnats.WithDrainTimeout(5*time.Second))
	slave := connect(t, s, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	acc.next(t)

	held := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, 30*time.Second), a, linktest.Hold, messages.Empty{})
		held <- err
	}()
	testkit.Recv(t, started, prompt, "the handler to start")
	closed := make(chan error, 1)
	go func() { closed <- master.Close() }()
	testkit.WaitFor(t, prompt, "the master to refuse new requests", func() bool {
		_, err := link.Request(testkit.Ctx(t, 2*time.Second), a, messages.Ping, messages.Empty{})
		return err != nil && errors.Is(err, link.ErrUnavailable)
	})
	close(release)
	testkit.NoErr(t, testkit.Recv(t, held, prompt, "the request in flight"), "the request in flight during Close")
	testkit.NoErr(t, testkit.Recv(t, closed, prompt, "Close"), "Close")
	testkit.Recv(t, a.Done(), prompt, "the slave's link to close")
}
