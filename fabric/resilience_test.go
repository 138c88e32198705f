package fabric_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// reRegisterBound is how soon slaves must be registered with a master that
// has just started: a slave retries at least every peer timeout plus a
// heartbeat; the rest is slack for a loaded machine.
const reRegisterBound = peerTimeout + heartbeat + 2*time.Second

// lostBound is how soon a master with the short peer timeout must mark a
// vanished slave lost: the peer timeout, plus the watcher's tick (a
// heartbeat) and the age of the last heartbeat it saw, plus generous slack
// for a loaded machine (on an idle one it takes 650-800ms). A master that
// ignored its configured timeout for the default 10s would miss it.
const lostBound = fastPeerTimeout + 2*heartbeat + 1500*time.Millisecond

// TestMasterRestart: the master stops while slaves stay up; a new master
// on the same broker has every slave registered again within a bound, with
// the instances and their status, and requests reach the instances again.
// The instances hear the master go and come back.
func TestMasterRestart(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)}})
	c.start(t, 11, 21)

	ctx, cancel := closeCtx()
	defer cancel()
	aliceOld, bobOld := c.alice.Link(), c.bob.Link()
	if err := c.master.Close(ctx); err != nil {
		t.Errorf("master Close: %v", err)
	}
	// alice and bob have spoken to the old master: their sessions end with
	// it, and each dials the master again on its own.
	for ctl, old := range map[*fabric.Control]*link.Link{c.alice: aliceOld, c.bob: bobOld} {
		testkit.Recv(t, old.Done(), waitLong, "a control's link to the closed master to end")
		testkit.Eventually(t, waitLong, "the control dials the master again", func() error {
			if ctl.Link() == old {
				return errors.New("still the old link")
			}
			return nil
		})
	}
	testkit.Eventually(t, waitLong, "slaves notice the master left", func() error {
		if c.slave1.Connected() || c.slave2.Connected() {
			return errors.New("a slave still says it is connected")
		}
		return nil
	})
	for _, id := range []int64{11, 21} {
		testkit.Eventually(t, waitLong, "instance hears the master left", func() error { return p.has(id, "conn:close") })
	}

	started := time.Now()
	m2 := startMaster(t, c.url, "*=*")
	waitSlaves(t, m2, reRegisterBound, 1, 2)
	t.Logf("slaves registered %s after the new master started", time.Since(started).Round(time.Millisecond))

	ctl, _ := dialControl(t, c.url, "carol")
	slaves := request(t, ctl.Link(), messages.ListSlaves, messages.Empty{}).Slaves
	wantSlaves := []messages.SlaveInfo{
		{ID: 1, Name: "slave-1", Connected: true, Instances: 2},
		{ID: 2, Name: "slave-2", Connected: true, Instances: 1},
	}
	if !slices.Equal(slaves, wantSlaves) {
		t.Errorf("new master's list_slaves = %+v, want %+v", slaves, wantSlaves)
	}
	instances := request(t, ctl.Link(), messages.ListInstances, messages.Empty{}).Instances
	wantInstances := []messages.InstanceInfo{
		{ID: 11, Name: "alpha", SlaveID: 1, Status: messages.StatusRunning},
		{ID: 12, Name: "beta", SlaveID: 1, Status: messages.StatusStopped},
		{ID: 21, Name: "gamma", SlaveID: 2, Status: messages.StatusRunning},
	}
	if !slices.Equal(instances, wantInstances) {
		t.Errorf("new master's list_instances = %+v, want %+v", instances, wantInstances)
	}
	p.setCommandHook(func(_ context.Context, id int64, _ messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: fmt.Sprint("pong from ", id)}, nil
	})
	for _, id := range []int64{11, 21} {
		got := request(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: id, Command: "/ping"}).Output
		if want := fmt.Sprint("pong from ", id); got != want {
			t.Errorf("send_command %d = %q, want %q", id, got, want)
		}
		testkit.Eventually(t, waitLong, "instance hears the master is back", func() error { return p.has(id, "conn:connect") })
		if got, want := p.of(id, "conn:"), []string{"conn:close", "conn:connect"}; !slices.Equal(got, want) {
			t.Errorf("instance %d heard %q, want %q", id, got, want)
		}
	}
	// The old link's session is over for good; the control's new link
	// reaches the new master.
	if _, err := requestErr(t, aliceOld, messages.ListSlaves, messages.Empty{}); !errors.Is(err, link.ErrSessionLost) {
		t.Errorf("request on the old master's control link: %v, want ErrSessionLost", err)
	}
	if got := request(t, c.alice.Link(), messages.ListSlaves, messages.Empty{}).Slaves; !slices.Equal(got, wantSlaves) {
		t.Errorf("list_slaves on alice's new link = %+v, want %+v", got, wantSlaves)
	}
}

