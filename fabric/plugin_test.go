package fabric_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Two plugin patterns from Clusterio that end at the master: an event an
// instance sends up (research_sync:contribution) and a request an instance
// asks the master (subspace_storage:get_storage). Both are forwarded to the
// master by the slave; the master answers with a plugin handler.

type contribution struct {
	Tech   string `json:"tech" schema:"minLength=1"`
	Points int    `json:"points"`
}

type storageQuery struct {
	Item string `json:"item" schema:"minLength=1"`
}

type storageCount struct {
	Count int `json:"count"`
}

type storagePlugin struct {
	contribution *messages.Event[contribution]
	getStorage   *messages.Request[storageQuery, storageCount]
	plugins      []messages.Plugin
}

func newStoragePlugin(t *testing.T) storagePlugin {
	t.Helper()
	c, err := messages.NewEvent[contribution](messages.Spec{
		Name: "research_sync:contribution", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster}, ForwardTo: messages.Master,
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err := messages.NewRequest[storageQuery, storageCount](messages.Spec{
		Name: "subspace_storage:get_storage", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster}, ForwardTo: messages.Master,
	})
	if err != nil {
		t.Fatal(err)
	}
	return storagePlugin{contribution: c, getStorage: g, plugins: []messages.Plugin{
		{Name: "research_sync", Messages: []messages.Message{c}},
		{Name: "subspace_storage", Messages: []messages.Message{g}},
	}}
}

// A master built with a plugin whose messages end at the master, but no
// handler for them, refuses to start and names the messages: not every
// slave, later, when it connects.
func TestPluginWithoutMasterHandlerRefused(t *testing.T) {
	p := newStoragePlugin(t)
	b := startBroker(t)
	cfg := fabric.MasterConfig{NATS: natsConfig(b.ClientURL()), Listen: "127.0.0.1:0", Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()}
	m, err := fabric.StartMaster(testkit.Ctx(t, waitLong), cfg, fabric.WithLogger(testLogger()), fabric.WithPlugins(p.plugins...))
	if err == nil {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = m.Close(ctx)
		t.Fatal("StartMaster accepted plugin messages it cannot handle")
	}
	if !errors.Is(err, link.ErrSetup) {
		t.Errorf("error %v does not match link.ErrSetup", err)
	}
	for _, name := range []string{"research_sync:contribution", "subspace_storage:get_storage"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

// With handlers attached by WithHandlers, an instance's plugin event and
// request travel instance -> slave -> master, and the answer comes back.
func TestPluginMessagesEndingAtMaster(t *testing.T) {
	p := newStoragePlugin(t)
	b := startBroker(t)
	var mu sync.Mutex
	var got []contribution
	masterHandlers := fabric.WithHandlers(messages.Slave, func(l *link.Link) {
		link.HandleEvent(l, p.contribution, func(_ context.Context, c contribution) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, c)
			return nil
		})
		link.HandleRequest(l, p.getStorage, func(_ context.Context, q storageQuery) (storageCount, error) {
			if q.Item == "unobtainium" {
				return storageCount{}, link.Errorf("subspace_storage.unknown_item", "no such item: %s", q.Item)
			}
			return storageCount{Count: len(q.Item) * 10}, nil
		})
	})
	startMaster(t, b.ClientURL(), "*=*", masterHandlers, fabric.WithPlugins(p.plugins...))

	// The instance keeps its link so the test can send from it.
	links := make(chan *link.Link, 1)
	factory := func(id int64, name string) fabric.Instance {
		return instanceFunc(func(l *link.Link) {
			fabric.SimulatedInstances(id, name).Attach(l)
			links <- l
		})
	}
	startSlave(t, b.ClientURL(), 1, "11:alpha", fabric.WithPlugins(p.plugins...), fabric.WithInstanceFactory(factory))
	ctl, _ := dialControl(t, b.ClientURL(), "alice", fabric.WithPlugins(p.plugins...))
	request(t, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	inst := recvLink(t, links)

	ctx := testkit.Ctx(t, waitLong)
	for i := range 5 {
		if err := link.Emit(ctx, inst, p.contribution, contribution{Tech: "rocketry", Points: i}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, waitLong, "5 contributions at the master", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < 5 {
			return errors.New("not yet")
		}
		for i, c := range got {
			if c.Points != i {
				return errors.New("out of order")
			}
		}
		return nil
	})
	count, err := link.Request(ctx, inst, p.getStorage, storageQuery{Item: "iron"})
	if err != nil || count.Count != 40 {
		t.Errorf("get_storage = %+v, %v; want 40", count, err)
	}
	_, err = link.Request(ctx, inst, p.getStorage, storageQuery{Item: "unobtainium"})
	if le := testkit.WantCode(t, err, "subspace_storage.unknown_item"); le != nil && le.Message != "no such item: unobtainium" {
		t.Errorf("error message %q did not survive the hops", le.Message)
	}
}

// instanceFunc adapts a function to fabric.Instance.
type instanceFunc func(l *link.Link)

func (f instanceFunc) Attach(l *link.Link) { f(l) }

func recvLink(t *testing.T, ch <-chan *link.Link) *link.Link {
	t.Helper()
	select {
	case l := <-ch:
		return l
	case <-testkit.Ctx(t, waitLong).Done():
		t.Fatal("the instance did not start")
		return nil
	}
}
