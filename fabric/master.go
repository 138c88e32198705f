package fabric

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkfabric/linkfabric/console"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Master is a master process. Of the masters of a cluster (the processes
// on the same NATS servers and subject prefix), one is active: it accepts
// slaves and controls, keeps the cluster view, routes messages forwarded
// to instances, relays instance output to the controls that follow it,
// and broadcasts. The others stand by: they subscribe to nothing of the
// master's, answer nothing, and take over when the active master's lease
// lapses (lease.go). What the master is told that must outlive it
// (instances, their names, ids and assignments, slaves, bans) lives in a
// JetStream key-value bucket (store.go), written before the request that
// changed it is answered.
//
// Each time a master becomes active it begins a new term, a number that
// grows with each, which its session on the fabric carries
// ("m<term>x<random>"): slaves and controls ignore a master whose term is
// older than the newest they have seen.
type Master struct {
	cfg       MasterConfig
	log       *slog.Logger
	catalog   *messages.Catalog
	perms     Grants       // a copy of cfg.Grants
	broker    *Broker      // nil when NATS is external
	local     *Broker      // reached in-process: the embedded broker, or WithLocalBroker's
	url       string       // the NATS servers
	nc        *natsgo.Conn // JetStream: the state and the lease
	store     *store
	lease     *lease
	self      memberRecord
	metrics   *metrics
	claims    *claims
	httpSrv   *http.Server      // serves metrics; nil when not asked for
	consoleLn net.Listener      // the web console's; nil when not asked for
	console   *http.Server      // serves the web console on consoleLn
	handlers  handlerSet        // the plugins' (WithHandlers)
	authorize ControlAuthorizer // WithControlAuthorizer's; may be nil
	topics    map[string]topic  // the update events controls may subscribe to

	// published is what the plugins published (Publish), by event and
	// key; nil values are deleted keys. Each term begins with it.
	pubMu     sync.Mutex
	published map[string]map[string]json.RawMessage

	started time.Time     // when the process started the master
	stop    chan struct{} // closed by Close: stop standing by, or serving
	done    chan struct{} // closed when run returns
	// routines are the goroutines the master starts: run, the metrics
	// server, and the aborts of terms that ended; Close waits for them.
	routines routines

	mu      sync.Mutex
	cur     *activeMaster // nil while standing by
	changed chan struct{} // closed, and replaced, whenever cur changes
	closing bool
}

