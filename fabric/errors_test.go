package fabric_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// TestForwardErrors: a request forwarded to an instance that cannot take
// it fails with the code that says why, and a message that names it.
func TestForwardErrors(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	ctl := c.alice.Link()
	orphan := request(t, ctl, messages.CreateInstance, messages.NewInstance{Name: "orphan"})
	c.start(t, 11)

	// Slave 2 goes away; the master keeps its instance, in status unknown.
	ctx, cancel := closeCtx()
	defer cancel()
	if err := c.slave2.Close(ctx); err != nil {
		t.Fatalf("close slave 2: %v", err)
	}
	waitSlaves(t, c.master, waitLong, 1)
	if i, err := instanceStatus(t, ctl, 21); err != nil || i.Status != messages.StatusUnknown || i.SlaveID != 2 {
		t.Fatalf("instance 21 = %+v, %v; want status unknown on slave 2", i, err)
	}

	for _, tc := range []struct {
		name     string
		id       int64
		wantCode link.Code
		wantText string
	}{
		{"unknown instance", 99, fabric.CodeInstanceNotFound, "instance 99"},
		{"created, not assigned", orphan.InstanceID, fabric.CodeInstanceNotAssigned, "orphan"},
		{"slave offline", 21, fabric.CodeSlaveNotConnected, "slave 2"},
		{"instance not running", 12, fabric.CodeInstanceNotRunning, "instance 12"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, send := range []struct {
				msg string
				do  func() error
			}{
				{"send_command", func() error {
					_, err := requestErr(t, ctl, messages.SendCommand, messages.Command{InstanceID: tc.id, Command: "/players"})
					return err
				}},
				{"stop_instance", func() error {
					_, err := requestErr(t, ctl, messages.StopInstance, messages.InstanceRef{InstanceID: tc.id})
					return err
				}},
			} {
				le := testkit.WantCode(t, send.do(), tc.wantCode)
				if !strings.Contains(le.Message, tc.wantText) {
					t.Errorf("%s: message %q does not mention %q", send.msg, le.Message, tc.wantText)
				}
			}
		})
	}

	// An instance cannot be given to a slave that is gone.
	_, err := requestErr(t, ctl, messages.AssignInstanceCommand, messages.Assignment{InstanceID: orphan.InstanceID, SlaveID: 2})
	testkit.WantCode(t, err, fabric.CodeSlaveNotConnected)

	// The instance that runs is unaffected.
	if got := c.command(t, 11, "/players"); got != "no players online" {
		t.Errorf("instance 11 /players = %q", got)
	}
}

// TestPermissionDenied: a control whose user lacks a request's permission
// is refused with link.ErrPermissionDenied, and the request goes no
// further than the master.
func TestPermissionDenied(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{
		permissions: "alice=*;bob=core.slave.list",
		slaveOpts:   []fabric.Option{fabric.WithInstanceFactory(p.factory)},
	})

	_, err := requestErr(t, c.bob.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	if !errors.Is(err, link.ErrPermissionDenied) {
		t.Fatalf("bob start_instance: %v, want ErrPermissionDenied", err)
	}
	le := testkit.WantCode(t, err, link.CodePermissionDenied)
	for _, word := range []string{"bob", "core.instance.start"} {
		if !strings.Contains(le.Message, word) {
			t.Errorf("message %q does not mention %q", le.Message, word)
		}
	}
	for _, denied := range []func() error{
		func() error {
			_, err := requestErr(t, c.bob.Link(), messages.ListInstances, messages.Empty{})
			return err
		},
		func() error { return c.bob.Follow(testkit.Ctx(t, waitLong), 11) },
		func() error {
			_, err := requestErr(t, c.bob.Link(), messages.SetPlayerBanned, messages.Ban{Name: "x", Banned: true})
			return err
		},
	} {
		if err := denied(); !errors.Is(err, link.ErrPermissionDenied) {
			t.Errorf("bob: %v, want ErrPermissionDenied", err)
		}
	}
	// The master answered only once it had decided, so the instance would
	// have been started by now if the handler had run.
	if got := p.of(11, "start"); len(got) != 0 {
		t.Errorf("instance 11 received %q after a denied start", got)
	}
	if i, err := instanceStatus(t, c.alice.Link(), 11); err != nil || i.Status != messages.StatusStopped {
		t.Errorf("instance 11 = %+v, %v; want it stopped", i, err)
	}

	// What bob may do, and everything alice does, works.
	if _, err := requestErr(t, c.bob.Link(), messages.ListSlaves, messages.Empty{}); err != nil {
		t.Errorf("bob list_slaves: %v", err)
	}
	if _, err := requestErr(t, c.bob.Link(), messages.Ping, messages.Empty{}); err != nil {
		t.Errorf("bob ping (unrestricted): %v", err)
	}
	c.start(t, 11)
	if got := p.of(11, "start"); len(got) != 1 {
		t.Errorf("instance 11 received %q, want one start (alice's)", got)
	}
}

