package linktest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Features describes the connector under test where connectors may
// differ without breaking a link's promises. The zero value fits every
// connector of this module.
type Features struct {
	// LargePayload is the size, in bytes, of the largest text the suite
	// sends in a request and its response. Zero means 256 KiB.
	LargePayload int
	// Prompt bounds what the connector must do promptly: deliver a close,
	// fail a pending request, answer a request. The tests wait that long
	// only when something is wrong. Zero means 5s, which is generous for
	// -race on a busy machine.
	Prompt time.Duration
}

func (f Features) prompt() time.Duration {
	if f.Prompt > 0 {
		return f.Prompt
	}
	return 5 * time.Second
}

func (f Features) largePayload() int {
	if f.LargePayload > 0 {
		return f.LargePayload
	}
	return 256 << 10
}

// Run runs every behaviour test over links that newPair makes, each in a
// subtest with a pair of its own.
func Run(t *testing.T, newPair NewPair, f Features) {
	tests := []struct {
		name string
		run  func(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features)
	}{
		{"RequestResponse", testRequestResponse},
		{"HandlerErrors", testHandlerErrors},
		{"EventOrder", testEventOrder},
		{"InvalidPayload", testInvalidPayload},
		{"Timeout", testTimeout},
		{"Close", testClose},
		{"Disconnect", testDisconnect},
		{"ConcurrentRequests", testConcurrentRequests},
		{"NonBlockingHandlers", testNonBlockingHandlers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newPair, Catalog(), f) })
	}
}

// setup returns a setup function that attaches attach's handlers and stubs
// the rest.
func setup(cat *messages.Catalog, attach func(l *link.Link)) func(*link.Link) {
	return func(l *link.Link) {
		if attach != nil {
			attach(l)
		}
		Stub(l, cat)
	}
}

// Typed requests arrive decoded and their typed responses come back, both
// ways, including the links' built-in ping and a large payload
// (Features.LargePayload).
func testRequestResponse(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	echo := setup(cat, func(l *link.Link) { link.HandleRequest(l, Echo, EchoHandler(l)) })
	a, b := newPair(t, cat, echo, echo)
	ctx := testkit.Ctx(t, 30*time.Second)
	for _, dir := range []struct {
		name     string
		from, to *link.Link
	}{{"A to B", a, b}, {"B to A", b, a}} {
		for _, text := range []string{"", "héllo, wörld ✓ \"quoted\" \\ \n\t\u0000", strings.Repeat("0123456789abcdef", f.largePayload()/16)} {
			want := EchoResponse{N: len(text), Text: text, From: dir.to.Self().String()}
			got, err := link.Request(ctx, dir.from, Echo, EchoRequest{N: len(text), Text: text})
			if err != nil {
				t.Fatalf("%s: echo of %d bytes: %v", dir.name, len(text), err)
			}
			if got != want {
				t.Errorf("%s: echo of %d bytes = {N:%d From:%q len(Text):%d}, want {N:%d From:%q len(Text):%d} (texts equal: %t)",
					dir.name, len(text), got.N, got.From, len(got.Text), want.N, want.From, len(want.Text), got.Text == want.Text)
			}
		}
		if _, err := link.Request(ctx, dir.from, messages.Ping, messages.Empty{}); err != nil {
			t.Errorf("%s: ping: %v", dir.name, err)
		}
	}
}

