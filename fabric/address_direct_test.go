package fabric_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// tap records, as a plain client on the fixture's open broker, the subject
// of every message whose payload carries a token.
type tap struct {
	mu   sync.Mutex
	seen map[string][]string // token -> subjects
}

func (tp *tap) subjects(token string) []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]string(nil), tp.seen[token]...)
}

func startTap(t *testing.T, url string, tokens ...string) *tap {
	t.Helper()
	tp := &tap{seen: map[string][]string{}}
	nc, err := natsgo.Connect(url)
	testkit.NoErr(t, err, "tap connects")
	t.Cleanup(nc.Close)
	_, err = nc.Subscribe("lf.>", func(m *natsgo.Msg) {
		for _, tok := range tokens {
			if strings.Contains(string(m.Data), tok) {
				tp.mu.Lock()
				tp.seen[tok] = append(tp.seen[tok], m.Subject)
				tp.mu.Unlock()
			}
		}
	})
	testkit.NoErr(t, err, "tap subscribes")
	testkit.NoErr(t, nc.Flush(), "tap flush")
	return tp
}

// TestAddressDirectSlaveToSlave: what a slave sends, as itself, to another
// slave travels the direct link between them and never the master's
// subjects; what an instance sends another slave still goes by way of the
// master (which alone can check the claim).
func TestAddressDirectSlaveToSlave(t *testing.T) {
	f := newAddrFixture(t, nil)
	tp := startTap(t, f.url, "direct-req", "direct-ev", "via-master-ev")
	ctx := testkit.Ctx(t, waitLong)
	s1, s2 := link.SlaveAddress(1), link.SlaveAddress(2)
	resp, err := f.request(ctx, s1, s2, "direct-req")
	testkit.NoErr(t, err, "request slave 1 -> slave 2")
	if resp.By != s2.String() || resp.From != s1.String() {
		t.Errorf("answered by %s from %s", resp.By, resp.From)
	}
	testkit.NoErr(t, f.emit(ctx, s1, s2, "direct-ev"), "event slave 1 -> slave 2")
	testkit.NoErr(t, f.emit(ctx, link.InstanceAddress(11), s2, "via-master-ev"), "event instance 11 -> slave 2")
	for _, tok := range []string{"direct-ev", "via-master-ev"} {
		testkit.WaitFor(t, waitLong, tok, func() bool { return len(f.rec.of(tok)) == 1 })
	}
	// The instance's event passed the master: the tap sees those subjects.
	testkit.WaitFor(t, waitLong, "the tap", func() bool { return len(tp.subjects("via-master-ev")) == 2 })
	for _, tok := range []string{"direct-req", "direct-ev"} {
		subs := tp.subjects(tok)
		if len(subs) != 1 || !strings.HasPrefix(subs[0], "lf.slave.1.slave.2.probe:") {
			t.Errorf("%s travelled on %q; want one message on lf.slave.1.slave.2.probe:*", tok, subs)
		}
	}
	if got := f.rec.of("via-master-ev"); len(got) != 1 || got[0] != "slave/2<-instance/11" {
		t.Errorf("via-master-ev reached %v", got)
	}
}

// TestAddressDirectNotConnected: a request to a slave that no process
// runs ends at once with slave_not_connected, well within its timeout.
func TestAddressDirectNotConnected(t *testing.T) {
	f := newAddrFixture(t, nil)
	ctx := testkit.Ctx(t, waitLong)
	_, err := f.request(ctx, link.SlaveAddress(1), link.SlaveAddress(3), "to nobody")
	testkit.WantCode(t, err, fabric.CodeSlaveNotConnected)
	if ctx.Err() != nil {
		t.Fatal("the request ended by its deadline, not by the broker's word")
	}
}

// TestAddressDirectStaleSession: a message for a session a slave no
// longer has (a restarted target, or a plain client naming an old one) is
// answered session_lost at once, not left to time out.
func TestAddressDirectStaleSession(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc, err := natsgo.Connect(f.url)
	testkit.NoErr(t, err, "plain client connects")
	defer nc.Close()
	msg, err := nc.Request("lf.slave.1.slave.2.probe:ask.oldsender.oldsession", []byte(`{"token":"stale"}`), waitLong)
	testkit.NoErr(t, err, "an answer, not a timeout")
	if code := msg.Header.Get("Lf-Error"); code != string(link.CodeSessionLost) {
		t.Errorf("answered %q (%s); want session_lost", code, msg.Data)
	}
	if got := f.rec.of("stale"); len(got) != 0 {
		t.Errorf("handled by %v", got)
	}
}

