package fabric_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The timings of the test clusters. Every endpoint sends a heartbeat every
// 100ms. The peer timeout (how long the master waits before it gives up on
// a silent slave or control) is 2s, so that a loaded test machine does not
// lose peers; the tests about noticing lost peers give the master
// fastPeerTimeout instead.
const (
	heartbeat       = 100 * time.Millisecond
	peerTimeout     = 2 * time.Second
	fastPeerTimeout = 600 * time.Millisecond
	reqTimeout      = 5 * time.Second
	// waitLong bounds a wait for something that should happen promptly.
	waitLong = 5 * time.Second
)

func testTiming() fabric.TimingConfig {
	return fabric.TimingConfig{RequestTimeout: reqTimeout, HeartbeatInterval: heartbeat, PeerTimeout: peerTimeout, SessionTimeout: 3 * peerTimeout}
}

// fastTiming is testTiming with the short peer timeout.
func fastTiming() fabric.TimingConfig {
	t := testTiming()
	t.PeerTimeout, t.SessionTimeout = fastPeerTimeout, 3*fastPeerTimeout
	return t
}

func natsConfig(url string) fabric.NATSConfig {
	return fabric.NATSConfig{URL: url, Prefix: "lf", PingInterval: time.Second}
}

func logConfig() fabric.LogConfig { return fabric.LogConfig{Level: "info", Format: "text"} }

