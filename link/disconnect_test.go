package link_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// gatedEcho returns a test:echo handler that, for N == 1, reports on
// started and waits for release before answering.
func gatedEcho(started chan<- struct{}, release <-chan struct{}) func(context.Context, echoReq) (echoResp, error) {
	return func(_ context.Context, r echoReq) (echoResp, error) {
		if r.N == 1 {
			started <- struct{}{}
			<-release
		}
		return echoResp(r), nil
	}
}

type echoResult struct {
	resp echoResp
	err  error
}

// requestAsync sends test:echo in its own goroutine.
func requestAsync(ctx context.Context, l *link.Link, req echoReq) <-chan echoResult {
	done := make(chan echoResult, 1)
	go func() {
		resp, err := link.Request(ctx, l, testEcho, req)
		done <- echoResult{resp, err}
	}()
	return done
}

// Disconnect on a link with prepare_disconnect: both sides stop taking new
// requests, the requests in flight both ways finish, then both links close.
func TestDisconnectGraceful(t *testing.T) {
	masterStarted, masterRelease := make(chan struct{}, 1), make(chan struct{})
	controlStarted, controlRelease := make(chan struct{}, 1), make(chan struct{})
	toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
	link.HandleRequest(toControl, testEcho, gatedEcho(masterStarted, masterRelease))
	link.HandleRequest(toMaster, testEcho, gatedEcho(controlStarted, controlRelease))
	start(t, toControl, testEcho)
	start(t, toMaster, testEcho)

	ctx := testkit.Ctx(t, 10*time.Second)
	fromControl := requestAsync(ctx, toMaster, echoReq{N: 1, Text: "from control"})
	fromMaster := requestAsync(ctx, toControl, echoReq{N: 1, Text: "from master"})
	testkit.Recv(t, masterStarted, 5*time.Second, "the master's handler to start")
	testkit.Recv(t, controlStarted, 5*time.Second, "the control's handler to start")

	disconnected := make(chan error, 1)
	go func() { disconnected <- toControl.Disconnect(ctx) }()

	// The control hears prepare_disconnect and stops sending requests.
	testkit.WaitFor(t, 5*time.Second, "the control to refuse new requests", func() bool {
		_, err := link.Request(ctx, toMaster, messages.Ping, messages.Empty{})
		return errors.Is(err, link.ErrUnavailable)
	})
	// So does the master, which is disconnecting.
	_, err := link.Request(ctx, toControl, testEcho, echoReq{N: 2})
	testkit.WantCode(t, err, link.CodeUnavailable)
	_, err = toControl.RequestJSON(ctx, messages.Ping, []byte(`{}`))
	testkit.WantCode(t, err, link.CodeUnavailable)

	if closed(disconnected) || closed(toControl.Done()) || closed(toMaster.Done()) {
		t.Fatal("the link closed with requests in flight")
	}

	close(masterRelease)
	close(controlRelease)
	for name, done := range map[string]<-chan echoResult{"from control": fromControl, "from master": fromMaster} {
		r := testkit.Recv(t, done, 5*time.Second, "the request "+name+" to end")
		testkit.NoErr(t, r.err, "in-flight request "+name)
		equal(t, r.resp.Text, name, "response to the request "+name)
	}
	testkit.NoErr(t, testkit.Recv(t, disconnected, 5*time.Second, "Disconnect to return"), "Disconnect")
	if !closed(toMaster.Done()) {
		t.Error("Disconnect returned before the peer's link was done")
	}
	if !closed(toControl.Done()) {
		t.Error("Disconnect returned before its own link was done")
	}
}

