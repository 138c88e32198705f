package link_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// forwardChain is instance 7 asking its slave, whose asynchronous handler
// forwards test:echo to instance 8 with ForwardRequestAsync. ends gets
// what each done was called with.
type forwardChain struct {
	toSlave, fromInstance, toOther, otherSide *link.Link
	ends                                      chan error
	calls                                     atomic.Int64 // done calls
}

type ended struct {
	data []byte
	err  error
}

// newForwardChain starts the chain; attach gives instance 8 its test:echo
// handler.
func newForwardChain(t *testing.T, slaveOpts []link.Option, attach func(l *link.Link)) *forwardChain {
	t.Helper()
	other := link.Address{Type: messages.Instance, ID: "8"}
	c := &forwardChain{ends: make(chan error, 16)}
	c.toSlave, c.fromInstance = newPair(t, instanceAddr, slaveAddr, nil, slaveOpts)
	c.toOther, c.otherSide = newPair(t, slaveAddr, other, nil, nil)
	c.fromInstance.HandleRequestAsync(testEcho, func(ctx context.Context, req *link.Envelope, reply link.Reply) {
		c.toOther.ForwardRequestAsync(ctx, req, func(data []byte, err error) {
			c.calls.Add(1)
			c.ends <- err
			reply(data, err)
		})
	})
	attach(c.otherSide)
	start(t, c.fromInstance, testEcho)
	start(t, c.otherSide, testEcho)
	start(t, c.toOther)
	start(t, c.toSlave)
	return c
}

// ask sends test:echo from instance 7 on a goroutine of the test's.
func (c *forwardChain) ask(ctx context.Context, n int) <-chan ended {
	out := make(chan ended, 1)
	go func() {
		resp, err := link.Request(ctx, c.toSlave, testEcho, echoReq{N: n, Text: "forwarded"})
		out <- ended{data: []byte(resp.Text), err: err}
	}()
	return out
}

// holdEcho attaches a test:echo handler that answers once release is
// closed, and reports each request's deadline as it arrives.
func holdEcho(release <-chan struct{}, arrived chan<- time.Time) func(l *link.Link) {
	return func(l *link.Link) {
		link.HandleRequest(l, testEcho, func(ctx context.Context, r echoReq) (echoResp, error) {
			d, _ := ctx.Deadline()
			arrived <- d
			select {
			case <-release:
				return echoResp(r), nil
			case <-ctx.Done():
				return echoResp{}, ctx.Err()
			}
		})
	}
}

// A forwarded request is answered through ForwardRequestAsync's done,
// called once, whether the next hop answers during Send (NonBlocking) or
// later on a goroutine of its link's; the forwarding link runs no goroutine
// for it, and keeps it counted in flight until it is answered.
func TestAsyncForwardAnswered(t *testing.T) {
	t.Run("during Send", func(t *testing.T) {
		c := newForwardChain(t, nil, func(l *link.Link) { link.HandleRequest(l, testEcho, echoHandler, link.NonBlocking()) })
		r := testkit.Recv(t, c.ask(testkit.Ctx(t, 10*time.Second), 1), 10*time.Second, "the forwarded request")
		testkit.NoErr(t, r.err, "the forwarded request")
		equal(t, string(r.data), "forwarded", "response")
		equal(t, c.calls.Load(), int64(1), "done calls")
	})
	t.Run("later", func(t *testing.T) {
		release, arrived := make(chan struct{}), make(chan time.Time, 1)
		c := newForwardChain(t, nil, holdEcho(release, arrived))
		res := c.ask(testkit.Ctx(t, 10*time.Second), 2)
		testkit.Recv(t, arrived, 10*time.Second, "the request at instance 8")
		st := c.fromInstance.Stats()
		equal(t, st.Goroutines, 0, "goroutines of the forwarding link while the request is forwarded")
		equal(t, st.Handling, 1, "requests the forwarding link handles")
		close(release)
		r := testkit.Recv(t, res, 10*time.Second, "the forwarded request")
		testkit.NoErr(t, r.err, "the forwarded request")
		testkit.WaitFor(t, 5*time.Second, "the request counted out", func() bool { return c.fromInstance.Stats().Handling == 0 })
		equal(t, c.calls.Load(), int64(1), "done calls")
	})
}

// The deadline of the forwarding handler's request carries over to the
// next hop, and at that deadline done gets ErrTimeout, once.
func TestAsyncForwardDeadline(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan time.Time, 1)
	defer close(release)
	c := newForwardChain(t, nil, holdEcho(release, arrived))
	deadline := time.Now().Add(300 * time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	res := c.ask(ctx, 1)
	got := testkit.Recv(t, arrived, 10*time.Second, "the request at instance 8")
	if !got.Equal(deadline) {
		t.Errorf("instance 8's handler has deadline %s, want the requester's %s", got, deadline)
	}
	testkit.WantCode(t, testkit.Recv(t, c.ends, 10*time.Second, "done"), link.CodeTimeout)
	testkit.WantCode(t, testkit.Recv(t, res, 10*time.Second, "the request").err, link.CodeTimeout)
	testkit.WaitFor(t, 5*time.Second, "the request counted out", func() bool {
		return c.fromInstance.Stats().Handling == 0 && c.toOther.Stats().Pending == 0
	})
	equal(t, c.calls.Load(), int64(1), "done calls")
}