// StartMaster starts a master process. With no NATS URL configured it
// first starts an embedded NATS server on cfg.Listen, with JetStream in
// cfg.DataDir. It opens the master's state on JetStream (a server without
// JetStream is refused with an error that matches ErrConfig), and then
// tries once to become the active master: it returns either active,
// accepting slaves and controls, or standing by, taking over on its own
// when the active master's lease lapses (Active, WaitActive). Close stops
// it.
func StartMaster(ctx context.Context, cfg MasterConfig, opts ...Option) (*Master, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	catalog, err := messages.NewCatalog(o.plugins...)
	if err != nil {
		return nil, err
	}
	topics, err := buildTopics(catalog, o.subscribable)
	if err != nil {
		return nil, err
	}
	perms := cfg.Grants.clone()
	if unknown := unknownGrants(perms, catalog, topics); len(unknown) > 0 {
		return nil, fmt.Errorf("%w: FABRIC_CONTROL_PERMISSIONS=%q: %s grants nothing: no message needs such a permission (fabric messages lists them)",
			ErrConfig, perms.String(), strings.Join(unknown, ", "))
	}
	host, _ := os.Hostname()
	p := &Master{
		cfg:       cfg,
		log:       limitLogs(o.logger).With("endpoint", "master"),
		catalog:   catalog,
		perms:     perms,
		metrics:   newMetrics(catalog),
		handlers:  o.handlers,
		authorize: o.authorize,
		topics:    topics,
		published: map[string]map[string]json.RawMessage{},
		started:   time.Now(),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
		self:      memberRecord{ID: randomHex(8), Name: fmt.Sprintf("%s/%d", host, os.Getpid()), Version: Version},
	}
	p.claims = newClaims(p.log, p.metrics)
	p.registerGauges()
	p.metrics.ready = p.readiness
	if err := p.checkWiring(); err != nil {
		return nil, err
	}
	p.local = o.broker
	fail := func(err error) (*Master, error) {
		if p.nc != nil {
			p.nc.Close()
		}
		if p.broker != nil {
			p.broker.Close()
		}
		_ = stopServing(context.Background(), p.httpSrv)
		_ = stopServing(context.Background(), p.console)
		if p.consoleLn != nil {
			_ = p.consoleLn.Close()
		}
		return nil, err
	}
	if cfg.Console.Addr != "" {
		// Listening first tells the embedded broker the page's origin.
		if p.consoleLn, err = net.Listen("tcp", cfg.Console.Addr); err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%w: FABRIC_CONSOLE_ADDR=%q: address already in use: another process listens there; pick a free port", ErrConfig, cfg.Console.Addr)
			}
			return nil, fmt.Errorf("fabric: console on %s: %w", cfg.Console.Addr, err)
		}
	}
	if err := p.embedBroker(); err != nil {
		return fail(err)
	}
	if err := p.openState(ctx); err != nil {
		return fail(err)
	}
	if cfg.MetricsAddr != "" {
		if p.httpSrv, err = p.metrics.serve(cfg.MetricsAddr, p.log, &p.routines); err != nil {
			return fail(err)
		}
	}
	if err := p.serveConsole(); err != nil {
		return fail(err)
	}
	won, err := p.takeLease(ctx)
	if err != nil {
		return fail(err)
	}
	if won {
		if err := p.activate(ctx); err != nil {
			_ = p.lease.release(context.Background())
			return fail(err)
		}
	} else {
		p.log.Info("standing by: another master is active", "lease", p.lease.ttl)
	}
	p.routines.start(func() { p.run(won) })
	return p, nil
}

// takeLease is the first try to take the lease: JetStream may be slow to
// answer a just-opened bucket (on a loaded machine, past a single try's
// timeout), so a try that cannot tell is made again, as a standby's
// would be, within as long as activating may take.
func (p *Master) takeLease(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*p.store.timeout)
	defer cancel()
	for {
		won, err := p.lease.acquire(ctx)
		if err == nil || ctx.Err() != nil {
			return won, err
		}
		p.log.Debug("could not take the lease yet; trying again", "error", err)
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(p.lease.pollEvery()):
		}
	}
}

// checkWiring refuses now a catalog with messages the master could not
// handle, rather than every slave or control that connects.
func (p *Master) checkWiring() error {
	probe := &activeMaster{Master: p, log: p.log}
	if err := checkWiring(p.catalog, link.MasterAddress, link.Address{Type: messages.Slave, ID: "1"}, func(l *link.Link) { probe.wireSlave(l, 1, nil) }); err != nil {
		return err
	}
	return checkWiring(p.catalog, link.MasterAddress, link.Address{Type: messages.Control, ID: "check"}, func(l *link.Link) {
		probe.wireControl(l, newControlState("check", nil))
	})
}

