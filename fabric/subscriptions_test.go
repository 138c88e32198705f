package fabric_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// instanceView is what a subscriber to instance_updates knows: every
// update in the order it came, and the table they make.
type instanceView struct {
	mu      sync.Mutex
	updates []messages.InstanceChange
	table   map[int64]messages.InstanceChange
}

func (v *instanceView) add(u messages.InstanceChange) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.updates = append(v.updates, u)
	if v.table == nil {
		v.table = map[int64]messages.InstanceChange{}
	}
	if u.IsDeleted {
		delete(v.table, u.ID)
	} else {
		v.table[u.ID] = u
	}
}

// list returns the table as list_instances says it.
func (v *instanceView) list() []messages.InstanceInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []messages.InstanceInfo
	for _, id := range slices.Sorted(func(yield func(int64) bool) {
		for id := range v.table {
			if !yield(id) {
				return
			}
		}
	}) {
		u := v.table[id]
		out = append(out, messages.InstanceInfo{ID: u.ID, Name: u.Name, SlaveID: u.SlaveID, Status: u.Status})
	}
	return out
}

// inOrder fails unless every update came once, stamped above the one
// before.
func (v *instanceView) inOrder(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := 1; i < len(v.updates); i++ {
		if v.updates[i].UpdatedAtMS <= v.updates[i-1].UpdatedAtMS {
			t.Fatalf("update %d (%+v) is not newer than the one before (%+v)", i, v.updates[i], v.updates[i-1])
		}
	}
}

func (v *instanceView) has(cond func(messages.InstanceChange) bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if slices.ContainsFunc(v.updates, cond) {
		return nil
	}
	return fmt.Errorf("not among %d updates", len(v.updates))
}

// matchesList waits until the subscriber's table is what the master
// lists.
func (v *instanceView) matchesList(t *testing.T, l func() *link.Link) {
	t.Helper()
	testkit.Eventually(t, waitLong, "the subscriber's table matches list_instances", func() error {
		list, err := requestErr(t, l(), messages.ListInstances, messages.Empty{})
		if err != nil {
			return err
		}
		if got := v.list(); !slices.Equal(got, list.Instances) {
			return fmt.Errorf("subscriber has %+v, the master lists %+v", got, list.Instances)
		}
		return nil
	})
}

// A subscriber gets every instance, then each change as it happens:
// created, assigned, running, deleted; it returns once the first part is
// passed on.
func TestSubscribeInstances(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	var v instanceView
	sub, err := c.alice.SubscribeInstances(testkit.Ctx(t, waitLong), 0, v.add)
	testkit.NoErr(t, err, "subscribe")
	if got := len(v.list()); got != 3 {
		t.Errorf("after subscribe returned, the subscriber has %d instances, want 3", got)
	}
	id := request(t, c.alice.Link(), messages.CreateInstance, messages.NewInstance{Name: "omega"}).InstanceID
	request(t, c.alice.Link(), messages.AssignInstanceCommand, messages.Assignment{InstanceID: id, SlaveID: 2})
	request(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: id})
	testkit.Eventually(t, waitLong, "omega running", func() error {
		return v.has(func(u messages.InstanceChange) bool { return u.ID == id && u.Status == messages.StatusRunning })
	})
	request(t, c.alice.Link(), messages.DeleteInstance, messages.InstanceRef{InstanceID: id})
	testkit.Eventually(t, waitLong, "omega deleted", func() error {
		return v.has(func(u messages.InstanceChange) bool { return u.ID == id && u.IsDeleted })
	})
	for _, want := range []string{messages.StatusUnassigned, messages.StatusStopped} {
		if err := v.has(func(u messages.InstanceChange) bool { return u.ID == id && u.Status == want }); err != nil {
			t.Errorf("omega %s: %v", want, err)
		}
	}
	v.inOrder(t)
	v.matchesList(t, c.alice.Link)

	// since: only what was updated after it.
	var later instanceView
	_, err = c.bob.SubscribeInstances(testkit.Ctx(t, waitLong), sub.Seen()-1, later.add)
	testkit.NoErr(t, err, "subscribe since")
	if len(later.updates) != 1 || !later.updates[0].IsDeleted || later.updates[0].ID != id {
		t.Errorf("since the last update but one, bob got %+v, want omega's deletion alone", later.updates)
	}
}

