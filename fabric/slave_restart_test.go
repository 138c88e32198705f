package fabric_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

type notice struct {
	N int `json:"n"`
}

// A slave that restarts (gracefully) while the master keeps sending it
// events loses none of them and gets none twice: what the master sent the
// process that went away and never had acknowledged reaches the one that
// came back, in order, after it has registered. Each event the master
// sends on the link the slave registered on (Master.SlaveLink) and that
// returned nil arrives once.
func TestSlaveRestartLosesNoEvents(t *testing.T) {
	ev, err := messages.NewEvent[notice](messages.Spec{Name: "relay:notice", Links: []messages.Direction{messages.MasterToSlave}})
	if err != nil {
		t.Fatal(err)
	}
	plugin := fabric.WithPlugins(messages.Plugin{Name: "relay", Messages: []messages.Message{ev}})
	b := startBroker(t)
	url := b.ClientURL()
	m := startMaster(t, url, "*=*", plugin)

	var mu sync.Mutex
	got := map[string][]int{}
	handlers := func(name string) fabric.Option {
		return fabric.WithHandlers(messages.Master, func(l *link.Link) {
			link.HandleEvent(l, ev, func(_ context.Context, n notice) error {
				mu.Lock()
				defer mu.Unlock()
				got[name] = append(got[name], n.N)
				return nil
			})
		})
	}
	all := func() (first, second []int) {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), got["first"]...), append([]int(nil), got["second"]...)
	}
	s1, err := fabric.StartSlave(testkit.Ctx(t, waitLong), slaveConfig(url, 1, ""), fabric.WithLogger(testLogger()), plugin, handlers("first"))
	if err != nil {
		t.Fatal(err)
	}
	waitSlaves(t, m, waitLong, 1)

	const n = 600
	sent := make(chan error, 1)
	third := make(chan struct{})
	go func() {
		ctx := testkit.Ctx(t, time.Minute)
		for i := 0; i < n; {
			if i == n/3 {
				select {
				case <-third:
				default:
					close(third)
				}
			}
			l := m.SlaveLink(1)
			if l == nil || link.Emit(ctx, l, ev, notice{N: i}) != nil {
				// No session, or it ended under the send: this event was
				// not sent; send it again on the next session.
				select {
				case <-ctx.Done():
					sent <- ctx.Err()
					return
				case <-time.After(5 * time.Millisecond):
				}
				continue
			}
			i++
			if i%10 == 0 {
				time.Sleep(time.Millisecond) // a steady stream, not one burst: the restart falls inside it
			}
		}
		sent <- nil
	}()
	<-third
	ctx, cancel := closeCtx()
	if err := s1.Close(ctx); err != nil {
		t.Logf("closing the first slave: %v", err)
	}
	cancel()
	startSlave(t, url, 1, "", plugin, handlers("second"))
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	testkit.Eventually(t, 30*time.Second, "every event at one slave process or the other", func() error {
		first, second := all()
		if len(first)+len(second) < n {
			return fmt.Errorf("%d of %d", len(first)+len(second), n)
		}
		return nil
	})
	first, second := all()
	everything := append(first, second...)
	if len(everything) != n {
		t.Errorf("%d events arrived (%d at the first process, %d at the second), want %d", len(everything), len(first), len(second), n)
	}
	for i, v := range everything {
		if v != i {
			t.Fatalf("event %d is %d: lost, duplicated or out of order (first process got %d, second %d)", i, v, len(first), len(second))
		}
	}
	t.Logf("the first process got %d events, the second %d", len(first), len(second))
	if len(second) == 0 {
		t.Error("the second process got no events")
	}
}