// embedBroker starts the embedded NATS server when no NATS URL is
// configured, and makes it the master's.
func (p *Master) embedBroker() error {
	p.url = p.cfg.NATS.URL
	if p.url != "" {
		return nil
	}
	var opts []BrokerOption
	if ws := p.cfg.Console.WSListen; ws != "" || p.consoleLn != nil {
		if ws == "" {
			host, _, _ := net.SplitHostPort(p.cfg.Listen)
			ws = net.JoinHostPort(host, "0")
		}
		opts = append(opts, WithWebSocket(ws, p.consoleOrigins()...))
	}
	var err error
	if p.broker, err = StartBroker(p.cfg.Listen, p.cfg.DataDir, opts...); err != nil {
		switch {
		case errors.Is(err, errWebSocketListen) && errors.Is(err, syscall.EADDRINUSE):
			return fmt.Errorf("%w: FABRIC_NATS_WS_LISTEN=%q: address already in use: another process listens there; pick a free port (0 for any)", ErrConfig, p.cfg.Console.WSListen)
		case errors.Is(err, syscall.EADDRINUSE):
			return fmt.Errorf("%w: FABRIC_NATS_LISTEN=%q: address already in use: another process listens there. If it is another master, set FABRIC_NATS_URL=nats://%s to run this one as its standby; otherwise pick a free port (0 for any), or set FABRIC_NATS_URL to use a NATS server that runs already", ErrConfig, p.cfg.Listen, p.cfg.Listen)
		}
		return err
	}
	p.local = p.broker
	p.url = p.broker.ClientURL()
	p.log.Info("embedded NATS server started", "url", p.url, "data", p.cfg.DataDir)
	return nil
}

// consoleOrigins returns the origins of the console's page, which the
// embedded broker accepts WebSocket clients from: its listener's address,
// and localhost's for a loopback one. A console on every interface is
// given its loopback origins (where ConsoleURL points): the broker's
// WebSocket listener is on loopback, so only a browser on this machine
// can use it anyway, and no check at all would let every web site the
// user visits drive the cluster. None (no check) when the console is off.
func (p *Master) consoleOrigins() []string {
	if p.consoleLn == nil {
		return nil
	}
	addr := p.consoleLn.Addr().(*net.TCPAddr)
	port := strconv.Itoa(addr.Port)
	if addr.IP.IsUnspecified() {
		return []string{"http://" + net.JoinHostPort("127.0.0.1", port), "http://" + net.JoinHostPort("::1", port), "http://" + net.JoinHostPort("localhost", port)}
	}
	origins := []string{"http://" + net.JoinHostPort(addr.IP.String(), port)}
	if addr.IP.IsLoopback() {
		origins = append(origins, "http://"+net.JoinHostPort("localhost", port))
	}
	return origins
}

// serveConsole serves the web console on its listener, if there is one:
// the page, told to connect to FABRIC_CONSOLE_NATS_URL or to the embedded
// broker's WebSocket listener.
func (p *Master) serveConsole() error {
	if p.consoleLn == nil {
		return nil
	}
	servers := p.cfg.Console.servers()
	if len(servers) == 0 {
		servers = []string{p.broker.WebSocketURL()}
	}
	h, err := console.Handler(console.Config{Servers: servers, Prefix: p.cfg.NATS.Prefix, Version: Version})
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ln := p.consoleLn
	if !p.routines.start(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("console server stopped", "error", err)
		}
	}) {
		return errors.New("fabric: console: the master is closing")
	}
	p.console = srv
	p.log.Info("serving the web console", "url", p.ConsoleURL(), "nats", strings.Join(servers, ","))
	return nil
}

// ConsoleURL returns the web console's URL, such as http://127.0.0.1:4280/,
// or "" if the master serves none (FABRIC_CONSOLE_ADDR).
func (p *Master) ConsoleURL() string {
	if p.consoleLn == nil {
		return ""
	}
	addr := p.consoleLn.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port)) + "/"
}

