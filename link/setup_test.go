package link_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Start refuses a link that lacks a handler for any message that can
// arrive on it, and names every one.
func TestSetupMissingHandlers(t *testing.T) {
	tests := []struct {
		name    string
		self    link.Address
		peer    link.Address
		handled []messages.Message // attached before Start
		missing []string
	}{
		{
			name: "instance with nothing", self: instanceAddr, peer: slaveAddr,
			missing: []string{"banlist_update", "master_connection_event", "prepare_master_disconnect", "send_command", "start_instance", "stop_instance", "test:echo", "test:tick"},
		},
		{
			name: "instance missing two", self: instanceAddr, peer: slaveAddr,
			handled: []messages.Message{messages.BanlistUpdate, messages.MasterConnectionEvent, messages.PrepareMasterDisconnect, messages.StartInstance, messages.StopInstance, testEcho},
			missing: []string{"send_command", "test:tick"},
		},
		{
			name: "master from control, builtins aside", self: masterAddr, peer: controlAddr,
			missing: []string{"assign_instance_command", "create_instance", "delete_instance", "get_cluster_status", "list_banned_players", "list_instances", "list_slaves", "send_command", "set_instance_output_subscriptions", "set_player_banned", "set_plugins", "start_instance", "stop_instance", "subscribe", "test:echo", "test:guarded", "test:tick"},
		},
		{
			name: "slave from master", self: slaveAddr, peer: masterAddr,
			missing: []string{"assign_instance", "banlist_update", "delete_instance", "send_command", "start_instance", "stop_instance"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := virtual.Pair()
			l := newLink(t, a, tc.self, tc.peer)
			for _, m := range tc.handled {
				attachTrivial(l, m)
			}
			err := l.Start()
			if !errors.Is(err, link.ErrSetup) {
				t.Fatalf("Start: got %v, want an error matching ErrSetup", err)
			}
			// The error lists exactly the messages without a handler.
			msg := err.Error()
			_, list, ok := strings.Cut(msg, "no handler for ")
			if !ok {
				t.Fatalf("Start's error lists no missing handler: %v", err)
			}
			equal(t, list, strings.Join(tc.missing, ", "), "messages named in Start's error")
			// Once every handler is there, Start succeeds.
			stub(l, tc.handled...)
			testkit.NoErr(t, l.Start(), "Start with every handler")
		})
	}
}

// attachTrivial attaches a handler for m that answers nothing useful.
func attachTrivial(l *link.Link, m messages.Message) {
	if m.Def().Kind() == messages.KindRequest {
		l.HandleRequestJSON(m, func(context.Context, *link.Envelope) ([]byte, error) { return nil, errors.New("trivial") })
	} else {
		l.HandleEventJSON(m, func(context.Context, *link.Envelope) error { return nil })
	}
}

// Start reports handlers attached wrongly, each by name and reason.
func TestSetupWrongHandlers(t *testing.T) {
	stray := messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "stray", Links: []messages.Direction{messages.SlaveToInstance}})
	lookalike := messages.MustRequest[echoReq, echoResp](messages.Spec{Name: "test:echo", Links: []messages.Direction{messages.SlaveToInstance}})
	tests := []struct {
		name   string
		attach func(l *link.Link) // on the instance's side, after every right handler
		want   []string           // in Start's error
	}{
		{
			name:   "not valid towards this side",
			attach: func(l *link.Link) { attachTrivial(l, messages.InstanceStarted) },
			want:   []string{"instance_started", "not valid on slave-instance"},
		},
		{
			name:   "valid on another link",
			attach: func(l *link.Link) { attachTrivial(l, messages.RegisterSlave) },
			want:   []string{"register_slave", "not valid on slave-instance"},
		},
		{
			name:   "not in the catalog",
			attach: func(l *link.Link) { attachTrivial(l, stray) },
			want:   []string{"stray", "not in the link's catalog"},
		},
		{
			name:   "same name, other definition",
			attach: func(l *link.Link) { link.HandleRequest(l, lookalike, echoHandler) },
			want:   []string{"test:echo", "not in the link's catalog"},
		},
		{
			name: "request handled as an event",
			attach: func(l *link.Link) {
				l.HandleEventJSON(messages.PrepareMasterDisconnect, func(context.Context, *link.Envelope) error { return nil })
			},
			want: []string{"prepare_master_disconnect", "is a request"},
		},
		{
			name: "event handled as a request",
			attach: func(l *link.Link) {
				l.HandleRequestJSON(messages.BanlistUpdate, func(context.Context, *link.Envelope) ([]byte, error) { return nil, nil })
			},
			want: []string{"banlist_update", "not a request"},
		},
		{
			name:   "handled twice",
			attach: func(l *link.Link) { link.HandleRequest(l, testEcho, echoHandler) },
			want:   []string{"test:echo", "already has a handler"},
		},
		{
			name: "two mistakes",
			attach: func(l *link.Link) {
				attachTrivial(l, stray)
				attachTrivial(l, messages.SendCommand)
			},
			want: []string{"stray", "not in the link's catalog", "send_command", "already has a handler"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := virtual.Pair()
			l := newLink(t, a, instanceAddr, slaveAddr)
			stub(l)
			tc.attach(l)
			err := l.Start()
			if !errors.Is(err, link.ErrSetup) {
				t.Fatalf("Start: got %v, want an error matching ErrSetup", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start's error does not say %q: %v", w, err)
				}
			}
		})
	}
}

