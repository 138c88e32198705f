package natscluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/natscluster"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// timing is the endpoints' environment besides their own settings, as in
// the fabric's own tests: a heartbeat every 100ms, peers lost after 2s of
// silence, client pings every second. Everything else keeps its default,
// as the Load*Config functions give it.
var timing = []string{
	"FABRIC_REQUEST_TIMEOUT=5s",
	"FABRIC_HEARTBEAT_INTERVAL=100ms",
	"FABRIC_PEER_TIMEOUT=2s",
	"FABRIC_NATS_PING_INTERVAL=1s",
}

const (
	// waitLong bounds a wait for something that should happen promptly.
	waitLong = 10 * time.Second
	// failover bounds how long the cluster may take to work end to end
	// again after a node dies.
	failover = 20 * time.Second
	// attempt bounds each request while waiting for the cluster to heal.
	attempt = 2 * time.Second
)

// environ is timing plus kv.
func environ(kv ...string) []string { return append(slices.Clone(timing), kv...) }

// logger discards the endpoints' logs unless LF_TEST_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("LF_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func closeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// call sends one request with a deadline of d.
func call[Req, Resp any](l *link.Link, m *messages.Request[Req, Resp], req Req, d time.Duration) (Resp, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return link.Request(ctx, l, m, req)
}

// meshed reports an error unless every node routes to the other two.
func meshed(c *natscluster.Cluster) error {
	for i := 1; i <= natscluster.Nodes; i++ {
		n, err := c.Peers(i)
		if err != nil {
			return err
		}
		if n != natscluster.Nodes-1 {
			return fmt.Errorf("node %d routes to %d other nodes", i, n)
		}
	}
	return nil
}

