package nats_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// termOf reads the epoch of the test's master sessions, "e<n>x<anything>".
func termOf(peer link.Address, session string) uint64 {
	rest, ok := strings.CutPrefix(session, "e")
	if !ok || peer != masterAddr {
		return 0
	}
	n, _, _ := strings.Cut(rest, "x")
	e, _ := strconv.ParseUint(n, 10, 64)
	return e
}

// A session set with WithSession is the one peers see; a session that is
// not 1 to 32 letters and digits is refused.
func TestWithSession(t *testing.T) {
	s := runServer(t, 0, nil)
	master := connect(t, s, masterAddr, lfnats.WithSession("e1xabc"), newAcceptor(t, nil).option())
	if master.Session() != "e1xabc" {
		t.Errorf("Session() = %q, want e1xabc", master.Session())
	}
	slave := connect(t, s, slaveAddr)
	l := dial(t, slave, masterAddr, nil)
	ping(t, l)
	for _, bad := range []string{"", "has-dash", strings.Repeat("a", 33), "dot.ted"} {
		if n, err := lfnats.Connect(testkit.Ctx(t, prompt), masterAddr, lfnats.WithURLs(s.ClientURL()), lfnats.WithSession(bad)); err == nil {
			_ = n.Close()
			t.Errorf("WithSession(%q) accepted", bad)
		}
	}
}

// While the gate is closed the Node handles nothing it receives (a request
// to it times out at the requester, its handler never runs) and sends
// nothing (unavailable); once open, both work again.
func TestGate(t *testing.T) {
	s := runServer(t, 0, nil)
	var open atomic.Bool
	var handled atomic.Int64
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Echo, func(_ context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			handled.Add(1)
			return linktest.EchoResponse{N: r.N}, nil
		})
	})
	master := connect(t, s, masterAddr, acc.option(), lfnats.WithGate(open.Load))
	slave := connect(t, s, slaveAddr)
	l := dial(t, slave, masterAddr, nil)

	ctx := testkit.Ctx(t, prompt/4)
	if _, err := link.Request(ctx, l, linktest.Echo, linktest.EchoRequest{N: 1}); !errors.Is(err, link.ErrTimeout) {
		t.Errorf("request to a gated master: %v, want a timeout", err)
	}
	if handled.Load() != 0 || master.Dropped() == 0 {
		t.Errorf("gated master handled %d requests and dropped %d messages; want 0 handled, some dropped", handled.Load(), master.Dropped())
	}
	if err := master.Announce(testkit.Ctx(t, prompt), messages.Slave); !errors.Is(err, link.ErrUnavailable) {
		t.Errorf("a gated master's send: %v, want unavailable", err)
	}
	open.Store(true)
	if r, err := link.Request(testkit.Ctx(t, prompt), l, linktest.Echo, linktest.EchoRequest{N: 2}); err != nil || r.N != 2 {
		t.Errorf("request once the gate opened: %+v, %v", r, err)
	}
}