// openState connects to NATS for JetStream and opens the state and lease
// buckets.
func (p *Master) openState(ctx context.Context) error {
	nc, err := connectJetStream(ctx, p.cfg.NATS, p.url, p.log)
	if err != nil {
		return err
	}
	p.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	timeout := max(p.cfg.lease()/2, 2*time.Second)
	// A NATS cluster that has just started, or lost a node, may take some
	// seconds to elect the leaders JetStream answers through: try again
	// for a while before giving up.
	actx, cancel := context.WithTimeout(ctx, jetStreamPatience)
	defer cancel()
	for {
		err = p.openBuckets(actx, js, timeout)
		if err == nil || errors.Is(err, ErrConfig) || actx.Err() != nil ||
			errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			break
		}
		p.log.Debug("JetStream not ready; trying again", "error", err)
		select {
		case <-actx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("%w: FABRIC_NATS_URL=%q: the NATS server does not run JetStream, where the master keeps its state: enable it (a jetstream { store_dir: ... } block, see deploy/nats), or leave FABRIC_NATS_URL empty for the embedded server", ErrConfig, p.url)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, natsgo.ErrTimeout):
		return fmt.Errorf("fabric: the NATS servers did not answer the master's JetStream requests (do the master's credentials allow JetStream? fabric nats-config gives them what the master needs): %w", err)
	}
	return err
}

// jetStreamPatience bounds how long a master waits at start for JetStream
// to answer.
const jetStreamPatience = 15 * time.Second

// openBuckets checks that the servers run JetStream and opens the state
// and lease buckets, each call bounded by timeout.
func (p *Master) openBuckets(ctx context.Context, js jetstream.JetStream, timeout time.Duration) error {
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := js.AccountInfo(ictx); err != nil {
		return err
	}
	var err error
	if p.store == nil {
		if p.store, err = openStore(ictx, js, p.cfg.NATS.Prefix, p.cfg.replicas(), timeout); err != nil {
			return err
		}
	}
	p.lease, err = openLease(ictx, js, p.cfg.NATS.Prefix, p.cfg.replicas(), p.cfg.lease(), p.self)
	return err
}

// run stands by, serves each term it wins, and stands by again when one
// ends, until Close. active says whether StartMaster began a term.
func (p *Master) run(active bool) {
	defer close(p.done)
	for {
		held := false
		if active {
			held = p.serve(p.current())
		}
		if held && p.isClosing() {
			_ = p.lease.release(context.Background())
			return
		}
		if !held && !p.standBy() {
			return
		}
		if err := p.activate(context.Background()); err != nil {
			p.log.Error("could not begin a term; standing by", "error", err)
			p.lease.drop()
			active = false
			continue
		}
		active = true
	}
}

// standBy waits until this master holds the lease, keeping its presence
// as a standby meanwhile. It returns false if the master is closing.
func (p *Master) standBy() bool {
	poll := time.NewTicker(p.lease.pollEvery())
	defer poll.Stop()
	var presence time.Time
	logged := false
	for {
		if p.isClosing() {
			return false
		}
		if time.Since(presence) >= p.lease.renewEvery() {
			if err := p.lease.standBy(context.Background()); err != nil {
				p.log.Debug("could not renew the standby's presence", "error", err)
			} else {
				presence = time.Now()
			}
		}
		won, err := p.lease.acquire(context.Background())
		switch {
		case err != nil && !logged:
			p.log.Warn("standing by: cannot reach the lease", "error", err)
			logged = true
		case won:
			if p.isClosing() {
				_ = p.lease.release(context.Background())
				return false
			}
			p.lease.leave(context.Background())
			return true
		}
		select {
		case <-p.stop:
			return false
		case <-poll.C:
		}
	}
}