// TestSlaveCloseStopsInstances: a slave that closes gracefully tells its
// running instances (prepare_master_disconnect) before it leaves the
// master, then ends their links; the master marks it disconnected at once
// and its instances unknown.
func TestSlaveCloseStopsInstances(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)}})
	c.start(t, 11, 21)

	ctx, cancel := closeCtx()
	defer cancel()
	if err := c.slave1.Close(ctx); err != nil {
		t.Fatalf("close slave 1: %v", err)
	}
	testkit.Eventually(t, waitLong, "instance 11's link closes", func() error { return p.has(11, "link closed") })
	if got, want := p.of(11, ""), []string{"start", "prepare_master_disconnect", "link closed"}; !slices.Equal(got, want) {
		t.Errorf("instance 11 received %q, want %q", got, want)
	}
	if got := p.of(12, ""); len(got) != 0 {
		t.Errorf("instance 12, which never ran, received %q", got)
	}
	if got := p.of(21, ""); !slices.Equal(got, []string{"start"}) {
		t.Errorf("instance 21, on slave 2, received %q", got)
	}
	waitSlaves(t, c.master, waitLong, 2)
	if i, err := instanceStatus(t, c.alice.Link(), 11); err != nil || i.Status != messages.StatusUnknown {
		t.Errorf("instance 11 = %+v, %v; want status unknown", i, err)
	}
	if c.slave1.Connected() {
		t.Error("a closed slave says it is connected")
	}
	if err := c.slave1.Close(ctx); err != nil {
		t.Errorf("second Close: %v, want nil (idempotent)", err)
	}
}

// TestHelperSlaveProcess is not a test: it is the slave process that
// TestKilledSlave starts and kills. It takes its configuration from the
// environment and runs until its standard input closes.
func TestHelperSlaveProcess(t *testing.T) {
	if os.Getenv("LF_HELPER_SLAVE") != "1" {
		return
	}
	serveFromEnv(fabric.LoadSlaveConfig, func(ctx context.Context, cfg fabric.SlaveConfig) (*fabric.Slave, error) {
		return fabric.StartSlave(ctx, cfg, fabric.WithLogger(cfg.Log.NewLogger()))
	})
}

// startSlaveProcess runs slave id, hosting instances, in a child process
// (this test binary running TestHelperSlaveProcess), configured through
// the environment as an operator would.
func startSlaveProcess(t *testing.T, url string, id int64, instances string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSlaveProcess$", "-test.count=1", "-test.timeout=60s")
	cmd.Env = append(os.Environ(),
		"LF_HELPER_SLAVE=1",
		"FABRIC_NATS_URL="+url,
		fmt.Sprint("FABRIC_SLAVE_ID=", id),
		"FABRIC_SLAVE_INSTANCES="+instances,
		"FABRIC_HEARTBEAT_INTERVAL="+heartbeat.String(),
		"FABRIC_PEER_TIMEOUT="+peerTimeout.String(),
		"FABRIC_REQUEST_TIMEOUT="+reqTimeout.String(),
		"FABRIC_LOG_LEVEL=error",
	)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the slave process: %v", err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && output.Len() > 0 {
			t.Logf("slave process output:\n%s", output.String())
		}
	})
	return cmd
}

// TestKilledSlave: a slave process killed with SIGKILL says nothing to
// anyone; the master marks it disconnected within the peer timeout (plus a
// heartbeat or two), its instances become unknown, requests for them fail
// with slave_not_connected, and the rest of the cluster goes on. A new
// process with the same id takes the killed one's place at once, without
// waiting for the master to notice.
//
// The slave runs in a child process because a killed process is what the
// test is about: no prepare_disconnect, no _close notice, no drain. (A
// connection kicked by the broker is not the same: nats.go reconnects it,
// and the slave rightly stays; see TestSlaveConnectionDrop.)
func TestKilledSlave(t *testing.T) {
	c := newCluster(t, clusterConfig{fastMaster: true})
	// The child process starts slower than an in-process slave.
	const startBound = 20 * time.Second

	t.Run("marked disconnected", func(t *testing.T) {
		cmd := startSlaveProcess(t, c.url, 3, "31:doomed")
		waitSlaves(t, c.master, startBound, 1, 2, 3)
		c.start(t, 31)
		if got := c.command(t, 31, "/players"); got != "no players online" {
			t.Fatalf("send_command to the slave process = %q", got)
		}

		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		_ = cmd.Wait()
		waitSlaves(t, c.master, waitLong, 1, 2)
		lost := time.Since(killed)
		t.Logf("master marked the killed slave lost after %s", lost.Round(time.Millisecond))
		if lost > lostBound {
			t.Errorf("master marked the killed slave lost after %s, want at most %s (peer timeout %s)", lost, lostBound, fastPeerTimeout)
		}
		if lost < fastPeerTimeout/2 {
			t.Errorf("master marked the slave lost after %s, sooner than its peer timeout %s allows", lost, fastPeerTimeout)
		}

		if i, err := instanceStatus(t, c.alice.Link(), 31); err != nil || i.Status != messages.StatusUnknown {
			t.Errorf("instance 31 = %+v, %v; want status unknown", i, err)
		}
		_, err := requestErr(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 31, Command: "/players"})
		testkit.WantCode(t, err, fabric.CodeSlaveNotConnected)
		c.start(t, 11)
		if got := c.command(t, 11, "/players"); got != "no players online" {
			t.Errorf("instance 11 /players = %q", got)
		}
	})

	t.Run("replaced by a new process", func(t *testing.T) {
		cmd := startSlaveProcess(t, c.url, 4, "41:phoenix")
		waitSlaves(t, c.master, startBound, 1, 2, 4)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		// At once, before the master has noticed: the master asks the old
		// process, hears nothing, and lets the new one in.
		start := time.Now()
		s := startSlave(t, c.url, 4, "41:phoenix")
		if !s.Connected() {
			t.Fatal("the new slave 4 is not registered")
		}
		t.Logf("the new process registered after %s", time.Since(start).Round(time.Millisecond))
		waitSlaves(t, c.master, waitLong, 1, 2, 4)
		c.start(t, 41)
	})
}

