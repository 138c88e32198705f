package fabric_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// embeddedMaster starts a master with its own embedded NATS server and
// JetStream in dataDir, as `fabric master` does with no FABRIC_NATS_URL.
func embeddedMaster(t *testing.T, dataDir string) *fabric.Master {
	t.Helper()
	return startMasterConfig(t, fabric.MasterConfig{NATS: natsConfig(""), Listen: "127.0.0.1:0", DataDir: dataDir,
		Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()})
}

func closeMaster(t *testing.T, m *fabric.Master) {
	t.Helper()
	ctx, cancel := closeCtx()
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Errorf("master Close: %v", err)
	}
}

func instanceNames(t *testing.T, l *link.Link) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	for _, i := range request(t, l, messages.ListInstances, messages.Empty{}).Instances {
		out[i.ID] = i.Name
	}
	return out
}

func banNames(t *testing.T, l *link.Link) []string {
	t.Helper()
	var out []string
	for _, b := range request(t, l, messages.ListBannedPlayers, messages.Empty{}).Bans {
		out = append(out, b.Name+":"+b.Reason)
	}
	return out
}

// The first report: create an instance, restart the master, and
// the instance is still there, with its id, and so are the bans. New ids
// are never ones given out before, even of instances deleted since.
func TestStateSurvivesMasterRestart(t *testing.T) {
	dir := t.TempDir()
	m := embeddedMaster(t, dir)
	ctl, _ := dialControl(t, m.NATSURL(), "alice")
	psi := request(t, ctl.Link(), messages.CreateInstance, messages.NewInstance{Name: "psi"}).InstanceID
	doomed := request(t, ctl.Link(), messages.CreateInstance, messages.NewInstance{Name: "doomed"}).InstanceID
	request(t, ctl.Link(), messages.DeleteInstance, messages.InstanceRef{InstanceID: doomed})
	request(t, ctl.Link(), messages.SetPlayerBanned, messages.Ban{Name: "eve", Banned: true, Reason: "griefing"})
	request(t, ctl.Link(), messages.SetPlayerBanned, messages.Ban{Name: "mallory", Banned: true, Reason: "spam"})
	request(t, ctl.Link(), messages.SetPlayerBanned, messages.Ban{Name: "mallory", Banned: false})
	term := m.Term()
	closeMaster(t, m)

	m2 := embeddedMaster(t, dir)
	if m2.Term() <= term {
		t.Errorf("the restarted master's term is %d, want more than %d", m2.Term(), term)
	}
	ctl2, _ := dialControl(t, m2.NATSURL(), "alice")
	if got := instanceNames(t, ctl2.Link()); len(got) != 1 || got[psi] != "psi" {
		t.Errorf("after the restart the instances are %v, want only %d psi", got, psi)
	}
	if got := banNames(t, ctl2.Link()); !slices.Equal(got, []string{"eve:griefing"}) {
		t.Errorf("after the restart the bans are %q, want eve's", got)
	}
	next := request(t, ctl2.Link(), messages.CreateInstance, messages.NewInstance{Name: "omega"}).InstanceID
	if next <= doomed || next <= psi {
		t.Errorf("the new instance has id %d; ids %d and %d were given out before", next, psi, doomed)
	}
}

// Slaves' instances are part of the state too: a restarted master knows
// them, and where they are, before their slave registers again.
func TestRestartedMasterKnowsInstances(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)
	closeMaster(t, c.master)
	c.slave1.Close(context.Background())
	m2 := startMaster(t, c.url, "*=*")
	waitSlaves(t, m2, reRegisterBound, 2)
	got := m2.Instances()
	want := []messages.InstanceInfo{
		{ID: 11, Name: "alpha", SlaveID: 1, Status: messages.StatusUnknown},
		{ID: 12, Name: "beta", SlaveID: 1, Status: messages.StatusUnknown},
		{ID: 21, Name: "gamma", SlaveID: 2, Status: messages.StatusStopped},
	}
	if !slices.Equal(got, want) {
		t.Errorf("instances %+v, want %+v", got, want)
	}
	ctl, _ := dialControl(t, c.url, "carol")
	_, err := requestErr(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"})
	testkit.WantCode(t, err, fabric.CodeSlaveNotConnected)
	slaves := request(t, ctl.Link(), messages.ListSlaves, messages.Empty{}).Slaves
	if wantSlaves := []messages.SlaveInfo{{ID: 1, Name: "slave-1", Instances: 2}, {ID: 2, Name: "slave-2", Connected: true, Instances: 1}}; !slices.Equal(slaves, wantSlaves) {
		t.Errorf("slaves %+v, want %+v", slaves, wantSlaves)
	}
}