// A handler's error reaches the requester with its code and message
// intact; errors without a code, sentinels and panics arrive as the link
// documents.
func testHandlerErrors(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	fail := setup(cat, func(l *link.Link) {
		link.HandleRequest(l, Fail, func(_ context.Context, f Failure) (messages.Empty, error) {
			switch f.Mode {
			case "coded":
				return messages.Empty{}, link.Errorf(link.Code(f.Code), "%s", f.Message)
			case "wrapped":
				return messages.Empty{}, fmt.Errorf("while looking it up: %w", link.Errorf(link.Code(f.Code), "%s", f.Message))
			case "plain":
				return messages.Empty{}, errors.New(f.Message)
			case "sentinel":
				return messages.Empty{}, link.ErrPermissionDenied
			}
			panic(f.Message)
		})
	})
	a, b := newPair(t, cat, fail, fail)
	ctx := testkit.Ctx(t, 30*time.Second)
	tests := []struct {
		name     string
		failure  Failure
		wantCode link.Code
		wantMsg  string // "" for any
		wantIs   error  // a sentinel the error must match, or nil
	}{
		{"coded", Failure{Mode: "coded", Code: "linktest.refused", Message: "no entry 42: «ünïcode» and \"quotes\""},
			"linktest.refused", "no entry 42: «ünïcode» and \"quotes\"", nil},
		{"core code", Failure{Mode: "coded", Code: string(link.CodeTimeout), Message: "the instance did not answer"},
			link.CodeTimeout, "the instance did not answer", link.ErrTimeout},
		{"wrapped", Failure{Mode: "wrapped", Code: "linktest.busy", Message: "try again later"},
			"linktest.busy", "try again later", nil},
		{"plain", Failure{Mode: "plain", Message: "disk on fire"}, link.CodeHandlerError, "disk on fire", link.ErrHandlerError},
		{"sentinel", Failure{Mode: "sentinel"}, link.CodePermissionDenied, link.ErrPermissionDenied.Message, link.ErrPermissionDenied},
		{"panic", Failure{Mode: "panic", Message: "boom"}, link.CodeInternal, "", link.ErrInternal},
	}
	for _, dir := range []struct {
		name string
		from *link.Link
	}{{"A to B", a}, {"B to A", b}} {
		for _, tc := range tests {
			t.Run(dir.name+"/"+tc.name, func(t *testing.T) {
				_, err := link.Request(ctx, dir.from, Fail, tc.failure)
				var le *link.Error
				if !errors.As(err, &le) {
					t.Fatalf("got %v (%T), want a *link.Error", err, err)
				}
				if le.Code != tc.wantCode || (tc.wantMsg != "" && le.Message != tc.wantMsg) {
					t.Errorf("got code %q message %q, want code %q message %q", le.Code, le.Message, tc.wantCode, tc.wantMsg)
				}
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
				}
			})
		}
	}
	// The link is still usable after all that.
	if _, err := link.Request(ctx, a, messages.Ping, messages.Empty{}); err != nil {
		t.Errorf("ping after the failures: %v", err)
	}
}

// Events arrive in the order they were emitted, all of them, both ways at
// once.
func testEventOrder(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	const n = 1000
	ticks := newTicks()
	record := setup(cat, func(l *link.Link) {
		link.HandleEvent(l, Tick, ticks.handler(l.Self()))
	})
	a, b := newPair(t, cat, record, record)
	ctx := testkit.Ctx(t, 60*time.Second)
	errc := make(chan error, 2)
	for _, from := range []*link.Link{a, b} {
		go func() {
			for i := range n {
				if err := link.Emit(ctx, from, Tick, TickEvent{Seq: i}); err != nil {
					errc <- fmt.Errorf("%s: emit %d: %w", from.Self(), i, err)
					return
				}
			}
			errc <- nil
		}()
	}
	for range 2 {
		testkit.NoErr(t, testkit.Recv(t, errc, 60*time.Second, "the emitters"), "emit")
	}
	ticks.wantInOrder(t, n)
}

// ticks records the Tick events each end of a pair handled, in the order
// handled.
type ticks struct {
	mu  sync.Mutex
	got map[link.Address][]int
}

func newTicks() *ticks { return &ticks{got: map[link.Address][]int{}} }

func (k *ticks) handler(self link.Address) func(context.Context, TickEvent) error {
	return func(_ context.Context, ev TickEvent) error {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.got[self] = append(k.got[self], ev.Seq)
		return nil
	}
}

func (k *ticks) count(at link.Address) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.got[at])
}

