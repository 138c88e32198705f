package link_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// A NonBlocking handler runs on the goroutine that delivers the message,
// starting none of the link's; other handlers run on the link's own.
func TestNonBlockingRunsWithoutGoroutine(t *testing.T) {
	tests := []struct {
		name           string
		opts           []link.HandlerOption
		wantGoroutines int
	}{
		{name: "NonBlocking", opts: []link.HandlerOption{link.NonBlocking()}, wantGoroutines: 0},
		{name: "default", wantGoroutines: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
			seen := make(chan int, 2)
			link.HandleRequest(toSlave, testEcho, func(_ context.Context, r echoReq) (echoResp, error) {
				seen <- toSlave.Stats().Goroutines
				return echoResp(r), nil
			}, tc.opts...)
			link.HandleEvent(toSlave, testTick, func(context.Context, tick) error {
				seen <- toSlave.Stats().Goroutines
				return nil
			}, tc.opts...)
			start(t, toSlave, testEcho, testTick)
			start(t, toInstance)
			ctx := testkit.Ctx(t, 10*time.Second)

			_, err := link.Request(ctx, toInstance, testEcho, echoReq{N: 1})
			testkit.NoErr(t, err, "request")
			equal(t, testkit.Recv(t, seen, 5*time.Second, "the request handler"), tc.wantGoroutines, "goroutines of the link while the request handler runs")
			// The request's worker may still be on its way out after the
			// response is back: count the event's goroutines alone.
			testkit.WaitFor(t, 5*time.Second, "the request's goroutine to end", func() bool { return toSlave.Stats().Goroutines == 0 })
			testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: 1}), "emit")
			equal(t, testkit.Recv(t, seen, 5*time.Second, "the event handler"), tc.wantGoroutines, "goroutines of the link while the event handler runs")
			testkit.WaitFor(t, 5*time.Second, "the link's goroutines to end", func() bool { return toSlave.Stats().Goroutines == 0 })
		})
	}
}

// blocker is a request handler that holds every request until released,
// and counts how many it holds at once.
type blocker struct {
	release chan struct{}
	running atomic.Int32
	most    atomic.Int32
	served  atomic.Int32
}

func newBlocker() *blocker { return &blocker{release: make(chan struct{})} }

func (b *blocker) handle(_ context.Context, r echoReq) (echoResp, error) {
	n := b.running.Add(1)
	for {
		most := b.most.Load()
		if n <= most || b.most.CompareAndSwap(most, n) {
			break
		}
	}
	<-b.release
	b.running.Add(-1)
	b.served.Add(1)
	return echoResp(r), nil
}

// At most WithMaxHandlers request handlers run at once; the requests
// beyond wait, and are all answered once the handlers return.
func TestMaxHandlers(t *testing.T) {
	const limit, requests = 2, 6
	b := newBlocker()
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, []link.Option{link.WithMaxHandlers(limit)})
	link.HandleRequest(toSlave, testEcho, b.handle)
	start(t, toSlave, testEcho)
	start(t, toInstance)
	ctx := testkit.Ctx(t, 30*time.Second)

	errs := make(chan error, requests)
	for i := range requests {
		go func() {
			_, err := link.Request(ctx, toInstance, testEcho, echoReq{N: i})
			errs <- err
		}()
	}
	testkit.WaitFor(t, 5*time.Second, "every request to reach the link", func() bool { return toSlave.Stats().Handling == requests })
	// A worker counted as handling may not have entered its handler yet.
	testkit.WaitFor(t, 5*time.Second, "the limit's worth of handlers to run", func() bool { return b.running.Load() == limit })
	equal(t, toSlave.Stats().Goroutines, limit, "goroutines of the link")
	close(b.release)
	for range requests {
		testkit.NoErr(t, testkit.Recv(t, errs, 10*time.Second, "a response"), "request")
	}
	equal(t, b.most.Load(), int32(limit), "most handlers running at once")
	testkit.WaitFor(t, 5*time.Second, "the link's goroutines to end", func() bool {
		s := toSlave.Stats()
		return s.Goroutines == 0 && s.Handling == 0
	})
}

// Beyond WithMaxHandlers running and as many waiting, the sender waits
// for room, no longer than its context: then the request fails as never
// sent, and its handler never runs.
func TestMaxHandlersBackPressure(t *testing.T) {
	b, toInstance, _, ctx, errs := oneRunningOneWaiting(t)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := link.Request(short, toInstance, testEcho, echoReq{N: 9})
	testkit.WantCode(t, err, link.CodeTimeout)
	close(b.release)
	for range 2 {
		testkit.NoErr(t, testkit.Recv(t, errs, 10*time.Second, "a response"), "request")
	}
	equal(t, b.served.Load(), int32(2), "requests handled (the one that gave up is not)")
}