// activate begins a new term with the lease held: it claims the term in
// the state bucket, reads the state, starts the Node, and announces
// itself to slaves and controls.
func (p *Master) activate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*p.store.timeout)
	defer cancel()
	snap, err := p.store.claim(ctx, p.self.ID)
	if err != nil {
		return err
	}
	if err := p.lease.renew(ctx, snap.term); err != nil {
		return err
	}
	logged := []any{"instances", len(snap.instances), "slaves_known", len(snap.slaves), "bans", len(snap.bans), "nats", p.url}
	m := newActiveMaster(p, snap)
	if err := m.reserveStamps(ctx); err != nil {
		return err
	}
	session := "m" + strconv.FormatUint(snap.term, 10) + "x" + randomHex(4)
	node, err := connect(ctx, link.MasterAddress, p.cfg.NATS, p.url, m.log, role{
		accept: m.accept, unique: true, sessionTimeout: p.cfg.Timing.SessionTimeout,
		session: session, gate: m.gate, local: p.local, maxSessions: p.cfg.maxPeerSessions(),
	})
	if err != nil {
		return err
	}
	m.node, m.fan = node, node
	m.bcast, err = link.NewBroadcaster(node, link.MasterAddress, messages.Slave, p.catalog)
	close(m.wired)
	if err != nil {
		_ = node.Close()
		return err
	}
	m.start()
	p.adoptPublished(m) // and makes it current
	for _, to := range []messages.Endpoint{messages.Slave, messages.Control} {
		if err := m.node.Announce(ctx, to); err != nil {
			m.log.Warn("could not announce the new term", "to", to.String(), "error", err)
		}
	}
	m.log.Info("active master", logged...)
	return nil
}

// serve renews the lease of term m until the term ends (the lease
// lapsed and another master took it, another master wrote the state) or
// the master closes. It reports whether this master holds the lease when
// the term ends: it lapsed while JetStream could not be reached (a
// leader election on a NATS cluster takes seconds), this master took it
// again, but the state changed meanwhile, so a new term must begin.
//
// A lease that lapsed and was taken again by this master, with the state
// as this term left it, means no other master has been active: the term
// goes on, its links and sessions intact. Meanwhile the gate was closed,
// and peers sent again what went unanswered.
func (p *Master) serve(m *activeMaster) (held bool) {
	if m == nil {
		return false
	}
	t := time.NewTicker(p.lease.renewEvery())
	defer t.Stop()
	warned := false
	for {
		select {
		case <-p.stop:
			return false
		case <-m.lost:
			p.stepDown(m, held)
			return held
		case <-t.C:
		}
		err := p.lease.renew(context.Background(), m.term)
		switch {
		case err == nil:
			if warned {
				p.log.Info("lease renewed again")
			}
			warned = false
			continue
		case !errors.Is(err, errLeaseLost):
			if !warned {
				p.log.Warn("could not renew the lease; acting only while it certainly holds", "error", err)
				warned = true
			}
			continue
		}
		won, err := p.lease.acquire(context.Background())
		switch {
		case err != nil:
			// Cannot tell yet: the gate stays closed, and the next tick
			// tries again.
		case !won:
			m.lose(errLeaseLost) // another master holds it
		case p.store.resumable(context.Background(), m.term):
			p.log.Warn("the lease lapsed while JetStream could not be reached; no other master took over, so this term goes on", "term", m.term)
			if err := p.lease.renew(context.Background(), m.term); err != nil {
				p.log.Debug("could not note the term in the lease", "error", err)
			}
		default:
			held = true
			m.lose(errLeaseLost)
		}
	}
}

// stepDown ends term m without a word to anyone: another master may be
// active already. The lease is forgotten unless held says this master
// holds it again.
func (p *Master) stepDown(m *activeMaster, held bool) {
	p.log.Warn("stepping down: this master's term has ended", "term", m.term, "reason", m.lostWhy)
	if !held {
		p.lease.drop()
	}
	p.setCurrent(nil)
	// The term's links and Node close on a goroutine of the master's, so
	// that run stands by at once; a master that is closing waits for it.
	if !p.routines.start(m.abort) {
		m.abort()
	}
}

func (p *Master) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

func (p *Master) current() *activeMaster {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

func (p *Master) setCurrent(m *activeMaster) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = m
	close(p.changed)
	p.changed = make(chan struct{})
}

// Active reports whether this master is the active one.
func (p *Master) Active() bool { return p.current() != nil }

// Term returns the term this master is active in, or 0 while it stands by.
func (p *Master) Term() uint64 {
	if m := p.current(); m != nil {
		return m.term
	}
	return 0
}

