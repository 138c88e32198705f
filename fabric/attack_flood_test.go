package fabric_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/messages"
)

// heapMB is the live heap of the test process, after collection.
func heapMB() float64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// publishMany publishes n messages as s, made by msg, and waits until the
// master has handled them (a request of s's own answered after them).
func publishMany(t *testing.T, s *spy, ping string, n int, msg func(i int) *natsgo.Msg) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := s.nc.PublishMsg(msg(i)); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			if err := s.nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.nc.Request(ping, []byte("{}"), waitLong); err != nil {
		t.Fatal(err)
	}
}

// TestAttackSessionFlood: one identity's credentials (a control with no
// permission at all, a slave that never registers) name a fresh session
// in each message. The master must not keep a link, and goroutines, for
// every one of them.
func TestAttackSessionFlood(t *testing.T) {
	b := startSecureBroker(t, nil)
	c := newSecureCluster(t, b, "alice=")
	const n = 5000
	for _, user := range []string{"control-alice", "slave-3"} {
		s := b.spy(t, user)
		from := "lf.control.alice.master.0."
		if user == "slave-3" {
			from = "lf.slave.3.master.0."
		}
		before := c.master.Goroutines()
		publishMany(t, s, from+"ping", n, func(i int) *natsgo.Msg {
			return &natsgo.Msg{Subject: fmt.Sprintf("%sping.s%dx", from, i), Data: []byte("{}")}
		})
		// The links replaced last may still be ending: wait for that, not
		// for the session timeout that would end all of them unbounded.
		settled(t, c.master, before, fabric.DefaultMaxPeerSessions, fmt.Sprintf("%s named %d sessions", user, n))
	}
}

// TestAttackServedMemory: a control with no permission at all sends
// requests on fabric reply subjects whose low mark never rises (1: the
// parser refuses 0, and a request it cannot parse is answered as a plain
// client's, remembered by no one), with a budget of a day: once naming
// a requester that is not the sender (a sessionless sender, requester
// "evil"), once as session "evil" itself. The master must not keep every
// one of them (and its response) for as long as the link lives.
func TestAttackServedMemory(t *testing.T) {
	const n = 100000
	for _, tc := range []struct{ name, subject string }{
		{"another requester than the sender", "lf.control.alice.master.0.list_instances"},
		{"the sender's own session", "lf.control.alice.master.0.list_instances.evil"},
	} {
		b := startSecureBroker(t, nil)
		c := newSecureCluster(t, b, "alice=")
		alice := b.spy(t, "control-alice")
		c.logs.reset()
		before := heapMB()
		publishMany(t, alice, "lf.control.alice.master.0.ping", n, func(i int) *natsgo.Msg {
			return &natsgo.Msg{Subject: tc.subject,
				Reply: fmt.Sprintf("lf.master.0.control.alice._reply.evil.1.%d.86400000.1", i), Data: []byte("{}")}
		})
		c.logs.reset() // the test keeps every log record; the master does not
		grew := heapMB() - before
		t.Logf("%s: the heap grew by %.1f MB", tc.name, grew)
		if grew > 15 {
			t.Errorf("%s: after %d requests of alice's the heap grew by %.0f MB", tc.name, n, grew)
		}
	}
}

// TestAttackGhostSessionHoldsClose: one plain request from a made-up
// session of alice's makes the master's link to it; the real alice drops
// what the master sends that session. The master's graceful Close must
// not wait for it to answer prepare_disconnect, and must still drain
// every real peer.
func TestAttackGhostSessionHoldsClose(t *testing.T) {
	b := startSecureBroker(t, nil)
	c := newSecureCluster(t, b, "alice=")
	alice := b.spy(t, "control-alice")
	if _, err := alice.nc.Request("lf.control.alice.master.0.ping.ghostx", []byte("{}"), waitLong); err != nil {
		t.Fatal(err)
	}
	// Well under the drain timeout (10 s), well over what draining two
	// slaves and two controls takes.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.master.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Close used up its context: it waited for the made-up session")
	}
	if late := c.logs.find("a peer did not finish in time"); len(late) > 0 {
		t.Errorf("peers did not finish: %v", late)
	}
	got := c.logs.find("draining the links of live peers; closing the others without waiting for them")
	if len(got) != 1 || got[0]["drained"] != "4" || got[0]["closed"] != "1" {
		t.Errorf("the master drained and closed %v; want 4 drained (two slaves, alice, bob), 1 closed (the made-up session)", got)
	}
}