// CloseWait waits for handlers that do not heed their context, as long as
// its own context allows; requests still waiting for a handler are
// dropped.
func TestCloseWait(t *testing.T) {
	b, _, toSlave, ctx, errs := oneRunningOneWaiting(t)

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err := toSlave.CloseWait(short)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CloseWait with a handler still running: got %v, want %v", err, context.DeadlineExceeded)
	}
	for range 2 {
		if err := testkit.Recv(t, errs, 5*time.Second, "the requests to fail"); !errors.Is(err, link.ErrSessionLost) {
			t.Errorf("a request to the closed link ended with %v, want %v", err, link.ErrSessionLost)
		}
	}
	equal(t, toSlave.Stats().Goroutines, 1, "goroutines of the link while the handler runs")

	close(b.release)
	testkit.NoErr(t, toSlave.CloseWait(ctx), "CloseWait once the handler can return")
	s := toSlave.Stats()
	equal(t, s.Goroutines, 0, "goroutines of the link after CloseWait")
	equal(t, s.Handling, 0, "messages being handled after CloseWait")
	equal(t, b.served.Load(), int32(1), "requests handled (the waiting one was dropped)")
}

// A request handler's context has the requester's deadline and, without
// the handler ever calling Done, reports DeadlineExceeded once it has
// passed; Done, Cause and derived contexts agree. After the handler
// returns, the context is cancelled.
func TestHandlerContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []link.HandlerOption
	}{{"NonBlocking", []link.HandlerOption{link.NonBlocking()}}, {"default", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			type seen struct {
				ctx      context.Context
				deadline time.Time
				err      error
			}
			got := make(chan seen, 1)
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
			link.HandleRequest(toSlave, testEcho, func(ctx context.Context, r echoReq) (echoResp, error) {
				dl, _ := ctx.Deadline()
				got <- seen{ctx, dl, ctx.Err()}
				return echoResp(r), nil
			}, tc.opts...)
			start(t, toSlave, testEcho)
			start(t, toInstance)
			ctx := testkit.Ctx(t, 10*time.Second)
			want, _ := ctx.Deadline()
			_, err := link.Request(ctx, toInstance, testEcho, echoReq{N: 1})
			testkit.NoErr(t, err, "request")
			s := testkit.Recv(t, got, 5*time.Second, "the handler")
			if !s.deadline.Equal(want) {
				t.Errorf("handler's deadline %v, want the requester's %v", s.deadline, want)
			}
			testkit.NoErr(t, s.err, "the handler's ctx.Err while it ran")
			if err := s.ctx.Err(); !errors.Is(err, context.Canceled) {
				t.Errorf("after the handler returned, ctx.Err() = %v, want %v", err, context.Canceled)
			}
			if !closed(s.ctx.Done()) {
				t.Error("after the handler returned, ctx.Done() is not closed")
			}
		})
	}

	t.Run("deadline passes", func(t *testing.T) {
		const timeout = 200 * time.Millisecond
		handled := make(chan error, 1)
		toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
		link.HandleRequest(toSlave, testEcho, func(ctx context.Context, r echoReq) (echoResp, error) {
			// Watch the clock through Err alone, as a handler that never
			// waits on Done would.
			testkit.WaitFor(t, 5*time.Second, "ctx.Err to report the deadline", func() bool { return ctx.Err() != nil })
			var errs []error
			if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
				errs = append(errs, errors.New("ctx.Err: "+err.Error()))
			}
			if !closed(ctx.Done()) {
				errs = append(errs, errors.New("Done is not closed after the deadline"))
			}
			if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
				errs = append(errs, errors.New("context.Cause: "+err.Error()))
			}
			derived, cancel := context.WithCancel(ctx)
			defer cancel()
			if !closed(derived.Done()) || !errors.Is(derived.Err(), context.DeadlineExceeded) {
				errs = append(errs, errors.New("a derived context is not done with DeadlineExceeded"))
			}
			handled <- errors.Join(errs...)
			return echoResp(r), nil
		})
		start(t, toSlave, testEcho)
		start(t, toInstance)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		// The response, sent as the deadline passes, may or may not beat
		// the requester's own timeout: what matters here is the handler.
		_, _ = link.Request(ctx, toInstance, testEcho, echoReq{N: 1})
		testkit.NoErr(t, testkit.Recv(t, handled, 10*time.Second, "the handler"), "the handler's context")
	})
}

