package nats_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

const prompt = 10 * time.Second

// A request to a peer that nothing subscribes for fails with
// ErrNotConnected once the no-responders retry window has passed, well
// before its own deadline, and never later than the deadline allows.
func TestNoResponders(t *testing.T) {
	tests := []struct {
		name     string
		retry    time.Duration
		deadline time.Duration
		min, max time.Duration // bounds of how long the request takes
	}{
		{"no retry", 0, 10 * time.Second, 0, time.Second},
		{"retried for 300ms", 300 * time.Millisecond, 10 * time.Second, 300 * time.Millisecond, 3 * time.Second},
		{"deadline before the retry window ends", 5 * time.Second, 400 * time.Millisecond, 0, 400 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := runServer(t, 0, nil)
			slave := connect(t, s, slaveAddr, lfnats.WithNoRespondersRetry(tc.retry))
			a := dial(t, slave, masterAddr, nil)
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			start := time.Now()
			_, err := link.Request(ctx, a, messages.Ping, messages.Empty{})
			elapsed := time.Since(start)
			if !errors.Is(err, link.ErrNotConnected) {
				t.Fatalf("got %v, want %v", err, link.ErrNotConnected)
			}
			if elapsed < tc.min || elapsed > tc.max {
				t.Errorf("failed after %s, want between %s and %s", elapsed, tc.min, tc.max)
			}
			if p := a.Stats().Pending; p != 0 {
				t.Errorf("%d requests still pending", p)
			}
			// The failure is the connector's, not a message from the
			// peer: it must not count as a sign of the peer's life.
			if r := a.Stats().Received; r != 0 {
				t.Errorf("the link counts %d messages received, but nothing came from the peer", r)
			}
		})
	}
}

// A request sent before its responder has subscribed is sent again while
// NATS answers "no responders", reaches the responder once it is there,
// and runs its handler exactly once.
func TestNoRespondersRetrySucceeds(t *testing.T) {
	s := runServer(t, 0, nil)
	slave := connect(t, s, slaveAddr, lfnats.WithNoRespondersRetry(8*time.Second))
	a := dial(t, slave, masterAddr, nil)
	var handled atomic.Int32
	result := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, 20*time.Second), a, linktest.Echo, linktest.EchoRequest{N: 1})
		result <- err
	}()
	// The first attempt has been answered with "no responders" once the
	// slave has received something: nothing else is addressed to it.
	testkit.WaitFor(t, prompt, "the first no-responders answer", func() bool { return slave.NATS().Stats().InMsgs > 0 })
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Echo, func(ctx context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			handled.Add(1)
			return linktest.EchoHandler(l)(ctx, r)
		})
	})
	connect(t, s, masterAddr, acc.option())
	testkit.NoErr(t, testkit.Recv(t, result, prompt, "the request"), "request retried until the master came")
	acc.next(t)
	if n := handled.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want 1", n)
	}
}

