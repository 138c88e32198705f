package fabric_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The addressing matrix: every sender type to every destination, over a
// real broker, with a plugin whose request and event go from any endpoint
// type to any endpoint type.

type probeReq struct {
	Token string `json:"token" schema:"minLength=1,maxLength=128"`
}

type probeResp struct {
	By   string `json:"by" schema:"minLength=1,maxLength=128"`
	From string `json:"from" schema:"minLength=1,maxLength=128"`
}

func newProbePlugin(t *testing.T) (*messages.Request[probeReq, probeResp], *messages.Event[probeReq], messages.Plugin) {
	t.Helper()
	all := messages.Endpoints()
	ask, err := messages.NewRequest[probeReq, probeResp](messages.Spec{Name: "probe:ask", Src: all, Dst: all, Permission: "probe.send"})
	testkit.NoErr(t, err, "probe:ask")
	tell, err := messages.NewEvent[probeReq](messages.Spec{Name: "probe:tell", Src: all, Dst: all, Permission: "probe.send"})
	testkit.NoErr(t, err, "probe:tell")
	return ask, tell, messages.Plugin{Name: "probe", Messages: []messages.Message{ask, tell}}
}

// deliveries records which endpoint handled which token, from whom.
type deliveries struct {
	mu   sync.Mutex
	seen map[string][]string // token -> "who<-src"
}

func (d *deliveries) add(token string, who, src link.Address) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen[token] = append(d.seen[token], who.String()+"<-"+src.String())
}

func (d *deliveries) of(token string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := slices.Clone(d.seen[token])
	sort.Strings(out)
	return out
}

type addrFixture struct {
	url      string
	master   *fabric.Master
	slaves   map[int64]*fabric.Slave
	controls map[string]*fabric.Control
	rec      *deliveries
	ask      *messages.Request[probeReq, probeResp]
	tell     *messages.Event[probeReq]
	plugin   messages.Plugin
	// attach attaches, to a link of the endpoint self, the handlers that
	// record what reaches it.
	attach func(self link.Address) func(*link.Link)

	mu        sync.Mutex
	instances map[int64]*link.Link // each instance's side of its link
	hostOf    map[int64]int64
	lacking   map[link.Address]bool // endpoints without the plugin
}