// A slave's connection and instance count come as slave_updates, and
// nothing of instance_updates reaches a control that subscribed to
// slaves only.
func TestSubscribeSlavesFilters(t *testing.T) {
	c := newCluster(t, clusterConfig{fastMaster: true})
	var mu sync.Mutex
	var got []messages.SlaveChange
	_, err := c.alice.SubscribeSlaves(testkit.Ctx(t, waitLong), 0, func(u messages.SlaveChange) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, u)
	})
	testkit.NoErr(t, err, "subscribe")
	wire := tapControls(t, c.url)
	ctx, cancel := closeCtx()
	defer cancel()
	testkit.NoErr(t, c.slave2.Close(ctx), "close slave 2")
	testkit.Eventually(t, waitLong, "slave 2 shown disconnected", func() error {
		mu.Lock()
		defer mu.Unlock()
		if i := slices.IndexFunc(got, func(u messages.SlaveChange) bool { return u.ID == 2 && !u.Connected }); i < 0 {
			return fmt.Errorf("updates %+v", got)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[0].ID != 1 || got[1].ID != 2 || !got[0].Connected || got[0].Instances != 2 || got[0].Name != "slave-1" || got[0].Version == "" || got[0].LastSeenMS == 0 {
		t.Errorf("slave updates %+v, want slave 1 and 2 connected, then 2 disconnected", got)
	}
	testkit.WaitFor(t, waitLong, "the tap to see the slave update", func() bool { return wire.count("alice", "slave_updates") > 0 })
	if n := wire.count("alice", "instance_updates"); n != 0 {
		t.Errorf("%d instance_updates sent to a control subscribed to slaves only", n)
	}
}

// controlTap counts what the master sends controls, by user and message
// type, on the wire: one subscription, so in the order the master sent
// them.
type controlTap struct {
	mu     sync.Mutex
	counts map[string]int
}

func tapControls(t *testing.T, url string) *controlTap {
	t.Helper()
	nc, err := natsgo.Connect(url)
	testkit.NoErr(t, err, "connect the tap")
	t.Cleanup(nc.Close)
	w := &controlTap{counts: map[string]int{}}
	_, err = nc.Subscribe("lf.master.0.control.*.>", func(m *natsgo.Msg) {
		tokens := strings.Split(m.Subject, ".")
		w.mu.Lock()
		defer w.mu.Unlock()
		w.counts[tokens[4]+" "+tokens[5]]++
	})
	testkit.NoErr(t, err, "subscribe the tap")
	testkit.NoErr(t, nc.Flush(), "flush the tap")
	return w
}

// count returns how many messages of type typ the master sent user.
func (w *controlTap) count(user, typ string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[user+" "+typ]
}

// After Close, and after the control's link ends, the master sends the
// subscription nothing more.
func TestUnsubscribeAndLinkEnd(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	var aliceInst, bobInst instanceView
	var aliceSlaves int
	var mu sync.Mutex
	instSub, err := c.alice.SubscribeInstances(testkit.Ctx(t, waitLong), 0, aliceInst.add)
	testkit.NoErr(t, err, "alice subscribes to instances")
	_, err = c.alice.SubscribeSlaves(testkit.Ctx(t, waitLong), 0, func(messages.SlaveChange) {
		mu.Lock()
		defer mu.Unlock()
		aliceSlaves++
	})
	testkit.NoErr(t, err, "alice subscribes to slaves")
	_, err = c.bob.SubscribeInstances(testkit.Ctx(t, waitLong), 0, bobInst.add)
	testkit.NoErr(t, err, "bob subscribes to instances")
	wire := tapControls(t, c.url)

	testkit.NoErr(t, instSub.Close(testkit.Ctx(t, waitLong)), "alice unsubscribes from instances")
	select {
	case <-instSub.Done():
	default:
		t.Error("the subscription is not done after Close")
	}
	ctx, cancel := closeCtx()
	defer cancel()
	testkit.NoErr(t, c.bob.Close(ctx), "bob closes")

	// A new instance assigned to slave 1: an instance update, and a
	// slave update (its count), which alice still gets.
	seenBefore := len(aliceInst.updates)
	id := request(t, c.alice.Link(), messages.CreateInstance, messages.NewInstance{Name: "omega"}).InstanceID
	request(t, c.alice.Link(), messages.AssignInstanceCommand, messages.Assignment{InstanceID: id, SlaveID: 1})
	testkit.WaitFor(t, waitLong, "alice's slave update", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return aliceSlaves == 3
	})
	// The instance update of create_instance was made before the slave
	// update of assign_instance_command: once the tap has that, it has
	// any instance update sent to alice or bob.
	testkit.WaitFor(t, waitLong, "the tap to see alice's slave update", func() bool { return wire.count("alice", "slave_updates") > 0 })
	if n := wire.count("alice", "instance_updates"); n != 0 {
		t.Errorf("%d instance_updates sent to alice after she unsubscribed", n)
	}
	if n := wire.count("bob", "instance_updates"); n != 0 {
		t.Errorf("%d instance_updates sent to bob after his link ended", n)
	}
	if len(aliceInst.updates) != seenBefore {
		t.Errorf("alice's closed subscription got %d more updates", len(aliceInst.updates)-seenBefore)
	}
}

// The master checks the permission of the event subscribed to, and
// refuses an event it does not know.
func TestSubscribePermissions(t *testing.T) {
	c := newCluster(t, clusterConfig{permissions: "alice=*;bob=core.slave.list"})
	_, err := c.bob.SubscribeInstances(testkit.Ctx(t, waitLong), 0, func(messages.InstanceChange) {})
	testkit.WantCode(t, err, link.CodePermissionDenied)
	_, err = c.bob.SubscribeSlaves(testkit.Ctx(t, waitLong), 0, func(messages.SlaveChange) {})
	testkit.NoErr(t, err, "bob subscribes to slaves")
	_, err = requestErr(t, c.alice.Link(), messages.Subscribe, messages.Subscription{Event: "list_slaves", Subscribe: true})
	testkit.WantCode(t, err, link.CodeInvalidMessage)
	// The refused subscription left nothing behind: bob may try again.
	_, err = c.bob.SubscribeInstances(testkit.Ctx(t, waitLong), 0, func(messages.InstanceChange) {})
	testkit.WantCode(t, err, link.CodePermissionDenied)
}

// exactlyOnceAcross changes instances before, while and after the master
// changes (move), and checks that the subscriber got each update once,
// in order, and ends with the master's view.
func exactlyOnceAcross(t *testing.T, c *cluster, move func() *fabric.Master) {
	var v instanceView
	sub, err := c.alice.SubscribeInstances(testkit.Ctx(t, waitLong), 0, v.add)
	testkit.NoErr(t, err, "subscribe")
	psi := request(t, c.alice.Link(), messages.CreateInstance, messages.NewInstance{Name: "psi"}).InstanceID
	chi := request(t, c.alice.Link(), messages.CreateInstance, messages.NewInstance{Name: "chi"}).InstanceID
	testkit.Eventually(t, waitLong, "chi created", func() error {
		return v.has(func(u messages.InstanceChange) bool { return u.ID == chi })
	})
	before := sub.Seen()
	old := c.alice.Link()

	m2 := move()
	testkit.Recv(t, old.Done(), waitLong, "alice's link to the old master to end")
	// Changes on the new master, which alice is told of after she
	// subscribes again by herself.
	testkit.Eventually(t, waitLong, "psi deleted on the new master", func() error {
		_, err := requestErr(t, c.alice.Link(), messages.DeleteInstance, messages.InstanceRef{InstanceID: psi})
		return err
	})
	request(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	testkit.Eventually(t, waitLong, "psi's deletion", func() error {
		return v.has(func(u messages.InstanceChange) bool { return u.ID == psi && u.IsDeleted })
	})
	testkit.Eventually(t, waitLong, "11 running", func() error {
		return v.has(func(u messages.InstanceChange) bool {
			return u.ID == 11 && u.Status == messages.StatusRunning && u.UpdatedAtMS > before
		})
	})
	v.inOrder(t)
	v.matchesList(t, c.alice.Link)
	if sub.Seen() <= before {
		t.Errorf("seen %d, not past %d", sub.Seen(), before)
	}
	_ = m2
}

// Across a master's restart, a subscriber subscribes again by itself and
// gets every update once, in order.
func TestSubscriptionAcrossMasterRestart(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	exactlyOnceAcross(t, c, func() *fabric.Master {
		closeMaster(t, c.master)
		m2 := startMaster(t, c.url, "*=*")
		waitSlaves(t, m2, reRegisterBound, 1, 2)
		return m2
	})
}

// Across a failover to a standby, likewise; and a deletion the old
// master made reaches a control that asks the new one for what changed
// since before it, while one that asks for everything is not told of it.
func TestSubscriptionAcrossFailover(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	m2 := startMaster(t, c.url, "*=*")
	var bobs instanceView
	bobSub, err := c.bob.SubscribeInstances(testkit.Ctx(t, waitLong), 0, bobs.add)
	testkit.NoErr(t, err, "bob subscribes")
	tau := request(t, c.alice.Link(), messages.CreateInstance, messages.NewInstance{Name: "tau"}).InstanceID
	testkit.Eventually(t, waitLong, "tau created", func() error {
		return bobs.has(func(u messages.InstanceChange) bool { return u.ID == tau })
	})
	beforeTau := bobSub.Seen()
	testkit.NoErr(t, bobSub.Close(testkit.Ctx(t, waitLong)), "bob unsubscribes")
	request(t, c.alice.Link(), messages.DeleteInstance, messages.InstanceRef{InstanceID: tau})

	exactlyOnceAcross(t, c, func() *fabric.Master {
		closeMaster(t, c.master)
		if err := m2.WaitActive(testkit.Ctx(t, waitLong)); err != nil {
			t.Fatalf("the standby did not take over: %v", err)
		}
		waitSlaves(t, m2, reRegisterBound, 1, 2)
		return m2
	})
	carol, _ := dialControl(t, c.url, "carol")
	var since, all instanceView
	sub, err := carol.SubscribeInstances(testkit.Ctx(t, waitLong), beforeTau, since.add)
	testkit.NoErr(t, err, "carol subscribes since")
	if err := since.has(func(u messages.InstanceChange) bool { return u.ID == tau && u.Name == "tau" && u.IsDeleted }); err != nil {
		t.Errorf("tau's deletion, from the term before: %v", err)
	}
	testkit.NoErr(t, sub.Close(testkit.Ctx(t, waitLong)), "carol unsubscribes")
	_, err = carol.SubscribeInstances(testkit.Ctx(t, waitLong), 0, all.add)
	testkit.NoErr(t, err, "carol subscribes to all")
	if err := all.has(func(u messages.InstanceChange) bool { return u.IsDeleted }); err == nil {
		t.Errorf("a subscriber that asked for every instance was sent deletions: %+v", all.updates)
	}
}

// score is the value of the test plugin's update event.
type score struct {
	Points int `json:"points" schema:"minimum=0"`
}

// A master-side plugin publishes its data by key; a subscriber gets each
// change, a since-query what changed after it, and the deletion.
func TestPluginUpdates(t *testing.T) {
	scores := messages.MustEvent[messages.Updates[score]](messages.Spec{Name: "scores:score_updates", Links: []messages.Direction{messages.MasterToControl}})
	list := messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "scores:list", Links: []messages.Direction{messages.ControlToMaster}, Permission: "scores.list"})
	plugin := messages.Plugin{Name: "scores", Messages: []messages.Message{scores, list}}
	c := newCluster(t, clusterConfig{
		permissions: "alice=*;bob=core.slave.list",
		opts:        []fabric.Option{fabric.WithPlugins(plugin)},
		masterOpts: []fabric.Option{fabric.WithSubscribable(scores, "scores.list"), fabric.WithHandlers(messages.Control, func(l *link.Link) {
			link.HandleRequest(l, list, func(context.Context, messages.Empty) (messages.Empty, error) { return messages.Empty{}, nil })
		})},
	})
	testkit.NoErr(t, fabric.Publish(c.master, scores, "ann", score{Points: 1}), "publish ann")
	testkit.NoErr(t, fabric.Publish(c.master, scores, "ben", score{Points: 2}), "publish ben")
	if err := fabric.Publish(c.master, scores, "ann", score{Points: -1}); err == nil {
		t.Error("a value that breaks the schema was published")
	}

	var mu sync.Mutex
	var got []messages.Update[score]
	sub, err := fabric.SubscribeUpdates(testkit.Ctx(t, waitLong), c.alice, scores, 0, func(u messages.Update[score]) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, u)
	})
	testkit.NoErr(t, err, "subscribe")
	_, err = fabric.SubscribeUpdates(testkit.Ctx(t, waitLong), c.bob, scores, 0, func(messages.Update[score]) {})
	testkit.WantCode(t, err, link.CodePermissionDenied)

	testkit.NoErr(t, fabric.Publish(c.master, scores, "ann", score{Points: 1}), "publish ann unchanged")
	testkit.NoErr(t, fabric.Publish(c.master, scores, "ann", score{Points: 5}), "publish ann")
	testkit.NoErr(t, fabric.PublishDeleted(c.master, scores, "ben"), "delete ben")
	testkit.WaitFor(t, waitLong, "ben's deletion", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 4
	})
	mu.Lock()
	var text []string
	for _, u := range got {
		s := u.Key
		if u.Value != nil {
			s += fmt.Sprint("=", u.Value.Points)
		}
		if u.IsDeleted {
			s += " deleted"
		}
		text = append(text, s)
	}
	mu.Unlock()
	if want := []string{"ann=1", "ben=2", "ann=5", "ben deleted"}; !slices.Equal(text, want) {
		t.Errorf("alice got %q, want %q", text, want)
	}
	testkit.NoErr(t, sub.Close(testkit.Ctx(t, waitLong)), "unsubscribe")

	var since []string
	_, err = fabric.SubscribeUpdates(testkit.Ctx(t, waitLong), c.alice, scores, got[1].UpdatedAtMS, func(u messages.Update[score]) {
		since = append(since, u.Key)
	})
	testkit.NoErr(t, err, "subscribe since")
	if want := []string{"ann", "ben"}; !slices.Equal(since, want) {
		t.Errorf("since ben's first update, alice got %q, want %q", since, want)
	}
}

// A follower asks for the output an instance printed after a time: the
// master replays what it keeps of it, then streams.
func TestFollowSinceReplays(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)
	c.command(t, 11, "/say early")
	mark := time.Now()
	testkit.WaitFor(t, waitLong, "the clock to move on", func() bool { return time.Now().UnixMilli() > mark.UnixMilli() })
	c.command(t, 11, "/say late")
	carol, out := dialControl(t, c.url, "carol")
	testkit.NoErr(t, carol.FollowSince(testkit.Ctx(t, waitLong), mark, 11), "follow since")
	testkit.Eventually(t, waitLong, "the late line replayed", func() error { return out.has(11, "[server] late") })
	if err := out.has(11, "[server] early"); err == nil {
		t.Error("a line printed before since was replayed")
	}
	c.command(t, 11, "/say live")
	testkit.Eventually(t, waitLong, "the live line", func() error { return out.has(11, "[server] live") })
}