// testLogger discards the endpoints' logs unless LF_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("LF_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startBroker starts an embedded NATS server on a random loopback port for
// the test.
func startBroker(t *testing.T) *fabric.Broker {
	t.Helper()
	b, err := fabric.StartBroker("127.0.0.1:0", "")
	if err != nil {
		t.Fatalf("StartBroker: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// grants parses a test's table of grants, in FABRIC_CONTROL_PERMISSIONS's
// text form.
func grants(t testing.TB, text string) fabric.Grants {
	t.Helper()
	g, err := fabric.ParseGrants(text)
	if err != nil {
		t.Fatalf("grants %q: %v", text, err)
	}
	return g
}

func closeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// startMaster starts a master on the NATS server at url.
func startMaster(t *testing.T, url, permissions string, opts ...fabric.Option) *fabric.Master {
	t.Helper()
	return startMasterTiming(t, url, permissions, testTiming(), opts...)
}

// startMasterTiming starts a master with the given timings.
func startMasterTiming(t *testing.T, url, permissions string, timing fabric.TimingConfig, opts ...fabric.Option) *fabric.Master {
	t.Helper()
	return startMasterConfig(t, fabric.MasterConfig{NATS: natsConfig(url), Listen: "127.0.0.1:0", Grants: grants(t, permissions), Timing: timing, Log: logConfig()}, opts...)
}

// startMasterConfig starts a master configured by cfg.
func startMasterConfig(t *testing.T, cfg fabric.MasterConfig, opts ...fabric.Option) *fabric.Master {
	t.Helper()
	m, err := fabric.StartMaster(testkit.Ctx(t, waitLong), cfg, append([]fabric.Option{fabric.WithLogger(testLogger())}, opts...)...)
	if err != nil {
		t.Fatalf("StartMaster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

func slaveConfig(url string, id int64, instances string) fabric.SlaveConfig {
	hosted, err := fabric.ParseInstances(instances)
	if err != nil {
		panic(err) // a test's own mistake
	}
	return fabric.SlaveConfig{NATS: natsConfig(url), ID: id, Instances: hosted, Timing: testTiming(), Log: logConfig()}
}

// startSlave starts a slave with the given instances ("id:name,...").
func startSlave(t *testing.T, url string, id int64, instances string, opts ...fabric.Option) *fabric.Slave {
	t.Helper()
	s, err := fabric.StartSlave(testkit.Ctx(t, waitLong), slaveConfig(url, id, instances), append([]fabric.Option{fabric.WithLogger(testLogger())}, opts...)...)
	if err != nil {
		t.Fatalf("StartSlave %d: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

// dialControl connects a control as user; what the master relays to it is
// kept in the returned outputLog.
func dialControl(t *testing.T, url, user string, opts ...fabric.Option) (*fabric.Control, *outputLog) {
	t.Helper()
	out := &outputLog{}
	cfg := fabric.ControlConfig{NATS: natsConfig(url), User: user, Timing: testTiming(), Log: logConfig()}
	opts = append([]fabric.Option{fabric.WithLogger(testLogger()), fabric.WithOutputHandler(out.add)}, opts...)
	c, err := fabric.DialControl(testkit.Ctx(t, waitLong), cfg, opts...)
	if err != nil {
		t.Fatalf("DialControl %s: %v", user, err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = c.Close(ctx)
	})
	return c, out
}

// outputLog keeps the instance output a control received, in order.
type outputLog struct {
	mu    sync.Mutex
	lines []messages.OutputLine
}

func (o *outputLog) add(l messages.OutputLine) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lines = append(o.lines, l)
}

// of returns the messages received from one instance, in order.
func (o *outputLog) of(instanceID int64) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, l := range o.lines {
		if l.InstanceID == instanceID {
			out = append(out, l.Message)
		}
	}
	return out
}

// has reports an error unless instance instanceID printed msg.
func (o *outputLog) has(instanceID int64, msg string) error {
	if got := o.of(instanceID); !slices.Contains(got, msg) {
		return fmt.Errorf("no line %q from instance %d among %q", msg, instanceID, got)
	}
	return nil
}

// request sends a request with a deadline of reqTimeout and fails the test
// if it fails.
func request[Req, Resp any](t *testing.T, l *link.Link, m *messages.Request[Req, Resp], req Req) Resp {
	t.Helper()
	resp, err := requestErr(t, l, m, req)
	if err != nil {
		t.Fatalf("%s %+v: %v", m.Name(), req, err)
	}
	return resp
}

// requestErr sends a request with a deadline of reqTimeout.
func requestErr[Req, Resp any](t *testing.T, l *link.Link, m *messages.Request[Req, Resp], req Req) (Resp, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	return link.Request(ctx, l, m, req)
}

// instanceStatus returns the status of an instance in the master's view.
func instanceStatus(t *testing.T, l *link.Link, id int64) (messages.InstanceInfo, error) {
	t.Helper()
	list, err := requestErr(t, l, messages.ListInstances, messages.Empty{})
	if err != nil {
		return messages.InstanceInfo{}, err
	}
	for _, i := range list.Instances {
		if i.ID == id {
			return i, nil
		}
	}
	return messages.InstanceInfo{}, fmt.Errorf("instance %d not listed: %+v", id, list.Instances)
}

// waitStatus waits until the master lists instance id with status.
func waitStatus(t *testing.T, l *link.Link, id int64, status string) {
	t.Helper()
	testkit.Eventually(t, waitLong, fmt.Sprintf("instance %d %s", id, status), func() error {
		i, err := instanceStatus(t, l, id)
		if err != nil {
			return err
		}
		if i.Status != status {
			return fmt.Errorf("status %s", i.Status)
		}
		return nil
	})
}

// waitSlaves waits until the master's own view lists exactly the given
// slaves as connected.
func waitSlaves(t *testing.T, m *fabric.Master, timeout time.Duration, connected ...int64) {
	t.Helper()
	testkit.Eventually(t, timeout, fmt.Sprintf("slaves %v connected", connected), func() error {
		var got []int64
		for _, s := range m.Slaves() {
			if s.Connected {
				got = append(got, s.ID)
			}
		}
		if !slices.Equal(got, connected) {
			return fmt.Errorf("connected slaves %v (all: %+v)", got, m.Slaves())
		}
		return nil
	})
}

// cluster is the topology of the end-to-end tests: a broker of its own, a
// master, slave 1 hosting instances 11 (alpha) and 12 (beta), slave 2
// hosting 21 (gamma), and the controls alice and bob.
type cluster struct {
	broker       *fabric.Broker
	url          string
	master       *fabric.Master
	slave1       *fabric.Slave
	slave2       *fabric.Slave
	alice, bob   *fabric.Control
	aliceOut     *outputLog
	bobOut       *outputLog
	endpointOpts []fabric.Option
}

type clusterConfig struct {
	permissions string          // "" means "*=*"
	fastMaster  bool            // the master has the short peer timeout
	metrics     bool            // the master serves metrics on a free loopback port
	opts        []fabric.Option // for every endpoint
	masterOpts  []fabric.Option // for the master only
	slaveOpts   []fabric.Option // for the slaves only
}

func newCluster(t *testing.T, cc clusterConfig) *cluster {
	t.Helper()
	if cc.permissions == "" {
		cc.permissions = "*=*"
	}
	c := &cluster{endpointOpts: cc.opts}
	c.broker = startBroker(t)
	c.url = c.broker.ClientURL()
	timing := testTiming()
	if cc.fastMaster {
		timing = fastTiming()
	}
	cfg := fabric.MasterConfig{NATS: natsConfig(c.url), Listen: "127.0.0.1:0", Grants: grants(t, cc.permissions), Timing: timing, Log: logConfig()}
	if cc.metrics {
		cfg.MetricsAddr = "127.0.0.1:0"
	}
	c.master = startMasterConfig(t, cfg, append(slices.Clone(cc.opts), cc.masterOpts...)...)
	slaveOpts := append(slices.Clone(cc.opts), cc.slaveOpts...)
	c.slave1 = startSlave(t, c.url, 1, "11:alpha,12:beta", slaveOpts...)
	c.slave2 = startSlave(t, c.url, 2, "21:gamma", slaveOpts...)
	waitSlaves(t, c.master, waitLong, 1, 2)
	c.alice, c.aliceOut = dialControl(t, c.url, "alice", cc.opts...)
	c.bob, c.bobOut = dialControl(t, c.url, "bob", cc.opts...)
	// Each control's first message opens its session with the master.
	for _, ctl := range []*fabric.Control{c.alice, c.bob} {
		request(t, ctl.Link(), messages.Ping, messages.Empty{})
	}
	return c
}

// start starts instances through alice and waits until the master lists
// them running.
func (c *cluster) start(t *testing.T, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		request(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: id})
	}
	for _, id := range ids {
		waitStatus(t, c.alice.Link(), id, messages.StatusRunning)
	}
}

// command runs a command on an instance through alice.
func (c *cluster) command(t *testing.T, id int64, cmd string) string {
	t.Helper()
	return request(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: id, Command: cmd}).Output
}

// chatLine is the payload of the test's global_chat:chat plugin event.
type chatLine struct {
	From string `json:"from" schema:"minLength=1,maxLength=128"`
	Text string `json:"text" schema:"minLength=1,maxLength=1024"`
}

// newChatPlugin defines Clusterio's global_chat:chat: an instance's chat
// line goes to its slave, which passes it to its other instances and to the
// master, which broadcasts it to every slave and so every instance.
func newChatPlugin(t *testing.T) (*messages.Event[chatLine], messages.Plugin) {
	t.Helper()
	chat, err := messages.NewEvent[chatLine](messages.Spec{
		Name:        "global_chat:chat",
		Description: "A chat line from one instance, for every other instance.",
		Links:       []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster, messages.MasterToSlave, messages.SlaveToInstance},
		ForwardTo:   messages.Master,
		BroadcastTo: messages.Instance,
	})
	if err != nil {
		t.Fatalf("define global_chat:chat: %v", err)
	}
	return chat, messages.Plugin{Name: "global_chat", Messages: []messages.Message{chat}}
}

// probes makes probe instances, which record what reaches them, and
// optionally run a hook for send_command.
type probes struct {
	chat *messages.Event[chatLine] // nil: no chat plugin

	mu       sync.Mutex
	received map[int64][]string
	onCmd    func(ctx context.Context, id int64, c messages.Command) (messages.CommandResult, error)
}

func newProbes(chat *messages.Event[chatLine]) *probes {
	return &probes{chat: chat, received: map[int64][]string{}}
}

func (p *probes) factory(id int64, name string) fabric.Instance {
	return &probe{id: id, name: name, p: p}
}

func (p *probes) setCommandHook(h func(ctx context.Context, id int64, c messages.Command) (messages.CommandResult, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onCmd = h
}

func (p *probes) record(id int64, what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.received[id] = append(p.received[id], what)
}

// of returns what instance id received whose record starts with prefix.
func (p *probes) of(id int64, prefix string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.received[id] {
		if strings.HasPrefix(r, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// has reports an error unless instance id received what.
func (p *probes) has(id int64, what string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.received[id], what) {
		return fmt.Errorf("instance %d did not receive %q; it has %q", id, what, p.received[id])
	}
	return nil
}

// probe is an instance that records every start, stop, ban, chat line,
// master connection event and prepare_master_disconnect it receives, and
// the end of its link. Its commands: "/chat TEXT" sends a
// chat line, "/say TEXT" prints TEXT, "/join NAME" reports a player.
type probe struct {
	id   int64
	name string
	p    *probes
}

func (pr *probe) Attach(l *link.Link) {
	link.HandleRequest(l, messages.StartInstance, func(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
		pr.p.record(pr.id, "start")
		return messages.Empty{}, link.Emit(ctx, l, messages.InstanceStarted, messages.InstanceRef{InstanceID: pr.id})
	})
	link.HandleRequest(l, messages.StopInstance, func(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
		pr.p.record(pr.id, "stop")
		return messages.Empty{}, link.Emit(ctx, l, messages.InstanceStopped, messages.InstanceRef{InstanceID: pr.id})
	})
	link.HandleRequest(l, messages.SendCommand, func(ctx context.Context, c messages.Command) (messages.CommandResult, error) {
		pr.p.mu.Lock()
		hook := pr.p.onCmd
		pr.p.mu.Unlock()
		if hook != nil {
			return hook(ctx, pr.id, c)
		}
		verb, arg, _ := strings.Cut(c.Command, " ")
		var err error
		switch verb {
		case "/chat":
			err = link.Emit(ctx, l, pr.p.chat, chatLine{From: pr.name, Text: arg})
		case "/say":
			err = link.Emit(ctx, l, messages.InstanceOutput, messages.OutputLine{InstanceID: pr.id, Time: time.Now().UnixMilli(), Level: "info", Message: arg})
		case "/join":
			err = link.Emit(ctx, l, messages.PlayerEvent, messages.PlayerActivity{InstanceID: pr.id, Type: "join", Name: arg})
		default:
			err = fmt.Errorf("probe: unknown command %q", c.Command)
		}
		return messages.CommandResult{Output: "ok"}, err
	})
	link.HandleEvent(l, messages.BanlistUpdate, func(_ context.Context, b messages.Ban) error {
		pr.p.record(pr.id, "ban:"+b.Name)
		return nil
	})
	link.HandleEvent(l, messages.MasterConnectionEvent, func(_ context.Context, ev messages.ConnectionEvent) error {
		pr.p.record(pr.id, "conn:"+ev.Event)
		return nil
	})
	link.HandleRequest(l, messages.PrepareMasterDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) {
		pr.p.record(pr.id, "prepare_master_disconnect")
		return messages.Empty{}, nil
	})
	go func() {
		<-l.Done()
		pr.p.record(pr.id, "link closed")
	}()
	if pr.p.chat != nil {
		link.HandleEvent(l, pr.p.chat, func(_ context.Context, line chatLine) error {
			pr.p.record(pr.id, "chat:"+line.Text)
			return nil
		})
	}
}

// banBarrier bans a player named name through alice and waits until every
// instance in ids has received the ban. The master publishes the ban after
// everything it has broadcast before, and each hop keeps the order, so once
// an instance has the ban it has everything broadcast before it too.
func (c *cluster) banBarrier(t *testing.T, p *probes, name string, ids ...int64) {
	t.Helper()
	request(t, c.alice.Link(), messages.SetPlayerBanned, messages.Ban{Name: name, Banned: true, Reason: "barrier"})
	for _, id := range ids {
		testkit.Eventually(t, waitLong, "ban "+name+" reaches instance", func() error { return p.has(id, "ban:"+name) })
	}
}

// logRecords is a slog.Handler that keeps every record, for assertions on
// what an endpoint reports only in its log.
type logRecords struct {
	mu      *sync.Mutex
	records *[]slog.Record
	attrs   []slog.Attr
}

func newLogRecords() *logRecords { return &logRecords{mu: &sync.Mutex{}, records: &[]slog.Record{}} }

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.records = append(*h.records, r)
	return nil
}

func (h *logRecords) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecords{mu: h.mu, records: h.records, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h *logRecords) WithGroup(string) slog.Handler { return h }

// reset forgets the records kept so far: a test that measures the heap
// measures the endpoints', not what this handler keeps of their logs.
func (h *logRecords) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.records = nil
}

// find returns the attributes (as text) of every record with message msg.
func (h *logRecords) find(msg string) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range *h.records {
		if r.Message != msg {
			continue
		}
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// serveFromEnv is the body of a helper child process (TestHelperMasterProcess,
// TestHelperSlaveProcess): it loads its configuration from the environment,
// starts what start starts, and serves until its standard input closes (the
// parent closed it or died), at most 30s; then it closes it and exits 0. It
// never returns: it exits 2 if the configuration or the start fails.
func serveFromEnv[C any, P interface{ Close(context.Context) error }](load func(environ []string) (C, error), start func(context.Context, C) (P, error)) {
	cfg, err := load(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := start(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it or dies
	_ = p.Close(ctx)
	os.Exit(0)
}