// A message larger than the server's max_payload fails locally with
// ErrTooLarge, before anything is sent, and the connection stays usable.
func TestTooLarge(t *testing.T) {
	s := runServer(t, 0, func(o *server.Options) { o.MaxPayload = 4096 })
	var handled atomic.Int32
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Echo, func(ctx context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			handled.Add(1)
			return linktest.EchoHandler(l)(ctx, r)
		})
	})
	master := connect(t, s, masterAddr, acc.option())
	slave := connect(t, s, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	acc.next(t)
	if max := slave.NATS().MaxPayload(); max != 4096 {
		t.Fatalf("the client sees max_payload %d, want 4096", max)
	}
	ctx := testkit.Ctx(t, prompt)
	before := master.NATS().Stats().InMsgs

	start := time.Now()
	_, err := link.Request(ctx, a, linktest.Echo, linktest.EchoRequest{N: 1, Text: strings.Repeat("x", 5000)})
	if !errors.Is(err, link.ErrTooLarge) {
		t.Errorf("request of 5000 bytes: got %v, want %v", err, link.ErrTooLarge)
	}
	err = link.Emit(ctx, a, messages.InstanceOutput, messages.OutputLine{InstanceID: 1, Level: "info", Message: strings.Repeat("y", 5000)})
	if !errors.Is(err, link.ErrTooLarge) {
		t.Errorf("event of 5000 bytes: got %v, want %v", err, link.ErrTooLarge)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusing took %s; it should not wait for the server", d)
	}
	if n := master.NATS().Stats().InMsgs - before; n != 0 {
		t.Errorf("the master received %d messages; the large ones should not have been sent", n)
	}
	if !slave.NATS().IsConnected() {
		t.Fatal("the slave's connection dropped")
	}
	resp, err := link.Request(ctx, a, linktest.Echo, linktest.EchoRequest{N: 2, Text: strings.Repeat("z", 3000)})
	if err != nil || resp.N != 2 {
		t.Fatalf("a request under the limit afterwards: %+v, %v", resp, err)
	}
	if n := handled.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want 1", n)
	}
	if p := a.Stats().Pending; p != 0 {
		t.Errorf("%d requests still pending", p)
	}
}

// A response too large for the server reaches the requester as a
// too_large error, not as a timeout.
func TestResponseTooLarge(t *testing.T) {
	s := runServer(t, 0, func(o *server.Options) { o.MaxPayload = 4096 })
	acc := newAcceptor(t, func(l *link.Link) {
		// Echo answers with N bytes of text.
		link.HandleRequest(l, linktest.Echo, func(_ context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			return linktest.EchoResponse{N: r.N, Text: strings.Repeat("r", r.N)}, nil
		})
	})
	connect(t, s, masterAddr, acc.option())
	slave := connect(t, s, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	acc.next(t)
	ctx := testkit.Ctx(t, 30*time.Second)
	start := time.Now()
	_, err := link.Request(ctx, a, linktest.Echo, linktest.EchoRequest{N: 5000})
	if !errors.Is(err, link.ErrTooLarge) {
		t.Errorf("got %v, want %v", err, link.ErrTooLarge)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the too_large answer took %s", d)
	}
	resp, err := link.Request(ctx, a, linktest.Echo, linktest.EchoRequest{N: 100})
	if err != nil || len(resp.Text) != 100 {
		t.Fatalf("a small response afterwards: %d bytes, %v", len(resp.Text), err)
	}
}

// A slave that restarts (its process dies, so it says nothing, and a new
// Node takes its address) gets a new link at the master, through accept.
// What the master sends the old session goes unanswered: the new process
// stays silent, since it cannot tell a dead predecessor from a live
// process using the same address, and answering would end that one's
// link. (The fabric's master notices the old session by its silence.)
func TestSlaveRestart(t *testing.T) {
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, echo)
	connect(t, s, masterAddr, acc.option())

	old := connect(t, s, slaveAddr)
	a1 := dial(t, old, masterAddr, echo)
	ping(t, a1)
	b1 := acc.next(t)

	// The old process dies: its connection goes without a word to the
	// master.
	old.NATS().Close()
	testkit.Recv(t, a1.Done(), prompt, "the dead slave's own link to close")

	renewed := connect(t, s, slaveAddr)
	if renewed.Session() == old.Session() {
		t.Fatal("a new Node has the old Node's session")
	}
	a2 := dial(t, renewed, masterAddr, echo)
	ping(t, a2)
	b2 := acc.next(t)
	if b2 == b1 || b2.Peer() != slaveAddr {
		t.Fatalf("the master's new link is %p to %s; want a new link to %s", b2, b2.Peer(), slaveAddr)
	}

	_, err := link.Request(testkit.Ctx(t, 300*time.Millisecond), b1, linktest.Echo, linktest.EchoRequest{N: 1})
	if !errors.Is(err, link.ErrTimeout) {
		t.Errorf("request on the link to the old session: got %v, want %v", err, link.ErrTimeout)
	}
	select {
	case <-b1.Done():
		t.Error("the new process ended the master's link to the old session")
	default:
	}

	ctx := testkit.Ctx(t, prompt)

	for _, l := range []*link.Link{a2, b2} {
		if resp, err := link.Request(ctx, l, linktest.Echo, linktest.EchoRequest{N: 2}); err != nil || resp.N != 2 {
			t.Errorf("%s to %s on the new session: %+v, %v", l.Self(), l.Peer(), resp, err)
		}
	}
}