// wantInOrder waits until both ends handled n ticks, then checks that each
// handled 0..n-1, once each and in order.
func (k *ticks) wantInOrder(t *testing.T, n int) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "every event at both ends", func() bool { return k.count(AddrA) >= n && k.count(AddrB) >= n })
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, at := range []link.Address{AddrA, AddrB} {
		if !slices.Equal(k.got[at], want) {
			t.Errorf("events at %s: %d, out of order or repeated; first difference at %d", at, len(k.got[at]), firstDiff(k.got[at], want))
		}
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A payload that was never checked (sent raw with ForwardRequest and
// ForwardEvent, which skip the sender's check) is refused by the receiver:
// a request with invalid_message, an event dropped and counted. Its
// handler never sees it and the link keeps working.
func testInvalidPayload(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	var mu sync.Mutex
	var echoed []int
	ticks := make(chan int, 16)
	a, b := newPair(t, cat, setup(cat, nil), setup(cat, func(l *link.Link) {
		echo := EchoHandler(l)
		link.HandleRequest(l, Echo, func(ctx context.Context, r EchoRequest) (EchoResponse, error) {
			mu.Lock()
			echoed = append(echoed, r.N)
			mu.Unlock()
			return echo(ctx, r)
		})
		link.HandleEvent(l, Tick, func(_ context.Context, ev TickEvent) error {
			ticks <- ev.Seq
			return nil
		})
	}))
	ctx := testkit.Ctx(t, 30*time.Second)
	before := b.Stats().Invalid
	bad := []struct{ name, data string }{
		{"against the schema", `{"n":-1,"text":"x"}`},
		{"wrong type", `{"n":"seven","text":""}`},
		{"missing field", `{"text":"x"}`},
		{"not JSON", `{"n":`},
		{"binary", "\x00\xff\xfe"},
		{"empty", ``},
		{"JSON but not an object", `[1,2,3]`},
	}
	for _, tc := range bad {
		_, err := a.ForwardRequest(ctx, &link.Envelope{Kind: messages.KindRequest, Type: Echo.Name(), Data: []byte(tc.data)})
		if !errors.Is(err, link.ErrInvalidMessage) {
			t.Errorf("request %s (%q): got %v, want %v", tc.name, tc.data, err, link.ErrInvalidMessage)
		}
	}
	if n := b.Stats().Invalid - before; n < uint64(len(bad)) {
		t.Errorf("B counted %d invalid requests, want %d", n, len(bad))
	}
	resp, err := link.Request(ctx, a, Echo, EchoRequest{N: 7, Text: "after"})
	if err != nil || resp.N != 7 {
		t.Fatalf("valid echo after the invalid ones: %+v, %v", resp, err)
	}
	mu.Lock()
	if !slices.Equal(echoed, []int{7}) {
		t.Errorf("the echo handler saw %v, want only the valid request [7]", echoed)
	}
	mu.Unlock()

	before = b.Stats().Invalid
	for _, data := range []string{`{"seq":-1}`, `{"seq":`, `"tick"`, ``} {
		testkit.NoErr(t, a.ForwardEvent(ctx, &link.Envelope{Kind: messages.KindEvent, Type: Tick.Name(), Data: []byte(data)}), "forward an invalid event")
	}
	testkit.NoErr(t, link.Emit(ctx, a, Tick, TickEvent{Seq: 5}), "emit a valid event")
	if seq := testkit.Recv(t, ticks, f.prompt(), "the valid event"); seq != 5 {
		t.Errorf("the event handler saw seq %d first, want only the valid event 5", seq)
	}
	testkit.WaitFor(t, f.prompt(), "B to count 4 invalid events", func() bool { return b.Stats().Invalid-before >= 4 })
}

// A request that is not answered ends at the requester's deadline with
// ErrTimeout; the deadline travels with it, so the handler's context ends
// then too. The link goes on working.
func testTimeout(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	deadlines := make(chan time.Time, 1)
	ended := make(chan error, 1)
	a, _ := newPair(t, cat, setup(cat, nil), setup(cat, func(l *link.Link) {
		link.HandleRequest(l, Echo, EchoHandler(l))
		link.HandleRequest(l, Hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
			dl, _ := ctx.Deadline()
			deadlines <- dl
			<-ctx.Done()
			ended <- ctx.Err()
			return messages.Empty{}, ctx.Err()
		})
	}))
	const timeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	want, _ := ctx.Deadline()
	start := time.Now()
	_, err := link.Request(ctx, a, Hold, messages.Empty{})
	elapsed := time.Since(start)
	if !errors.Is(err, link.ErrTimeout) {
		t.Errorf("got %v, want %v", err, link.ErrTimeout)
	}
	if elapsed < timeout-10*time.Millisecond || elapsed > timeout+2*time.Second {
		t.Errorf("the request ended after %s, want about %s", elapsed, timeout)
	}
	got := testkit.Recv(t, deadlines, f.prompt(), "the handler to start")
	if d := got.Sub(want); d < -250*time.Millisecond || d > 250*time.Millisecond {
		t.Errorf("the handler's deadline is %s off the requester's", d)
	}
	if err := testkit.Recv(t, ended, f.prompt(), "the handler's context to end"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the handler's context ended with %v, want %v", err, context.DeadlineExceeded)
	}
	if _, err := link.Request(testkit.Ctx(t, 30*time.Second), a, Echo, EchoRequest{N: 1}); err != nil {
		t.Errorf("echo after the timeout: %v", err)
	}
}

// Closing either link ends the other promptly: requests pending on either
// side fail with ErrSessionLost, the peer's Done closes, the handlers that
// were running see their context end, and nothing more can be sent.
func testClose(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	tests := []struct {
		name string
		// requester sends a request that is held; closer then closes.
		requester, closer func(a, b *link.Link) *link.Link
	}{
		{"B closes while A waits for it", pick(0), pick(1)},
		{"A closes while B waits for it", pick(1), pick(0)},
		{"A closes while waiting for B", pick(0), pick(0)},
		{"B closes while waiting for A", pick(1), pick(1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			ended := make(chan error, 1)
			hold := setup(cat, func(l *link.Link) {
				link.HandleRequest(l, Hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
					started <- struct{}{}
					<-ctx.Done()
					ended <- ctx.Err()
					return messages.Empty{}, ctx.Err()
				})
			})
			a, b := newPair(t, cat, hold, hold)
			req, closer := tc.requester(a, b), tc.closer(a, b)
			other := a
			if closer == a {
				other = b
			}
			errc := make(chan error, 1)
			go func() {
				_, err := link.Request(context.Background(), req, Hold, messages.Empty{})
				errc <- err
			}()
			testkit.Recv(t, started, f.prompt(), "the handler to start")
			testkit.NoErr(t, closer.Close(), "close")
			if err := testkit.Recv(t, errc, f.prompt(), "the pending request to fail"); !errors.Is(err, link.ErrSessionLost) {
				t.Errorf("the pending request ended with %v, want %v", err, link.ErrSessionLost)
			}
			testkit.Recv(t, other.Done(), f.prompt(), "the other link's Done")
			testkit.Recv(t, closer.Done(), f.prompt(), "the closed link's Done")
			if err := testkit.Recv(t, ended, f.prompt(), "the handler's context to end"); !errors.Is(err, context.Canceled) {
				t.Errorf("the handler's context ended with %v, want %v", err, context.Canceled)
			}
			ctx := testkit.Ctx(t, f.prompt())
			for _, l := range []*link.Link{a, b} {
				if _, err := link.Request(ctx, l, messages.Ping, messages.Empty{}); !errors.Is(err, link.ErrSessionLost) {
					t.Errorf("%s: ping after close: %v, want %v", l.Self(), err, link.ErrSessionLost)
				}
				if err := link.Emit(ctx, l, Tick, TickEvent{}); !errors.Is(err, link.ErrSessionLost) {
					t.Errorf("%s: emit after close: %v, want %v", l.Self(), err, link.ErrSessionLost)
				}
				testkit.NoErr(t, l.Close(), "close again")
			}
		})
	}
}

