package fabric_test

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/messages"
)

// TestMasterEmbedsBroker: with no NATS URL the master runs its own
// loopback broker, which slaves and controls reach on TCP.
func TestMasterEmbedsBroker(t *testing.T) {
	m := startMaster(t, "", "*=*")
	url := m.NATSURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("NATSURL() = %q, want nats://127.0.0.1:<port>", url)
	}
	startSlave(t, url, 1, "11:alpha")
	waitSlaves(t, m, waitLong, 1)
	ctl, _ := dialControl(t, url, "alice")
	list := request(t, ctl.Link(), messages.ListSlaves, messages.Empty{})
	want := []messages.SlaveInfo{{ID: 1, Name: "slave-1", Connected: true, Instances: 1}}
	if !slices.Equal(list.Slaves, want) {
		t.Fatalf("list_slaves = %+v, want %+v", list.Slaves, want)
	}
}

// TestClusterView: list_slaves and list_instances describe the topology
// the slaves registered.
func TestClusterView(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	slaves := request(t, c.bob.Link(), messages.ListSlaves, messages.Empty{}).Slaves
	wantSlaves := []messages.SlaveInfo{
		{ID: 1, Name: "slave-1", Connected: true, Instances: 2},
		{ID: 2, Name: "slave-2", Connected: true, Instances: 1},
	}
	if !slices.Equal(slaves, wantSlaves) {
		t.Errorf("list_slaves = %+v, want %+v", slaves, wantSlaves)
	}
	instances := request(t, c.bob.Link(), messages.ListInstances, messages.Empty{}).Instances
	wantInstances := []messages.InstanceInfo{
		{ID: 11, Name: "alpha", SlaveID: 1, Status: messages.StatusStopped},
		{ID: 12, Name: "beta", SlaveID: 1, Status: messages.StatusStopped},
		{ID: 21, Name: "gamma", SlaveID: 2, Status: messages.StatusStopped},
	}
	if !slices.Equal(instances, wantInstances) {
		t.Errorf("list_instances = %+v, want %+v", instances, wantInstances)
	}
}