// A link that a slave dialed ends with StatusClosed when a reply shows
// that the master it talks to has restarted; its pending requests fail
// with session_lost and a new Dial reaches the new master. A message the
// new master sends first is refused with session_lost but ends nothing:
// an unsolicited message from another session is no proof of a restart.
func TestDialedPeerRestart(t *testing.T) {
	for _, newMasterFirst := range []bool{false, true} {
		name := "the slave speaks first"
		if newMasterFirst {
			name = "the new master speaks first"
		}
		t.Run(name, func(t *testing.T) {
			s := runServer(t, 0, nil)
			started := make(chan struct{}, 1)
			acc := newAcceptor(t, func(l *link.Link) {
				link.HandleRequest(l, linktest.Hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
					started <- struct{}{}
					<-ctx.Done()
					return messages.Empty{}, ctx.Err()
				})
			})
			oldMaster := connect(t, s, masterAddr, acc.option())
			slave := connect(t, s, slaveAddr)
			st := newStatuses()
			a := dial(t, slave, masterAddr, nil, st.option())
			ping(t, a)
			acc.next(t)

			pending := make(chan error, 1)
			go func() {
				_, err := link.Request(testkit.Ctx(t, time.Minute), a, linktest.Hold, messages.Empty{})
				pending <- err
			}()
			testkit.Recv(t, started, prompt, "the held request to start")

			oldMaster.NATS().Close() // the master dies without a word
			newMaster := connect(t, s, masterAddr, newAcceptor(t, echo).option())
			ctx := testkit.Ctx(t, prompt)

			if newMasterFirst {
				toSlave := dial(t, newMaster, slaveAddr, nil)
				if _, err := link.Request(ctx, toSlave, messages.Ping, messages.Empty{}); !errors.Is(err, link.ErrSessionLost) {
					t.Errorf("the new master's ping to the slave: got %v, want %v", err, link.ErrSessionLost)
				}
				select {
				case <-a.Done():
					t.Fatal("an unsolicited message from a new session closed the slave's link")
				default:
				}
			}
			if _, err := link.Request(ctx, a, messages.Ping, messages.Empty{}); !errors.Is(err, link.ErrSessionLost) {
				t.Errorf("the slave's ping across the restart: got %v, want %v", err, link.ErrSessionLost)
			}
			st.await(t, link.StatusClosed, prompt)
			if err := testkit.Recv(t, pending, prompt, "the pending request"); !errors.Is(err, link.ErrSessionLost) {
				t.Errorf("the request pending at the old master: got %v, want %v", err, link.ErrSessionLost)
			}
			testkit.Recv(t, a.Done(), prompt, "the link's Done")

			a2 := dial(t, slave, masterAddr, nil)
			ping(t, a2)
		})
	}
}

