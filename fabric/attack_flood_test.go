package fabric_test

import (
	"fmt"
	"runtime"
	"testing"

	natsgo "github.com/nats-io/nats.go"
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
		if after := c.master.Goroutines(); after-before > n/10 {
			t.Errorf("%s named %d sessions: the master runs %d goroutines, was %d", user, n, after, before)
		}
	}
}

// TestAttackServedMemory: a control with no permission at all sends
// requests on fabric reply subjects whose low mark never rises, with a
// budget of a day. The master must not keep every one of them (and its
// response) for as long as the link lives.
func TestAttackServedMemory(t *testing.T) {
	b := startSecureBroker(t, nil)
	newSecureCluster(t, b, "alice=")
	alice := b.spy(t, "control-alice")
	before := heapMB()
	const n = 100000
	publishMany(t, alice, "lf.control.alice.master.0.ping", n, func(i int) *natsgo.Msg {
		return &natsgo.Msg{Subject: "lf.control.alice.master.0.list_instances",
			Reply: fmt.Sprintf("lf.master.0.control.alice._reply.evil.1.%d.86400000.0", i), Data: []byte("{}")}
	})
	if grew := heapMB() - before; grew > 30 {
		t.Errorf("after %d refused requests of alice's the heap grew by %.0f MB", n, grew)
	}
}
