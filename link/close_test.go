package link_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
)

// A pending request ends with ErrSessionLost as soon as either side's link
// closes, long before its deadline; the handler's context ends too.
func TestClosePendingRequest(t *testing.T) {
	tests := []struct {
		name  string
		close func(requester, responder *link.Link) error
	}{
		{name: "requester closes", close: func(req, _ *link.Link) error { return req.Close() }},
		{name: "responder closes", close: func(_, resp *link.Link) error { return resp.Close() }},
		{name: "responder disconnects", close: func(_, resp *link.Link) error {
			// slave-instance has no prepare_disconnect: Disconnect waits
			// for the handler (which waits for the link) until ctx ends.
			return resp.Disconnect(testkit.Ctx(t, 10*time.Millisecond))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const deadline = 30 * time.Second
			started := make(chan struct{})
			handlerEnded := make(chan error, 1)
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
			link.HandleRequest(toSlave, testEcho, func(ctx context.Context, _ echoReq) (echoResp, error) {
				close(started)
				<-ctx.Done()
				handlerEnded <- ctx.Err()
				return echoResp{}, ctx.Err()
			})
			start(t, toSlave, testEcho)
			start(t, toInstance)

			done := make(chan error, 1)
			go func() {
				_, err := link.Request(testkit.Ctx(t, deadline), toInstance, testEcho, echoReq{})
				done <- err
			}()
			testkit.Recv(t, started, 5*time.Second, "the handler to start")
			equal(t, toInstance.Stats().Pending, 1, "pending requests")
			began := time.Now()
			_ = tc.close(toInstance, toSlave)

			err := testkit.Recv(t, done, 5*time.Second, "the request to end")
			if took := time.Since(began); took > 2*time.Second {
				t.Errorf("request ended %s after the close", took)
			}
			testkit.WantCode(t, err, link.CodeSessionLost)
			if !errors.Is(err, link.ErrSessionLost) {
				t.Errorf("errors.Is(%v, ErrSessionLost) is false", err)
			}
			if errors.Is(err, link.ErrTimeout) {
				t.Errorf("%v matches ErrTimeout", err)
			}
			ctxErr := testkit.Recv(t, handlerEnded, 5*time.Second, "the handler's context to end")
			if !errors.Is(ctxErr, context.Canceled) {
				t.Errorf("handler's context ended with %v, want Canceled", ctxErr)
			}
			equal(t, toInstance.Stats().Pending, 0, "pending requests after the close")
		})
	}
}

// After Close, both links are done and every send fails with ErrSessionLost.
func TestCloseThenSend(t *testing.T) {
	tests := []struct {
		name   string
		closer func(toInstance, toSlave *link.Link) *link.Link
	}{
		{name: "this side closed", closer: func(toInstance, _ *link.Link) *link.Link { return toInstance }},
		{name: "peer closed", closer: func(_, toSlave *link.Link) *link.Link { return toSlave }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toInstance, toSlave := echoPair(t, nil, nil)
			closer := tc.closer(toInstance, toSlave)
			testkit.NoErr(t, closer.Close(), "Close")
			testkit.NoErr(t, closer.Close(), "second Close")
			for _, l := range []*link.Link{toInstance, toSlave} {
				select {
				case <-l.Done():
				default:
					t.Fatalf("%s: Done() is not closed after Close", l)
				}
			}

			ctx := testkit.Ctx(t, 5*time.Second)
			sends := map[string]func() error{
				"Request": func() error { _, err := link.Request(ctx, toInstance, testEcho, echoReq{}); return err },
				"RequestJSON": func() error {
					_, err := toInstance.RequestJSON(ctx, testEcho, []byte(`{"n":1,"text":""}`))
					return err
				},
				"Emit":     func() error { return link.Emit(ctx, toInstance, testTick, tick{}) },
				"EmitJSON": func() error { return toInstance.EmitJSON(ctx, testTick, []byte(`{"seq":1,"items":[]}`)) },
				"peer's Request": func() error {
					_, err := link.Request(ctx, toSlave, testEcho, echoReq{})
					return err
				},
			}
			for name, send := range sends {
				began := time.Now()
				err := send()
				if !errors.Is(err, link.ErrSessionLost) {
					t.Errorf("%s after Close: got %v, want ErrSessionLost", name, err)
				}
				if took := time.Since(began); took > time.Second {
					t.Errorf("%s after Close took %s", name, took)
				}
			}
			// Disconnect on a closed link returns at once.
			testkit.NoErr(t, toInstance.Disconnect(testkit.Ctx(t, 5*time.Second)), "Disconnect after Close")
		})
	}
}

// Closing a link that never started still ends it.
func TestCloseBeforeStart(t *testing.T) {
	toInstance, _ := newPair(t, slaveAddr, instanceAddr, nil, nil)
	testkit.NoErr(t, toInstance.Close(), "Close")
	if !closed(toInstance.Done()) {
		t.Fatal("Done() is not closed")
	}
	_, err := link.Request(testkit.Ctx(t, time.Second), toInstance, testEcho, echoReq{})
	if !errors.Is(err, link.ErrSessionLost) {
		t.Fatalf("Request after Close: got %v, want ErrSessionLost", err)
	}
}

// A status handler hears the connection close when the peer closes.
func TestCloseReportsStatus(t *testing.T) {
	statuses := make(chan link.Status, 4)
	toInstance, toSlave := echoPair(t, []link.Option{link.WithStatusHandler(func(s link.Status) { statuses <- s })}, nil)
	testkit.NoErr(t, toSlave.Close(), "peer Close")
	equal(t, testkit.Recv(t, statuses, 5*time.Second, "a status"), link.StatusClosed, "status")
	testkit.Recv(t, toInstance.Done(), 5*time.Second, "the link to be done")
}