// newAddrFixture starts a master, slave 1 (instances 11, 12), slave 2 (21,
// 22) and controls alice and bob; the endpoints in lacking are built
// without the probe plugin (a slave's instances lack it with it).
func newAddrFixture(t *testing.T, masterOpts func(*messages.Request[probeReq, probeResp], *messages.Event[probeReq]) []fabric.Option, lacking ...link.Address) *addrFixture {
	t.Helper()
	ask, tell, plugin := newProbePlugin(t)
	f := &addrFixture{slaves: map[int64]*fabric.Slave{}, controls: map[string]*fabric.Control{}, rec: &deliveries{seen: map[string][]string{}},
		ask: ask, tell: tell, instances: map[int64]*link.Link{}, hostOf: map[int64]int64{11: 1, 12: 1, 21: 2, 22: 2}, lacking: map[link.Address]bool{}}
	for _, a := range lacking {
		f.lacking[a] = true
	}
	for id, host := range f.hostOf {
		if f.lacking[link.SlaveAddress(host)] {
			f.lacking[link.InstanceAddress(id)] = true
		}
	}
	// attach handles ask and tell at self, on every link they arrive on.
	f.plugin = plugin
	attach := func(self link.Address) func(*link.Link) {
		return func(l *link.Link) {
			if !ask.ValidOn(messages.Direction{Source: l.Peer().Type, Target: l.Self().Type}) {
				return
			}
			link.HandleRequest(l, ask, func(ctx context.Context, r probeReq) (probeResp, error) {
				f.rec.add(r.Token, self, link.Source(ctx))
				return probeResp{By: self.String(), From: link.Source(ctx).String()}, nil
			})
			link.HandleEvent(l, tell, func(ctx context.Context, r probeReq) error {
				f.rec.add(r.Token, self, link.Source(ctx))
				return nil
			})
		}
	}
	f.attach = attach
	with := func(self link.Address, peers ...messages.Endpoint) []fabric.Option {
		if f.lacking[self] {
			return nil
		}
		opts := []fabric.Option{fabric.WithPlugins(plugin)}
		for _, p := range peers {
			opts = append(opts, fabric.WithHandlers(p, attach(self)))
		}
		return opts
	}
	var extra []fabric.Option
	if masterOpts != nil {
		extra = masterOpts(ask, tell)
	}
	b := startBroker(t)
	f.url = b.ClientURL()
	f.master = startMaster(t, f.url, "alice=*;bob=*", append(with(link.MasterAddress, messages.Slave, messages.Control), extra...)...)
	for _, id := range []int64{1, 2} {
		self := link.SlaveAddress(id)
		opts := append(with(self, messages.Master, messages.Instance, messages.Slave), fabric.WithInstanceFactory(func(iid int64, name string) fabric.Instance {
			return probeInstance{f: f, id: iid, sim: fabric.SimulatedInstances(iid, name), attach: attach(link.InstanceAddress(iid)), plugin: !f.lacking[self]}
		}))
		f.slaves[id] = startSlave(t, f.url, id, fmt.Sprintf("%d1:a%d,%d2:b%d", id, id, id, id), opts...)
	}
	waitSlaves(t, f.master, waitLong, 1, 2)
	for _, u := range []string{"alice", "bob"} {
		f.controls[u], _ = dialControl(t, f.url, u, with(link.ControlAddress(u), messages.Master)...)
		request(t, f.controls[u].Link(), messages.Ping, messages.Empty{})
	}
	for _, id := range []int64{11, 12, 21, 22} {
		request(t, f.controls["alice"].Link(), messages.StartInstance, messages.InstanceRef{InstanceID: id})
	}
	testkit.WaitFor(t, waitLong, "every instance's link", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.instances) == 4
	})
	return f
}

type probeInstance struct {
	f      *addrFixture
	id     int64
	sim    fabric.Instance
	attach func(*link.Link)
	plugin bool
}

func (p probeInstance) Attach(l *link.Link) {
	p.sim.Attach(l)
	if p.plugin {
		p.attach(l)
	}
	p.f.mu.Lock()
	p.f.instances[p.id] = l
	p.f.mu.Unlock()
}

// everyone lists every endpoint of the fixture.
func (f *addrFixture) everyone() []link.Address {
	return []link.Address{link.MasterAddress, link.SlaveAddress(1), link.SlaveAddress(2),
		link.InstanceAddress(11), link.InstanceAddress(12), link.InstanceAddress(21), link.InstanceAddress(22),
		link.ControlAddress("alice"), link.ControlAddress("bob")}
}

// request sends ask from an endpoint of the fixture.
func (f *addrFixture) request(ctx context.Context, from, to link.Address, token string) (probeResp, error) {
	req := probeReq{Token: token}
	switch from.Type {
	case messages.Instance:
		return link.RequestTo(ctx, f.instanceLink(from), to, f.ask, req)
	}
	return fabric.Request(ctx, f.sender(from), to, f.ask, req)
}

func (f *addrFixture) emit(ctx context.Context, from, to link.Address, token string) error {
	ev := probeReq{Token: token}
	if from.Type == messages.Instance {
		return link.EmitTo(ctx, f.instanceLink(from), to, f.tell, ev)
	}
	return fabric.Emit(ctx, f.sender(from), to, f.tell, ev)
}

func (f *addrFixture) instanceLink(a link.Address) *link.Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, l := range f.instances {
		if link.InstanceAddress(id) == a {
			return l
		}
	}
	return nil
}

func (f *addrFixture) sender(a link.Address) fabric.Sender {
	switch a.Type {
	case messages.Master:
		return f.master
	case messages.Slave:
		for id, s := range f.slaves {
			if link.SlaveAddress(id) == a {
				return s
			}
		}
	case messages.Control:
		return f.controls[a.ID]
	}
	panic("no sender " + a.String())
}