// TestAddressDirectTargetRestarts: slave 2 stops and starts again; slave
// 1's next request reaches the new process (the old link ended with the
// process), and its close lost nothing on the way.
func TestAddressDirectTargetRestarts(t *testing.T) {
	f := newAddrFixture(t, nil)
	ctx := testkit.Ctx(t, waitLong)
	s1, s2 := link.SlaveAddress(1), link.SlaveAddress(2)
	_, err := f.request(ctx, s1, s2, "before")
	testkit.NoErr(t, err, "request before the restart")
	closeCtx, cancel := context.WithTimeout(ctx, waitLong)
	testkit.NoErr(t, f.slaves[2].Close(closeCtx), "slave 2 stops")
	cancel()
	f.slaves[2] = startSlave(t, f.url, 2, "21:a2,22:b2", fabric.WithPlugins(f.plugin),
		fabric.WithHandlers(messages.Master, f.attach(s2)), fabric.WithHandlers(messages.Instance, f.attach(s2)), fabric.WithHandlers(messages.Slave, f.attach(s2)))
	resp, err := f.request(ctx, s1, s2, "after")
	testkit.NoErr(t, err, "request after the restart")
	if resp.By != s2.String() {
		t.Errorf("answered by %s", resp.By)
	}
}

// TestAddressDirectNoBroadcast: a slave may publish on lf.slave.N.slave.*,
// which matches the broadcast subject too; a slave takes a broadcast to
// every slave only from the master, so what a slave publishes there
// reaches no one.
func TestAddressDirectNoBroadcast(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc, err := natsgo.Connect(f.url)
	testkit.NoErr(t, err, "plain client connects")
	defer nc.Close()
	testkit.NoErr(t, nc.Publish("lf.slave.1.slave._all.probe:tell", []byte(`{"token":"bcast"}`)), "publish")
	// Then a message that does arrive, on slave 2's subjects, after it.
	ctx := testkit.Ctx(t, waitLong)
	testkit.NoErr(t, f.emit(ctx, link.SlaveAddress(1), link.SlaveAddress(2), "after"), "event")
	testkit.WaitFor(t, waitLong, "the event after", func() bool { return len(f.rec.of("after")) == 1 })
	if got := f.rec.of("bcast"); len(got) != 0 {
		t.Errorf("a slave's own broadcast reached %v", got)
	}
}

// TestAddressDirectSpoofing: on the direct subjects, slave 1 speaks only
// for itself and only to slave 2: a request that claims to come from an
// instance is refused permission_denied, one for another endpoint
// invalid_message, and neither reaches a handler.
func TestAddressDirectSpoofing(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc, err := natsgo.Connect(f.url)
	testkit.NoErr(t, err, "plain client connects")
	defer nc.Close()
	for _, tc := range []struct {
		header, value string
		want          link.Code
	}{
		{"Lf-Origin", "instance/11", link.CodePermissionDenied},
		{"Lf-Origin", "slave/2", link.CodePermissionDenied},
		{"Lf-Dst", "instance/21", link.CodeInvalidMessage},
		{"Lf-Dst", "control/alice", link.CodeInvalidMessage},
	} {
		m := natsgo.NewMsg("lf.slave.1.slave.2.probe:ask")
		m.Header.Set(tc.header, tc.value)
		m.Data = []byte(`{"token":"spoof ` + tc.value + `"}`)
		resp, err := nc.RequestMsg(m, waitLong)
		testkit.NoErr(t, err, tc.header+" "+tc.value)
		if code := resp.Header.Get("Lf-Error"); code != string(tc.want) {
			t.Errorf("%s: %s: answered %q (%s); want %s", tc.header, tc.value, code, resp.Data, tc.want)
		}
		if got := f.rec.of("spoof " + tc.value); len(got) != 0 {
			t.Errorf("%s: %s: handled by %v", tc.header, tc.value, got)
		}
	}
	// The same client, naming no one else, is slave 1 to slave 2.
	resp, err := nc.Request("lf.slave.1.slave.2.probe:ask", []byte(`{"token":"plain"}`), waitLong)
	testkit.NoErr(t, err, "plain request")
	if code := resp.Header.Get("Lf-Error"); code != "" {
		t.Errorf("plain request refused: %s %s", code, resp.Data)
	}
	if got := f.rec.of("plain"); len(got) != 1 || got[0] != "slave/2<-slave/1" {
		t.Errorf("plain request handled by %v", got)
	}
}