// A request whose subject names a session of the master other than the
// current one is refused with session_lost (the master restarted); one that
// names the current session, or none, is answered.
func TestPeerSession(t *testing.T) {
	s := runServer(t, 0, nil)
	master := connect(t, s, masterAddr, newAcceptor(t, nil).option())
	nc := plainClient(t, s)
	tests := []struct {
		name, session, wantErr string
	}{
		{"an old session", "0123456789abcdef", string(link.CodeSessionLost)},
		{"the current session", master.Session(), ""},
		{"no session", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subject := "lf.control.bob.master.0.ping"
			if tc.session != "" {
				subject += ".aaaaaaaaaaaaaaaa." + tc.session
			}
			msg := headerMsg(subject, "{}")
			resp, err := nc.RequestMsg(msg, prompt)
			testkit.NoErr(t, err, "request")
			if got := resp.Header.Get("Lf-Error"); got != tc.wantErr {
				t.Errorf("Lf-Error = %q (%s), want %q", got, resp.Data, tc.wantErr)
			}
			if got := resp.Header.Get("Lf-Session"); got != master.Session() {
				t.Errorf("Lf-Session = %q, want the master's %q", got, master.Session())
			}
		})
	}
}

// A plain NATS client, with no Lf-* headers or only Lf-Timeout, can make
// requests and read responses and errors.
func TestPlainClient(t *testing.T) {
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, nil)
	connect(t, s, masterAddr, acc.option())
	nc := plainClient(t, s)

	resp, err := nc.Request("lf.control.bob.master.0.ping", []byte("{}"), prompt)
	testkit.NoErr(t, err, "plain ping")
	if string(resp.Data) != "{}" || resp.Header.Get("Lf-Error") != "" {
		t.Errorf("plain ping: %q, Lf-Error %q; want {} and no error", resp.Data, resp.Header.Get("Lf-Error"))
	}
	l := acc.next(t)
	if l.Peer() != (link.Address{Type: messages.Control, ID: "bob"}) {
		t.Errorf("the master accepted a link to %s, want control/bob", l.Peer())
	}

	tests := []struct {
		name, subject, data, timeout string
		wantErr                      link.Code
		wantData                     string
	}{
		{name: "ping with Lf-Timeout", subject: "ping", data: "{}", timeout: "5000", wantData: "{}"},
		{name: "garbage JSON", subject: "ping", data: "{not json", wantErr: link.CodeInvalidMessage},
		{name: "empty body", subject: "ping", wantErr: link.CodeInvalidMessage},
		{name: "against the schema", subject: "create_instance", data: `{"name":42}`, wantErr: link.CodeInvalidMessage},
		{name: "unknown message", subject: "no_such_message", data: "{}", wantErr: link.CodeInvalidMessage},
		{name: "not valid from a control", subject: "register_slave", data: `{}`, wantErr: link.CodeInvalidMessage},
		{name: "plugin message not valid from a control", subject: "conformance:echo", data: `{"n":1,"text":""}`, wantErr: link.CodeInvalidMessage},
		{name: "a handler's error", subject: "list_slaves", data: "{}", wantErr: linktest.CodeStub},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := headerMsg("lf.control.bob.master.0."+tc.subject, tc.data)
			if tc.timeout != "" {
				msg.Header.Set("Lf-Timeout", tc.timeout)
			}
			resp, err := nc.RequestMsg(msg, prompt)
			testkit.NoErr(t, err, "request")
			if got := link.Code(resp.Header.Get("Lf-Error")); got != tc.wantErr {
				t.Errorf("Lf-Error = %q (%s), want %q", got, resp.Data, tc.wantErr)
			}
			if tc.wantErr != "" && len(resp.Data) == 0 {
				t.Error("an error response without a message")
			}
			if tc.wantData != "" && string(resp.Data) != tc.wantData {
				t.Errorf("body %q, want %q", resp.Data, tc.wantData)
			}
		})
	}
	if _, err := link.Request(testkit.Ctx(t, prompt), l, messages.Ping, messages.Empty{}); !errors.Is(err, link.ErrTimeout) && !errors.Is(err, link.ErrNotConnected) {
		// A plain client answers nothing: the master's ping to it cannot
		// succeed, and must not hang.
		t.Errorf("the master's ping to a plain client: %v", err)
	}
}