// TestClusterFailover runs a master on node 1, a slave that may use any
// node (node 2 first) and a control on node 3, drives an instance across
// the nodes, kills the node the slave is on, and checks that the cluster
// works end to end again within a bound.
func TestClusterFailover(t *testing.T) {
	c := natscluster.Start(t)
	if err := meshed(c); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	if got := c.URLList(2, 1, 3); got != c.URL(2)+","+c.URL(1)+","+c.URL(3) {
		t.Fatalf("URLList(2, 1, 3) = %q", got)
	}

	masterCfg, err := fabric.LoadMasterConfig(environ("FABRIC_NATS_URL="+c.URL(1), "FABRIC_KV_REPLICAS=3"))
	if err != nil {
		t.Fatal(err)
	}
	slaveCfg, err := fabric.LoadSlaveConfig(environ("FABRIC_NATS_URL="+c.URLList(2, 1, 3), "FABRIC_SLAVE_ID=1", "FABRIC_SLAVE_INSTANCES=11:alpha"))
	if err != nil {
		t.Fatal(err)
	}
	controlCfg, err := fabric.LoadControlConfig(environ("FABRIC_NATS_URL="+c.URL(3), "FABRIC_CONTROL_USER=alice"))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	master, err := fabric.StartMaster(ctx, masterCfg, fabric.WithLogger(logger()))
	if err != nil {
		t.Fatalf("StartMaster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = master.Close(ctx)
	})
	slave, err := fabric.StartSlave(ctx, slaveCfg, fabric.WithLogger(logger()))
	if err != nil {
		t.Fatalf("StartSlave: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = slave.Close(ctx)
	})
	control, err := fabric.DialControl(ctx, controlCfg, fabric.WithLogger(logger()))
	if err != nil {
		t.Fatalf("DialControl: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = control.Close(ctx)
	})
	ctl := control.Link()

	// Where everyone is: the broker's view, by connection name.
	testkit.Eventually(t, waitLong, "endpoints connected to their nodes", func() error {
		for name, want := range map[string]int{"linkfabric master/0": 1, "linkfabric control/alice": 3} {
			if got, err := c.NodeOf(name); err != nil || got != want {
				return fmt.Errorf("%s on node %d (%v), want node %d", name, got, err, want)
			}
		}
		_, err := c.NodeOf("linkfabric slave/1")
		return err
	})
	testkit.Eventually(t, waitLong, "slave 1 registered", func() error {
		if !slices.ContainsFunc(master.Slaves(), func(s messages.SlaveInfo) bool { return s.ID == 1 && s.Connected }) {
			return fmt.Errorf("slaves %+v", master.Slaves())
		}
		return nil
	})

	// control (node 3) -> master (node 1) -> slave (its node) -> instance.
	if _, err := call(ctl, messages.StartInstance, messages.InstanceRef{InstanceID: 11}, waitLong); err != nil {
		t.Fatalf("start_instance 11: %v", err)
	}
	testkit.Eventually(t, waitLong, "instance 11 running", func() error {
		list, err := call(ctl, messages.ListInstances, messages.Empty{}, attempt)
		if err != nil {
			return err
		}
		for _, i := range list.Instances {
			if i.ID == 11 && i.Status == messages.StatusRunning {
				return nil
			}
		}
		return fmt.Errorf("instances %+v", list.Instances)
	})
	if res, err := call(ctl, messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"}, waitLong); err != nil || res.Output != "no players online" {
		t.Fatalf("send_command /players = %q, %v; want %q", res.Output, err, "no players online")
	}
	if res, err := call(ctl, messages.SendCommand, messages.Command{InstanceID: 11, Command: "/join bob"}, waitLong); err != nil {
		t.Fatalf("send_command /join bob = %q, %v", res.Output, err)
	}

	// Kill the node the slave is on. NATS clients shuffle their server
	// list, so that may be any of the three; whichever it is, the
	// endpoints on it must move to the others.
	victim, err := c.NodeOf("linkfabric slave/1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slave 1 is on node %d; killing it", victim)
	killed := time.Now()
	c.Kill(victim)

	testkit.Eventually(t, failover, "slave 1 on another node", func() error {
		n, err := c.NodeOf("linkfabric slave/1")
		if err != nil {
			return err
		}
		if n == victim {
			return fmt.Errorf("still on node %d", n)
		}
		return nil
	})
	// The instance kept its state: the slave process never stopped.
	testkit.Eventually(t, failover, "send_command /players after the kill", func() error {
		res, err := call(ctl, messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"}, attempt)
		if err != nil {
			return err
		}
		if res.Output != "1 online: bob" {
			return fmt.Errorf("output %q", res.Output)
		}
		return nil
	})
	testkit.Eventually(t, failover, "slave 1 connected in the master's view", func() error {
		if !slices.ContainsFunc(master.Slaves(), func(s messages.SlaveInfo) bool { return s.ID == 1 && s.Connected }) {
			return fmt.Errorf("slaves %+v", master.Slaves())
		}
		return nil
	})
	t.Logf("the cluster worked end to end again %s after the kill", time.Since(killed).Round(time.Millisecond))

	// The killed node comes back and the mesh is whole again.
	c.Restart(victim)
	if err := meshed(c); err != nil {
		t.Fatalf("after Restart(%d): %v", victim, err)
	}
	// The kill may have taken the leader of one of the master's buckets
	// with it. The requests above succeeded within the master's lease;
	// JetStream then takes seconds to elect another leader, and meanwhile
	// the master stops acting, and its lease may lapse at the server: it
	// goes on in its term, or, if it cannot tell that the state is as its
	// term left it, begins a new one, and requests pending at it end with
	// session_lost (docs/reliability.md, "Where the promise ends"). That
	// may still be under way now: the cluster works end to end again
	// within the bound.
	testkit.Eventually(t, failover, "send_command /players after the restart", func() error {
		// A new term ends the control's link; it dials the next at once.
		res, err := call(control.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"}, attempt)
		if err != nil {
			return err
		}
		if res.Output != "1 online: bob" {
			return fmt.Errorf("output %q", res.Output)
		}
		return nil
	})
}

// TestFreezeThaw freezes a node, checks that the other two notice and
// carry on, and that the node rejoins once thawed.
func TestFreezeThaw(t *testing.T) {
	c := natscluster.Start(t)
	c.Freeze(3)
	c.Wait() // nodes 1 and 2 have dropped their routes to node 3
	for i := 1; i <= 2; i++ {
		if n, err := c.Peers(i); err != nil || n != 1 {
			t.Fatalf("node %d routes to %d other nodes (%v), want 1 while node 3 is frozen", i, n, err)
		}
	}
	if _, err := c.Peers(3); err == nil {
		t.Fatal("frozen node 3 answered its monitoring endpoint")
	}
	c.Thaw(3)
	c.Wait()
	if err := meshed(c); err != nil {
		t.Fatalf("after Thaw: %v", err)
	}
}
