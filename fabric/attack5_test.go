package fabric_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// TestAttack5ShutdownInStartingWindow: a request for an instance whose
// slave has not registered with a new term waits for the starting window;
// the master shutting down meanwhile ends it at once, as unavailable (it
// certainly did not run), and the shutdown does not wait for the
// request's deadline.
func TestAttack5ShutdownInStartingWindow(t *testing.T) {
	b := startBroker(t)
	m1 := startMaster(t, b.ClientURL(), "*=*")
	s1 := startSlave(t, b.ClientURL(), 1, "11:alpha")
	waitSlaves(t, m1, waitLong, 1)
	closeMaster(t, m1)
	closeCtxSlave(t, s1)

	// A window far longer than the test: only the shutdown ends it.
	long := testTiming()
	long.HeartbeatInterval, long.PeerTimeout, long.SessionTimeout = 30*time.Second, 60*time.Second, 180*time.Second
	m2 := startMasterTiming(t, b.ClientURL(), "*=*", long)
	ctl, _ := dialControl(t, b.ClientURL(), "alice")
	request(t, ctl.Link(), messages.Ping, messages.Empty{})
	base := m2.Goroutines()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		_, err := link.Request(ctx, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"})
		ended <- err
	}()
	testkit.Eventually(t, waitLong, "the request waiting in the starting window", func() error {
		if n := m2.Goroutines(); n != base+1 {
			return fmt.Errorf("%d goroutines, want %d", n, base+1)
		}
		return nil
	})
	closed := make(chan error, 1)
	go func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer ccancel()
		closed <- m2.Close(cctx)
	}()
	testkit.WantCode(t, testkit.Recv(t, ended, waitLong, "the request's end once the master shuts down"), link.CodeUnavailable)
	if err := testkit.Recv(t, closed, waitLong, "the master's Close"); err != nil {
		t.Errorf("Close: %v", err)
	}
}
