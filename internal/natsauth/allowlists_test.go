package natsauth_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/internal/natsauth"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

func TestAllowLists(t *testing.T) {
	core := catalog(t)
	// A plugin that opens a link the core catalog does not have: slaves
	// tell controls something directly.
	notice := messages.MustEvent[messages.Empty](messages.Spec{Name: "notices:notice", Links: []messages.Direction{messages.SlaveToControl}})
	withPlugin, err := messages.NewCatalog(messages.Plugin{Name: "notices", Messages: []messages.Message{notice}})
	if err != nil {
		t.Fatal(err)
	}
	// A plugin with messages from slave to slave: two slaves link directly.
	gossip := messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "gossip:ask", Src: []messages.Endpoint{messages.Slave}, Dst: []messages.Endpoint{messages.Slave}})
	withDirect, err := messages.NewCatalog(messages.Plugin{Name: "gossip", Messages: []messages.Message{gossip}})
	if err != nil {
		t.Fatal(err)
	}
	slave7 := link.Address{Type: messages.Slave, ID: "7"}
	alice := link.Address{Type: messages.Control, ID: "alice"}
	tests := []struct {
		name         string
		catalog      *messages.Catalog
		prefix       string
		self         link.Address
		pub, sub     []string
		wantNilLists bool
	}{
		{
			name: "master", catalog: core, prefix: "lf", self: link.MasterAddress,
			pub: []string{"lf.master.0.slave.*.>", "lf.master.0.control.*.>", "lf._inbox.slave.*.>", "lf._inbox.control.*.>"},
			sub: []string{"lf.*.*.master.0.>", "lf.*.*.master._all.>", "lf._inbox.master.0.>"},
		},
		{
			name: "slave", catalog: core, prefix: "lf", self: slave7,
			pub: []string{"lf.slave.7.master.0.>"},
			sub: []string{"lf.*.*.slave.7.>", "lf.*.*.slave._all.>", "lf._inbox.slave.7.>"},
		},
		{
			name: "control", catalog: core, prefix: "lf", self: alice,
			pub: []string{"lf.control.alice.master.0.>"},
			sub: []string{"lf.*.*.control.alice.>", "lf.*.*.control._all.>", "lf._inbox.control.alice.>"},
		},
		{
			name: "instance", catalog: core, prefix: "lf", self: link.Address{Type: messages.Instance, ID: "101"},
			wantNilLists: true,
		},
		{
			name: "no type", catalog: core, prefix: "lf", self: link.Address{ID: "x"},
			wantNilLists: true,
		},
		{
			name: "slave, other prefix", catalog: core, prefix: "acme.lf", self: slave7,
			pub: []string{"acme.lf.slave.7.master.0.>"},
			sub: []string{"acme.lf.*.*.slave.7.>", "acme.lf.*.*.slave._all.>", "acme.lf._inbox.slave.7.>"},
		},
		{
			name: "slave, plugin with a slave-control link", catalog: withPlugin, prefix: "lf", self: slave7,
			pub: []string{"lf.slave.7.master.0.>", "lf.slave.7.control.*.>"},
			sub: []string{"lf.*.*.slave.7.>", "lf.*.*.slave._all.>", "lf._inbox.slave.7.>"},
		},
		{
			// The control receives only events from slaves, so it answers
			// no plain client's requests; it still sends close notices.
			name: "control, plugin with a slave-control link", catalog: withPlugin, prefix: "lf", self: alice,
			pub: []string{"lf.control.alice.master.0.>", "lf.control.alice.slave.*.>"},
			sub: []string{"lf.*.*.control.alice.>", "lf.*.*.control._all.>", "lf._inbox.control.alice.>"},
		},
		{
			// Its own direct links: publish as itself to any slave; no
			// inbox of another (plain clients go by way of the master).
			name: "slave, plugin with slave-to-slave messages", catalog: withDirect, prefix: "lf", self: slave7,
			pub: []string{"lf.slave.7.master.0.>", "lf.slave.7.slave.*.>"},
			sub: []string{"lf.*.*.slave.7.>", "lf.*.*.slave._all.>", "lf._inbox.slave.7.>"},
		},
		{
			name: "master, plugin with slave-to-slave messages", catalog: withDirect, prefix: "lf", self: link.MasterAddress,
			pub: []string{"lf.master.0.slave.*.>", "lf.master.0.control.*.>", "lf._inbox.slave.*.>", "lf._inbox.control.*.>"},
			sub: []string{"lf.*.*.master.0.>", "lf.*.*.master._all.>", "lf._inbox.master.0.>"},
		},
		{
			name: "master, plugin with a slave-control link", catalog: withPlugin, prefix: "lf", self: link.MasterAddress,
			pub: []string{"lf.master.0.slave.*.>", "lf.master.0.control.*.>", "lf._inbox.slave.*.>", "lf._inbox.control.*.>"},
			sub: []string{"lf.*.*.master.0.>", "lf.*.*.master._all.>", "lf._inbox.master.0.>"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub, sub := natsauth.AllowLists(tc.catalog, tc.prefix, tc.self)
			if tc.wantNilLists {
				if pub != nil || sub != nil {
					t.Fatalf("AllowLists = %q, %q; want nothing", pub, sub)
				}
				return
			}
			if !slices.Equal(pub, tc.pub) {
				t.Errorf("publish = %q\nwant      %q", pub, tc.pub)
			}
			if !slices.Equal(sub, tc.sub) {
				t.Errorf("subscribe = %q\nwant        %q", sub, tc.sub)
			}
		})
	}
}