// A forward pending when the link it goes on closes, or when that link's
// peer goes, ends with ErrSessionLost, once, and its requester hears so.
func TestAsyncForwardLinkLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(c *forwardChain) *link.Link
	}{
		{"link closed", func(c *forwardChain) *link.Link { return c.toOther }},
		{"peer gone", func(c *forwardChain) *link.Link { return c.otherSide }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release, arrived := make(chan struct{}), make(chan time.Time, 1)
			defer close(release)
			c := newForwardChain(t, nil, holdEcho(release, arrived))
			res := c.ask(testkit.Ctx(t, 10*time.Second), 1)
			testkit.Recv(t, arrived, 10*time.Second, "the request at instance 8")
			_ = tc.close(c).Close()
			testkit.WantCode(t, testkit.Recv(t, c.ends, 10*time.Second, "done"), link.CodeSessionLost)
			testkit.WantCode(t, testkit.Recv(t, res, 10*time.Second, "the request").err, link.CodeSessionLost)
			testkit.WaitFor(t, 5*time.Second, "the request counted out", func() bool { return c.fromInstance.Stats().Handling == 0 })
			equal(t, c.calls.Load(), int64(1), "done calls")
		})
	}
}

// Closing the forwarding handler's own link ends its forwards (their ctx
// ends with it): CloseWait returns once they have, and done was called
// once each.
func TestAsyncForwardHandlerLinkClosed(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan time.Time, 1)
	defer close(release)
	c := newForwardChain(t, nil, holdEcho(release, arrived))
	res := c.ask(testkit.Ctx(t, 10*time.Second), 1)
	testkit.Recv(t, arrived, 10*time.Second, "the request at instance 8")
	testkit.NoErr(t, c.fromInstance.CloseWait(testkit.Ctx(t, 10*time.Second)), "CloseWait")
	err := testkit.Recv(t, c.ends, 10*time.Second, "done")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("done got %v, want context.Canceled", err)
	}
	testkit.WantCode(t, testkit.Recv(t, res, 10*time.Second, "the request").err, link.CodeSessionLost)
	equal(t, c.calls.Load(), int64(1), "done calls")
	equal(t, c.toOther.Stats().Pending, 0, "requests pending on the forwarding link")
}

// heldReplies is an asynchronous test:echo handler that keeps its
// replies until the test gives them.
type heldReplies struct {
	mu      sync.Mutex
	replies []link.Reply
	arrived chan struct{}
}

func newHeldReplies() *heldReplies { return &heldReplies{arrived: make(chan struct{}, 16)} }

func (h *heldReplies) handle(_ context.Context, req *link.Envelope, reply link.Reply) {
	h.mu.Lock()
	h.replies = append(h.replies, reply)
	h.mu.Unlock()
	h.arrived <- struct{}{}
}

// answer replies to every request held, with a valid test:echo response.
func (h *heldReplies) answer() {
	h.mu.Lock()
	replies := h.replies
	h.replies = nil
	h.mu.Unlock()
	for _, r := range replies {
		r([]byte(`{"n":1,"text":"later"}`), nil)
	}
}

// A request given to an asynchronous handler holds its place until the
// handler replies: CloseWait waits for the reply, and Disconnect's drain
// too.
func TestAsyncReplyCloseWaits(t *testing.T) {
	h := newHeldReplies()
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	toSlave.HandleRequestAsync(testEcho, h.handle)
	start(t, toSlave, testEcho)
	start(t, toInstance)
	res := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, 10*time.Second), toInstance, testEcho, echoReq{N: 1})
		res <- err
	}()
	testkit.Recv(t, h.arrived, 10*time.Second, "the request in its handler")
	equal(t, toSlave.Stats().Goroutines, 0, "goroutines of the link while the request waits for its reply")

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := toSlave.CloseWait(short); err == nil {
		t.Fatal("CloseWait returned while a request waited for its reply")
	}
	h.answer()
	testkit.NoErr(t, toSlave.CloseWait(testkit.Ctx(t, 10*time.Second)), "CloseWait once replied")
	testkit.WantCode(t, testkit.Recv(t, res, 10*time.Second, "the request"), link.CodeSessionLost)
}