// TestAttackSessionFloodBystanders: while control alice and slave 3 name a
// fresh session in every message, alice's real controls (one linked
// before, new ones dialed during the flood) and slave 3's real process
// keep working: every request is answered, and slave 3 stays registered
// on its one session.
func TestAttackSessionFloodBystanders(t *testing.T) {
	b := startSecureBroker(t, nil)
	c := newSecureCluster(t, b, "*=*")
	cfg := slaveConfig("", 3, "31:delta")
	cfg.NATS = b.login("slave-3")
	s3, err := fabric.StartSlave(testkit.Ctx(t, waitLong), cfg, fabric.WithLogger(slog.New(c.logs)))
	if err != nil {
		t.Fatalf("StartSlave 3: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = s3.Close(ctx)
	})
	waitSlaves(t, c.master, waitLong, 1, 2, 3)

	before := c.master.Goroutines()
	stop := make(chan struct{})
	flooded := make(chan int)
	aliceSpy, slaveSpy := b.spy(t, "control-alice"), b.spy(t, "slave-3")
	go func() {
		n := 0
		defer func() { flooded <- n }()
		// In bursts, each waited for (a request of the spy's own answered
		// after it): the flood is of sessions, at the pace the master takes
		// messages, not of the master's CPU (the broker's to limit).
		for n < 200000 {
			select {
			case <-stop:
				return
			default:
			}
			for range 500 {
				n++
				_ = aliceSpy.nc.Publish(fmt.Sprintf("lf.control.alice.master.0.ping.f%dx", n), []byte("{}"))
				_ = slaveSpy.nc.Publish(fmt.Sprintf("lf.slave.3.master.0.ping.f%dx", n), []byte("{}"))
			}
			_, _ = aliceSpy.nc.Request("lf.control.alice.master.0.ping", []byte("{}"), waitLong)
		}
	}()
	const rounds = 20
	answered := 0
	for i := range rounds {
		if _, err := requestErr(t, c.alice.Link(), messages.ListSlaves, messages.Empty{}); err != nil {
			t.Errorf("round %d: alice's control linked before the flood: %v", i, err)
		} else {
			answered++
		}
		if i%4 == 0 {
			fresh := c.dialControl(t, "alice", "control-alice")
			for j := range 3 {
				if _, err := requestErr(t, fresh.Link(), messages.ListInstances, messages.Empty{}); err != nil {
					t.Errorf("round %d: alice's control dialed during the flood, request %d: %v", i, j, err)
				} else {
					answered++
				}
			}
		}
		// Slave 3's instance, through the master and slave 3's link.
		if _, err := requestErr(t, c.alice.Link(), messages.ListInstances, messages.Empty{}); err != nil {
			t.Errorf("round %d: list_instances: %v", i, err)
		} else {
			answered++
		}
	}
	close(stop)
	n := <-flooded
	// One goroutine per link: at most the bound's worth of sessions of
	// each of the two addresses.
	settled(t, c.master, before, 2*fabric.DefaultMaxPeerSessions+rounds/4+1, "after the flood") // and alice's fresh controls
	if want := 2*rounds + 3*(rounds/4); answered != want {
		t.Errorf("%d of %d requests answered during a flood of %d made-up sessions each", answered, want, n)
	}
	if regs := c.logs.find("slave registered"); countSlave(regs, "3") != 1 {
		t.Errorf("slave 3 registered %d times: its session was replaced during the flood", countSlave(regs, "3"))
	}
	waitSlaves(t, c.master, waitLong, 1, 2, 3)
	t.Logf("%d made-up sessions each from control alice and slave 3", n)
}

func countSlave(records []map[string]string, id string) int {
	n := 0
	for _, r := range records {
		if r["slave"] == id {
			n++
		}
	}
	return n
}

// settled waits a little, until the master runs at most bound goroutines
// more than before (one per link it keeps): for the links replaced last to
// end, but not as long as the peer timeout, which ends quiet made-up
// sessions however many there are.
func settled(t *testing.T, m *fabric.Master, before, bound int, what string) {
	t.Helper()
	testkit.Eventually(t, peerTimeout/2, what+": the master's goroutines back within the bound", func() error {
		if after := m.Goroutines(); after-before > bound {
			return fmt.Errorf("the master runs %d goroutines, was %d", after, before)
		}
		return nil
	})
}
