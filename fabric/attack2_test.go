package fabric_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
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

// seenTokens records the tokens a snooper or handler saw, by where.
type seenTokens struct {
	mu   sync.Mutex
	seen map[string][]string
}

func (s *seenTokens) add(where, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string][]string{}
	}
	s.seen[where] = append(s.seen[where], token)
}

func (s *seenTokens) of(where string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen[where]...)
}

// TestAttack2BroadcastToMasterSkipsPermission: a control without an
// event's permission addresses it to master/* (a broadcast address of the
// master's own type). The master refuses to handle it, but must not pass
// it on either: no snooper, on the master or a slave, may see it.
func TestAttack2BroadcastToMasterSkipsPermission(t *testing.T) {
	all := messages.Endpoints()
	tell := messages.MustEvent[probeReq](messages.Spec{Name: "probe:tell", Src: all, Dst: all, Permission: "probe.send"})
	free := messages.MustEvent[probeReq](messages.Spec{Name: "probe:free", Src: all, Dst: all, Permission: messages.Unrestricted})
	plugin := messages.Plugin{Name: "probe", Messages: []messages.Message{tell, free}}
	seen := &seenTokens{}
	watch := func(where string) func(*link.Link) {
		return func(l *link.Link) {
			for _, ev := range []*messages.Event[probeReq]{tell, free} {
				if ev.ValidOn(messages.Direction{Source: l.Peer().Type, Target: l.Self().Type}) {
					link.SnoopEvent(l, ev, func(_ context.Context, r probeReq) error { seen.add(where+" snooper", r.Token); return nil })
					link.HandleEvent(l, ev, func(_ context.Context, r probeReq) error { seen.add(where+" handler", r.Token); return nil })
				}
			}
		}
	}
	b := startBroker(t)
	startMaster(t, b.ClientURL(), "alice=*;bob=core.instance.list", fabric.WithPlugins(plugin),
		fabric.WithHandlers(messages.Control, watch("master")), fabric.WithHandlers(messages.Slave, watch("master")))
	startSlave(t, b.ClientURL(), 1, "11:a", fabric.WithPlugins(plugin), fabric.WithHandlers(messages.Master, watch("slave")), fabric.WithHandlers(messages.Instance, watch("slave")), fabric.WithHandlers(messages.Slave, watch("slave")))
	nc, err := natsgo.Connect(b.ClientURL())
	testkit.NoErr(t, err, "connect")
	t.Cleanup(nc.Close)
	// A plain client as control bob (its own identity with generated
	// credentials); then, on the same link, an event bob may send to every
	// instance, as a barrier: the master takes a link's events in order,
	// and passes both on in one broadcast stream.
	for _, ev := range []struct{ typ, token, dst string }{{tell.Name(), "forbidden", "master/*"}, {free.Name(), "barrier", "instance/*"}} {
		msg := natsgo.NewMsg("lf.control.bob.master.0." + ev.typ)
		msg.Data = []byte(`{"token":"` + ev.token + `"}`)
		msg.Header.Set("Lf-Dst", ev.dst)
		testkit.NoErr(t, nc.PublishMsg(msg), ev.token)
	}
	testkit.NoErr(t, nc.Flush(), "flush")
	for _, where := range []string{"master snooper", "slave snooper"} {
		testkit.WaitFor(t, waitLong, "the barrier at the "+where, func() bool { return slices.Contains(seen.of(where), "barrier") })
	}
	for _, where := range []string{"master handler", "master snooper", "slave snooper", "slave handler"} {
		for _, tok := range seen.of(where) {
			if tok == "forbidden" {
				t.Errorf("bob lacks probe.send, yet its event reached the %s", where)
			}
		}
	}
	t.Logf("seen: %v", seen.seen)
}

// TestAttack2SlaveBroadcastQuiet: an event the master broadcasts to every
// slave is delivered there, and nothing more: no slave warns that it
// could not pass it on (nor counts a handler error), once per broadcast.
func TestAttack2SlaveBroadcastQuiet(t *testing.T) {
	all := messages.Endpoints()
	free := messages.MustEvent[probeReq](messages.Spec{Name: "probe:free", Src: all, Dst: all, Permission: messages.Unrestricted})
	plugin := messages.Plugin{Name: "probe", Messages: []messages.Message{free}}
	seen := &seenTokens{}
	handle := func(where string) func(*link.Link) {
		return func(l *link.Link) {
			link.HandleEvent(l, free, func(_ context.Context, r probeReq) error { seen.add(where, r.Token); return nil })
		}
	}
	b := startBroker(t)
	m := startMaster(t, b.ClientURL(), "*=*", fabric.WithPlugins(plugin), fabric.WithHandlers(messages.Control, handle("master")), fabric.WithHandlers(messages.Slave, handle("master")))
	logs := newLogRecords()
	startSlave(t, b.ClientURL(), 1, "11:a", fabric.WithLogger(slog.New(logs)), fabric.WithPlugins(plugin),
		fabric.WithHandlers(messages.Master, handle("slave")), fabric.WithHandlers(messages.Instance, handle("slave")), fabric.WithHandlers(messages.Slave, handle("slave")))
	waitSlaves(t, m, waitLong, 1)
	ctx := testkit.Ctx(t, waitLong)
	// The second is handled after the first was passed on (or not).
	for _, tok := range []string{"one", "two"} {
		testkit.NoErr(t, fabric.Emit(ctx, m, link.All(messages.Slave), free, probeReq{Token: tok}), tok)
	}
	testkit.WaitFor(t, waitLong, "both broadcasts at the slave", func() bool { return len(seen.of("slave")) == 2 })
	if got := logs.find("event not passed on"); len(got) > 0 {
		t.Errorf("the slave warned of a broadcast to every slave: %v", got)
	}
}