// Hostile or broken input, published by a plain client, is dropped and
// counted or refused with an error reply; the links already there keep
// working.
func TestHostileInput(t *testing.T) {
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, echo)
	master := connect(t, s, masterAddr, acc.option(), lfnats.WithNoRespondersRetry(0))
	slave := connect(t, s, slaveAddr)
	a := dial(t, slave, masterAddr, echo)
	ping(t, a)
	b := acc.next(t)
	nc := plainClient(t, s)
	sess := master.Session()

	// Published without a reply subject: dropped and counted.
	drops := []struct {
		name, subject string
		headers       []string
	}{
		{"unknown sender type", "lf.bogus.1.master.0.ping", nil},
		{"sender id starting with _", "lf.control._x.master.0.ping", nil},
		{"sender id too long", "lf.control." + strings.Repeat("a", 65) + ".master.0.ping", nil},
		{"too many tokens", "lf.control.bob.master.0.ping.a.b.c", nil},
		{"a session token that is not one", "lf.control.bob.master.0.ping.a-b", nil},
		{"message type starting with _", "lf.control.bob.master.0._secret", nil},
		{"from itself", "lf.master.0.master.0.ping", nil},
		{"same endpoint type", "lf.master.1.master.0.ping", nil},
		{"reply with a bad connector number", "lf.slave.3.master.0._reply." + sess + ".x.1", nil},
		{"reply with a bad request id", "lf.slave.3.master.0._reply." + sess + ".1.-1", nil},
		{"reply with too few tokens", "lf.slave.3.master.0._reply." + sess + ".1", nil},
		{"reply to an earlier session", "lf.slave.3.master.0._reply.0123456789abcdef.1.1", nil},
		{"reply to no connector", "lf.slave.3.master.0._reply." + sess + ".999.1", nil},
		{"reply to a broadcast", "lf.slave.3.master._all._reply." + sess + ".1.1", nil},
		{"close to a broadcast", "lf.slave.3.master._all._close", nil},
		{"close with extra tokens", "lf.slave.3.master.0._close.a.b.c", nil},
		{"event with a bad Lf-Origin", "lf.control.mallory.master.0.ping", []string{"Lf-Origin", "nowhere"}},
		{"event with an Lf-Origin of a bad id", "lf.control.mallory.master.0.ping", []string{"Lf-Origin", "slave/_x"}},
		{"event to an old session", "lf.control.mallory.master.0.ping.aaaaaaaaaaaaaaaa.0123456789abcdef", nil},
		{"broadcast naming a receiver session", "lf.slave.3.master._all.ping.aaaaaaaaaaaaaaaa.0123456789abcdef", nil},
		{"reply with a zero budget", "lf.slave.3.master.0._reply." + sess + ".1.1.0", nil},
	}
	for _, tc := range drops {
		t.Run("drop/"+tc.name, func(t *testing.T) {
			before := master.Dropped()
			testkit.NoErr(t, nc.PublishMsg(headerMsg(tc.subject, "{}", tc.headers...)), "publish")
			testkit.NoErr(t, nc.Flush(), "flush")
			testkit.WaitFor(t, prompt, "the message to be dropped", func() bool { return master.Dropped() > before })
		})
	}

	// Sent as requests: refused with an error reply.
	refusals := []struct {
		name, subject string
		headers       []string
		wantErr       link.Code
	}{
		{"unknown sender type", "lf.bogus.1.master.0.ping", nil, link.CodeInvalidMessage},
		{"from itself", "lf.master.0.master.0.ping", nil, link.CodeInvalidMessage},
		{"same endpoint type", "lf.master.1.master.0.ping", nil, link.CodeNotConnected},
		{"endpoint type with no such link", "lf.instance.7.master.0.ping", nil, link.CodeInvalidMessage},
		{"request to a broadcast address", "lf.control.mallory.master._all.ping", nil, link.CodeInvalidMessage},
		{"Lf-Id not a number", "lf.control.mallory.master.0.ping", []string{"Lf-Id", "abc"}, link.CodeInvalidMessage},
		{"Lf-Id negative", "lf.control.mallory.master.0.ping", []string{"Lf-Id", "-1"}, link.CodeInvalidMessage},
		{"Lf-Id too large", "lf.control.mallory.master.0.ping", []string{"Lf-Id", "18446744073709551616"}, link.CodeInvalidMessage},
		{"Lf-Timeout zero", "lf.control.mallory.master.0.ping", []string{"Lf-Timeout", "0"}, link.CodeInvalidMessage},
		{"Lf-Timeout negative", "lf.control.mallory.master.0.ping", []string{"Lf-Timeout", "-5"}, link.CodeInvalidMessage},
		{"Lf-Timeout not a number", "lf.control.mallory.master.0.ping", []string{"Lf-Timeout", "soon"}, link.CodeInvalidMessage},
		{"Lf-Timeout with a unit", "lf.control.mallory.master.0.ping", []string{"Lf-Timeout", "5s"}, link.CodeInvalidMessage},
		{"Lf-Timeout over a day", "lf.control.mallory.master.0.ping", []string{"Lf-Timeout", "86400001"}, link.CodeInvalidMessage},
		{"Lf-Timeout overflowing", "lf.control.mallory.master.0.ping", []string{"Lf-Timeout", "9223372036854775808"}, link.CodeInvalidMessage},
		{"to an old session", "lf.control.mallory.master.0.ping.aaaaaaaaaaaaaaaa.0123456789abcdef", nil, link.CodeSessionLost},
		{"a session the master's link is not bound to", "lf.slave.3.master.0.ping.fedcba9876543210", nil, ""},
	}
	for _, tc := range refusals {
		t.Run("refuse/"+tc.name, func(t *testing.T) {
			resp, err := nc.RequestMsg(headerMsg(tc.subject, "{}", tc.headers...), prompt)
			testkit.NoErr(t, err, "request")
			if got := link.Code(resp.Header.Get("Lf-Error")); got != tc.wantErr {
				t.Errorf("Lf-Error = %q (%s), want %q", got, resp.Data, tc.wantErr)
			}
		})
	}

	// What was there still works, both ways.
	ctx := testkit.Ctx(t, prompt)
	for _, l := range []*link.Link{a, b} {
		if resp, err := link.Request(ctx, l, linktest.Echo, linktest.EchoRequest{N: 9}); err != nil || resp.N != 9 {
			t.Errorf("%s to %s after the hostile input: %+v, %v", l.Self(), l.Peer(), resp, err)
		}
	}
	if _, err := nc.Request("lf.control.bob.master.0.ping", []byte("{}"), prompt); err != nil {
		t.Errorf("a plain client's ping after the hostile input: %v", err)
	}
}