// WaitActive waits until this master is the active one, or ctx ends.
func (p *Master) WaitActive(ctx context.Context) error {
	for {
		p.mu.Lock()
		active, changed := p.cur != nil, p.changed
		p.mu.Unlock()
		if active {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return errors.New("fabric: the master has stopped")
		}
	}
}

// MetricsAddr returns where metrics are served (host:port), or "".
func (p *Master) MetricsAddr() string {
	if p.httpSrv == nil {
		return ""
	}
	return p.httpSrv.Addr
}

// NATSURL returns the URL of the NATS server the master uses: the embedded
// one's, or the one it is connected to.
func (p *Master) NATSURL() string {
	if p.broker != nil {
		return p.broker.ClientURL()
	}
	return p.nc.ConnectedUrlRedacted()
}

// Catalog returns the master's message catalog.
func (p *Master) Catalog() *messages.Catalog { return p.catalog }

// Slaves returns the active master's view of the slaves, sorted by id; nil
// while this master stands by.
func (p *Master) Slaves() []messages.SlaveInfo {
	if m := p.current(); m != nil {
		return m.slaveList()
	}
	return nil
}

// Instances returns the active master's view of the instances, sorted by
// id; nil while this master stands by.
func (p *Master) Instances() []messages.InstanceInfo {
	if m := p.current(); m != nil {
		return m.instanceList()
	}
	return nil
}

// SlaveLink returns the link slave id registered on, or nil while it has
// no session (or this master stands by). The link stays the slave's while
// the slave is silent within the session timeout: what is sent on it then
// reaches the slave when it is back. Plugins send the slave events of
// their own on it.
func (p *Master) SlaveLink(id int64) *link.Link {
	if m := p.current(); m != nil {
		return m.slaveLink(id)
	}
	return nil
}

func (p *Master) registerGauges() {
	p.metrics.gauge("linkfabric_requests_pending", "Requests this endpoint sent that wait for a response.", func() float64 {
		if m := p.current(); m != nil {
			return float64(m.pending())
		}
		return 0
	})
	p.metrics.gauge("linkfabric_slaves_connected", "Slaves connected to the master.", func() float64 {
		n := 0
		for _, s := range p.Slaves() {
			if s.Connected {
				n++
			}
		}
		return float64(n)
	})
	p.metrics.gauge("linkfabric_controls_connected", "Controls connected to the master.", func() float64 {
		if m := p.current(); m != nil {
			return float64(m.controlCount())
		}
		return 0
	})
	p.metrics.gauge("linkfabric_cluster_instances", "Instances the master knows, on every slave or none.", func() float64 {
		return float64(len(p.Instances()))
	})
	p.metrics.gauge("linkfabric_cluster_instances_running", "Instances running on connected slaves, as the master knows.", func() float64 {
		n := 0
		for _, i := range p.Instances() {
			if i.Status == messages.StatusRunning {
				n++
			}
		}
		return float64(n)
	})
	p.metrics.gauge("linkfabric_master_active", "1 while this master is the active one, 0 while it stands by.", func() float64 {
		if p.Active() {
			return 1
		}
		return 0
	})
	p.metrics.gauge("linkfabric_master_term", "The term this master is active in; 0 while it stands by.", func() float64 {
		return float64(p.Term())
	})
}

// readiness says why the master cannot serve (nil: it can), for /readyz. A
// master that stands by is ready: it is doing its work, which is to take
// over when the active one stops.
func (p *Master) readiness() error {
	if p.isClosing() {
		return errors.New("the master is shutting down")
	}
	if m := p.current(); m != nil {
		if !m.node.Connected() {
			return errors.New("not connected to NATS")
		}
		return nil
	}
	if !p.nc.IsConnected() {
		return errors.New("standing by, and not connected to NATS")
	}
	return nil
}