func pick(i int) func(a, b *link.Link) *link.Link {
	return func(a, b *link.Link) *link.Link { return []*link.Link{a, b}[i] }
}

// Disconnect refuses new requests on both sides, lets the one in flight
// end with its response, then closes both links.
func testDisconnect(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	a, b := newPair(t, cat,
		setup(cat, func(l *link.Link) { link.HandleRequest(l, Echo, EchoHandler(l)) }),
		setup(cat, func(l *link.Link) {
			link.HandleRequest(l, Echo, EchoHandler(l))
			link.HandleRequest(l, Hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
				started <- struct{}{}
				select {
				case <-release:
					return messages.Empty{}, nil
				case <-ctx.Done():
					return messages.Empty{}, ctx.Err()
				}
			})
		}))
	ctx := testkit.Ctx(t, 60*time.Second)
	held := make(chan error, 1)
	go func() {
		_, err := link.Request(ctx, a, Hold, messages.Empty{})
		held <- err
	}()
	testkit.Recv(t, started, f.prompt(), "the held request to start")
	disconnected := make(chan error, 1)
	go func() { disconnected <- a.Disconnect(ctx) }()

	refuses := func(l *link.Link) func() bool {
		return func() bool {
			_, err := link.Request(ctx, l, Echo, EchoRequest{N: 1})
			if err != nil && !errors.Is(err, link.ErrUnavailable) {
				t.Fatalf("%s: a request during the disconnect failed with %v, want success or %v", l.Self(), err, link.ErrUnavailable)
			}
			return err != nil
		}
	}
	testkit.WaitFor(t, f.prompt(), "A to refuse new requests", refuses(a))
	testkit.WaitFor(t, f.prompt(), "B to refuse new requests", refuses(b))
	select {
	case err := <-disconnected:
		t.Fatalf("Disconnect returned (%v) while a request was in flight", err)
	case <-a.Done():
		t.Fatal("A closed while a request was in flight")
	default:
	}
	close(release)
	testkit.NoErr(t, testkit.Recv(t, held, f.prompt(), "the held request"), "the request in flight during Disconnect")
	testkit.NoErr(t, testkit.Recv(t, disconnected, f.prompt(), "Disconnect"), "Disconnect")
	testkit.Recv(t, a.Done(), f.prompt(), "A's Done")
	testkit.Recv(t, b.Done(), f.prompt(), "B's Done")
}

