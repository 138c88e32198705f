package fabric_test

import (
	"fmt"
	"testing"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/messages"
)

// TestAttackSlaveExhaustsInstanceIDs: slave 3, with its own credentials,
// registers an instance whose id is next to the largest there is
// (messages.MaxInstanceID, 2^53-1: larger ones the schema refuses, see
// TestHostileRequests). A create_instance that succeeds must then still
// give out an id no other instance has, and none past the largest: an
// acknowledged creation is never overwritten by the next.
func TestAttackSlaveExhaustsInstanceIDs(t *testing.T) {
	b := startSecureBroker(t, nil)
	c := newSecureCluster(t, b, "*=*")
	cfg := slaveConfig("", 3, fmt.Sprintf("%d:evil", int64(messages.MaxInstanceID-1)))
	cfg.NATS = b.login("slave-3")
	s, err := fabric.StartSlave(testkit.Ctx(t, waitLong), cfg)
	if err != nil {
		t.Fatalf("StartSlave 3: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = s.Close(ctx)
	})
	waitSlaves(t, c.master, waitLong, 1, 2, 3)
	created := map[int64]string{}
	for _, name := range []string{"first", "second", "third"} {
		ref, err := requestErr(t, c.alice.Link(), messages.CreateInstance, messages.NewInstance{Name: name})
		if err != nil {
			continue // refusing is fine; overwriting is not
		}
		if ref.InstanceID > messages.MaxInstanceID {
			t.Errorf("create_instance %q gave id %d, past the largest", name, ref.InstanceID)
		}
		if old, ok := created[ref.InstanceID]; ok {
			t.Errorf("create_instance %q gave id %d, which it had given %q", name, ref.InstanceID, old)
		}
		created[ref.InstanceID] = name
	}
	list := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{})
	names := map[int64]string{}
	for _, i := range list.Instances {
		names[i.ID] = i.Name
	}
	for id, name := range created {
		if names[id] != name {
			t.Errorf("instance %d was created as %q, the master now says %q", id, name, names[id])
		}
	}
	if names[messages.MaxInstanceID-1] != "evil" {
		t.Errorf("slave 3's instance is now %q", names[messages.MaxInstanceID-1])
	}
	if len(created) != 1 {
		t.Errorf("create_instance gave out %d ids after %d, want exactly one (%d)", len(created), int64(messages.MaxInstanceID-1), int64(messages.MaxInstanceID))
	}
}
