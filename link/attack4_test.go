package link_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// A request sent with a handler's context ends when that context does:
// here an asynchronous handler starts a request of its own with its ctx
// and then replies, which ends ctx. The request waiting for a peer that
// never answers must end with context.Canceled then, not hold on until
// the requester's deadline (minutes away).
func TestAttack4RequestEndsWhenHandlerCtxEnds(t *testing.T) {
	other := link.Address{Type: messages.Instance, ID: "8"}
	toSlave, fromInstance := newPair(t, instanceAddr, slaveAddr, nil, nil)
	toOther, otherSide := newPair(t, slaveAddr, other, nil, nil)
	release, arrived := make(chan struct{}), make(chan time.Time, 1)
	defer close(release)
	holdEcho(release, arrived)(otherSide)
	inner := make(chan error, 1)
	fromInstance.HandleRequestAsync(testEcho, func(ctx context.Context, req *link.Envelope, reply link.Reply) {
		go func() {
			_, err := link.Request(ctx, toOther, testEcho, echoReq{N: 1, Text: "inner"})
			inner <- err
		}()
		// Reply once the inner request waits at the other side.
		go func() {
			<-arrived
			reply(req.Data, nil)
		}()
	})
	start(t, fromInstance, testEcho)
	start(t, otherSide, testEcho)
	start(t, toOther)
	start(t, toSlave)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, err := link.Request(ctx, toSlave, testEcho, echoReq{N: 1, Text: "outer"})
	testkit.NoErr(t, err, "the outer request")
	err = testkit.Recv(t, inner, 10*time.Second, "the inner request's end once its handler's ctx ended")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("inner request: got %v, want context.Canceled", err)
	}
}