// reached returns who an event from from to to reaches: to, or every
// endpoint of a broadcast's type, never from, never one without the plugin.
func (f *addrFixture) reached(from, to link.Address) []string {
	var out []string
	for _, a := range f.everyone() {
		if to.Includes(a) && a != from && !f.lacking[a] {
			out = append(out, a.String()+"<-"+from.String())
		}
	}
	sort.Strings(out)
	return out
}

func destinations() []link.Address {
	return []link.Address{link.MasterAddress, link.SlaveAddress(1), link.SlaveAddress(2),
		link.InstanceAddress(11), link.InstanceAddress(12), link.InstanceAddress(21), link.InstanceAddress(22),
		link.ControlAddress("alice"), link.ControlAddress("bob"),
		link.All(messages.Slave), link.All(messages.Instance), link.All(messages.Control)}
}

// checkMatrix sends a request and an event from every endpoint with the
// plugin to every destination, and checks that each reached exactly the
// endpoints it should, once, and said who sent it.
func (f *addrFixture) checkMatrix(t *testing.T) {
	ctx := testkit.Ctx(t, 4*waitLong)
	type sent struct {
		token string
		want  []string
	}
	var events []sent
	for _, from := range f.everyone() {
		if f.lacking[from] {
			continue
		}
		for _, to := range destinations() {
			cell := from.String() + "->" + to.String()
			token := "req " + cell
			resp, err := f.request(ctx, from, to, token)
			switch {
			case to == from || to.IsBroadcast():
				testkit.WantCode(t, err, link.CodeInvalidMessage)
			case f.lacking[to]:
				testkit.WantCode(t, err, fabric.CodePluginMissing)
			case err != nil:
				t.Errorf("%s: %v", token, err)
			case resp.By != to.String() || resp.From != from.String():
				t.Errorf("%s: answered by %s, from %s", token, resp.By, resp.From)
			}
			token = "ev " + cell
			err = f.emit(ctx, from, to, token)
			if to == from {
				testkit.WantCode(t, err, link.CodeInvalidMessage)
				continue
			}
			testkit.NoErr(t, err, token)
			events = append(events, sent{token, f.reached(from, to)})
		}
	}
	for _, e := range events {
		testkit.WaitFor(t, waitLong, e.token, func() bool { return len(f.rec.of(e.token)) >= len(e.want) })
	}
	// Each endpoint then hears from each sender once more, along the same
	// links: whatever else the events above brought has arrived by then.
	var barriers []sent
	for _, from := range f.everyone() {
		for _, to := range f.everyone() {
			if from == to || f.lacking[from] || f.lacking[to] {
				continue
			}
			token := "barrier " + from.String() + "->" + to.String()
			testkit.NoErr(t, f.emit(ctx, from, to, token), token)
			barriers = append(barriers, sent{token, f.reached(from, to)})
		}
	}
	for _, e := range append(barriers, events...) {
		testkit.WaitFor(t, waitLong, e.token, func() bool { return len(f.rec.of(e.token)) >= len(e.want) })
		if got := f.rec.of(e.token); !slices.Equal(got, e.want) {
			t.Errorf("%s reached %v; want %v", e.token, got, e.want)
		}
	}
	for _, from := range f.everyone() {
		for _, to := range destinations() {
			token := "req " + from.String() + "->" + to.String()
			want := []string{to.String() + "<-" + from.String()}
			if to == from || to.IsBroadcast() || f.lacking[to] || f.lacking[from] {
				want = nil
			}
			if got := f.rec.of(token); !slices.Equal(got, want) {
				t.Errorf("%s was handled by %v; want %v", token, got, want)
			}
		}
	}
}

func TestAddressMatrix(t *testing.T) {
	newAddrFixture(t, nil).checkMatrix(t)
}