// As many requests may wait for their replies as WithMaxHandlers allows
// handlers to run; the next is refused with CodeUnavailable, at once, and
// a place is free again once a reply is given.
func TestAsyncRepliesBounded(t *testing.T) {
	const limit = 2
	h := newHeldReplies()
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, []link.Option{link.WithMaxHandlers(limit)})
	toSlave.HandleRequestAsync(testEcho, h.handle)
	start(t, toSlave, testEcho)
	start(t, toInstance)
	ctx := testkit.Ctx(t, 10*time.Second)
	res := make(chan error, limit)
	for range limit {
		go func() {
			_, err := link.Request(ctx, toInstance, testEcho, echoReq{N: 1})
			res <- err
		}()
		testkit.Recv(t, h.arrived, 10*time.Second, "a request in its handler")
	}
	_, err := link.Request(ctx, toInstance, testEcho, echoReq{N: 1})
	testkit.WantCode(t, err, link.CodeUnavailable)
	h.answer()
	for range limit {
		testkit.NoErr(t, testkit.Recv(t, res, 10*time.Second, "a held request"), "a held request")
	}
	go h.answerWhenArrived()
	_, err = link.Request(ctx, toInstance, testEcho, echoReq{N: 1})
	testkit.NoErr(t, err, "a request once the replies were given")
}

func (h *heldReplies) answerWhenArrived() {
	<-h.arrived
	h.answer()
}

// An asynchronous handler's reply is checked against the schema unless it
// is a forwarded response, unmodified; a panic before it replies answers
// CodeInternal; a second reply is dropped.
func TestAsyncReplyChecks(t *testing.T) {
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	toSlave.HandleRequestAsync(testEcho, func(_ context.Context, req *link.Envelope, reply link.Reply) {
		switch string(req.Data) {
		case `{"n":1,"text":"invalid"}`:
			reply([]byte(`{"n":"one","text":""}`), nil)
		case `{"n":1,"text":"panic"}`:
			panic("the handler fails")
		case `{"n":1,"text":"twice"}`:
			reply([]byte(`{"n":1,"text":"first"}`), nil)
			reply([]byte(`{"n":2,"text":"second"}`), nil)
		case `{"n":1,"text":"replied, then panic"}`:
			reply([]byte(`{"n":1,"text":"replied"}`), nil)
			panic("after its reply")
		default:
			reply(nil, link.Errorf(codeStub, "refused"))
		}
	})
	start(t, toSlave, testEcho)
	start(t, toInstance)
	ctx := testkit.Ctx(t, 10*time.Second)
	ask := func(text string) (echoResp, error) {
		return link.Request(ctx, toInstance, testEcho, echoReq{N: 1, Text: text})
	}
	_, err := ask("invalid")
	testkit.WantCode(t, err, link.CodeInternal)
	_, err = ask("panic")
	testkit.WantCode(t, err, link.CodeInternal)
	_, err = ask("refused")
	testkit.WantCode(t, err, codeStub)
	resp, err := ask("twice")
	testkit.NoErr(t, err, "answered twice")
	equal(t, resp.Text, "first", "the answer kept")
	resp, err = ask("replied, then panic")
	testkit.NoErr(t, err, "replied, then panicked")
	equal(t, resp.Text, "replied", "the answer kept")
	testkit.WaitFor(t, 5*time.Second, "every request counted out", func() bool { return toSlave.Stats().Handling == 0 })
}

// A response forwarded with ForwardRequestAsync is checked where it
// arrives (a bad one reaches done as CodeInvalidMessage); changed on its
// way back, it is checked again when replied.
func TestAsyncForwardResponseChecked(t *testing.T) {
	other := link.Address{Type: messages.Instance, ID: "8"}
	toOther, raw, rec := rawPeer(t, slaveAddr, other, nil)
	toSlave, fromInstance := newPair(t, instanceAddr, slaveAddr, nil, nil)
	ends := make(chan error, 1)
	fromInstance.HandleRequestAsync(testEcho, func(ctx context.Context, req *link.Envelope, reply link.Reply) {
		toOther.ForwardRequestAsync(ctx, req, func(data []byte, err error) {
			ends <- err
			if err == nil && string(req.Data) == `{"n":2,"text":"changed"}` {
				data = []byte(`{"n":"two","text":"changed"}`) // against the schema: n is a number
			}
			reply(data, err)
		})
	})
	start(t, fromInstance, testEcho)
	start(t, toSlave)
	ctx := testkit.Ctx(t, 10*time.Second)
	for _, tc := range []struct {
		n        int
		text     string
		answer   string
		done     link.Code // what done gets ("": no error)
		answered link.Code // what the requester gets
	}{
		{1, "answered badly", `{"n":"one"}`, link.CodeInvalidMessage, link.CodeInvalidMessage},
		{2, "changed", `{"n":2,"text":"changed"}`, "", link.CodeInternal},
		{3, "as it came", `{"n":3,"text":"as it came"}`, "", ""},
	} {
		res := make(chan error, 1)
		go func() {
			_, err := link.Request(ctx, toSlave, testEcho, echoReq{N: tc.n, Text: tc.text})
			res <- err
		}()
		var req *link.Envelope
		testkit.WaitFor(t, 5*time.Second, "the request at the raw end", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, m := range rec.msgs {
				if m.Kind == messages.KindRequest && m.Type == testEcho.Name() && m.ID > 0 && string(m.Data) == fmt.Sprintf(`{"n":%d,"text":%q}`, tc.n, tc.text) {
					req = m
					return true
				}
			}
			return false
		})
		send(t, raw, &link.Envelope{Kind: messages.KindResponse, Type: req.Type, ID: req.ID, Data: []byte(tc.answer)})
		doneErr := testkit.Recv(t, ends, 5*time.Second, "done")
		err := testkit.Recv(t, res, 5*time.Second, "the request")
		if tc.done == "" {
			testkit.NoErr(t, doneErr, tc.text+": done")
		} else {
			testkit.WantCode(t, doneErr, tc.done)
		}
		if tc.answered == "" {
			testkit.NoErr(t, err, tc.text)
		} else {
			testkit.WantCode(t, err, tc.answered)
		}
	}
}