// Disconnect waits no longer than its context: a request that never ends
// makes it return an error about then, and the link closes anyway.
func TestDisconnectBoundedByContext(t *testing.T) {
	tests := []struct {
		name string
		// stuck is the link whose outbound request is never answered.
		stuck func(toMaster, toControl *link.Link) *link.Link
	}{
		{name: "peer's request never answered", stuck: func(toMaster, _ *link.Link) *link.Link { return toMaster }},
		{name: "own request never answered", stuck: func(_, toControl *link.Link) *link.Link { return toControl }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const bound = 200 * time.Millisecond
			started := make(chan struct{}, 1)
			never := make(chan struct{}) // the handler ignores its context
			t.Cleanup(func() { close(never) })
			toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
			link.HandleRequest(toControl, testEcho, gatedEcho(started, never))
			link.HandleRequest(toMaster, testEcho, gatedEcho(started, never))
			start(t, toControl, testEcho)
			start(t, toMaster, testEcho)

			pending := requestAsync(testkit.Ctx(t, 30*time.Second), tc.stuck(toMaster, toControl), echoReq{N: 1})
			testkit.Recv(t, started, 5*time.Second, "the handler to start")

			began := time.Now()
			err := toControl.Disconnect(testkit.Ctx(t, bound))
			took := time.Since(began)
			if err == nil {
				t.Fatal("Disconnect returned no error with a request that never ends")
			}
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, link.ErrTimeout) {
				t.Errorf("Disconnect's error %v says nothing of the deadline", err)
			}
			if took < bound-10*time.Millisecond || took > bound+2*time.Second {
				t.Errorf("Disconnect returned after %s, want about %s", took, bound)
			}
			if !closed(toControl.Done()) || !closed(toMaster.Done()) {
				t.Fatal("Disconnect returned with a link still open")
			}
			r := testkit.Recv(t, pending, 5*time.Second, "the stuck request to end")
			testkit.WantCode(t, r.err, link.CodeSessionLost)
		})
	}
}

// On a link without prepare_disconnect (slave-instance), Disconnect still
// refuses new requests, lets those in flight finish, and closes both sides.
func TestDisconnectWithoutPrepare(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	link.HandleRequest(toSlave, testEcho, gatedEcho(started, release))
	start(t, toSlave, testEcho)
	start(t, toInstance)

	ctx := testkit.Ctx(t, 10*time.Second)
	pending := requestAsync(ctx, toInstance, echoReq{N: 1, Text: "in flight"})
	testkit.Recv(t, started, 5*time.Second, "the handler to start")
	disconnected := make(chan error, 1)
	go func() { disconnected <- toInstance.Disconnect(ctx) }()

	testkit.WaitFor(t, 5*time.Second, "the slave's side to refuse new requests", func() bool {
		_, err := link.Request(ctx, toInstance, testEcho, echoReq{N: 2})
		return errors.Is(err, link.ErrUnavailable)
	})
	if closed(disconnected) {
		t.Fatal("Disconnect returned with a request in flight")
	}
	close(release)
	r := testkit.Recv(t, pending, 5*time.Second, "the request in flight to end")
	testkit.NoErr(t, r.err, "request in flight")
	equal(t, r.resp.Text, "in flight", "response")
	testkit.NoErr(t, testkit.Recv(t, disconnected, 5*time.Second, "Disconnect to return"), "Disconnect")
	if !closed(toSlave.Done()) {
		t.Error("the peer's link is not done after Disconnect")
	}
}

// Disconnect of a link never started just closes it.
func TestDisconnectBeforeStart(t *testing.T) {
	toMaster, _ := newPair(t, controlAddr, masterAddr, nil, nil)
	testkit.NoErr(t, toMaster.Disconnect(testkit.Ctx(t, 5*time.Second)), "Disconnect")
	if !closed(toMaster.Done()) {
		t.Fatal("Done() is not closed")
	}
}

