package fabric_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
)

// attack3Client is a plain client on the fixture's open broker: it can do
// whatever slave 1's credentials allow on the direct subjects, and more.
func attack3Client(t *testing.T, url string) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect(url)
	testkit.NoErr(t, err, "plain client connects")
	t.Cleanup(nc.Close)
	return nc
}

// fabricAsk sends, as a run of slave 1 with session sess, a fabric-form
// request (budget and low mark in the reply subject) to slave 2 and
// returns the answer's error code ("" for a response).
func fabricAsk(t *testing.T, nc *natsgo.Conn, sess string, id int, token string) (string, string) {
	t.Helper()
	reply := fmt.Sprintf("lf.slave.2.slave.1._reply.%s.7.%d.5000.%d", sess, id, id)
	sub, err := nc.SubscribeSync(reply + ".*") // the responder adds its session
	testkit.NoErr(t, err, "subscribe reply")
	defer func() { _ = sub.Unsubscribe() }()
	testkit.NoErr(t, nc.PublishMsg(&natsgo.Msg{Subject: "lf.slave.1.slave.2.probe:ask." + sess, Reply: reply, Data: []byte(`{"token":"` + token + `"}`)}), "publish")
	m, err := sub.NextMsg(waitLong)
	testkit.NoErr(t, err, "an answer to "+token)
	return m.Header.Get("Lf-Error"), string(m.Data)
}

// TestAttack3DirectCoreTypesRefused: master->slave core messages sent on
// slave 1's direct subjects to slave 2 are refused and change nothing.
func TestAttack3DirectCoreTypesRefused(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc := attack3Client(t, f.url)
	for _, tc := range []struct{ typ, data string }{
		{"start_instance", `{"instance_id":21}`},
		{"stop_instance", `{"instance_id":21}`},
		{"delete_instance", `{"instance_id":21}`},
		{"assign_instance", `{"id":99,"name":"evil"}`},
		{"send_command", `{"instance_id":21,"command":"/stop"}`},
		{"register_slave", `{"id":1}`},
	} {
		for _, subj := range []string{"lf.slave.1.slave.2." + tc.typ, "lf.slave.1.slave._all." + tc.typ} {
			resp, err := nc.Request(subj, []byte(tc.data), waitLong)
			testkit.NoErr(t, err, subj+": an answer")
			if code := resp.Header.Get("Lf-Error"); code == "" {
				t.Errorf("%s: answered without error: %s", subj, resp.Data)
			}
		}
	}
	ban := []byte(`{"name":"victim","banned":true}`)
	for _, subj := range []string{"lf.slave.1.slave.2.banlist_update", "lf.slave.1.slave._all.banlist_update",
		"lf.slave.1.slave._all.banlist_update.s1fake", "lf.slave.1.slave.2.banlist_update.s1fake.-"} {
		testkit.NoErr(t, nc.Publish(subj, ban), "publish "+subj)
	}
	ctx := testkit.Ctx(t, waitLong)
	testkit.NoErr(t, f.emit(ctx, link.SlaveAddress(1), link.SlaveAddress(2), "after"), "barrier event")
	testkit.WaitFor(t, waitLong, "barrier", func() bool { return len(f.rec.of("after")) == 1 })
	testkit.NoErr(t, nc.Flush(), "flush")
	if bans := f.slaves[2].Bans(); len(bans) != 0 {
		t.Errorf("slave 2 took bans from slave 1: %v", bans)
	}
	for _, h := range f.slaves[2].Instances() {
		if h.ID == 99 {
			t.Errorf("slave 2 took an instance assigned by slave 1: %+v", h)
		}
	}
	if n := len(f.slaves[2].Instances()); n != 2 {
		t.Errorf("slave 2 hosts %d instances, want 2", n)
	}
}

// TestAttack3DirectRepliesElsewhere: slave 1 names a reply subject in
// someone else's space; slave 2 must publish nothing there.
func TestAttack3DirectRepliesElsewhere(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc := attack3Client(t, f.url)
	var mu sync.Mutex
	var seen []string
	// Slave 2's own messages to the master (its instances' output) pass on
	// lf.slave.2.>: the reply subjects name sessions no one has.
	replies := []string{"lf.slave.2.master.0._close.attack3", "lf.slave.2.master.0.instance_output.attack3x.attack3y", "lf.slave.2.slave.3._reply.x.1.1.5000.1",
		"lf.slave.2.slave.3.probe:tell", "lf._inbox.slave.3.x", "lf.slave.2.master.0._reply.x.1.1"}
	watch, err := nc.Subscribe("lf.slave.2.>", func(m *natsgo.Msg) {
		for _, r := range replies {
			if m.Subject == r || strings.HasPrefix(m.Subject, r+".") {
				mu.Lock()
				seen = append(seen, m.Subject)
				mu.Unlock()
			}
		}
	})
	testkit.NoErr(t, err, "watch")
	defer func() { _ = watch.Unsubscribe() }()
	_, err = nc.Subscribe("lf._inbox.slave.3.>", func(m *natsgo.Msg) {
		mu.Lock()
		seen = append(seen, m.Subject)
		mu.Unlock()
	})
	testkit.NoErr(t, err, "watch inbox")
	testkit.NoErr(t, nc.Flush(), "flush")
	for _, subj := range []string{"lf.slave.1.slave.2.probe:ask", "lf.slave.1.slave.2.probe:ask.old.gone", "lf.slave.1.slave.2._close",
		"lf.slave.1.slave.2.start_instance", "lf.slave.1.slave._all.probe:ask"} {
		for _, r := range replies {
			testkit.NoErr(t, nc.PublishMsg(&natsgo.Msg{Subject: subj, Reply: r, Data: []byte(`{"token":"elsewhere"}`)}), "publish")
		}
	}
	// A barrier: an honest request after them is answered.
	resp, err := nc.Request("lf.slave.1.slave.2.probe:ask", []byte(`{"token":"honest"}`), waitLong)
	testkit.NoErr(t, err, "honest request")
	if code := resp.Header.Get("Lf-Error"); code != "" {
		t.Fatalf("honest request refused %s %s", code, resp.Data)
	}
	testkit.NoErr(t, nc.Flush(), "flush")
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 0 {
		t.Errorf("slave 2 published on subjects slave 1 chose: %v", seen)
	}
	if got := f.rec.of("elsewhere"); len(got) != 0 {
		t.Errorf("handled %v", got)
	}
}