// Many goroutines request at once, both ways; every response goes to its
// own request.
func testConcurrentRequests(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	const goroutines, each = 32, 50
	echo := setup(cat, func(l *link.Link) { link.HandleRequest(l, Echo, EchoHandler(l)) })
	a, b := newPair(t, cat, echo, echo)
	ctx := testkit.Ctx(t, 120*time.Second)
	errc := make(chan error, goroutines)
	for g := range goroutines {
		from, to := a, b
		if g%2 == 1 {
			from, to = b, a
		}
		go func() {
			for i := range each {
				n := g*each + i
				req := EchoRequest{N: n, Text: strconv.Itoa(n) + strings.Repeat("x", n%97)}
				resp, err := link.Request(ctx, from, Echo, req)
				if err != nil {
					errc <- fmt.Errorf("goroutine %d request %d: %w", g, i, err)
					return
				}
				if want := (EchoResponse{N: req.N, Text: req.Text, From: to.Self().String()}); resp != want {
					errc <- fmt.Errorf("goroutine %d request %d: got %+v, want %+v", g, i, resp, want)
					return
				}
			}
			errc <- nil
		}()
	}
	for range goroutines {
		if err := testkit.Recv(t, errc, 120*time.Second, "the requesting goroutines"); err != nil {
			t.Error(err)
		}
	}
	for _, l := range []*link.Link{a, b} {
		if p := l.Stats().Pending; p != 0 {
			t.Errorf("%s: %d requests still pending", l.Self(), p)
		}
	}
}

// Handlers declared NonBlocking, which run on the goroutine that delivers
// their message, answer requests and take events as the others do: every
// response to its own request, every event once and in order, both ways
// at once.
func testNonBlockingHandlers(t *testing.T, newPair NewPair, cat *messages.Catalog, f Features) {
	const goroutines, each, events = 8, 25, 300
	ticks := newTicks()
	attach := setup(cat, func(l *link.Link) {
		link.HandleRequest(l, Echo, EchoHandler(l), link.NonBlocking())
		link.HandleEvent(l, Tick, ticks.handler(l.Self()), link.NonBlocking())
	})
	a, b := newPair(t, cat, attach, attach)
	ctx := testkit.Ctx(t, 60*time.Second)
	errc := make(chan error, goroutines+2)
	for g := range goroutines {
		from, to := a, b
		if g%2 == 1 {
			from, to = b, a
		}
		go func() {
			for i := range each {
				req := EchoRequest{N: g*each + i, Text: strconv.Itoa(i)}
				resp, err := link.Request(ctx, from, Echo, req)
				if err == nil && resp != (EchoResponse{N: req.N, Text: req.Text, From: to.Self().String()}) {
					err = fmt.Errorf("got %+v for %+v", resp, req)
				}
				if err != nil {
					errc <- fmt.Errorf("goroutine %d request %d: %w", g, i, err)
					return
				}
			}
			errc <- nil
		}()
	}
	for _, from := range []*link.Link{a, b} {
		go func() {
			for i := range events {
				if err := link.Emit(ctx, from, Tick, TickEvent{Seq: i}); err != nil {
					errc <- fmt.Errorf("%s: emit %d: %w", from.Self(), i, err)
					return
				}
			}
			errc <- nil
		}()
	}
	for range goroutines + 2 {
		if err := testkit.Recv(t, errc, 60*time.Second, "the senders"); err != nil {
			t.Error(err)
		}
	}
	ticks.wantInOrder(t, events)
}