// Disconnect on a link the peer is already disconnecting is bounded by its
// own context too: it closes the link and says so when ctx ends first.
func TestDisconnectWhilePeerDisconnects(t *testing.T) {
	started := make(chan struct{}, 1)
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
	link.HandleRequest(toControl, testEcho, gatedEcho(started, never))
	start(t, toControl, testEcho)
	start(t, toMaster)

	// The control's request is never answered, so the master's Disconnect
	// waits (for its long ctx) and the control stays in prepare_disconnect.
	pending := requestAsync(testkit.Ctx(t, 30*time.Second), toMaster, echoReq{N: 1})
	testkit.Recv(t, started, 5*time.Second, "the handler to start")
	masterDone := make(chan error, 1)
	go func() { masterDone <- toControl.Disconnect(testkit.Ctx(t, 30*time.Second)) }()
	testkit.WaitFor(t, 5*time.Second, "the control to hear prepare_disconnect", func() bool {
		_, err := link.Request(testkit.Ctx(t, time.Second), toMaster, messages.Ping, messages.Empty{})
		return errors.Is(err, link.ErrUnavailable)
	})

	const bound = 100 * time.Millisecond
	began := time.Now()
	err := toMaster.Disconnect(testkit.Ctx(t, bound))
	took := time.Since(began)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("control's Disconnect: got %v, want an error matching context.DeadlineExceeded", err)
	}
	if took > bound+2*time.Second {
		t.Errorf("control's Disconnect with a %s ctx returned after %s", bound, took)
	}
	if !closed(toMaster.Done()) {
		t.Error("control's link is not done after Disconnect")
	}
	testkit.Recv(t, toControl.Done(), 5*time.Second, "the master's link to close")
	testkit.Recv(t, masterDone, 5*time.Second, "the master's Disconnect to return")
	testkit.WantCode(t, testkit.Recv(t, pending, 5*time.Second, "the stuck request to end").err, link.CodeSessionLost)
}

// Drain does what Disconnect does before closing, and leaves the link open:
// new requests are refused both ways, events still flow both ways, and
// the link closes only when told to.
func TestDrainLeavesTheLinkOpen(t *testing.T) {
	toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
	atMaster, atControl := make(chan int, 1), make(chan int, 1)
	link.HandleEvent(toControl, testTick, func(_ context.Context, ev tick) error {
		atMaster <- ev.Seq
		return nil
	})
	link.HandleEvent(toMaster, testTick, func(_ context.Context, ev tick) error {
		atControl <- ev.Seq
		return nil
	})
	start(t, toControl, testTick)
	start(t, toMaster, testTick)

	ctx := testkit.Ctx(t, 10*time.Second)
	testkit.NoErr(t, toControl.Drain(ctx), "Drain")
	if closed(toControl.Done()) || closed(toMaster.Done()) {
		t.Fatal("Drain closed the link")
	}
	_, err := link.Request(ctx, toControl, testEcho, echoReq{N: 2})
	testkit.WantCode(t, err, link.CodeUnavailable)
	_, err = link.Request(ctx, toMaster, testEcho, echoReq{N: 2})
	testkit.WantCode(t, err, link.CodeUnavailable)

	testkit.NoErr(t, link.Emit(ctx, toControl, testTick, tick{Seq: 1}), "event from the drained side")
	equal(t, testkit.Recv(t, atControl, 5*time.Second, "the event from the drained side"), 1, "event")
	testkit.NoErr(t, link.Emit(ctx, toMaster, testTick, tick{Seq: 2}), "event to the drained side")
	equal(t, testkit.Recv(t, atMaster, 5*time.Second, "the event to the drained side"), 2, "event")

	testkit.NoErr(t, toControl.Drain(ctx), "a second Drain")
	testkit.NoErr(t, toControl.Close(), "Close")
	testkit.Recv(t, toMaster.Done(), 5*time.Second, "the peer's link to close")
}

// stopper is a virtual end that is a link.Stopper: its Stop delivers
// burst to the link first, as events that arrived just before the stop,
// and from then on delivers nothing.
type stopper struct {
	*virtual.Conn
	r       link.Receiver
	burst   []*link.Envelope
	stopped chan struct{}
	open    chan bool // whether the link still took the burst when Stop ran
}

func (s *stopper) Start(r link.Receiver) error {
	s.r = r
	return s.Conn.Start(r)
}

func (s *stopper) Stop(ctx context.Context) error {
	taken := true
	for _, m := range s.burst {
		taken = taken && s.r.Receive(ctx, m) == nil
	}
	s.open <- taken
	close(s.stopped)
	return nil
}

