package fabric_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// counted records, per master, the contributions it received, in order.
type counted struct {
	mu  sync.Mutex
	got map[string][]int
}

func (c *counted) handlers(name string, p storagePlugin) fabric.Option {
	return fabric.WithHandlers(messages.Slave, func(l *link.Link) {
		link.HandleEvent(l, p.contribution, func(_ context.Context, ev contribution) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.got[name] = append(c.got[name], ev.Points)
			return nil
		})
		link.HandleRequest(l, p.getStorage, func(context.Context, storageQuery) (storageCount, error) { return storageCount{}, nil })
	})
}

func (c *counted) all() (first, second []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.got["first"]...), append([]int(nil), c.got["second"]...)
}

// A master that restarts (gracefully) while an instance keeps sending
// events loses none of them and gets none twice: what the slave could not
// deliver while the master was away reaches the new master, in order,
// after the slave has registered again.
func TestMasterRestartLosesNoEvents(t *testing.T) {
	p := newStoragePlugin(t)
	b := startBroker(t)
	url := b.ClientURL()
	c := &counted{got: map[string][]int{}}
	m1 := startMaster(t, url, "*=*", c.handlers("first", p), fabric.WithPlugins(p.plugins...))

	links := make(chan *link.Link, 1)
	factory := func(id int64, name string) fabric.Instance {
		return instanceFunc(func(l *link.Link) {
			fabric.SimulatedInstances(id, name).Attach(l)
			links <- l
		})
	}
	s := startSlave(t, url, 1, "11:alpha", fabric.WithPlugins(p.plugins...), fabric.WithInstanceFactory(factory))
	ctl, _ := dialControl(t, url, "alice", fabric.WithPlugins(p.plugins...))
	request(t, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	inst := recvLink(t, links)

	const n = 600
	emitted := make(chan error, 1)
	halfway := make(chan struct{})
	go func() {
		ctx := testkit.Ctx(t, time.Minute)
		for i := range n {
			if i == n/3 {
				close(halfway)
			}
			if err := link.Emit(ctx, inst, p.contribution, contribution{Tech: "t", Points: i}); err != nil {
				emitted <- err
				return
			}
			if i%10 == 0 {
				time.Sleep(time.Millisecond) // a steady stream, not one burst: the restart falls inside it
			}
		}
		emitted <- nil
	}()
	<-halfway
	cctx, cancel := closeCtx()
	if err := m1.Close(cctx); err != nil {
		t.Logf("closing the first master: %v", err)
	}
	cancel()
	startMaster(t, url, "*=*", c.handlers("second", p), fabric.WithPlugins(p.plugins...))
	if err := <-emitted; err != nil {
		t.Fatalf("emit: %v", err)
	}
	testkit.Eventually(t, 30*time.Second, "every event at one master or the other", func() error {
		first, second := c.all()
		if len(first)+len(second) < n {
			return errors.New("not yet")
		}
		return nil
	})
	first, second := c.all()
	all := append(first, second...)
	if len(all) != n {
		t.Errorf("%d events arrived (%d at the first master, %d at the second), want %d", len(all), len(first), len(second), n)
	}
	for i, v := range all {
		if v != i {
			t.Fatalf("event %d is %d: lost, duplicated or out of order (first master got %d, second %d)", i, v, len(first), len(second))
		}
	}
	t.Logf("first master got %d events, the second %d", len(first), len(second))
	if !s.Connected() {
		t.Error("the slave is not registered with the second master")
	}
}