// Event handlers that emit on their own link, whose peer's handlers emit
// back, never wait for themselves, however small the queues: events that
// come back to a link whose event handler is running further up the call
// chain are queued beyond the bound. (Handlers running on two goroutines
// that each fill the other's queue still wait for each other, as events
// always have: here every handler runs on one goroutine, the sender's or
// the link's.)
func TestNestedEventsDoNotDeadlock(t *testing.T) {
	const fanout, generations = 4, 3 // each event below the last generation brings fanout more back
	total := 0
	for g, n := 0, 1; g <= generations; g, n = g+1, n*fanout {
		total += n
	}
	for _, tc := range []struct {
		name        string
		slave, inst []link.HandlerOption
	}{
		{"both NonBlocking", []link.HandlerOption{link.NonBlocking()}, []link.HandlerOption{link.NonBlocking()}},
		{"queued slave, NonBlocking instance", nil, []link.HandlerOption{link.NonBlocking()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var handled atomic.Int32
			queue := []link.Option{link.WithEventQueue(1)}
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, queue, queue)
			bounce := func(l *link.Link) func(context.Context, tick) error {
				return func(ctx context.Context, ev tick) error {
					handled.Add(1)
					if ev.Seq >= generations {
						return nil
					}
					for range fanout {
						if err := link.Emit(ctx, l, testTick, tick{Seq: ev.Seq + 1}); err != nil {
							return err
						}
					}
					return nil
				}
			}
			link.HandleEvent(toInstance, testTick, bounce(toInstance), tc.slave...)
			link.HandleEvent(toSlave, testTick, bounce(toSlave), tc.inst...)
			start(t, toInstance, testTick)
			start(t, toSlave, testTick)
			emitted := make(chan error, 1)
			go func() { emitted <- link.Emit(context.Background(), toSlave, testTick, tick{Seq: 0}) }()
			testkit.NoErr(t, testkit.Recv(t, emitted, 10*time.Second, "the first Emit to return"), "the first event")
			testkit.WaitFor(t, 10*time.Second, "every event", func() bool { return int(handled.Load()) == total })
			for _, l := range []*link.Link{toInstance, toSlave} {
				equal(t, l.Stats().HandlerErrors, 0, l.String()+": handler errors")
			}
		})
	}
}

// A request handler that asks the peer, whose handler asks back, and so
// on, does not wait for its own place among WithMaxHandlers.
func TestNestedRequestsDoNotDeadlock(t *testing.T) {
	const depth = 6
	limit := []link.Option{link.WithMaxHandlers(1)}
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, limit, limit)
	var mu sync.Mutex
	var seen []int
	ask := func(l *link.Link) func(context.Context, echoReq) (echoResp, error) {
		return func(ctx context.Context, r echoReq) (echoResp, error) {
			mu.Lock()
			seen = append(seen, r.N)
			mu.Unlock()
			if r.N == 0 {
				return echoResp(r), nil
			}
			resp, err := link.Request(ctx, l, testEcho, echoReq{N: r.N - 1})
			return echoResp{N: resp.N + 1}, err
		}
	}
	link.HandleRequest(toInstance, testEcho, ask(toInstance))
	link.HandleRequest(toSlave, testEcho, ask(toSlave))
	start(t, toInstance, testEcho)
	start(t, toSlave, testEcho)
	type result struct {
		resp echoResp
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := link.Request(context.Background(), toInstance, testEcho, echoReq{N: depth})
		done <- result{resp, err}
	}()
	r := testkit.Recv(t, done, 10*time.Second, "the request that asks back")
	testkit.NoErr(t, r.err, "the request that asks back")
	equal(t, r.resp.N, depth, "answers along the chain")
	mu.Lock()
	defer mu.Unlock()
	equal(t, len(seen), depth+1, "handlers run")
}

// A forwarding handler's response is checked where it arrives; changed on
// its way back, it is checked again and refused.
func TestForwardedResponseChangedIsChecked(t *testing.T) {
	other := link.Address{Type: messages.Instance, ID: "8"}
	toSlave, fromInstance := newPair(t, instanceAddr, slaveAddr, nil, nil)
	toOther, otherSide := newPair(t, slaveAddr, other, nil, nil)
	fromInstance.HandleRequestJSON(testEcho, func(ctx context.Context, req *link.Envelope) ([]byte, error) {
		data, err := toOther.ForwardRequest(ctx, req)
		if err != nil || string(req.Data) == `{"n":1,"text":"as it came"}` {
			return data, err
		}
		return []byte(`{"n":"two","text":"changed"}`), nil // against the schema: n is a number
	})
	link.HandleRequest(otherSide, testEcho, echoHandler)
	start(t, fromInstance, testEcho)
	start(t, otherSide, testEcho)
	start(t, toOther)
	start(t, toSlave)
	ctx := testkit.Ctx(t, 10*time.Second)

	resp, err := link.Request(ctx, toSlave, testEcho, echoReq{N: 1, Text: "as it came"})
	testkit.NoErr(t, err, "a forwarded request answered as it came")
	equal(t, resp, echoResp{N: 1, Text: "as it came"}, "response")
	_, err = link.Request(ctx, toSlave, testEcho, echoReq{N: 2, Text: "changed"})
	testkit.WantCode(t, err, link.CodeInternal)
}