// While the gate is closed the Node sends nothing at all, not even what
// the connector says on its own: the response of a request its handler
// took before the gate closed, the acknowledgement of events, the close
// notice when its link ends. (A paused master that woke up after its term
// had ended acknowledged events its successor was owed.)
func TestGateSilencesEverything(t *testing.T) {
	s := runServer(t, 0, nil)
	var open atomic.Bool
	open.Store(true)
	taken, release := make(chan struct{}, 1), make(chan struct{})
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Hold, func(context.Context, messages.Empty) (messages.Empty, error) {
			taken <- struct{}{}
			<-release
			return messages.Empty{}, nil
		})
	})
	master := connect(t, s, masterAddr, acc.option(), lfnats.WithGate(open.Load))
	slave := connect(t, s, slaveAddr)
	l := dial(t, slave, masterAddr, nil)
	ping(t, l)
	accepted := acc.next(t)
	held := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, prompt/4), l, linktest.Hold, messages.Empty{})
		held <- err
	}()
	testkit.Recv(t, taken, prompt, "the master to take the request")

	open.Store(false)
	// What the master published before the gate closed reaches the server
	// before the wiretap listens.
	if err := master.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	tap := plainClient(t, s)
	heard, err := tap.SubscribeSync("lf.master.0.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := tap.Flush(); err != nil {
		t.Fatal(err)
	}

	for i := range 5 {
		if err := link.Emit(testkit.Ctx(t, prompt), l, linktest.Tick, linktest.TickEvent{Seq: i}); err != nil {
			t.Fatalf("emit: %v", err)
		}
	}
	if err := slave.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	close(release) // the handler answers
	if err := accepted.CloseWait(testkit.Ctx(t, prompt)); err != nil {
		t.Errorf("close the master's link: %v", err)
	}
	// Whatever the master published is at the server, and then at the tap.
	if err := master.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := tap.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := heard.Pending(); n != 0 {
		m, _ := heard.NextMsg(0)
		t.Errorf("a gated master published %d messages, the first on %q", n, m.Subject)
	}
	if err := <-held; !errors.Is(err, link.ErrTimeout) {
		t.Errorf("the request the gated master held: %v, want a timeout", err)
	}
}

// With WithEpoch, a slave's link dialed to a master of epoch 1 ends as
// soon as a master of epoch 2 announces itself, failing what was pending
// with session_lost; the slave then dials the new master, and whatever
// the old master sends afterwards (it woke up from a pause, say) is
// dropped: it can neither answer nor end the new link.
func TestEpochFencing(t *testing.T) {
	s := runServer(t, 0, nil)
	block := make(chan struct{})
	oldAcc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Echo, func(ctx context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			if r.N == 99 {
				<-block // held until the test lets go: the old master "paused"
			}
			return linktest.EchoResponse{N: r.N}, nil
		})
	})
	connect(t, s, masterAddr, lfnats.WithSession("e1xold"), oldAcc.option())
	slave := connect(t, s, slaveAddr, lfnats.WithEpoch(termOf))
	first := dial(t, slave, masterAddr, nil)
	ping(t, first)
	oldLink := oldAcc.next(t)

	pending := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, prompt), first, linktest.Echo, linktest.EchoRequest{N: 99})
		pending <- err
	}()
	testkit.Eventually(t, prompt, "the request reaches the old master", func() error {
		if oldLink.Stats().Received < 2 {
			return errors.New("not yet")
		}
		return nil
	})

	// The new master takes over: it stops nothing of the old one's, and
	// announces itself.
	newAcc := newAcceptor(t, nil)
	fresh := connect(t, s, masterAddr, lfnats.WithSession("e2xnew"), newAcc.option())
	testkit.NoErr(t, fresh.Announce(testkit.Ctx(t, prompt), messages.Slave), "announce")
	if err := testkit.Recv(t, pending, prompt, "the pending request to end"); !errors.Is(err, link.ErrSessionLost) {
		t.Errorf("request pending at the replaced master: %v, want session_lost", err)
	}
	testkit.Recv(t, first.Done(), prompt, "the link to the replaced master to close")
	// It ended on the announcement, not later on the new master's answer
	// to a copy of the request (sent again after a second of silence),
	// which the new master would have had to refuse.
	if n := fresh.Dropped(); n != 0 {
		t.Errorf("the new master refused %d messages of the old link: the link did not end on the announcement", n)
	}

	second := dial(t, slave, masterAddr, nil)
	ping(t, second) // both masters hear it; only the newer one's answer counts
	if second.Peer() != masterAddr {
		t.Fatal("second link to someone else")
	}
	// The old master wakes up and answers what it held; its answer and
	// anything else it sends are dropped, and the new link lives on.
	before := slave.Dropped()
	close(block)
	for range 5 {
		ping(t, second)
	}
	select {
	case <-second.Done():
		t.Fatal("the old master ended the link to the new one")
	default:
	}
	if slave.Dropped() == before {
		t.Log("the old master's late messages had nowhere to go (its link was gone)")
	}
	newAcc.next(t) // the new master accepted the slave's second link
}