// wsStatus opens a WebSocket handshake to wsURL (ws://host:port) as a
// browser on a page of origin would, and returns the HTTP status.
func wsStatus(t *testing.T, wsURL, origin string) int {
	t.Helper()
	host := strings.TrimPrefix(wsURL, "ws://")
	c, err := net.DialTimeout("tcp", host, waitLong)
	testkit.NoErr(t, err, "dial the WebSocket listener")
	defer c.Close()
	testkit.NoErr(t, c.SetDeadline(time.Now().Add(waitLong)), "deadline")
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: " + origin + "\r\n\r\n"
	_, err = c.Write([]byte(req))
	testkit.NoErr(t, err, "write the handshake")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	testkit.NoErr(t, err, "read the handshake's answer")
	resp.Body.Close()
	return resp.StatusCode
}

// TestAttack2WebSocketOrigins: a web page of another origin, open in the
// user's browser, must not reach the embedded (open) broker through its
// WebSocket listener, whatever the master's console configuration.
func TestAttack2WebSocketOrigins(t *testing.T) {
	m := startMasterConfig(t, fabric.MasterConfig{NATS: natsConfig(""), Listen: "127.0.0.1:0", DataDir: t.TempDir(), Grants: grants(t, "*=*"), Timing: testTiming(), Log: logConfig(), Console: fabric.ConsoleConfig{Addr: "127.0.0.1:0"}})
	ws := m.Broker().WebSocketURL()
	if got := wsStatus(t, ws, "http://evil.example"); got == http.StatusSwitchingProtocols {
		t.Errorf("a page of http://evil.example connected to the broker's WebSocket listener %s", ws)
	}
	if u := m.ConsoleURL(); u == "" {
		t.Error("no console URL")
	} else if got := wsStatus(t, ws, strings.TrimSuffix(u, "/")); got != http.StatusSwitchingProtocols {
		t.Errorf("the console's own page %s was refused: %d", u, got)
	}

	// Without the console there is no origin to admit, and nats-server
	// would admit every page: the listener alone is refused at start.
	_, err := fabric.StartMaster(testkit.Ctx(t, waitLong), fabric.MasterConfig{NATS: natsConfig(""), Listen: "127.0.0.1:0", DataDir: t.TempDir(), Grants: grants(t, "*=*"), Timing: testTiming(), Log: logConfig(), Console: fabric.ConsoleConfig{WSListen: "127.0.0.1:0"}})
	if err == nil || !strings.Contains(err.Error(), "FABRIC_NATS_WS_LISTEN") || !strings.Contains(err.Error(), "FABRIC_CONSOLE_ADDR") {
		t.Errorf("a WebSocket listener without the console: StartMaster returned %v, want a refusal naming FABRIC_NATS_WS_LISTEN and FABRIC_CONSOLE_ADDR", err)
	}

	// A WebSocket port that is taken is named as such, not blamed on
	// FABRIC_NATS_LISTEN (whose advice, another master's standby, would
	// mislead).
	taken, lerr := net.Listen("tcp", "127.0.0.1:0")
	testkit.NoErr(t, lerr, "listen on a port to take")
	defer taken.Close()
	_, err = fabric.StartMaster(testkit.Ctx(t, waitLong), fabric.MasterConfig{NATS: natsConfig(""), Listen: "127.0.0.1:0", DataDir: t.TempDir(), Grants: grants(t, "*=*"), Timing: testTiming(), Log: logConfig(), Console: fabric.ConsoleConfig{Addr: "127.0.0.1:0", WSListen: taken.Addr().String()}})
	if !errors.Is(err, fabric.ErrConfig) || !strings.Contains(err.Error(), "FABRIC_NATS_WS_LISTEN") || strings.Contains(err.Error(), "FABRIC_NATS_LISTEN=") {
		t.Errorf("a WebSocket port that is taken: StartMaster returned %v, want a configuration error naming FABRIC_NATS_WS_LISTEN alone", err)
	}
}

// TestAttack2SubscribeHonoursAuthorizer: a user the master's
// ControlAuthorizer refuses list_instances must not get the same list,
// and every change to it, by subscribing to instance_updates.
func TestAttack2SubscribeHonoursAuthorizer(t *testing.T) {
	b := startBroker(t)
	startMaster(t, b.ClientURL(), "*=*", fabric.WithControlAuthorizer(func(_ context.Context, user string, def *messages.Definition, _ *link.Envelope) error {
		if user == "bob" && def == messages.ListInstances.Def() {
			return link.Errorf(link.CodePermissionDenied, "bob may not list instances")
		}
		return nil
	}))
	bob, _ := dialControl(t, b.ClientURL(), "bob")
	_, err := requestErr(t, bob.Link(), messages.ListInstances, messages.Empty{})
	testkit.WantCode(t, err, link.CodePermissionDenied)
	_, err = requestErr(t, bob.Link(), messages.Subscribe, messages.Subscription{Event: messages.InstanceUpdates.Name(), Subscribe: true})
	testkit.WantCode(t, err, link.CodePermissionDenied)
}