// TestPeerNotConnected: a control on a broker where no master runs gets
// link.ErrNotConnected soon, not at the request's deadline.
func TestPeerNotConnected(t *testing.T) {
	b := startBroker(t)
	ctl, _ := dialControl(t, b.ClientURL(), "alice")
	const deadline = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	_, err := link.Request(ctx, ctl.Link(), messages.ListSlaves, messages.Empty{})
	elapsed := time.Since(start)
	if !errors.Is(err, link.ErrNotConnected) {
		t.Fatalf("list_slaves with no master: %v, want ErrNotConnected", err)
	}
	if elapsed > deadline/3 {
		t.Errorf("ErrNotConnected after %s; want it well before the %s deadline", elapsed, deadline)
	}
	t.Logf("not connected after %s", elapsed)
}

// TestTimeoutAndDeadlinePropagation: a request that the instance does not
// answer in time ends with link.ErrTimeout at the requester's deadline,
// and the instance's handler sees that deadline, not a default.
func TestTimeoutAndDeadlinePropagation(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)}})
	c.start(t, 21)

	type seen struct {
		deadline time.Time
		ok       bool
		ended    time.Time
	}
	handled := make(chan seen, 1)
	p.setCommandHook(func(ctx context.Context, _ int64, cmd messages.Command) (messages.CommandResult, error) {
		if cmd.Command != "/hang" {
			return messages.CommandResult{Output: "ok"}, nil
		}
		dl, ok := ctx.Deadline()
		<-ctx.Done()
		handled <- seen{dl, ok, time.Now()}
		return messages.CommandResult{}, ctx.Err()
	})

	const budget = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	want, _ := ctx.Deadline()
	_, err := link.Request(ctx, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 21, Command: "/hang"})
	if !errors.Is(err, link.ErrTimeout) {
		t.Fatalf("send_command: %v, want ErrTimeout", err)
	}
	// The instance's timeout may come back a hair before the requester's
	// own clock runs out; either way the request ends at the deadline.
	if d := time.Since(want); d < -50*time.Millisecond || d > time.Second {
		t.Errorf("request ended %s from its deadline, want about 0", d)
	}

	var s seen
	select {
	case s = <-handled:
	case <-time.After(waitLong):
		t.Fatal("the instance's handler did not end")
	}
	if !s.ok {
		t.Fatal("the instance's handler had no deadline")
	}
	// Each hop sends the time remaining in whole milliseconds, and the hops
	// take a little time: allow for both.
	const slack = 250 * time.Millisecond
	d := s.deadline.Sub(want)
	if d < -slack || d > slack {
		t.Errorf("the instance's deadline is %s from the requester's, want within %s", d, slack)
	}
	t.Logf("the instance's deadline is %s from the requester's", d)
	if d := s.ended.Sub(want); d > time.Second {
		t.Errorf("the instance's handler ended %s after the requester's deadline", d)
	}

	// The path is intact afterwards.
	if got := c.command(t, 21, "/ping"); got != "ok" {
		t.Errorf("send_command after the timeout = %q", got)
	}
}

// TestHandlerErrorsCrossHops: what an instance's handler returns reaches
// the control across control -> master -> slave -> instance with its code
// and message intact; an error without a code arrives as handler_error
// with its text, a panic as internal.
func TestHandlerErrorsCrossHops(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)}})
	c.start(t, 12)
	p.setCommandHook(func(_ context.Context, _ int64, cmd messages.Command) (messages.CommandResult, error) {
		switch cmd.Command {
		case "/busy":
			return messages.CommandResult{}, link.Errorf("game.busy", "busy now")
		case "/plain":
			return messages.CommandResult{}, errors.New("the map is not loaded")
		case "/panic":
			panic("probe panics")
		case "/fabric":
			return messages.CommandResult{}, link.Errorf(fabric.CodeConflict, "already saving")
		}
		return messages.CommandResult{Output: "ok"}, nil
	})

	for _, tc := range []struct {
		cmd         string
		wantCode    link.Code
		wantMessage string
	}{
		{"/busy", "game.busy", "busy now"},
		{"/plain", link.CodeHandlerError, "the map is not loaded"},
		{"/fabric", fabric.CodeConflict, "already saving"},
		{"/panic", link.CodeInternal, "send_command: handler failed unexpectedly"},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			_, err := requestErr(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 12, Command: tc.cmd})
			le := testkit.WantCode(t, err, tc.wantCode)
			if le.Message != tc.wantMessage {
				t.Errorf("message = %q, want %q exactly", le.Message, tc.wantMessage)
			}
		})
	}
	if got := c.command(t, 12, "/fine"); got != "ok" {
		t.Errorf("after the errors, send_command = %q", got)
	}
}