func TestPeers(t *testing.T) {
	core := catalog(t)
	for self, want := range map[messages.Endpoint][]messages.Endpoint{
		messages.Master:   {messages.Slave, messages.Control},
		messages.Slave:    {messages.Master},
		messages.Control:  {messages.Master},
		messages.Instance: nil,
	} {
		if got := natsauth.Peers(core, self); !slices.Equal(got, want) {
			t.Errorf("Peers(%s) = %v, want %v", self, got, want)
		}
	}
}

// warnings keeps the messages and errors a Node logs at warning level.
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	s := r.Message
	r.Attrs(func(a slog.Attr) bool {
		s += " " + a.Key + "=" + a.Value.String()
		return true
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, s)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

func (w *warnings) violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, s := range w.seen {
		if strings.Contains(strings.ToLower(s), "permissions violation") {
			out = append(out, s)
		}
	}
	return out
}

// TestAllowListsLetNodesWork: with each endpoint's user limited to what
// AllowLists allows, Nodes subscribe, make requests both ways and answer
// them without a single permissions violation, and nats.go's inboxes use
// InboxPrefix. A client logged in as the slave that tries to speak as the
// master is refused.
func TestAllowListsLetNodesWork(t *testing.T) {
	cat := linktest.Catalog()
	master, slave, control := link.MasterAddress, link.Address{Type: messages.Slave, ID: "3"}, link.Address{Type: messages.Control, ID: "bob"}
	opts := &server.Options{}
	for _, a := range []link.Address{master, slave, control} {
		pub, sub := natsauth.AllowLists(cat, "lf", a)
		opts.Users = append(opts.Users, &server.User{Username: a.String(), Password: "pw-" + a.ID, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: pub},
			Subscribe: &server.SubjectPermission{Allow: sub},
		}})
	}
	s := run(t, opts)
	logs := &warnings{}
	connect := func(self link.Address, login link.Address, extra ...lfnats.Option) (*lfnats.Node, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return lfnats.Connect(ctx, self, append([]lfnats.Option{lfnats.WithURLs(s.ClientURL()), lfnats.WithLogger(slog.New(logs)),
			lfnats.WithNATSOptions(natsgo.UserInfo(login.String(), "pw-"+login.ID))}, extra...)...)
	}
	accepted := make(chan *link.Link, 4)
	start := func(c link.Connector, self, peer link.Address) *link.Link {
		l, err := link.New(c, self, peer, cat, link.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		if linktest.Echo.ValidOn(messages.Direction{Source: peer.Type, Target: self.Type}) {
			link.HandleRequest(l, linktest.Echo, linktest.EchoHandler(l))
		}
		linktest.Stub(l, cat)
		if err := l.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	nodes := map[link.Address]*lfnats.Node{}
	for _, a := range []link.Address{master, slave, control} {
		var extra []lfnats.Option
		if a == master {
			extra = append(extra, lfnats.WithAccept(func(c *lfnats.Conn) error {
				accepted <- start(c, master, c.Peer())
				return nil
			}))
		}
		n, err := connect(a, a, extra...)
		if err != nil {
			t.Fatalf("connect %s: %v", a, err)
		}
		t.Cleanup(func() { _ = n.Close() })
		testkit.NoErr(t, n.NATS().Flush(), "flush")
		nodes[a] = n
	}
	ping := func(l *link.Link) {
		t.Helper()
		if _, err := link.Request(testkit.Ctx(t, 10*time.Second), l, messages.Ping, messages.Empty{}); err != nil {
			t.Fatalf("ping from %s to %s: %v", l.Self(), l.Peer(), err)
		}
	}
	for _, a := range []link.Address{slave, control} {
		c, err := nodes[a].Dial(master)
		testkit.NoErr(t, err, "dial")
		ping(start(c, a, master))
		toPeer := testkit.Recv(t, accepted, 10*time.Second, "a link to be accepted")
		ping(toPeer) // the master's request, the peer's response
	}
	for a, n := range nodes {
		if got, want := n.NATS().Opts.InboxPrefix, lfnats.InboxPrefix("lf", a); got != want {
			t.Errorf("%s: nats.go inbox prefix %q, want %q", a, got, want)
		}
		testkit.NoErr(t, n.NATS().Flush(), "flush")
	}
	if v := logs.violations(); len(v) > 0 {
		t.Fatalf("permissions violations with the allow-lists of AllowLists: %q", v)
	}

	// The check above can see violations: a Node that claims another
	// control's name with bob's credentials is refused its subscription
	// to what is addressed to carol, and Connect says so.
	carol := link.Address{Type: messages.Control, ID: "carol"}
	if n, err := connect(carol, control); err == nil {
		_ = n.Close()
		t.Fatal("control carol with bob's credentials connected")
	} else if !errors.Is(err, lfnats.ErrNotAllowed) || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		t.Errorf("control carol with bob's credentials: %v, want lfnats.ErrNotAllowed, a permissions violation", err)
	}

	// Speaking as the master with the slave's credentials is refused.
	violation := make(chan error, 4)
	nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo(slave.String(), "pw-"+slave.ID),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) { violation <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("lf.master.0.slave."+slave.ID+".ping", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-violation:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation for publish") {
			t.Errorf("error %v, want a permissions violation for publish", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publishing as the master with the slave's credentials: no permissions violation")
	}
}

// TestDirectSubjectSpoofing: with a catalog that has slave-to-slave
// messages, slave 1's credentials may publish on its own direct subjects
// to slave 2, and not as slave 2 to slave 1 (the broker enforces the
// sender of the direct path, as of every other).
func TestDirectSubjectSpoofing(t *testing.T) {
	gossip := messages.MustEvent[messages.Empty](messages.Spec{Name: "gossip:tell", Src: []messages.Endpoint{messages.Slave}, Dst: []messages.Endpoint{messages.Slave}})
	cat, err := messages.NewCatalog(messages.Plugin{Name: "gossip", Messages: []messages.Message{gossip}})
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{}
	for _, id := range []string{"1", "2"} {
		pub, sub := natsauth.AllowLists(cat, "lf", link.Address{Type: messages.Slave, ID: id})
		opts.Users = append(opts.Users, &server.User{Username: "slave-" + id, Password: "pw-" + id, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: pub},
			Subscribe: &server.SubjectPermission{Allow: sub},
		}})
	}
	s := run(t, opts)
	violations := make(chan string, 4)
	onErr := natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) { violations <- err.Error() })
	slave1, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo("slave-1", "pw-1"), onErr)
	testkit.NoErr(t, err, "slave 1 logs in")
	defer slave1.Close()
	slave2, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo("slave-2", "pw-2"))
	testkit.NoErr(t, err, "slave 2 logs in")
	defer slave2.Close()
	got := make(chan string, 4)
	sub, err := slave2.Subscribe("lf.*.*.slave.2.>", func(m *natsgo.Msg) { got <- m.Subject })
	testkit.NoErr(t, err, "slave 2 subscribes")
	defer func() { _ = sub.Unsubscribe() }()
	testkit.NoErr(t, slave2.Flush(), "flush")

	testkit.NoErr(t, slave1.Publish("lf.slave.2.slave.1.gossip:tell", []byte("{}")), "publish as slave 2")
	testkit.NoErr(t, slave1.Publish("lf.slave.1.slave.2.gossip:tell", []byte("{}")), "publish as itself")
	testkit.NoErr(t, slave1.Flush(), "flush")
	if v := testkit.Recv(t, violations, 10*time.Second, "a violation"); !strings.Contains(v, `Permissions Violation for Publish to "lf.slave.2.slave.1.gossip:tell"`) {
		t.Errorf("violation %q, want one for lf.slave.2.slave.1.gossip:tell", v)
	}
	if subj := testkit.Recv(t, got, 10*time.Second, "slave 1's own message"); subj != "lf.slave.1.slave.2.gossip:tell" {
		t.Errorf("slave 2 got %q", subj)
	}
}