// status answers get_cluster_status for the term m: the master itself,
// the masters that stand by (read from the lease bucket: a JetStream
// round trip or two), every slave with its version and when the master
// last heard from it (sorted by id), and every instance (as Instances).
func (p *Master) status(ctx context.Context, m *activeMaster) (messages.ClusterStatus, error) {
	now := time.Now()
	self := p.lease.me()
	self.Term = m.term
	st := messages.ClusterStatus{
		Master: messages.MasterStatus{
			MasterInfo: self.info(),
			Commit:     Commit(),
			Started:    p.started.UnixMilli(),
			UptimeMS:   now.Sub(p.started).Milliseconds(),
		},
		Standbys: []messages.MasterInfo{},
	}
	if st.Master.Commit == "unknown" {
		st.Master.Commit = ""
	}
	select {
	case <-m.ready:
	default:
		st.Master.Starting = true
	}
	// The standbys are in the lease bucket: a status that JetStream cannot
	// complete (a leader election) still says all the rest.
	if _, standbys, err := p.lease.members(ctx); err != nil {
		p.log.Debug("could not read the standbys", "error", err)
		st.StandbysUnknown = "JetStream did not answer in time"
	} else {
		for _, r := range standbys {
			st.Standbys = append(st.Standbys, r.info())
		}
	}
	st.Slaves = m.slaveStatus(now)
	st.Instances = m.instanceList()
	return st, nil
}

// Status returns the active master's whole view (see get_cluster_status):
// itself, the masters that stand by, every slave and every instance. It
// fails with link.ErrUnavailable while this master stands by.
func (p *Master) Status(ctx context.Context) (messages.ClusterStatus, error) {
	m := p.current()
	if m == nil {
		return messages.ClusterStatus{}, link.Errorf(link.CodeUnavailable, "this master stands by: ask the active one")
	}
	return p.status(ctx, m)
}

// Close shuts the master down gracefully. An active master tells each
// slave and control (prepare_disconnect), lets their in-flight requests
// end within ctx, and gives its lease up, so that a standby takes over
// at once; a standby withdraws. Then the NATS connections close and the
// embedded server, if any, stops. Close is idempotent.
func (p *Master) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closing = true
	m := p.cur
	p.mu.Unlock()
	var errs []error
	if m != nil {
		// The lease is renewed meanwhile: run serves until stop.
		errs = append(errs, m.shutdown(ctx))
	}
	close(p.stop)
	<-p.done
	if late := p.current(); late != nil && late != m {
		// A term that began while the master was closing.
		errs = append(errs, late.shutdown(ctx))
	}
	p.setCurrent(nil)
	// run has returned, so nothing starts a goroutine now but the metrics
	// server, which has its own: shut it, and wait for all of them (the
	// aborts of terms that ended) before the lease and NATS go.
	errs = append(errs, stopServing(ctx, p.httpSrv), stopServing(ctx, p.console))
	p.routines.stop()
	if err := p.lease.release(ctx); err != nil {
		p.log.Warn("could not give the lease up; a standby takes over when it expires", "error", err)
	}
	p.lease.leave(ctx)
	p.nc.Close()
	if p.broker != nil {
		p.broker.Close()
	}
	p.log.Info("master stopped")
	return errors.Join(errs...)
}

// masterTerm is the lfnats.EpochFunc of slaves and controls: the term in
// a master's session, "m<term>x<random>", and 0 for any other session
// (a master of an older version, or not the master).
func masterTerm(peer link.Address, session string) uint64 {
	if peer != link.MasterAddress {
		return 0
	}
	rest, ok := strings.CutPrefix(session, "m")
	if !ok {
		return 0
	}
	n, _, ok := strings.Cut(rest, "x")
	if !ok {
		return 0
	}
	term, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0
	}
	return term
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Broker returns the NATS server the master embeds, or nil when it uses
// an external one. Endpoints started in the same process can reach it
// in-process (WithLocalBroker).
func (p *Master) Broker() *Broker { return p.broker }
