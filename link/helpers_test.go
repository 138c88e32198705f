package link_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Addresses used throughout the tests.
var (
	slaveAddr    = link.Address{Type: messages.Slave, ID: "1"}
	instanceAddr = link.Address{Type: messages.Instance, ID: "7"}
	masterAddr   = link.MasterAddress
	controlAddr  = link.Address{Type: messages.Control, ID: "alice"}
)

// The test plugin's payloads.
type echoReq struct {
	N    int    `json:"n" schema:"minimum=0"`
	Text string `json:"text" schema:"maxLength=64"`
}

type echoResp struct {
	N    int    `json:"n"`
	Text string `json:"text" schema:"maxLength=64"`
}

type tick struct {
	Seq   int      `json:"seq" schema:"minimum=0"`
	Items []string `json:"items" schema:"maxItems=100"`
}

// The test plugin's messages. Their handlers do whatever a test needs:
// answer, fail, block, panic.
var (
	testEcho = messages.MustRequest[echoReq, echoResp](messages.Spec{
		Name:       "test:echo",
		Links:      []messages.Direction{messages.SlaveToInstance, messages.InstanceToSlave, messages.ControlToMaster, messages.MasterToControl},
		Permission: messages.Unrestricted,
	})
	testGuarded = messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{
		Name:       "test:guarded",
		Links:      []messages.Direction{messages.ControlToMaster},
		Permission: "test.guarded",
	})
	testTick = messages.MustEvent[tick](messages.Spec{
		Name:       "test:tick",
		Links:      []messages.Direction{messages.SlaveToInstance, messages.InstanceToSlave, messages.ControlToMaster, messages.MasterToControl},
		Permission: "test.tick",
	})
)

// testCat holds the core messages and the test plugin's.
var testCat = func() *messages.Catalog {
	c, err := messages.NewCatalog(messages.Plugin{Name: "test", Messages: []messages.Message{testEcho, testGuarded, testTick}})
	if err != nil {
		panic(err)
	}
	return c
}()

// quiet discards the links' logs.
var quiet = slog.New(slog.DiscardHandler)

// codeStub is what a stubbed request handler answers.
const codeStub link.Code = "test.stub"

// newPair returns two links joined by a virtual pair, not started. Both are
// closed when the test ends.
func newPair(t testing.TB, a, b link.Address, aOpts, bOpts []link.Option) (*link.Link, *link.Link) {
	t.Helper()
	ca, cb := virtual.Pair()
	la := newLink(t, ca, a, b, aOpts...)
	lb := newLink(t, cb, b, a, bOpts...)
	return la, lb
}