func TestAddressMatrixLackingPlugin(t *testing.T) {
	f := newAddrFixture(t, nil, link.SlaveAddress(2), link.ControlAddress("bob"))
	f.checkMatrix(t)
	// A party without the plugin knows nothing of its messages, and says
	// so before anything is sent.
	_, err := link.RequestTo(testkit.Ctx(t, waitLong), f.instanceLink(link.InstanceAddress(21)), link.InstanceAddress(11), f.ask, probeReq{Token: "x"})
	testkit.WantCode(t, err, link.CodeInvalidMessage)
}

// TestAddressSpoofing tries each new path with a source that is not the
// sender's own: nothing reaches a handler, and requests are refused.
func TestAddressSpoofing(t *testing.T) {
	f := newAddrFixture(t, nil)
	ctx := testkit.Ctx(t, waitLong)

	// An instance speaking as another instance, on its own link.
	l11 := f.instanceLink(link.InstanceAddress(11))
	data := []byte(`{"token":"spoof by instance"}`)
	_, err := l11.ForwardRequest(ctx, &link.Envelope{Type: f.ask.Name(), Data: data, Origin: link.InstanceAddress(21), Dst: link.ControlAddress("alice")})
	testkit.WantCode(t, err, link.CodePermissionDenied)
	testkit.NoErr(t, l11.ForwardEvent(ctx, &link.Envelope{Type: f.tell.Name(), Data: []byte(`{"token":"spoof ev by instance"}`), Origin: link.SlaveAddress(1), Dst: link.All(messages.Control)}), "spoofed event")

	// Anyone on the (open) broker speaking as slave 1 or control bob, with
	// a source that is not theirs: another slave's instance, a control, the
	// master.
	nc, err := natsgo.Connect(f.url)
	testkit.NoErr(t, err, "connect")
	t.Cleanup(nc.Close)
	spoofs := []struct{ as, origin, dst string }{
		{"slave.1", "instance/21", "control/alice"},
		{"slave.1", "instance/11", "instance/22"}, // a plain client is not the slave's registered session
		{"slave.1", "control/alice", "slave/2"},
		{"slave.1", "master/0", "instance/21"},
		{"control.bob", "control/alice", "slave/2"},
		{"control.bob", "slave/1", "instance/11"},
	}
	for i, s := range spoofs {
		token := fmt.Sprintf("spoof %d", i)
		msg := natsgo.NewMsg("lf." + s.as + ".master.0." + f.ask.Name())
		msg.Data = []byte(`{"token":"` + token + `"}`)
		msg.Header.Set("Lf-Origin", s.origin)
		msg.Header.Set("Lf-Dst", s.dst)
		resp, err := nc.RequestMsg(msg, waitLong)
		testkit.NoErr(t, err, token)
		if code := resp.Header.Get("Lf-Error"); code != string(link.CodePermissionDenied) {
			t.Errorf("%s as %s from %s: answered %q %s; want permission_denied", token, s.as, s.origin, code, resp.Data)
		}
		ev := natsgo.NewMsg("lf." + s.as + ".master.0." + f.tell.Name())
		ev.Data = []byte(`{"token":"ev ` + token + `"}`)
		ev.Header = msg.Header
		testkit.NoErr(t, nc.PublishMsg(ev), token)
	}
	testkit.NoErr(t, nc.Flush(), "flush")
	// The legitimate matrix runs after the spoofs, on the same links;
	// then no spoofed token has reached anyone.
	f.checkMatrix(t)
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	for token, who := range f.rec.seen {
		if strings.Contains(token, "spoof") {
			t.Errorf("spoofed %q reached %v", token, who)
		}
	}
}