// TestSlaveConnectionDrop: the broker drops a slave's connection; nats.go
// reconnects, the slave's instances hear of the drop and the resumption,
// and the slave is registered and reachable again without anyone acting.
func TestSlaveConnectionDrop(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)}})
	c.start(t, 11)
	p.setCommandHook(func(context.Context, int64, messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: "pong"}, nil
	})

	kick(t, c.broker.Server(), "linkfabric slave/1")
	testkit.Eventually(t, waitLong, "instance hears the drop", func() error { return p.has(11, "conn:drop") })
	testkit.Eventually(t, waitLong, "instance hears the connection resume", func() error {
		if err := p.has(11, "conn:resume"); err != nil {
			return p.has(11, "conn:connect") // or the slave registered anew
		}
		return nil
	})
	waitSlaves(t, c.master, reRegisterBound, 1, 2)
	testkit.Eventually(t, reRegisterBound, "instance 11 reachable", func() error {
		_, err := requestErr(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/ping"})
		return err
	})
	t.Logf("instance 11 heard %q", p.of(11, "conn:"))
}

// kick makes the broker close the connection named name.
func kick(t *testing.T, s *server.Server, name string) {
	t.Helper()
	connz, err := s.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range connz.Conns {
		if ci.Name == name {
			if err := s.DisconnectClientByID(ci.Cid); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no connection named %q", name)
}

// TestDuplicateSlaveRefused: a second process that starts with the id of
// a slave still connected is refused with ErrAlreadyConnected, and the
// first keeps its instances and keeps working; no kick-each-other loop.
func TestDuplicateSlaveRefused(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := fabric.StartSlave(ctx, slaveConfig(c.url, 1, "13:impostor"), fabric.WithLogger(testLogger()))
		cancel()
		if err == nil {
			cctx, ccancel := closeCtx()
			_ = s.Close(cctx)
			ccancel()
			t.Fatal("a second slave 1 was accepted while the first was connected")
		}
		if !errors.Is(err, fabric.ErrAlreadyConnected) {
			t.Fatalf("StartSlave: %v; want ErrAlreadyConnected", err)
		}
	}
	want := []messages.InstanceInfo{
		{ID: 11, Name: "alpha", SlaveID: 1, Status: messages.StatusRunning},
		{ID: 12, Name: "beta", SlaveID: 1, Status: messages.StatusStopped},
		{ID: 21, Name: "gamma", SlaveID: 2, Status: messages.StatusStopped},
	}
	if got := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances; !slices.Equal(got, want) {
		t.Errorf("list_instances = %+v, want %+v", got, want)
	}
	if got := c.command(t, 11, "/join grace"); got != "grace joined" {
		t.Errorf("the first slave 1's instance answered %q", got)
	}
	waitSlaves(t, c.master, waitLong, 1, 2)
}

// TestSlaveIDReused: once a slave has closed, a new slave with its id
// registers in its place, and may host more instances than the old one.
func TestSlaveIDReused(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)

	ctx, cancel := closeCtx()
	defer cancel()
	if err := c.slave1.Close(ctx); err != nil {
		t.Fatalf("close slave 1: %v", err)
	}
	waitSlaves(t, c.master, waitLong, 2)
	if i, err := instanceStatus(t, c.alice.Link(), 11); err != nil || i.Status != messages.StatusUnknown {
		t.Errorf("instance 11 = %+v, %v; want status unknown while slave 1 is away", i, err)
	}
	startSlave(t, c.url, 1, "11:alpha,12:beta,13:newcomer")
	waitSlaves(t, c.master, waitLong, 1, 2)
	want := []messages.InstanceInfo{
		{ID: 11, Name: "alpha", SlaveID: 1, Status: messages.StatusStopped},
		{ID: 12, Name: "beta", SlaveID: 1, Status: messages.StatusStopped},
		{ID: 13, Name: "newcomer", SlaveID: 1, Status: messages.StatusStopped},
		{ID: 21, Name: "gamma", SlaveID: 2, Status: messages.StatusStopped},
	}
	if got := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances; !slices.Equal(got, want) {
		t.Errorf("list_instances = %+v, want %+v", got, want)
	}
	c.start(t, 11, 13)
	if got := c.command(t, 13, "/join frank"); got != "frank joined" {
		t.Errorf("send_command = %q", got)
	}
}