// Broadcast reaches every Node of the type with one publish, carrying its
// origin, and no Node of another type.
func TestBroadcast(t *testing.T) {
	s := runServer(t, 0, nil)
	master := connect(t, s, masterAddr, newAcceptor(t, nil).option())
	type delivery struct {
		at     link.Address
		data   string
		origin link.Address
	}
	got := make(chan delivery, 16)
	for _, id := range []string{"1", "2", "3"} {
		self := link.Address{Type: messages.Slave, ID: id}
		n := connect(t, s, self)
		l := dial(t, n, masterAddr, func(l *link.Link) {
			l.HandleEventJSON(messages.BanlistUpdate, func(_ context.Context, ev *link.Envelope) error {
				got <- delivery{self, string(ev.Data), ev.Origin}
				return nil
			})
		})
		ping(t, l) // linked: the master's answer binds the link to its session
	}
	// A control (another type) hears nothing.
	control := connect(t, s, link.Address{Type: messages.Control, ID: "alice"})
	ping(t, dial(t, control, masterAddr, nil))

	ctx := testkit.Ctx(t, prompt)
	all := link.Address{Type: messages.Slave, ID: lfnats.BroadcastID}
	// A slave learns where the broadcast stream starts for it from a copy
	// sent to it alone, on its link, until it has acknowledged one
	// (internal/delivery): once every slave has, a broadcast takes one
	// publish.
	testkit.NoErr(t, master.Broadcast(ctx, all, &link.Envelope{Kind: messages.KindEvent, Type: messages.BanlistUpdate.Name(), Data: []byte(`{"name":"nobody","banned":false}`)}), "the first broadcast")
	for range 3 {
		testkit.Recv(t, got, prompt, "the first broadcast at every slave")
	}
	testkit.WaitFor(t, prompt, "every slave to acknowledge the first broadcast", func() bool { return master.BroadcastsUnacked() == 0 })
	data := `{"name":"griefer","banned":true}`
	before := master.NATS().Stats().OutMsgs
	testkit.NoErr(t, master.Broadcast(ctx, all, &link.Envelope{Kind: messages.KindEvent, Type: messages.BanlistUpdate.Name(), Data: []byte(data), Origin: masterAddr}), "broadcast")
	if n := master.NATS().Stats().OutMsgs - before; n != 1 {
		t.Errorf("the broadcast took %d publishes, want 1", n)
	}
	seen := map[link.Address]bool{}
	for range 3 {
		d := testkit.Recv(t, got, prompt, "the broadcast at every slave")
		if seen[d.at] {
			t.Errorf("%s got the broadcast twice", d.at)
		}
		seen[d.at] = true
		if d.data != data || d.origin != masterAddr {
			t.Errorf("%s got %s from %s, want %s from %s", d.at, d.data, d.origin, data, masterAddr)
		}
	}
	if control.Dropped() != 0 {
		t.Errorf("the control dropped %d messages; it should have received none", control.Dropped())
	}

	if err := master.Broadcast(ctx, all, &link.Envelope{Kind: messages.KindRequest, Type: messages.Ping.Name(), Data: []byte("{}")}); !errors.Is(err, link.ErrInvalidMessage) {
		t.Errorf("broadcasting a request: got %v, want %v", err, link.ErrInvalidMessage)
	}
	if err := master.Broadcast(ctx, slaveAddr, &link.Envelope{Kind: messages.KindEvent, Type: messages.BanlistUpdate.Name(), Data: []byte(data)}); err == nil {
		t.Error("broadcasting to one slave's address succeeded")
	}
}