// A graceful Disconnect stops a connector that can stop (link.Stopper)
// once the link has drained and before the link stops taking events, and
// returns only when the handlers of everything it delivered have run: a
// connector that acknowledged those events (connector/nats) loses none.
func TestDisconnectRunsWhatTheConnectorDelivered(t *testing.T) {
	a, b := virtual.Pair()
	const n = 20
	s := &stopper{Conn: a, stopped: make(chan struct{}), open: make(chan bool, 1)}
	for i := range n {
		s.burst = append(s.burst, &link.Envelope{Kind: messages.KindEvent, Type: testTick.Name(), Data: []byte(fmt.Sprintf(`{"seq":%d,"items":[]}`, i))})
	}
	release := make(chan struct{})
	var mu sync.Mutex
	var got []int
	toMaster := newLink(t, s, controlAddr, masterAddr, link.WithEventQueue(1))
	link.HandleEvent(toMaster, testTick, func(_ context.Context, ev tick) error {
		if ev.Seq == n-1 {
			<-release // the last is still running when Stop returns
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev.Seq)
		return nil
	})
	start(t, toMaster, testTick)
	start(t, newLink(t, b, masterAddr, controlAddr))

	disconnected := make(chan error, 1)
	go func() { disconnected <- toMaster.Disconnect(testkit.Ctx(t, 10*time.Second)) }()
	testkit.Recv(t, s.stopped, 5*time.Second, "the connector to be stopped")
	if !<-s.open {
		t.Fatal("the link no longer took events when the connector stopped")
	}
	select {
	case err := <-disconnected:
		t.Fatalf("Disconnect returned (%v) while a handler of what the connector delivered was running", err)
	case <-toMaster.Done():
		t.Fatal("the link closed while a handler of what the connector delivered was running")
	default:
	}
	close(release)
	testkit.NoErr(t, testkit.Recv(t, disconnected, 5*time.Second, "Disconnect"), "Disconnect")
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("the handler ran for %d of the %d events delivered before the stop: %v", len(got), n, got)
	}
	for i, seq := range got {
		if seq != i {
			t.Fatalf("handled %v: out of order", got)
		}
	}
}

// When the peer closes a link, the events the connector delivered before
// it (and acknowledged to the peer: connector/nats does as it delivers)
// are still handled, in order, before the link is done; requests waiting
// for a handler are not, as their responses could not be sent.
func TestPeerCloseRunsQueuedEvents(t *testing.T) {
	a, b := virtual.Pair()
	const n = 20
	release := make(chan struct{})
	first := make(chan struct{})
	var mu sync.Mutex
	var got []int
	toMaster := newLink(t, a, controlAddr, masterAddr)
	link.HandleEvent(toMaster, testTick, func(ctx context.Context, ev tick) error {
		if ev.Seq == 0 {
			close(first)
			<-release
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev.Seq)
		if ctx.Err() != nil {
			t.Errorf("event %d: the handler's context ended before the queued events were handled: %v", ev.Seq, ctx.Err())
		}
		return nil
	})
	start(t, toMaster, testTick)
	toControl := newLink(t, b, masterAddr, controlAddr)
	start(t, toControl)
	ctx := testkit.Ctx(t, 10*time.Second)
	for i := range n {
		testkit.NoErr(t, link.Emit(ctx, toControl, testTick, tick{Seq: i, Items: []string{}}), "emit")
		if i == 0 {
			testkit.Recv(t, first, 5*time.Second, "the first handler to start")
		}
	}
	testkit.NoErr(t, toControl.Close(), "the peer's close")
	testkit.WaitFor(t, 5*time.Second, "the link to see its peer's close", func() bool {
		_, err := link.Request(ctx, toMaster, testEcho, echoReq{})
		return errors.Is(err, link.ErrSessionLost)
	})
	select {
	case <-toMaster.Done():
		t.Fatal("the link was done while the events its connector delivered waited for a handler")
	default:
	}
	close(release)
	testkit.Recv(t, toMaster.Done(), 5*time.Second, "the link to be done")
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("handled %d of the %d events delivered before the peer closed: %v", len(got), n, got)
	}
	for i, seq := range got {
		if seq != i {
			t.Fatalf("handled %v: out of order", got)
		}
	}
}