func TestAddressRefusedBeforeSending(t *testing.T) {
	ask, _, _ := newProbePlugin(t)
	for _, c := range []struct {
		from, to link.Address
		why      string
	}{
		{link.InstanceAddress(11), link.InstanceAddress(11), "itself"},
		{link.SlaveAddress(1), link.All(messages.Slave), "a request"},
		{link.SlaveAddress(1), link.Address{Type: messages.Slave, ID: "bad id"}, "id must be"},
	} {
		err := link.CheckAddress(ask.Definition, c.from, c.to)
		if e := testkit.WantCode(t, err, link.CodeInvalidMessage); e != nil && !strings.Contains(e.Message, c.why) {
			t.Errorf("%s -> %s: %q does not say %q", c.from, c.to, e.Message, c.why)
		}
	}
	narrow := messages.MustRequest[probeReq, probeResp](messages.Spec{Name: "probe:narrow", Src: []messages.Endpoint{messages.Instance}, Dst: []messages.Endpoint{messages.Instance}})
	err := link.CheckAddress(narrow.Definition, link.SlaveAddress(1), link.InstanceAddress(11))
	if e := testkit.WantCode(t, err, link.CodeInvalidMessage); e != nil && !strings.Contains(e.Message, "may not be sent from slave to instance/11") {
		t.Errorf("message %q", e.Message)
	}
}

// TestAddressOneAddressPerEndpoint: an id the fabric does not write that
// way ("01" for 1) names no endpoint, as on the broker's subjects: the
// master refuses the message, and nothing reaches slave 1 or instance 11.
func TestAddressOneAddressPerEndpoint(t *testing.T) {
	f := newAddrFixture(t, nil)
	ctx := testkit.Ctx(t, waitLong)
	for i, to := range []link.Address{{Type: messages.Slave, ID: "01"}, {Type: messages.Instance, ID: "011"}, {Type: messages.Instance, ID: "+11"}} {
		token := fmt.Sprintf("padded %d", i)
		_, err := f.request(ctx, link.ControlAddress("alice"), to, token)
		testkit.WantCode(t, err, link.CodeInvalidMessage)
		if got := f.rec.of(token); len(got) > 0 {
			t.Errorf("a request to %s reached %v", to, got)
		}
	}
}

// TestSnooperAndFallback: the master sees an event between two instances
// as it passes, a failing snooper stops nothing, and a request to an
// instance that does not exist is answered by the master's fallback.
func TestSnooperAndFallback(t *testing.T) {
	snooped := make(chan string, 10)
	f := newAddrFixture(t, func(ask *messages.Request[probeReq, probeResp], tell *messages.Event[probeReq]) []fabric.Option {
		return []fabric.Option{fabric.WithHandlers(messages.Slave, func(l *link.Link) {
			link.SnoopEvent(l, tell, func(ctx context.Context, r probeReq) error {
				snooped <- fmt.Sprintf("%s %s->%s", r.Token, link.Source(ctx), link.Destination(ctx))
				return nil
			})
			link.SnoopEvent(l, tell, func(context.Context, probeReq) error { panic("a snooper's own failure") })
			link.HandleFallback(l, ask, func(ctx context.Context, r probeReq) (probeResp, error) {
				return probeResp{By: "fallback for " + link.Destination(ctx).String(), From: link.Source(ctx).String()}, nil
			})
		})}
	})
	ctx := testkit.Ctx(t, waitLong)
	testkit.NoErr(t, f.emit(ctx, link.InstanceAddress(11), link.InstanceAddress(21), "seen"), "emit")
	if got := testkit.Recv(t, snooped, waitLong, "the snooper"); got != "seen instance/11->instance/21" {
		t.Errorf("snooped %q", got)
	}
	testkit.WaitFor(t, waitLong, "the event, past the failing snooper", func() bool { return len(f.rec.of("seen")) == 1 })
	resp, err := f.request(ctx, link.InstanceAddress(11), link.InstanceAddress(99), "lost")
	testkit.NoErr(t, err, "request to no instance")
	if resp.By != "fallback for instance/99" || resp.From != "instance/11" {
		t.Errorf("answered %+v", resp)
	}
	// Not for what the router delivers: instance 21 answers itself.
	if resp, err := f.request(ctx, link.InstanceAddress(11), link.InstanceAddress(21), "found"); err != nil || resp.By != "instance/21" {
		t.Errorf("answered %+v, %v", resp, err)
	}
}
