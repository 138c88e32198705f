package fabric

import (
	"log/slog"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

// benchTerm is a term with slaves slaves of perSlave instances each, and
// one control subscribed to instance_updates.
func benchTerm(b *testing.B, slaves, perSlave int) *activeMaster {
	catalog, err := messages.NewCatalog()
	if err != nil {
		b.Fatal(err)
	}
	topics, err := buildTopics(catalog, nil)
	if err != nil {
		b.Fatal(err)
	}
	p := &Master{log: slog.New(slog.DiscardHandler), topics: topics}
	snap := snapshot{term: 1, instances: map[int64]instanceRecord{}, slaves: map[int64]slaveRecord{}}
	for s := range int64(slaves) {
		snap.slaves[s+1] = slaveRecord{V: 1, ID: s + 1, Name: "s"}
		for i := range int64(perSlave) {
			id := (s+1)*100000 + i
			snap.instances[id] = instanceRecord{V: 1, ID: id, Name: "i", SlaveID: s + 1}
		}
	}
	m := newActiveMaster(p, snap)
	st := newControlState("bench")
	st.subs[messages.InstanceUpdates.Name()] = true
	m.controls[nil] = st
	return m
}

// BenchmarkStatusChange measures what a change of one instance's status
// costs the master with a subscriber (reconcileLocked, and queueing the
// update), against what list_instances costs it (instanceList), on 10
// slaves of 100 instances each.
func BenchmarkStatusChange(b *testing.B) {
	m := benchTerm(b, 10, 100)
	i := m.instances[100000]
	st := m.controls[nil]
	b.Run("list_instances", func(b *testing.B) {
		for b.Loop() {
			_ = m.instanceList()
		}
	})
	b.Run("status_change", func(b *testing.B) {
		statuses := []string{messages.StatusRunning, messages.StatusStopped}
		n := 0
		for b.Loop() {
			m.mu.Lock()
			i.status = statuses[n%2]
			n++
			m.reconcileLocked()
			m.mu.Unlock()
			st.out.mu.Lock()
			st.out.q = st.out.q[:0]
			st.out.mu.Unlock()
		}
	})
}