// When the server goes away the links hear StatusDropped and keep their
// session; when a server is back on the same address they hear
// StatusResumed and requests work again, including one made while the
// connection was down.
func TestReconnect(t *testing.T) {
	s1 := runServer(t, 0, nil)
	p := port(t, s1)
	stB := newStatuses()
	acc := newAcceptor(t, echo, stB.option())
	connect(t, s1, masterAddr, acc.option(), lfnats.WithNoRespondersRetry(5*time.Second))
	slave := connect(t, s1, slaveAddr, lfnats.WithNoRespondersRetry(5*time.Second))
	stA := newStatuses()
	a := dial(t, slave, masterAddr, echo, stA.option())
	ping(t, a)
	b := acc.next(t)

	s1.Shutdown()
	s1.WaitForShutdown()
	stA.await(t, link.StatusDropped, prompt)
	stB.await(t, link.StatusDropped, prompt)

	during := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, 30*time.Second), a, linktest.Echo, linktest.EchoRequest{N: 1})
		during <- err
	}()

	runServer(t, p, nil)
	stA.await(t, link.StatusResumed, 30*time.Second)
	stB.await(t, link.StatusResumed, 30*time.Second)
	testkit.NoErr(t, testkit.Recv(t, during, 30*time.Second, "the request made while disconnected"), "request made while disconnected")
	ctx := testkit.Ctx(t, 30*time.Second)
	for _, l := range []*link.Link{a, b} {
		if resp, err := link.Request(ctx, l, linktest.Echo, linktest.EchoRequest{N: 2}); err != nil || resp.N != 2 {
			t.Errorf("%s to %s after the reconnect: %+v, %v", l.Self(), l.Peer(), resp, err)
		}
	}
	select {
	case <-a.Done():
		t.Error("A closed across the reconnect")
	case <-b.Done():
		t.Error("B closed across the reconnect")
	default:
	}
}

