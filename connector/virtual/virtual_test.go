package virtual_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// recorder is a link.Receiver that keeps what it is given.
type recorder struct {
	mu       sync.Mutex
	msgs     []*link.Envelope
	statuses []link.Status
}

func (r *recorder) Receive(_ context.Context, m *link.Envelope) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *recorder) Status(s link.Status, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses = append(r.statuses, s)
}

func (r *recorder) received() []*link.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) status() []link.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.statuses)
}

// ids returns the IDs of the messages received, in order.
func (r *recorder) ids() []uint64 {
	var ids []uint64
	for _, m := range r.received() {
		ids = append(ids, m.ID)
	}
	return ids
}

// startedPair returns a pair whose ends deliver to two recorders.
func startedPair(t *testing.T) (a, b *virtual.Conn, ra, rb *recorder) {
	t.Helper()
	a, b = virtual.Pair()
	ra, rb = &recorder{}, &recorder{}
	testkit.NoErr(t, a.Start(ra), "start a")
	testkit.NoErr(t, b.Start(rb), "start b")
	t.Cleanup(func() { _ = a.Close() })
	return a, b, ra, rb
}

func sequence(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// Messages arrive at the peer in the order they were sent, each way.
func TestOrder(t *testing.T) {
	const n = 1000
	a, b, ra, rb := startedPair(t)
	ctx := context.Background()
	for i := range uint64(n) {
		testkit.NoErr(t, a.Send(ctx, &link.Envelope{Kind: messages.KindEvent, Type: "e", ID: i}), "send a -> b")
		testkit.NoErr(t, b.Send(ctx, &link.Envelope{Kind: messages.KindEvent, Type: "e", ID: i}), "send b -> a")
	}
	testkit.WaitFor(t, 5*time.Second, "every message", func() bool { return len(rb.received()) == n && len(ra.received()) == n })
	if got := rb.ids(); !slices.Equal(got, sequence(0, n)) {
		t.Errorf("a -> b arrived out of order: %v", got[:20])
	}
	if got := ra.ids(); !slices.Equal(got, sequence(0, n)) {
		t.Errorf("b -> a arrived out of order: %v", got[:20])
	}
}

// The receiver gets its own copy of the payload and the error: what the
// sender does afterwards to the bytes or the *Error it sent does not reach
// it, whether or not the peer had started. (The envelope itself is handed
// over: a sender keeps nothing it has sent, link.Connector.)
func TestSendCopies(t *testing.T) {
	tests := []struct {
		name       string
		startFirst bool
		mutate     func(data []byte, e *link.Error)
	}{
		{name: "data overwritten", startFirst: true, mutate: func(data []byte, _ *link.Error) { copy(data, "XXXXXXXXXXXXX") }},
		{name: "data overwritten before the peer starts", mutate: func(data []byte, _ *link.Error) { copy(data, "XXXXXXXXXXXXX") }},
		{name: "data appended to in place", startFirst: true, mutate: func(data []byte, _ *link.Error) {
			_ = append(data[:2], "zzzzzzzz"...)
		}},
		{name: "error changed", startFirst: true, mutate: func(_ []byte, e *link.Error) {
			e.Code, e.Message = "other", "changed"
		}},
		{name: "error changed before the peer starts", mutate: func(_ []byte, e *link.Error) {
			e.Code, e.Message = "other", "changed"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := virtual.Pair()
			t.Cleanup(func() { _ = a.Close() })
			rb := &recorder{}
			if tc.startFirst {
				testkit.NoErr(t, b.Start(rb), "start b")
			}
			data := make([]byte, 13, 64) // spare capacity, so an append writes in place
			copy(data, `{"n":"hello"}`)
			sentErr := &link.Error{Code: "test.code", Message: "as sent"}
			m := &link.Envelope{Kind: messages.KindResponse, Type: "test:echo", ID: 7, Data: data, Error: sentErr}
			testkit.NoErr(t, a.Send(context.Background(), m), "send")
			tc.mutate(data, sentErr)
			if !tc.startFirst {
				testkit.NoErr(t, b.Start(rb), "start b")
			}
			testkit.WaitFor(t, 5*time.Second, "the message", func() bool { return len(rb.received()) == 1 })
			got := rb.received()[0]
			if got.Kind != messages.KindResponse || got.Type != "test:echo" || got.ID != 7 || string(got.Data) != `{"n":"hello"}` {
				t.Errorf("received %s %q id=%d data=%q, want the message as sent", got.Kind, got.Type, got.ID, got.Data)
			}
			if got.Error == nil || got.Error.Code != "test.code" || got.Error.Message != "as sent" {
				t.Errorf("received error %+v, want test.code: as sent", got.Error)
			}
		})
	}
}

// Every field but the error's cause crosses: the code and the text of an
// error do, what it wraps does not, as on a real wire.
func TestSendCarriesFields(t *testing.T) {
	a, _, _, rb := startedPair(t)
	deadline := time.Now().Add(time.Minute).Round(0)
	origin := link.Address{Type: messages.Master, ID: "0"}
	sent := &link.Envelope{
		Kind: messages.KindResponse, Type: "test:echo", ID: 42,
		Error:    link.Errorf("test.io", "read save: %w", io.EOF),
		Deadline: deadline, Origin: origin, Reply: "r",
	}
	if !errors.Is(sent.Error, io.EOF) {
		t.Fatal("test setup: the sent error does not wrap io.EOF")
	}
	sentErr := sent.Error
	testkit.NoErr(t, a.Send(context.Background(), sent), "send")
	testkit.WaitFor(t, 5*time.Second, "the message", func() bool { return len(rb.received()) == 1 })
	got := rb.received()[0]
	if got.Kind != messages.KindResponse || got.Type != "test:echo" || got.ID != 42 || !got.Deadline.Equal(deadline) || got.Origin != origin || got.Reply != "r" {
		t.Errorf("received %+v, want the fields as sent", got)
	}
	if got.Error == nil || got.Error.Code != "test.io" || got.Error.Message != "read save: EOF" {
		t.Fatalf("received error %v, want test.io: read save: EOF", got.Error)
	}
	if errors.Is(got.Error, io.EOF) || got.Error.Unwrap() != nil {
		t.Errorf("the error's cause crossed the pair: %v unwraps to %v", got.Error, got.Error.Unwrap())
	}
	if got.Error == sentErr {
		t.Error("the receiver got the sender's *Error itself")
	}
}

// Messages sent before the peer starts wait for it and arrive in order,
// before and among those sent while it starts.
func TestSendBeforeStart(t *testing.T) {
	const early, late = 500, 1000
	a, b := virtual.Pair()
	t.Cleanup(func() { _ = a.Close() })
	ctx := context.Background()
	for i := range uint64(early) {
		testkit.NoErr(t, a.Send(ctx, &link.Envelope{Kind: messages.KindEvent, ID: i}), "send before start")
	}
	sent := make(chan error, 1)
	go func() {
		for i := uint64(early); i < late; i++ {
			if err := a.Send(ctx, &link.Envelope{Kind: messages.KindEvent, ID: i}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	rb := &recorder{}
	testkit.NoErr(t, b.Start(rb), "start b")
	testkit.NoErr(t, <-sent, "send while the peer starts")
	testkit.WaitFor(t, 5*time.Second, "every message", func() bool { return len(rb.received()) == late })
	if got := rb.ids(); !slices.Equal(got, sequence(0, late)) {
		for i, id := range got {
			if id != uint64(i) {
				t.Fatalf("message %d arrived in place %d", id, i)
			}
		}
	}
}

// Closing one end tells the other end's receiver, once, that the session
// is closed; after that Send fails with ErrSessionLost on both ends.
func TestClose(t *testing.T) {
	tests := []struct {
		name   string
		closer func(a, b *virtual.Conn) *virtual.Conn
	}{
		{name: "a closes", closer: func(a, _ *virtual.Conn) *virtual.Conn { return a }},
		{name: "b closes", closer: func(_, b *virtual.Conn) *virtual.Conn { return b }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b, ra, rb := startedPair(t)
			closer := tc.closer(a, b)
			other := rb
			if closer == b {
				other = ra
			}
			testkit.NoErr(t, closer.Close(), "Close")
			testkit.WaitFor(t, 5*time.Second, "the peer to hear of the close", func() bool { return len(other.status()) > 0 })
			testkit.NoErr(t, a.Close(), "Close again")
			testkit.NoErr(t, b.Close(), "Close the other end")
			if got := other.status(); !slices.Equal(got, []link.Status{link.StatusClosed}) {
				t.Errorf("peer's receiver got statuses %v, want [closed]", got)
			}
			for name, c := range map[string]*virtual.Conn{"a": a, "b": b} {
				err := c.Send(context.Background(), &link.Envelope{Kind: messages.KindEvent, Type: "e"})
				if !errors.Is(err, link.ErrSessionLost) {
					t.Errorf("Send on %s after close: got %v, want ErrSessionLost", name, err)
				}
			}
			if n := len(ra.received()) + len(rb.received()); n != 0 {
				t.Errorf("%d messages delivered after close", n)
			}
		})
	}
}

// An end that starts after the pair closed is told so at once, or its
// link would never end.
func TestCloseBeforePeerStarts(t *testing.T) {
	a, b := virtual.Pair()
	testkit.NoErr(t, a.Start(&recorder{}), "start a")
	testkit.NoErr(t, a.Close(), "close a")
	rb := &recorder{}
	testkit.NoErr(t, b.Start(rb), "start b")
	testkit.WaitFor(t, 5*time.Second, "b to hear of the close", func() bool { return len(rb.status()) > 0 })
	if got := rb.status(); !slices.Equal(got, []link.Status{link.StatusClosed}) {
		t.Errorf("b's receiver got statuses %v, want [closed]", got)
	}
}

// A link started on an end whose pair already closed ends at once.
func TestCloseBeforePeerLinkStarts(t *testing.T) {
	cat, err := messages.NewCatalog()
	testkit.NoErr(t, err, "catalog")
	a, b := virtual.Pair()
	testkit.NoErr(t, a.Close(), "close a")
	l, err := link.New(b, link.Address{Type: messages.Instance, ID: "7"}, link.Address{Type: messages.Slave, ID: "1"}, cat,
		link.WithLogger(slog.New(slog.DiscardHandler)))
	testkit.NoErr(t, err, "new link")
	stubAll(l, cat)
	testkit.NoErr(t, l.Start(), "start the link")
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the link on a closed pair is not done")
	}
}

// A Send whose context has ended sends nothing.
func TestSendContextDone(t *testing.T) {
	a, _, _, rb := startedPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := a.Send(ctx, &link.Envelope{Kind: messages.KindEvent, Type: "e"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a cancelled ctx: got %v, want context.Canceled", err)
	}
	if n := len(rb.received()); n != 0 {
		t.Errorf("%d messages delivered by a failed Send", n)
	}
}

// Over a pair, links see the semantics of a wire: a payload the sender
// changes after sending does not change what the receiver handles.
func TestLinkPayloadIsCopied(t *testing.T) {
	type items struct {
		Items []string `json:"items"`
	}
	ev := messages.MustEvent[items](messages.Spec{Name: "vtest:items", Links: []messages.Direction{messages.SlaveToInstance}})
	cat, err := messages.NewCatalog(messages.Plugin{Name: "vtest", Messages: []messages.Message{ev}})
	testkit.NoErr(t, err, "catalog")

	slaveAddr := link.Address{Type: messages.Slave, ID: "1"}
	instanceAddr := link.Address{Type: messages.Instance, ID: "7"}
	quiet := link.WithLogger(slog.New(slog.DiscardHandler))
	a, b := virtual.Pair()
	toInstance, err := link.New(a, slaveAddr, instanceAddr, cat, quiet)
	testkit.NoErr(t, err, "new slave link")
	toSlave, err := link.New(b, instanceAddr, slaveAddr, cat, quiet)
	testkit.NoErr(t, err, "new instance link")
	t.Cleanup(func() { _ = toInstance.Close() })

	started, release := make(chan struct{}), make(chan struct{})
	got := make(chan []string, 10)
	link.HandleEvent(toSlave, ev, func(_ context.Context, e items) error {
		if len(e.Items) == 1 && e.Items[0] == "gate" {
			close(started)
			<-release // later events wait in the queue meanwhile
			return nil
		}
		got <- e.Items
		return nil
	})
	stubAll(toSlave, cat, ev)
	stubAll(toInstance, cat)
	testkit.NoErr(t, toSlave.Start(), "start the instance's side")
	testkit.NoErr(t, toInstance.Start(), "start the slave's side")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	testkit.NoErr(t, link.Emit(ctx, toInstance, ev, items{Items: []string{"gate"}}), "emit the gate")
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the gate event was not handled")
	}

	typed := []string{"a", "b", "c"}
	testkit.NoErr(t, link.Emit(ctx, toInstance, ev, items{Items: typed}), "Emit")
	typed[0], typed[1] = "X", "Y"

	raw := []byte(`{"items":["d","e"]}`)
	testkit.NoErr(t, toInstance.EmitJSON(ctx, ev, raw), "EmitJSON")
	copy(raw, `{"items":["X","Y"]}`)

	close(release)
	for _, want := range [][]string{{"a", "b", "c"}, {"d", "e"}} {
		select {
		case items := <-got:
			if !slices.Equal(items, want) {
				t.Errorf("handler got %q, want %q as sent", items, want)
			}
		case <-ctx.Done():
			t.Fatalf("event %q was not handled", want)
		}
	}
}

// stubAll attaches a do-nothing handler for every message that can arrive
// on l, except those in handled.
func stubAll(l *link.Link, cat *messages.Catalog, handled ...messages.Message) {
	in := messages.Direction{Source: l.Peer().Type, Target: l.Self().Type}
	for _, def := range cat.On(in) {
		if def == messages.Ping.Definition || def == messages.PrepareDisconnect.Definition ||
			slices.ContainsFunc(handled, func(m messages.Message) bool { return m.Def() == def }) {
			continue
		}
		if def.Kind() == messages.KindRequest {
			l.HandleRequestJSON(def, func(context.Context, *link.Envelope) ([]byte, error) {
				return nil, fmt.Errorf("%s is stubbed", def.Name())
			})
		} else {
			l.HandleEventJSON(def, func(context.Context, *link.Envelope) error { return nil })
		}
	}
}