// newLink returns a link over conn using testCat, closed when the test ends.
func newLink(t testing.TB, conn link.Connector, self, peer link.Address, opts ...link.Option) *link.Link {
	t.Helper()
	// Quiet by default: the tests provoke many warnings on purpose.
	opts = append([]link.Option{link.WithLogger(quiet)}, opts...)
	l, err := link.New(conn, self, peer, testCat, opts...)
	if err != nil {
		t.Fatalf("link.New(%s -> %s): %v", self, peer, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// inbound is the direction in which messages arrive at l.
func inbound(l *link.Link) messages.Direction {
	return messages.Direction{Source: l.Peer().Type, Target: l.Self().Type}
}

// stub attaches a trivial handler for every message that can arrive on l,
// except those in handled and the builtins (ping, prepare_disconnect).
// Stubbed requests fail with codeStub; stubbed events are ignored.
func stub(l *link.Link, handled ...messages.Message) {
	skip := map[string]bool{messages.Ping.Name(): true, messages.PrepareDisconnect.Name(): true}
	for _, m := range handled {
		skip[m.Def().Name()] = true
	}
	for _, def := range testCat.On(inbound(l)) {
		if skip[def.Name()] {
			continue
		}
		name := def.Name()
		if def.Kind() == messages.KindRequest {
			l.HandleRequestJSON(def, func(context.Context, *link.Envelope) ([]byte, error) {
				return nil, link.Errorf(codeStub, "%s is stubbed", name)
			})
		} else {
			l.HandleEventJSON(def, func(context.Context, *link.Envelope) error { return nil })
		}
	}
}

// start stubs what the test did not handle and starts l.
func start(t testing.TB, l *link.Link, handled ...messages.Message) {
	t.Helper()
	stub(l, handled...)
	if err := l.Start(); err != nil {
		t.Fatalf("start %s: %v", l, err)
	}
}

// echoHandler answers test:echo with the request's fields.
func echoHandler(_ context.Context, r echoReq) (echoResp, error) {
	return echoResp(r), nil
}

// echoPair returns a started slave link and instance link; the instance
// answers test:echo with echoHandler.
func echoPair(t testing.TB, slaveOpts, instanceOpts []link.Option) (toInstance, toSlave *link.Link) {
	t.Helper()
	toInstance, toSlave = newPair(t, slaveAddr, instanceAddr, slaveOpts, instanceOpts)
	link.HandleRequest(toSlave, testEcho, echoHandler)
	start(t, toSlave, testEcho)
	start(t, toInstance)
	return toInstance, toSlave
}

// closed reports whether ch is closed (or has a value ready).
func closed[T any](ch <-chan T) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// equal fails the test unless got == want.
func equal[T comparable](t testing.TB, got, want T, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// recorder is a link.Receiver that keeps what it is given: the tests drive
// one end of a virtual pair by hand with it, sending crafted messages and
// reading what the link under test sends back.
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

// responses returns every response received for id.
func (r *recorder) responses(id uint64) []*link.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*link.Envelope
	for _, m := range r.msgs {
		if m.Kind == messages.KindResponse && m.ID == id {
			out = append(out, m)
		}
	}
	return out
}

// response waits for the response to request id.
func (r *recorder) response(t testing.TB, id uint64) *link.Envelope {
	t.Helper()
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("the response to request %d", id), func() bool {
		return len(r.responses(id)) > 0
	})
	return r.responses(id)[0]
}

// rawPeer returns a started link with peer's address on one end of a
// virtual pair, and the other end driven by hand through a recorder.
// setup attaches the test's handlers and returns the messages it handled.
func rawPeer(t testing.TB, self, peer link.Address, setup func(l *link.Link) []messages.Message, opts ...link.Option) (*link.Link, *virtual.Conn, *recorder) {
	t.Helper()
	return rawPeerOn(t, true, self, peer, setup, opts...)
}

// jsonOnly is a connector that carries JSON only, as one across processes
// does: the link sends it no Envelope.Value.
type jsonOnly struct{ link.Connector }

// rawPeerOn is rawPeer; with json, the link's connector carries no
// values (what the raw end sees is what a network connector would carry).
func rawPeerOn(t testing.TB, json bool, self, peer link.Address, setup func(l *link.Link) []messages.Message, opts ...link.Option) (*link.Link, *virtual.Conn, *recorder) {
	t.Helper()
	raw, vconn := virtual.Pair()
	var conn link.Connector = vconn
	if json {
		conn = jsonOnly{vconn}
	}
	l := newLink(t, conn, self, peer, opts...)
	var handled []messages.Message
	if setup != nil {
		handled = setup(l)
	}
	start(t, l, handled...)
	rec := &recorder{}
	testkit.NoErr(t, raw.Start(rec), "start the raw end")
	t.Cleanup(func() { _ = raw.Close() })
	return l, raw, rec
}

// send hands m to the raw end, failing the test on error.
func send(t testing.TB, raw *virtual.Conn, m *link.Envelope) {
	t.Helper()
	testkit.NoErr(t, raw.Send(context.Background(), m), "raw send "+m.Type)
}

// oneRunningOneWaiting connects a pair whose slave end runs at most one
// handler at a time, b's (which blocks until b.release is closed), and
// sends two requests from the instance end under ctx (30s). It returns once
// one request is running and the other waiting for the handler; each
// request's error arrives on errs.
func oneRunningOneWaiting(t *testing.T) (b *blocker, toInstance, toSlave *link.Link, ctx context.Context, errs <-chan error) {
	t.Helper()
	b = newBlocker()
	toInstance, toSlave = newPair(t, slaveAddr, instanceAddr, nil, []link.Option{link.WithMaxHandlers(1)})
	link.HandleRequest(toSlave, testEcho, b.handle)
	start(t, toSlave, testEcho)
	start(t, toInstance)
	ctx = testkit.Ctx(t, 30*time.Second)

	results := make(chan error, 2)
	for i := range 2 { // one runs, one waits
		go func() {
			_, err := link.Request(ctx, toInstance, testEcho, echoReq{N: i})
			results <- err
		}()
	}
	testkit.WaitFor(t, 5*time.Second, "one request running and one waiting", func() bool { return toSlave.Stats().Handling == 2 })
	return b, toInstance, toSlave, ctx, results
}

// commandPair connects a virtual pair, its slave end handling send_command
// as attach attaches it, and returns the instance end.
func commandPair(b *testing.B, attach func(toSlave *link.Link)) *link.Link {
	b.Helper()
	toInstance, toSlave := newPair(b, slaveAddr, instanceAddr, nil, nil)
	attach(toSlave)
	start(b, toSlave, messages.SendCommand)
	start(b, toInstance)
	return toInstance
}
