package soak_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/natscluster"
	"github.com/linkfabric/linkfabric/internal/soak"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The fault tests run a soak on a three-node NATS cluster (deploy/, via
// natscluster) with the master on node 1, slave 1 on node 2, slave 2 and
// the control on node 3, and break things under steady traffic.
//
// Each endpoint is given its home node's URL only. nats.go shuffles a
// list of URLs (the fabric does not set DontRandomize), so a list would
// not say where an endpoint lands; from the one it reaches, it learns the
// others (the nodes advertise them) and fails over to them as it would
// with all three listed. The tests check where each endpoint is with the
// nodes' /connz.

const (
	// pingInterval is the endpoints' NATS ping interval: two missed pings
	// mark a half-open connection dead, so an endpoint on a frozen node
	// moves to another within about a second.
	pingInterval = 500 * time.Millisecond
	// heal bounds how long the cluster may take to carry traffic again
	// after a fault.
	heal = 20 * time.Second
	// burst is how many events arrive between the steps of a scenario: at
	// the soak's rates (120 events a second), two or three seconds of traffic.
	burst = 300
)

// timing is the endpoints' timing in the fault tests.
func timing() fabric.TimingConfig {
	return fabric.TimingConfig{
		RequestTimeout:    5 * time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		PeerTimeout:       time.Second,
		SessionTimeout:    30 * time.Second,
	}
}

// viewBound is how soon the master's view must be right once the cluster
// carries traffic again: the peer timeout (a slave silent that long is
// shown lost until it speaks again), two heartbeats (the watcher's tick
// and the age of the last heartbeat) and slack for a loaded machine.
func viewBound(tm fabric.TimingConfig) time.Duration {
	return tm.PeerTimeout + 2*tm.HeartbeatInterval + 3*time.Second
}

// home is the node each endpoint connects to first.
func home(ep link.Address) int {
	switch {
	case ep == link.MasterAddress:
		return 1
	case ep.Type == messages.Slave && ep.ID == "1":
		return 2
	default: // slave 2, the control
		return 3
	}
}

// clusterSoak starts a soak on c with the master, slaves and control on
// their home nodes, and checks that they are there.
func clusterSoak(t *testing.T, c *natscluster.Cluster, prefix string, tune func(ep link.Address, n *fabric.NATSConfig)) *soak.Soak {
	t.Helper()
	cfg := soak.Config{
		NATS:       fabric.NATSConfig{URL: c.URL(1), Prefix: prefix, PingInterval: pingInterval},
		Timing:     timing(),
		KVReplicas: 3, // the master's state survives the loss of a node
		StateRate:  2,
		NATSFor: func(ep link.Address, n fabric.NATSConfig) fabric.NATSConfig {
			n.URL = c.URL(home(ep))
			if tune != nil {
				tune(ep, &n)
			}
			return n
		},
	}
	s := startSoak(t, cfg)
	testkit.Eventually(t, 10*time.Second, "endpoints on their home nodes", func() error {
		for _, ep := range []link.Address{link.MasterAddress, slaveAddr(1), slaveAddr(2), {Type: messages.Control, ID: soak.ControlUser}} {
			if n, err := c.NodeOf(connName(ep)); err != nil || n != home(ep) {
				return fmt.Errorf("%s on node %d (%v), want node %d", ep, n, err, home(ep))
			}
		}
		return nil
	})
	return s
}

func slaveAddr(id int64) link.Address {
	return link.Address{Type: messages.Slave, ID: fmt.Sprint(id)}
}

// connName is the NATS connection name of an endpoint.
func connName(ep link.Address) string { return "linkfabric " + ep.String() }

// traffic waits until burst more events have arrived, within heal.
func traffic(t *testing.T, s *soak.Soak, when string) {
	t.Helper()
	if err := s.WaitTraffic(testkit.Ctx(t, heal), burst); err != nil {
		t.Fatalf("traffic %s: %v", when, err)
	}
}

// moved waits until the endpoint is connected to a node other than from.
func moved(t *testing.T, c *natscluster.Cluster, ep link.Address, from int) int {
	t.Helper()
	var to int
	testkit.Eventually(t, heal, ep.String()+" on another node", func() error {
		n, err := c.NodeOf(connName(ep))
		if err != nil {
			return err
		}
		if n == from {
			return fmt.Errorf("still on node %d", n)
		}
		to = n
		return nil
	})
	return to
}

// bucketsLedOff makes nodes other than node lead the master's state and
// lease buckets, for a test that freezes node but is not about the master
// riding out its own JetStream's leader election (TestFaults' freeze is).
// While the lease bucket has no leader (seconds), the master cannot renew
// its lease: its gate closes, it hears no one and gives its peers their
// timeouts afresh once it can again, and if the lease lapses meanwhile its
// term may end, and every slave registers again.
func bucketsLedOff(t *testing.T, c *natscluster.Cluster, prefix string, node int) {
	t.Helper()
	for _, b := range []string{fabric.StateBucket(prefix), fabric.LeaseBucket(prefix)} {
		if err := c.MoveStreamLeader("KV_"+b, node); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFaults runs the fault scenarios in turn on one cluster, each with a
// soak of its own: after each, every event sent has arrived once and in
// order, every request has ended once with no handler run twice, and the
// master's view is right within the bound.
func TestFaults(t *testing.T) {
	c := natscluster.Start(t)

	t.Run("kill the master's node", func(t *testing.T) {
		s := clusterSoak(t, c, "lfsoak.kill", nil)
		traffic(t, s, "before the kill")
		c.Kill(1)
		killed := time.Now()
		to := moved(t, c, link.MasterAddress, 1)
		traffic(t, s, "after the kill")
		t.Logf("the master moved to node %d; %d more events arrived within %s of the kill", to, burst, time.Since(killed).Round(time.Millisecond))
		c.Restart(1)
		traffic(t, s, "after node 1 came back")
		finish(t, s, viewBound(timing()))
	})

	t.Run("freeze a slave's node", func(t *testing.T) {
		s := clusterSoak(t, c, "lfsoak.freeze", nil)
		// The master's buckets are led from that node too: the master
		// cannot renew its lease until JetStream has elected other
		// leaders (seconds), stops acting meanwhile, and then goes on in
		// the same term, since no other master took over.
		for _, b := range []string{fabric.StateBucket("lfsoak.freeze"), fabric.LeaseBucket("lfsoak.freeze")} {
			if err := c.LeadStream("KV_"+b, 2); err != nil {
				t.Fatal(err)
			}
		}
		term := s.Master().Term()
		traffic(t, s, "before the freeze")
		c.Freeze(2)
		frozen := time.Now()
		to := moved(t, c, slaveAddr(1), 2) // it noticed the half-open connection
		t.Logf("slave 1 moved to node %d %s after node 2 froze", to, time.Since(frozen).Round(time.Millisecond))
		traffic(t, s, "while node 2 is frozen")
		c.Thaw(2)
		c.Wait()
		t.Logf("node 2 was frozen for %s", time.Since(frozen).Round(time.Millisecond))
		traffic(t, s, "after the thaw")
		finish(t, s, viewBound(timing()))
		if got := s.Master().Term(); got != term {
			t.Errorf("the master is in term %d, want still %d", got, term)
		}
	})

	t.Run("restart the master", func(t *testing.T) {
		// A lone master, no standby: restarted (gracefully), it is back
		// at once, with its state (StateRate), and nothing is lost.
		s := clusterSoak(t, c, "lfsoak.master", nil)
		runs := failoverRuns(t)
		var took []time.Duration
		for run := range runs {
			traffic(t, s, "before the restart")
			d, err := s.TimeFault(testkit.Ctx(t, heal), s.RestartMaster)
			if err != nil {
				t.Fatalf("RestartMaster: %v", err)
			}
			took = append(took, d)
			if err := s.WaitView(testkit.Ctx(t, heal), nil); err != nil {
				t.Fatal(err)
			}
			st, err := s.CheckState(testkit.Ctx(t, heal))
			if err != nil || len(st.Missing) > 0 || st.Acknowledged == 0 {
				t.Errorf("state after the restart: %+v, %v", st, err)
			}
			t.Logf("restart %d: requests succeeded again %s after the restart began; %d changes acknowledged, none lost", run+1, d.Round(time.Millisecond), st.Acknowledged)
		}
		traffic(t, s, "after the restart")
		r := finish(t, s, viewBound(timing()))
		wantIncarnations(t, r, "master -> slave 1", int64(runs)+1)
		slices.Sort(took)
		t.Logf("back after a restart: p50 %s, max %s over %d", took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), len(took))
		if runs >= 5 && took[len(took)-1] > 2*time.Second {
			t.Errorf("a restart of the lone master took up to %s; the target is 2s", took[len(took)-1])
		}
	})

	t.Run("restart a slave", func(t *testing.T) {
		s := clusterSoak(t, c, "lfsoak.slave", nil)
		traffic(t, s, "before the restart")
		if err := s.RestartSlave(testkit.Ctx(t, heal), 1); err != nil {
			t.Fatalf("RestartSlave: %v", err)
		}
		traffic(t, s, "after the restart")
		r := finish(t, s, viewBound(timing()))
		wantIncarnations(t, r, "instance 101 -> master", 2)
		wantIncarnations(t, r, "instance 201 -> master", 1)
	})
}

// wantIncarnations checks how many incarnations of a link's sender the
// report counts.
func wantIncarnations(t *testing.T, r soak.Report, link string, want int64) {
	t.Helper()
	var got int64
	for _, l := range r.Links {
		if l.Link == link {
			got = max(got, l.Incarnation)
		}
	}
	if got != want {
		t.Errorf("%s: %d incarnations, want %d", link, got, want)
	}
}

// A slave on a node that hangs (SIGSTOP), whose connection is half-open
// and which does not notice it (its NATS pings are a minute apart), is
// shown disconnected by the master, on another node, within the peer
// timeout and a margin. Thawed within the session timeout, it is back in
// the same session, and nothing is lost.
func TestHalfOpenSlaveNoticed(t *testing.T) {
	c := natscluster.Start(t)
	s := clusterSoak(t, c, "lfsoak.halfopen", func(ep link.Address, n *fabric.NATSConfig) {
		if ep == slaveAddr(1) {
			n.PingInterval = time.Minute
		}
	})
	if err := s.WaitView(testkit.Ctx(t, heal), nil); err != nil {
		t.Fatal(err)
	}
	// The master must be able to act while node 2 is frozen: it is the
	// master that notices the slave, within the peer timeout.
	bucketsLedOff(t, c, "lfsoak.halfopen", 2)
	term := s.Master().Term()
	traffic(t, s, "before the freeze")
	before := s.MasterLink(1)

	tm := timing()
	bound := tm.PeerTimeout + 2*tm.HeartbeatInterval + 1500*time.Millisecond
	c.Freeze(2)
	frozen := time.Now()
	testkit.Eventually(t, bound+5*time.Second, "the master shows slave 1 disconnected", func() error {
		if slices.ContainsFunc(s.Master().Slaves(), func(si messages.SlaveInfo) bool { return si.ID == 1 && si.Connected }) {
			return errors.New("slave 1 connected")
		}
		return nil
	})
	took := time.Since(frozen)
	t.Logf("the master showed slave 1 disconnected %s after its node froze (peer timeout %s, bound %s)", took.Round(time.Millisecond), tm.PeerTimeout, bound)
	if took > bound {
		t.Errorf("the master took %s to notice, more than %s", took.Round(time.Millisecond), bound)
	}
	for _, i := range s.Master().Instances() {
		if i.SlaveID == 1 && i.Status != messages.StatusUnknown {
			t.Errorf("instance %d of the lost slave is %s, want %s", i.ID, i.Status, messages.StatusUnknown)
		}
	}
	if n, err := c.NodeOf(connName(slaveAddr(1))); err == nil {
		t.Errorf("slave 1 left the frozen node for node %d: the test needs it half-open", n)
	}

	c.Thaw(2)
	c.Wait()
	if err := s.WaitView(testkit.Ctx(t, heal), nil); err != nil {
		t.Fatal(err)
	}
	if got := s.Master().Term(); got != term {
		t.Errorf("the master is in term %d, want still %d: every slave registered again", got, term)
	}
	if after := s.MasterLink(1); after != before {
		t.Error("slave 1 registered again: its session should have outlived a freeze shorter than the session timeout")
	}
	traffic(t, s, "after the thaw")
	finish(t, s, viewBound(tm))
}

// A slave whose node hangs for longer than the session timeout, and which
// cannot leave it, loses its session: the master closes its link, and a
// request waiting on it ends with session_lost. Once the node thaws the
// slave registers again, in a new session.
func TestSessionTimeout(t *testing.T) {
	c := natscluster.Start(t)
	tm := timing()
	tm.SessionTimeout = 2 * time.Second
	tm.RequestTimeout = 10 * time.Second // longer than the session: it is the session that ends the request
	s := startSoak(t, soak.Config{
		NATS:       fabric.NATSConfig{URL: c.URL(1), Prefix: "lfsoak.session", PingInterval: pingInterval},
		Timing:     tm,
		KVReplicas: 3,
		NATSFor: func(ep link.Address, n fabric.NATSConfig) fabric.NATSConfig {
			n.URL = c.URL(home(ep))
			if ep == slaveAddr(1) {
				n.PingInterval = time.Minute // it stays on the frozen node
			}
			return n
		},
		QuiesceTimeout: 5 * time.Second, // what the ended session owed never arrives
	})
	if err := s.WaitView(testkit.Ctx(t, heal), nil); err != nil {
		t.Fatal(err)
	}
	// The test is about slave 1's session, not about the master's
	// JetStream electing a new leader (which takes seconds, longer than
	// this session timeout).
	bucketsLedOff(t, c, "lfsoak.session", 2)
	traffic(t, s, "before the freeze")
	before := s.MasterLink(1)
	if before == nil {
		t.Fatal("slave 1 has no link")
	}

	c.Freeze(2)
	frozen := time.Now()
	// A request on its way to instance 101 when the node froze: the master
	// forwards it to slave 1 (not yet lost) and waits.
	asked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), tm.RequestTimeout)
		defer cancel()
		asked <- s.Ask(ctx, 101)
	}()

	bound := tm.SessionTimeout + 2*tm.HeartbeatInterval + 2*time.Second
	select {
	case <-before.Done():
		t.Logf("the master closed slave 1's link %s after its node froze (session timeout %s)", time.Since(frozen).Round(time.Millisecond), tm.SessionTimeout)
	case <-time.After(bound + 5*time.Second):
		t.Fatalf("the master did not end slave 1's session within %s", bound+5*time.Second)
	}
	if took := time.Since(frozen); took > bound {
		t.Errorf("the session ended %s after the freeze, more than %s", took.Round(time.Millisecond), bound)
	}
	select {
	case err := <-asked:
		if !errors.Is(err, link.ErrSessionLost) {
			t.Errorf("the request waiting on the ended session ended with %v, want session_lost", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the request waiting on the ended session did not end")
	}

	c.Thaw(2)
	c.Wait()
	t.Logf("node 2 was frozen for %s", time.Since(frozen).Round(time.Millisecond))
	testkit.Eventually(t, heal, "slave 1 registered again in a new session", func() error {
		if l := s.MasterLink(1); l == nil || l == before {
			return errors.New("not yet")
		}
		if v := s.View(); !v.OK {
			return fmt.Errorf("view: %q", v.Problems)
		}
		return nil
	})
	traffic(t, s, "after the thaw")
	if err := s.Quiesce(testkit.Ctx(t, 30*time.Second)); err != nil {
		t.Logf("Quiesce: %v (events sent to the ended session are given up)", err)
	}
	r := s.Report()
	t.Logf("report:\n%s", r)
	for _, q := range r.Requests {
		if !q.Clean() {
			t.Errorf("%s: %+v", q.Message, q)
		}
	}
	// Events sent to or from slave 1's ended session may be given up, but
	// none arrives twice or out of order: what slave 1 owed the ended
	// session is not passed on to the next (that would deliver the
	// freeze's worth of events twice), and the ended link's late messages
	// (buffered on the frozen node) are refused, not taken for a new link.
	// The rest of the cluster carries on untouched.
	for _, l := range r.Links {
		if ofSlaveOne(l.Link) {
			if l.Duplicated > 0 || l.OutOfOrder > 0 {
				t.Errorf("%s #%d across the ended session: %d duplicated %v, %d out of order",
					l.Link, l.Incarnation, l.Duplicated, l.DuplicatedSeqs, l.OutOfOrder)
			}
			continue
		}
		if !l.Clean() {
			t.Errorf("%s #%d: %d missing, %d duplicated, %d out of order", l.Link, l.Incarnation, l.Missing, l.Duplicated, l.OutOfOrder)
		}
	}
}

// ofSlaveOne tells whether a link is slave 1's or one of its instances'
// (101 and 102), broadcasts to and from them and their output included.
func ofSlaveOne(l string) bool {
	switch {
	case l == "master -> slave 1", l == "instance 101 -> master", l == "instance 102 -> master",
		l == "instance 101 output -> control", l == "instance 102 output -> control":
		return true
	case strings.Contains(l, " => "):
		var from, to int
		_, err := fmt.Sscanf(l, "instance %d => instance %d", &from, &to)
		return err == nil && (from/100 == 1 || to/100 == 1)
	}
	return false
}