// delete_instance: an unassigned instance goes at once; an assigned one
// is forgotten by its slave first, which stops it if it runs; an unknown
// one is instance_not_found; one whose slave is not connected is not
// deleted; it takes the permission core.instance.delete.
func TestDeleteInstance(t *testing.T) {
	c := newCluster(t, clusterConfig{permissions: "alice=*;bob=core.instance.list"})
	l := c.alice.Link()

	created := request(t, l, messages.CreateInstance, messages.NewInstance{Name: "tmp"}).InstanceID
	request(t, l, messages.DeleteInstance, messages.InstanceRef{InstanceID: created})
	if _, ok := instanceNames(t, l)[created]; ok {
		t.Errorf("instance %d is still listed after its deletion", created)
	}
	_, err := requestErr(t, l, messages.DeleteInstance, messages.InstanceRef{InstanceID: created})
	testkit.WantCode(t, err, fabric.CodeInstanceNotFound)

	_, err = requestErr(t, c.bob.Link(), messages.DeleteInstance, messages.InstanceRef{InstanceID: 12})
	testkit.WantCode(t, err, link.CodePermissionDenied)

	c.start(t, 11)
	request(t, l, messages.DeleteInstance, messages.InstanceRef{InstanceID: 11}) // running: stopped first
	request(t, l, messages.DeleteInstance, messages.InstanceRef{InstanceID: 12}) // stopped
	if got := c.slave1.Instances(); len(got) != 0 {
		t.Errorf("slave 1 still hosts %+v", got)
	}
	if got := instanceNames(t, l); len(got) != 1 || got[21] != "gamma" {
		t.Errorf("instances after the deletions: %v, want only 21", got)
	}

	closeCtxSlave(t, c.slave2)
	waitSlaves(t, c.master, waitLong, 1)
	_, err = requestErr(t, l, messages.DeleteInstance, messages.InstanceRef{InstanceID: 21})
	testkit.WantCode(t, err, fabric.CodeSlaveNotConnected)
	if _, ok := instanceNames(t, l)[21]; !ok {
		t.Error("instance 21 was deleted while its slave was away")
	}
}

func closeCtxSlave(t *testing.T, s *fabric.Slave) {
	t.Helper()
	ctx, cancel := closeCtx()
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("slave Close: %v", err)
	}
}

// The issue: seven bans given while a slave was killed and restarted never
// reached its instances. Now the master gives a slave the ban list when
// it registers, and the slave gives it to every instance it starts.
func TestBansReachRestartedSlave(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	cmd := startSlaveProcess(t, c.url, 3, "31:phoenix")
	waitSlaves(t, c.master, 20*time.Second, 1, 2, 3)
	c.start(t, 31)
	before := c.master.SlaveLink(3)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var names []string
	for i := range 7 {
		name := fmt.Sprintf("p%d", i)
		names = append(names, name)
		request(t, c.alice.Link(), messages.SetPlayerBanned, messages.Ban{Name: name, Banned: true, Reason: "spam"})
	}
	startSlaveProcess(t, c.url, 3, "31:phoenix")
	testkit.Eventually(t, 20*time.Second, "the new slave 3 registered", func() error {
		if l := c.master.SlaveLink(3); l == nil || l == before {
			return errors.New("not yet")
		}
		return nil
	})
	c.start(t, 31)
	if got, want := c.command(t, 31, "/bans"), "banned: "+strings.Join(names, ", "); got != want {
		t.Errorf("the restarted slave's instance says %q, want %q", got, want)
	}
}

// A slave that was cut off while bans were given (here: frozen past its
// session timeout) gets them when it registers again, and gives them to
// the instances it runs; a ban lifted meanwhile is lifted there too.
func TestBansReachReregisteredSlave(t *testing.T) {
	c := newCluster(t, clusterConfig{fastMaster: true})
	request(t, c.alice.Link(), messages.SetPlayerBanned, messages.Ban{Name: "old", Banned: true, Reason: "r"})
	cmd := startSlaveProcess(t, c.url, 3, "31:frozen")
	waitSlaves(t, c.master, 20*time.Second, 1, 2, 3)
	c.start(t, 31)
	if got := c.command(t, 31, "/bans"); got != "banned: old" {
		t.Fatalf("/bans = %q before the freeze", got)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitSlaves(t, c.master, waitLong, 1, 2)
	// The master ends the slave's session: it is silent past the timeout.
	testkit.Eventually(t, 3*fastTiming().SessionTimeout, "slave 3's session over", func() error {
		if c.master.SlaveLink(3) != nil {
			return errors.New("not yet")
		}
		return nil
	})
	request(t, c.alice.Link(), messages.SetPlayerBanned, messages.Ban{Name: "new", Banned: true, Reason: "r"})
	request(t, c.alice.Link(), messages.SetPlayerBanned, messages.Ban{Name: "old", Banned: false})
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the instance has the bans given while it was away", func() error {
		res, err := requestErr(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 31, Command: "/bans"})
		if err != nil {
			return err
		}
		if res.Output != "banned: new" {
			return fmt.Errorf("/bans = %q", res.Output)
		}
		return nil
	})
}

// A NATS server without JetStream is refused at start, with a message
// that says so; the error matches ErrConfig (exit status 2).
func TestMasterRefusesServerWithoutJetStream(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	_, err = fabric.StartMaster(testkit.Ctx(t, 20*time.Second), fabric.MasterConfig{NATS: natsConfig(s.ClientURL()), Listen: "127.0.0.1:0",
		Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()}, fabric.WithLogger(testLogger()))
	if !errors.Is(err, fabric.ErrConfig) || !strings.Contains(err.Error(), "JetStream") {
		t.Errorf("StartMaster on a server without JetStream: %v; want a configuration error that names JetStream", err)
	}
}

// Values in the state bucket carry a schema version; a master refuses a
// bucket written by a later version rather than misread it.
func TestMasterRefusesLaterSchema(t *testing.T) {
	b := startBroker(t)
	nc, err := natsgo.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testkit.Ctx(t, waitLong)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fabric.StateBucket("lf")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "instance.5", []byte(`{"v":99,"id":5,"name":"future"}`)); err != nil {
		t.Fatal(err)
	}
	_, err = fabric.StartMaster(ctx, fabric.MasterConfig{NATS: natsConfig(b.ClientURL()), Listen: "127.0.0.1:0",
		Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()}, fabric.WithLogger(testLogger()))
	if err == nil || !strings.Contains(err.Error(), "schema version 99") {
		t.Errorf("StartMaster on a bucket of a later version: %v; want an error that names the version", err)
	}
}