// TestAttack3DirectForgedMasterSession: close notices, acknowledgements,
// replies and messages on the direct subjects that name the master's
// session and slave 2's leave slave 2's link to the master alone.
func TestAttack3DirectForgedMasterSession(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc := attack3Client(t, f.url)
	sessions := make(chan []string, 1)
	sub, err := nc.Subscribe("lf.slave.2.master.0.ping.*.*", func(m *natsgo.Msg) {
		tok := strings.Split(m.Subject, ".")
		select {
		case sessions <- tok[len(tok)-2:]:
		default:
		}
	})
	testkit.NoErr(t, err, "tap pings")
	var s2, ms string
	select {
	case ss := <-sessions:
		s2, ms = ss[0], ss[1]
	case <-time.After(waitLong):
		t.Fatal("no ping seen")
	}
	_ = sub.Unsubscribe()
	before := f.master.SlaveLink(2)
	for _, subj := range []string{
		"lf.slave.1.slave.2._close." + ms + "." + s2,
		"lf.slave.1.slave.2._close." + ms,
		"lf.slave.1.slave.2._close",
		"lf.slave.1.slave.2._ack." + ms + "." + s2 + ".99999",
		"lf.slave.1.slave.2._ack." + ms + "." + s2 + ".1.gap",
		"lf.slave.1.slave.2._ackall." + ms + "." + s2 + ".99999",
		"lf.slave.1.slave.2.prepare_disconnect." + ms + "." + s2,
	} {
		testkit.NoErr(t, nc.Publish(subj, nil), subj)
	}
	for c := range 4 {
		for id := range 4 {
			testkit.NoErr(t, nc.Publish(fmt.Sprintf("lf.slave.1.slave.2._reply.%s.%d.%d.5000.1.%s", s2, c, id, ms), []byte(`{}`)), "reply")
		}
	}
	_, _ = nc.Request("lf.slave.1.slave.2.prepare_disconnect."+ms+"."+s2, []byte(`{}`), waitLong)
	testkit.NoErr(t, nc.Flush(), "flush")
	ctx := testkit.Ctx(t, waitLong)
	for i := range 3 {
		resp, err := f.request(ctx, link.MasterAddress, link.SlaveAddress(2), fmt.Sprintf("m%d", i))
		testkit.NoErr(t, err, "master -> slave 2 after the forgeries")
		if resp.By != "slave/2" {
			t.Errorf("answered by %s", resp.By)
		}
	}
	if after := f.master.SlaveLink(2); after != before {
		t.Errorf("slave 2's link to the master was replaced")
	}
	if !f.slaves[2].Connected() {
		t.Errorf("slave 2 not connected")
	}
}

// TestAttack3DirectDeadRunsLockOut: four runs of slave 1 each asked slave
// 2 something and were killed (no _close, no heartbeats on a direct link:
// slave 2 keeps their confirmed, idle links until the session timeout); a
// fifth run must still reach slave 2 directly, not be refused unavailable
// ("each live") until the dead links are reaped.
func TestAttack3DirectDeadRunsLockOut(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc := attack3Client(t, f.url)
	for i := range 4 {
		code, data := fabricAsk(t, nc, fmt.Sprintf("deadrun%d", i), 1, fmt.Sprintf("run%d", i))
		if code != "" {
			t.Fatalf("run %d refused: %s %s", i, code, data)
		}
	}
	ctx := testkit.Ctx(t, waitLong)
	_, err := f.request(ctx, link.SlaveAddress(1), link.SlaveAddress(2), "live run")
	testkit.NoErr(t, err, "the live slave 1 -> slave 2 after four dead runs")
}

// TestAttack3DirectSessionFlood: slave 1 makes up many sessions; slave 2
// keeps at most a few, and its other links work.
func TestAttack3DirectSessionFlood(t *testing.T) {
	f := newAddrFixture(t, nil)
	nc := attack3Client(t, f.url)
	base := f.slaves[2].Goroutines()
	for i := range 200 {
		resp, err := nc.Request(fmt.Sprintf("lf.slave.1.slave.2.probe:ask.flood%d", i), []byte(`{"token":"flood"}`), waitLong)
		testkit.NoErr(t, err, "answer")
		_ = resp
	}
	if g := f.slaves[2].Goroutines(); g > base+20 {
		t.Errorf("slave 2 goroutines %d -> %d after 200 sessions", base, g)
	}
	ctx := testkit.Ctx(t, waitLong)
	_, err := f.request(ctx, link.MasterAddress, link.SlaveAddress(2), "master still")
	testkit.NoErr(t, err, "master -> slave 2")
}