// A Node started before its server is reachable keeps trying, and what
// its links send meanwhile waits for the first connection (within the
// sender's deadline) instead of failing.
func TestSendBeforeFirstConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	testkit.NoErr(t, err, "find a free port")
	p := ln.Addr().(*net.TCPAddr).Port
	testkit.NoErr(t, ln.Close(), "free the port")

	ctx, cancel := context.WithTimeout(context.Background(), prompt)
	defer cancel()
	slave, err := lfnats.Connect(ctx, slaveAddr, lfnats.WithURLs("nats://127.0.0.1:"+strconv.Itoa(p)),
		lfnats.WithConnectWait(0), lfnats.WithNoRespondersRetry(10*time.Second), lfnats.WithLogger(quiet))
	testkit.NoErr(t, err, "connect with no server")
	t.Cleanup(func() { _ = slave.Close() })
	a := dial(t, slave, masterAddr, nil)

	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	if _, err := link.Request(short, a, linktest.Echo, linktest.EchoRequest{N: 1}); !errors.Is(err, link.ErrTimeout) {
		t.Fatalf("a request while no server was ever reached: got %v, want %v", err, link.ErrTimeout)
	}

	result := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, 30*time.Second), a, linktest.Echo, linktest.EchoRequest{N: 2})
		result <- err
	}()
	s := runServer(t, p, nil)
	connect(t, s, masterAddr, newAcceptor(t, echo).option())
	testkit.NoErr(t, testkit.Recv(t, result, 30*time.Second, "the request"), "a request made before the first connection")
}

// Once a link has ended, the late messages of its dialing end (buffered
// on a frozen broker node, say) are refused with session_lost, not taken
// for a new link nobody registered; dialing again gives a new session,
// which links afresh.
func TestEndedLinkStaysEnded(t *testing.T) {
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, nil)
	master := connect(t, s, masterAddr, acc.option())
	slave := connect(t, s, slaveAddr)
	conn, err := slave.Dial(masterAddr)
	testkit.NoErr(t, err, "dial")
	a := startLink(t, conn, slaveAddr, masterAddr, nil)
	ping(t, a)
	ended := conn.Session()
	testkit.NoErr(t, acc.next(t).Close(), "the master ends the link")
	testkit.Recv(t, a.Done(), prompt, "the slave's side to close")

	// A late request of the ended link, as its dialer sent it.
	nc := plainClient(t, s)
	reply := "lf.master.0.slave.3._reply." + ended + ".1.99.5000.99"
	resp, err := nc.SubscribeSync(reply)
	testkit.NoErr(t, err, "subscribe")
	testkit.NoErr(t, nc.Flush(), "flush")
	testkit.NoErr(t, nc.PublishRequest("lf.slave.3.master.0.ping."+ended+"."+master.Session(), reply, []byte(`{}`)), "publish")
	m, err := resp.NextMsg(prompt)
	testkit.NoErr(t, err, "the refusal")
	if code := m.Header.Get("Lf-Error"); code != string(link.CodeSessionLost) {
		t.Errorf("a late request of the ended link: error %q (%s), want session_lost", code, m.Data)
	}
	select {
	case l := <-acc.links:
		t.Fatalf("the ended link's late message started link %s", l)
	default:
	}

	again, err := slave.Dial(masterAddr)
	testkit.NoErr(t, err, "dial again")
	if again.Session() == ended {
		t.Fatalf("dialing again kept the ended session %s", ended)
	}
	ping(t, startLink(t, again, slaveAddr, masterAddr, nil))
	acc.next(t)
}