// TestForwardToInstance: start_instance, send_command and stop_instance
// travel control -> master -> slave -> (simulated) instance on both
// slaves; instance_started and instance_stopped travel back and change the
// master's view; the instance's output reaches the control following it.
func TestForwardToInstance(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	ctl := c.alice.Link()
	if err := c.alice.Follow(testkit.Ctx(t, waitLong), 11, 21); err != nil {
		t.Fatalf("Follow: %v", err)
	}

	c.start(t, 11, 21)
	testkit.Eventually(t, waitLong, "start output", func() error { return c.aliceOut.has(11, "instance alpha is ready") })
	testkit.Eventually(t, waitLong, "start output", func() error { return c.aliceOut.has(21, "instance gamma is ready") })
	if i, err := instanceStatus(t, ctl, 12); err != nil || i.Status != messages.StatusStopped {
		t.Fatalf("instance 12 = %+v, %v; want it stopped (only 11 and 21 were started)", i, err)
	}

	for _, tc := range []struct {
		id        int64
		cmd, want string
	}{
		{11, "/join bob", "bob joined"},
		{11, "/players", "1 online: bob"},
		{21, "/players", "no players online"},
		{21, "/join carol", "carol joined"},
		{21, "/players", "1 online: carol"},
	} {
		if got := c.command(t, tc.id, tc.cmd); got != tc.want {
			t.Errorf("send_command %d %q = %q, want %q", tc.id, tc.cmd, got, tc.want)
		}
	}

	// Starting a running instance is refused by the instance, and it keeps
	// running.
	_, err := requestErr(t, ctl, messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	testkit.WantCode(t, err, fabric.CodeConflict)
	if got := c.command(t, 11, "/players"); got != "1 online: bob" {
		t.Errorf("after a second start, /players = %q", got)
	}

	request(t, ctl, messages.StopInstance, messages.InstanceRef{InstanceID: 11})
	waitStatus(t, ctl, 11, messages.StatusStopped)
	testkit.Eventually(t, waitLong, "stop output", func() error { return c.aliceOut.has(11, "stopping instance alpha") })
	_, err = requestErr(t, ctl, messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"})
	testkit.WantCode(t, err, fabric.CodeInstanceNotRunning)
	_, err = requestErr(t, ctl, messages.StopInstance, messages.InstanceRef{InstanceID: 11})
	testkit.WantCode(t, err, fabric.CodeInstanceNotRunning)

	// A stopped instance starts again, fresh.
	c.start(t, 11)
	if got := c.command(t, 11, "/players"); got != "no players online" {
		t.Errorf("after a restart, /players = %q, want a fresh instance", got)
	}
	if got := c.command(t, 21, "/players"); got != "1 online: carol" {
		t.Errorf("instance 21 /players = %q, want it untouched", got)
	}

	// The output of 11 arrived in the order the instance printed it.
	got := c.aliceOut.of(11)
	want := []string{"starting instance alpha", "instance alpha is ready", "> /join bob", "bob joined the game", "> /players"}
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("output of 11 = %q, want it to start with %q", got, want)
	}
}

// TestAssignInstance: an instance created on the master is not assigned
// and cannot start; once assigned to a slave it starts there.
func TestAssignInstance(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	ctl := c.alice.Link()
	ref := request(t, ctl, messages.CreateInstance, messages.NewInstance{Name: "delta"})
	if i, err := instanceStatus(t, ctl, ref.InstanceID); err != nil || i.Status != messages.StatusUnassigned || i.SlaveID != 0 {
		t.Fatalf("new instance = %+v, %v; want it unassigned", i, err)
	}
	_, err := requestErr(t, ctl, messages.StartInstance, ref)
	le := testkit.WantCode(t, err, fabric.CodeInstanceNotAssigned)
	if !strings.Contains(le.Message, "delta") {
		t.Errorf("message %q does not name the instance", le.Message)
	}

	request(t, ctl, messages.AssignInstanceCommand, messages.Assignment{InstanceID: ref.InstanceID, SlaveID: 2})
	testkit.Eventually(t, waitLong, "slave 2 hosts the instance", func() error {
		if !slices.ContainsFunc(c.slave2.Instances(), func(h messages.HostedInstance) bool { return h.ID == ref.InstanceID }) {
			return fmt.Errorf("slave 2 hosts %+v", c.slave2.Instances())
		}
		return nil
	})
	c.start(t, ref.InstanceID)
	if i, _ := instanceStatus(t, ctl, ref.InstanceID); i.SlaveID != 2 {
		t.Errorf("instance = %+v, want it on slave 2", i)
	}
	if got := c.command(t, ref.InstanceID, "/join dave"); got != "dave joined" {
		t.Errorf("send_command = %q", got)
	}

	// Another slave cannot take it, and unknown instances or slaves are
	// refused.
	_, err = requestErr(t, ctl, messages.AssignInstanceCommand, messages.Assignment{InstanceID: ref.InstanceID, SlaveID: 1})
	testkit.WantCode(t, err, fabric.CodeConflict)
	_, err = requestErr(t, ctl, messages.AssignInstanceCommand, messages.Assignment{InstanceID: 999, SlaveID: 1})
	testkit.WantCode(t, err, fabric.CodeInstanceNotFound)
	other := request(t, ctl, messages.CreateInstance, messages.NewInstance{Name: "epsilon"})
	_, err = requestErr(t, ctl, messages.AssignInstanceCommand, messages.Assignment{InstanceID: other.InstanceID, SlaveID: 9})
	if le := testkit.WantCode(t, err, fabric.CodeSlaveNotFound); !strings.Contains(le.Message, "slave 9") {
		t.Errorf("message %q does not name slave 9", le.Message)
	}
}

// TestOutputReachesFollowersOnly: instance_output goes to the controls
// that follow the instance, and to no other.
//
// Saying "no other" without sleeping: a line of instance X reaches a
// control after every earlier line of X that the master relayed to it
// (each hop keeps one instance's order). So once a control that starts to
// follow X receives a later marker line, it would already hold the earlier
// line if that had been relayed to it.
func TestOutputReachesFollowersOnly(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	ctx := testkit.Ctx(t, waitLong)
	if err := c.alice.Follow(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if err := c.bob.Follow(ctx, 21); err != nil {
		t.Fatal(err)
	}
	// carol follows 12, so that the test knows when the master has
	// relayed its line.
	carol, carolOut := dialControl(t, c.url, "carol")
	if err := carol.Follow(ctx, 12); err != nil {
		t.Fatal(err)
	}
	c.start(t, 11, 12, 21)

	c.command(t, 11, "/say for alice")
	c.command(t, 21, "/say for bob")
	c.command(t, 12, "/say for carol")
	// Once a follower has a line, the master has chosen who gets it.
	testkit.Eventually(t, waitLong, "alice gets 11", func() error { return c.aliceOut.has(11, "[server] for alice") })
	testkit.Eventually(t, waitLong, "bob gets 21", func() error { return c.bobOut.has(21, "[server] for bob") })
	testkit.Eventually(t, waitLong, "carol gets 12", func() error { return carolOut.has(12, "[server] for carol") })

	// Now each follows everything, and each instance prints a marker.
	for _, ctl := range []*fabric.Control{c.alice, c.bob} {
		if err := ctl.Follow(ctx, 11, 12, 21); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []int64{11, 12, 21} {
		c.command(t, id, "/say marker")
	}
	for _, out := range []*outputLog{c.aliceOut, c.bobOut} {
		for _, id := range []int64{11, 12, 21} {
			testkit.Eventually(t, waitLong, "marker", func() error { return out.has(id, "[server] marker") })
		}
	}

	for _, tc := range []struct {
		who  string
		out  *outputLog
		id   int64
		line string
	}{
		{"bob", c.bobOut, 11, "[server] for alice"},
		{"alice", c.aliceOut, 21, "[server] for bob"},
		{"alice", c.aliceOut, 12, "[server] for carol"},
		{"bob", c.bobOut, 12, "[server] for carol"},
		{"carol", carolOut, 11, "[server] for alice"},
		{"carol", carolOut, 21, "[server] for bob"},
	} {
		if slices.Contains(tc.out.of(tc.id), tc.line) {
			t.Errorf("%s got %q from instance %d, which it did not follow then", tc.who, tc.line, tc.id)
		}
	}
	for _, tc := range []struct {
		out  *outputLog
		id   int64
		line string
	}{
		{c.aliceOut, 11, "[server] for alice"},
		{c.aliceOut, 11, "[server] marker"},
		{c.bobOut, 21, "[server] for bob"},
		{c.bobOut, 11, "[server] marker"},
		{carolOut, 12, "[server] for carol"},
	} {
		if n := count(tc.out.of(tc.id), tc.line); n != 1 {
			t.Errorf("line %q of instance %d arrived %d times, want once", tc.line, tc.id, n)
		}
	}
}

func count(lines []string, line string) int {
	n := 0
	for _, l := range lines {
		if l == line {
			n++
		}
	}
	return n
}

// TestPlayerEventReachesMaster: player_event travels instance -> slave ->
// master (forwardTo master). The master only logs it, so the test reads
// the master's log.
func TestPlayerEventReachesMaster(t *testing.T) {
	logs := newLogRecords()
	b := startBroker(t)
	m := startMaster(t, b.ClientURL(), "*=*", fabric.WithLogger(slog.New(logs)))
	startSlave(t, b.ClientURL(), 1, "11:alpha")
	waitSlaves(t, m, waitLong, 1)
	ctl, _ := dialControl(t, b.ClientURL(), "alice")
	request(t, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	request(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/join erin"})
	request(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/leave erin"})
	want := []map[string]string{
		{"endpoint": "master", "instance": "11", "type": "join", "player": "erin"},
		{"endpoint": "master", "instance": "11", "type": "leave", "player": "erin"},
	}
	testkit.Eventually(t, waitLong, "player events logged by the master", func() error {
		got := logs.find("player event")
		if len(got) != len(want) {
			return fmt.Errorf("player events %v, want %v", got, want)
		}
		for i := range want {
			for k, v := range want[i] {
				if got[i][k] != v {
					return fmt.Errorf("player event %d = %v, want %v", i, got[i], want[i])
				}
			}
		}
		return nil
	})
}

// TestBanBroadcastReachesEveryInstanceOnce: set_player_banned makes the
// master broadcast banlist_update, which reaches every running instance
// of every slave exactly once, and no stopped one.
func TestBanBroadcastReachesEveryInstanceOnce(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)}})
	c.start(t, 11, 12, 21)

	request(t, c.bob.Link(), messages.SetPlayerBanned, messages.Ban{Name: "griefer", Banned: true, Reason: "griefing"})
	c.banBarrier(t, p, "marker1", 11, 12, 21)
	for _, id := range []int64{11, 12, 21} {
		if got, want := p.of(id, "ban:"), []string{"ban:griefer", "ban:marker1"}; !slices.Equal(got, want) {
			t.Errorf("instance %d received %q, want %q", id, got, want)
		}
	}

	// A stopped instance is not reached; the others still are, once.
	request(t, c.alice.Link(), messages.StopInstance, messages.InstanceRef{InstanceID: 12})
	waitStatus(t, c.alice.Link(), 12, messages.StatusStopped)
	request(t, c.alice.Link(), messages.SetPlayerBanned, messages.Ban{Name: "griefer", Banned: false})
	c.banBarrier(t, p, "marker2", 11, 21)
	for _, tc := range []struct {
		id   int64
		want []string
	}{
		{11, []string{"ban:griefer", "ban:marker1", "ban:griefer", "ban:marker2"}},
		{12, []string{"ban:griefer", "ban:marker1"}},
		{21, []string{"ban:griefer", "ban:marker1", "ban:griefer", "ban:marker2"}},
	} {
		if got := p.of(tc.id, "ban:"); !slices.Equal(got, tc.want) {
			t.Errorf("instance %d received %q, want %q", tc.id, got, tc.want)
		}
	}
}

// TestBanReachesSimulatedInstances: the simulated instance acts on a ban:
// it kicks the player and refuses them until they are unbanned.
func TestBanReachesSimulatedInstances(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11, 21)
	c.command(t, 11, "/join mallory")
	request(t, c.alice.Link(), messages.SetPlayerBanned, messages.Ban{Name: "mallory", Banned: true, Reason: "griefing"})
	for _, id := range []int64{11, 21} {
		testkit.Eventually(t, waitLong, "ban reaches the instance", func() error {
			if got := c.command(t, id, "/bans"); got != "banned: mallory" {
				return fmt.Errorf("/bans = %q", got)
			}
			return nil
		})
	}
	if got := c.command(t, 11, "/players"); got != "no players online" {
		t.Errorf("after the ban, /players = %q; want mallory kicked", got)
	}
	if got := c.command(t, 21, "/join mallory"); got != "mallory is banned: griefing" {
		t.Errorf("/join mallory = %q", got)
	}
}

// TestPluginBroadcastReachesEveryOtherInstanceOnce: a global_chat:chat line
// sent by an instance reaches its sibling on the same slave and every
// instance of the other slave exactly once, and never returns to the
// sender.
//
// Each line is sent once the previous one has reached every other
// instance, so the master has broadcast it; a final ban, which the master
// broadcasts after all of them, is the barrier for echoes still on their
// way (see banBarrier).
func TestPluginBroadcastReachesEveryOtherInstanceOnce(t *testing.T) {
	chat, plugin := newChatPlugin(t)
	p := newProbes(chat)
	c := newCluster(t, clusterConfig{
		opts:      []fabric.Option{fabric.WithPlugins(plugin)},
		slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)},
	})
	all := []int64{11, 12, 21}
	c.start(t, all...)

	senders := []int64{11, 12, 21, 11, 21}
	for n, from := range senders {
		text := fmt.Sprintf("line %d from %d", n, from)
		c.command(t, from, "/chat "+text)
		for _, id := range all {
			if id != from {
				testkit.Eventually(t, waitLong, "chat line reaches instance", func() error { return p.has(id, "chat:"+text) })
			}
		}
	}
	c.banBarrier(t, p, "barrier", all...)

	for _, id := range all {
		var want []string
		for n, from := range senders {
			if from != id {
				want = append(want, fmt.Sprintf("chat:line %d from %d", n, from))
			}
		}
		if got := p.of(id, "chat:"); !slices.Equal(got, want) {
			t.Errorf("instance %d received %q, want %q", id, got, want)
		}
	}
}