// handlerTimes records the durations a HandlerObserver is told.
type handlerTimes struct{ took chan time.Duration }

func (*handlerTimes) Sent(messages.Direction, *link.Envelope)     {}
func (*handlerTimes) Received(messages.Direction, *link.Envelope) {}
func (*handlerTimes) RequestEnded(string, error, time.Duration)   {}

func (h *handlerTimes) HandlerEnded(_ messages.Kind, _ string, _ error, took time.Duration) {
	h.took <- took
}

// A HandlerObserver is told how long an asynchronous handler took: from
// its start to its reply, not to its return.
func TestAsyncReplyObserved(t *testing.T) {
	obs := &handlerTimes{took: make(chan time.Duration, 1)}
	h := newHeldReplies()
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, []link.Option{link.WithObserver(obs)})
	var began time.Time
	toSlave.HandleRequestAsync(testEcho, func(ctx context.Context, req *link.Envelope, reply link.Reply) {
		began = time.Now()
		h.handle(ctx, req, reply)
	})
	start(t, toSlave, testEcho)
	start(t, toInstance)
	res := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, 10*time.Second), toInstance, testEcho, echoReq{N: 1})
		res <- err
	}()
	testkit.Recv(t, h.arrived, 10*time.Second, "the request in its handler")
	// Held until the clock has moved on from the handler's return.
	testkit.WaitFor(t, 5*time.Second, "the clock to move", func() bool { return time.Since(began) > time.Millisecond })
	held := time.Since(began)
	h.answer()
	testkit.NoErr(t, testkit.Recv(t, res, 10*time.Second, "the request"), "the request")
	if took := testkit.Recv(t, obs.took, 5*time.Second, "HandlerEnded"); took < held {
		t.Errorf("HandlerEnded says the handler took %s; it replied after %s", took, held)
	}
}

// ForwardRequestAsync never waits for room: over a virtual pair whose
// peer runs as many handlers as it may and has as many requests waiting
// (WithMaxHandlers), the next request is refused before it returns,
// unavailable and not sent; a blocking ForwardRequest waits instead, and
// goes through once the peer makes room.
func TestAsyncForwardNeverWaits(t *testing.T) {
	b, toInstance, _, ctx, errs := oneRunningOneWaiting(t)
	req := &link.Envelope{Kind: messages.KindRequest, Type: testEcho.Name(), Data: []byte(`{"n":3,"text":"x"}`)}
	var during atomic.Pointer[error]
	var returned atomic.Bool
	toInstance.ForwardRequestAsync(ctx, req, func(_ []byte, err error) {
		if !returned.Load() {
			during.Store(&err)
		}
	})
	returned.Store(true)
	var got error
	if p := during.Load(); p != nil {
		got = *p
	}
	if !errors.Is(got, link.ErrUnavailable) || !strings.Contains(got.Error(), "not sent") {
		t.Fatalf("a forward to a full peer ended with %v before it returned; want unavailable, not sent", got)
	}
	blocking := make(chan error, 1)
	go func() {
		_, err := toInstance.ForwardRequest(ctx, &link.Envelope{Kind: messages.KindRequest, Type: testEcho.Name(), Data: []byte(`{"n":4,"text":"x"}`)})
		blocking <- err
	}()
	close(b.release)
	testkit.NoErr(t, testkit.Recv(t, blocking, 10*time.Second, "the blocking forward"), "the blocking forward, once there was room")
	for range 2 {
		testkit.NoErr(t, testkit.Recv(t, errs, 10*time.Second, "the first two requests"), "the first two requests")
	}
}