// ping and prepare_disconnect are answered without a handler; a handler
// the application attaches replaces the builtin.
func TestSetupBuiltins(t *testing.T) {
	t.Run("builtin ping", func(t *testing.T) {
		toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
		start(t, toControl)
		start(t, toMaster)
		_, err := link.Request(testkit.Ctx(t, 5*time.Second), toMaster, messages.Ping, messages.Empty{})
		testkit.NoErr(t, err, "ping control -> master")
		_, err = link.Request(testkit.Ctx(t, 5*time.Second), toControl, messages.Ping, messages.Empty{})
		testkit.NoErr(t, err, "ping master -> control")
	})
	t.Run("application ping", func(t *testing.T) {
		var pings atomic.Int64
		toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
		link.HandleRequest(toControl, messages.Ping, func(context.Context, messages.Empty) (messages.Empty, error) {
			pings.Add(1)
			return messages.Empty{}, link.Errorf("test.pong", "the application answered")
		})
		start(t, toControl, messages.Ping)
		start(t, toMaster)
		_, err := link.Request(testkit.Ctx(t, 5*time.Second), toMaster, messages.Ping, messages.Empty{})
		testkit.WantCode(t, err, "test.pong")
		equal(t, pings.Load(), 1, "application ping handler calls")
	})
	t.Run("application prepare_disconnect", func(t *testing.T) {
		var prepared atomic.Int64
		toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
		link.HandleRequest(toControl, messages.PrepareDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) {
			prepared.Add(1)
			return messages.Empty{}, nil
		})
		start(t, toControl, messages.PrepareDisconnect)
		start(t, toMaster)
		testkit.NoErr(t, toMaster.Disconnect(testkit.Ctx(t, 5*time.Second)), "Disconnect")
		equal(t, prepared.Load(), 1, "application prepare_disconnect handler calls")
	})
}

// Attaching a handler after Start is a programming error: it panics.
func TestSetupAttachAfterStart(t *testing.T) {
	tests := []struct {
		name   string
		attach func(l *link.Link)
	}{
		{name: "HandleRequest", attach: func(l *link.Link) { link.HandleRequest(l, testEcho, echoHandler) }},
		{name: "HandleEvent", attach: func(l *link.Link) {
			link.HandleEvent(l, testTick, func(context.Context, tick) error { return nil })
		}},
		{name: "HandleRequestJSON", attach: func(l *link.Link) { attachTrivial(l, messages.SendCommand) }},
		{name: "HandleEventJSON", attach: func(l *link.Link) { attachTrivial(l, messages.BanlistUpdate) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, toSlave := echoPair(t, nil, nil)
			defer func() {
				if recover() == nil {
					t.Error("attaching a handler after Start did not panic")
				}
			}()
			tc.attach(toSlave)
		})
	}
}

// A link starts once.
func TestSetupStartTwice(t *testing.T) {
	_, toSlave := echoPair(t, nil, nil)
	if err := toSlave.Start(); !errors.Is(err, link.ErrSetup) {
		t.Fatalf("second Start: got %v, want ErrSetup", err)
	}
}

// New refuses what cannot make a link.
func TestSetupNew(t *testing.T) {
	a, _ := virtual.Pair()
	tests := []struct {
		name       string
		conn       link.Connector
		self, peer link.Address
		catalog    *messages.Catalog
		opts       []link.Option
	}{
		{name: "same endpoint type", conn: a, self: link.ControlAddress("alice"), peer: link.ControlAddress("bob"), catalog: testCat},
		{name: "slave to itself", conn: a, self: slaveAddr, peer: slaveAddr, catalog: testCat},
		{name: "bad self id", conn: a, self: link.Address{Type: messages.Slave, ID: "a b"}, peer: instanceAddr, catalog: testCat},
		{name: "zero peer", conn: a, self: slaveAddr, catalog: testCat},
		{name: "no connector", self: slaveAddr, peer: instanceAddr, catalog: testCat},
		{name: "no catalog", conn: a, self: slaveAddr, peer: instanceAddr},
		{name: "zero request timeout", conn: a, self: slaveAddr, peer: instanceAddr, catalog: testCat, opts: []link.Option{link.WithRequestTimeout(0)}},
		{name: "empty event queue", conn: a, self: slaveAddr, peer: instanceAddr, catalog: testCat, opts: []link.Option{link.WithEventQueue(0)}},
		{name: "no request handlers", conn: a, self: slaveAddr, peer: instanceAddr, catalog: testCat, opts: []link.Option{link.WithMaxHandlers(0)}},
		{name: "nil logger", conn: a, self: slaveAddr, peer: instanceAddr, catalog: testCat, opts: []link.Option{link.WithLogger(nil)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := link.New(tc.conn, tc.self, tc.peer, tc.catalog, tc.opts...)
			if err == nil {
				t.Fatalf("New returned %s and no error", l)
			}
		})
	}
}
