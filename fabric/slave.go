package fabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Version is the fabric's version, reported by slaves when they register.
const Version = "0.1.0"

// Slave hosts instances and joins them to the cluster: it registers with
// the master (again whenever the master restarts), joins each running
// instance with a virtual link, forwards what the master sends an instance
// and what an instance sends the master, and passes broadcasts on to its
// instances.
type Slave struct {
	cfg      SlaveConfig
	self     link.Address
	log      *slog.Logger
	catalog  *messages.Catalog
	factory  InstanceFactory
	plugins  []string   // the names of its plugins, told to the master
	handlers handlerSet // the plugins' (WithHandlers)
	node     transport
	metrics  *metrics
	httpSrv  *http.Server // serves metrics; nil when not asked for

	stop chan struct{}
	// life ends when Close begins, as stop is closed: it bounds the
	// registrations run makes.
	life    context.Context
	endLife context.CancelFunc
	// routines are the goroutines the slave starts: run and the metrics
	// server. Close waits for them.
	routines routines

	mu         sync.Mutex
	closing    bool
	master     *link.Link // nil while not registered
	masterConn session    // master's connector
	// The master is shutting down (it sent prepare_disconnect): what the
	// instances send it waits in outbox for its next session, rather than
	// arrive while it closes its links.
	leaving   bool
	instances map[int64]*hosted
	// direct holds the links this slave dialed to other slaves (direct.go).
	direct   map[int64]*directEnd
	accepted map[*link.Link]*directEnd
	// While the slave has no session with a master, what its instances send
	// the master waits here, and in the connector of the session that ended
	// (events it never had acknowledged), for the next session, for up to
	// the session timeout.
	outbox       []*link.Envelope
	lastConn     session
	masterLostAt time.Time
	// When the master last answered on the current session (masterHeard)
	// and on the one that ended (lastHeard): a heartbeat, the
	// registration, or prepare_disconnect. A session is over once the
	// master has been silent on it for the session timeout, and what it
	// owed the master is then not passed on to the next. Only answers
	// count: an event may have been sent long before it arrives.
	masterHeard time.Time
	lastHeard   time.Time
	// The bans in force, as the master last said (its welcome, and the
	// bans it broadcast since): given to every instance the slave starts.
	bans map[string]messages.Ban
	// hooks hold a registration at its steps, for the package's tests
	// (export_test.go); nil otherwise.
	hooks *registrationHooks
}

// registrationHooks are called by connectMaster: welcomed once the
// master's welcome has arrived on l, before it is applied; applied once it
// has been.
type registrationHooks struct {
	welcomed, applied func(l *link.Link)
}

// maxOutbox bounds the events kept for a master that is away.
const maxOutbox = 65536

// hosted is one instance of the slave; toInstance is set while it runs.
type hosted struct {
	id         int64
	name       string
	status     string
	program    *messages.Program // nil: made by the slave's InstanceFactory
	toInstance *link.Link        // the slave's side of the virtual link
	instance   *link.Link        // the instance's side
	made       Instance          // what runs on the instance's side
}

// ErrAlreadyConnected is matched by the error StartSlave returns when the
// master refuses the slave's id because another process holds it.
var ErrAlreadyConnected = &link.Error{Code: CodeAlreadyConnected, Message: "slave id already connected"}

// StartSlave starts a slave: it connects to NATS and registers with the
// master. If the master is unreachable it keeps trying in the background
// and returns; if the master refuses it (its id is connected from another
// process) it returns that error. Close stops it.
func StartSlave(ctx context.Context, cfg SlaveConfig, opts ...Option) (*Slave, error) {
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
	s := &Slave{
		cfg:       cfg,
		self:      link.Address{Type: messages.Slave, ID: strconv.FormatInt(cfg.ID, 10)},
		catalog:   catalog,
		factory:   o.instances,
		plugins:   pluginNames(o.plugins),
		handlers:  o.handlers,
		stop:      make(chan struct{}),
		instances: map[int64]*hosted{},
		direct:    map[int64]*directEnd{},
		accepted:  map[*link.Link]*directEnd{},
		metrics:   newMetrics(catalog),
		bans:      map[string]messages.Ban{},
	}
	s.log = limitLogs(o.logger).With("endpoint", s.self.String())
	s.registerGauges()
	s.metrics.ready = func() error {
		if !s.Connected() {
			return errors.New("not registered with the master")
		}
		return nil
	}
	if err := checkWiring(catalog, s.self, link.MasterAddress, func(l *link.Link) { s.wireMaster(l, nil) }); err != nil {
		return nil, err
	}
	if err := checkWiring(catalog, s.self, link.Address{Type: messages.Instance, ID: "1"}, func(l *link.Link) { s.wireInstance(l, 1) }); err != nil {
		return nil, err
	}
	if len(catalog.On(messages.SlaveToSlave)) > 0 {
		if err := checkWiring(catalog, s.self, link.SlaveAddress(cfg.ID+1), s.wireSlave); err != nil {
			return nil, err
		}
	}
	for _, h := range cfg.Instances {
		s.instances[h.ID] = &hosted{id: h.ID, name: h.Name, status: messages.StatusStopped}
	}
	url := cfg.NATS.URL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	// A master of an older term than one heard from is ignored (see
	// Master): its links end, and the slave registers with the newer.
	if s.node, err = connect(ctx, s.self, cfg.NATS, url, s.log, role{
		sessionTimeout: cfg.Timing.SessionTimeout, epoch: masterTerm, local: o.broker,
		// Other slaves' direct links (direct.go): a slave's address is its
		// own, the master refuses a second process of it, so a message for
		// an earlier session is answered session_lost, as the master does.
		accept: s.acceptSlave, maxSessions: maxDirectSessions,
		answerStale:    func(peer link.Address) bool { return peer.Type == messages.Slave },
		singlePeer:     func(peer link.Address) bool { return peer.Type == messages.Slave },
		broadcastsFrom: func(peer link.Address) bool { return peer.Type == messages.Master },
	}); err != nil {
		return nil, err
	}
	l, err := s.connectMaster(ctx)
	if errors.Is(err, ErrAlreadyConnected) || errors.Is(err, link.ErrPermissionDenied) {
		_ = s.node.Close()
		return nil, fmt.Errorf("fabric: slave %d: %w", cfg.ID, err)
	}
	if cfg.MetricsAddr != "" {
		if s.httpSrv, err = s.metrics.serve(cfg.MetricsAddr, s.log, &s.routines); err != nil {
			if l != nil {
				_ = l.Close()
			}
			_ = s.node.Close()
			return nil, err
		}
	}
	if err != nil {
		s.log.Warn("master not reachable yet; retrying in the background", "error", err)
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.routines.start(func() { s.run(l) })
	s.routines.start(s.reapDirect)
	return s, nil
}

// MetricsAddr returns where metrics are served (host:port), or "".
func (s *Slave) MetricsAddr() string {
	if s.httpSrv == nil {
		return ""
	}
	return s.httpSrv.Addr
}

func (s *Slave) registerGauges() {
	s.metrics.gauge("linkfabric_requests_pending", "Requests this endpoint sent that wait for a response.", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		if s.master != nil {
			n += s.master.Stats().Pending
		}
		for _, h := range s.instances {
			if h.toInstance != nil {
				n += h.toInstance.Stats().Pending
			}
		}
		return float64(n)
	})
	s.metrics.gauge("linkfabric_master_connected", "1 while the slave is registered with the master.", func() float64 {
		if s.Connected() {
			return 1
		}
		return 0
	})
	s.metrics.gauge("linkfabric_instances", "Instances the slave hosts.", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.instances))
	})
	s.metrics.gauge("linkfabric_instances_running", "Instances the slave is running.", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, h := range s.instances {
			if h.status == messages.StatusRunning {
				n++
			}
		}
		return float64(n)
	})
}

// ID returns the slave's id.
func (s *Slave) ID() int64 { return s.cfg.ID }

// Connected reports whether the slave is registered with the master.
func (s *Slave) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.master != nil
}

// Instances returns the slave's instances as it sees them, sorted by id.
func (s *Slave) Instances() []messages.HostedInstance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostedLocked()
}

func (s *Slave) hostedLocked() []messages.HostedInstance {
	out := make([]messages.HostedInstance, 0, len(s.instances))
	for _, h := range s.instances {
		out = append(out, messages.HostedInstance{ID: h.id, Name: h.name, Status: h.status})
	}
	slices.SortFunc(out, func(a, b messages.HostedInstance) int { return cmpInt(a.ID, b.ID) })
	return out
}

// run keeps the slave registered: it watches the master link with
// heartbeats and, when the link ends, registers again until it is stopped.
func (s *Slave) run(l *link.Link) {
	// Close ends a registration in progress (s.life), rather than wait
	// out the peer timeout of a master that has gone away.
	stopped := s.life
	backoff := 100 * time.Millisecond
	for {
		if l != nil {
			backoff = 100 * time.Millisecond
			s.serve(l)
		}
		select {
		case <-s.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.Timing.HeartbeatInterval)
		var err error
		ctx, cancel := context.WithTimeout(stopped, s.cfg.Timing.PeerTimeout)
		l, err = s.connectMaster(ctx)
		cancel()
		switch {
		case err == nil:
		case stopped.Err() != nil:
			return
		case errors.Is(err, ErrAlreadyConnected):
			s.log.Error("the master refuses this slave's id: another process holds it", "error", err)
		case errors.Is(err, link.ErrNotConnected), errors.Is(err, link.ErrTimeout), errors.Is(err, link.ErrSessionLost):
			s.log.Debug("master not reachable; registering again", "error", err)
		default:
			s.log.Warn("registration failed; registering again", "error", err)
		}
	}
}

// connectMaster makes a link to the master and registers on it.
func (s *Slave) connectMaster(ctx context.Context) (*link.Link, error) {
	c, err := s.node.Dial(link.MasterAddress)
	if err != nil {
		return nil, err
	}
	// The bans the master broadcasts on this link wait for its welcome to
	// be applied (see routeFromMaster).
	welcomed := make(chan struct{})
	defer close(welcomed)
	var l *link.Link
	l, err = link.New(c, s.self, link.MasterAddress, s.catalog,
		link.WithLogger(s.log), link.WithRequestTimeout(s.cfg.Timing.RequestTimeout),
		link.WithObserver(masterObserver{s.metrics, func() { s.heard(l, time.Now()); s.masterLeaving(l) }}),
		link.WithStatusHandler(func(st link.Status) { s.masterStatus(l, st) }), link.WithRouter(slaveRouter{s}))
	if err != nil {
		return nil, err
	}
	s.wireMaster(l, welcomed)
	if err := l.Start(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	reg := messages.SlaveRegistration{ID: s.cfg.ID, Name: s.cfg.SlaveName(), Version: Version, Instances: s.hostedLocked(), Plugins: s.plugins}
	hooks := s.hooks
	s.mu.Unlock()
	welcome, err := link.Request(ctx, l, messages.RegisterSlave, reg)
	if err != nil {
		_ = l.Close()
		return nil, err
	}
	if hooks != nil {
		hooks.welcomed(l)
	}
	passed := s.passOn(ctx, l, c)
	s.log.Info("registered with the master", "instances", len(reg.Instances), "events_passed_on", passed, "bans", len(welcome.Bans))
	s.tellInstances("connect")
	s.setBans(ctx, welcome.Bans)
	if hooks != nil {
		hooks.applied(l)
	}
	return l, nil
}

// passOn makes l, on connector c, the master's link once what the
// previous session never delivered and what waited for this one have gone
// out on it, in that order, and returns how many events waited. It sends
// without s.mu, which no one holds across a send (an event waits while
// the master is far behind): meanwhile s.master is still nil, so what the
// instances send joins the outbox (toMaster), and l becomes the master's
// only with the outbox empty.
func (s *Slave) passOn(ctx context.Context, l *link.Link, c session) int {
	s.mu.Lock()
	old := s.lastConn
	if time.Since(s.lastHeard) > s.cfg.Timing.SessionTimeout {
		old = nil // the session is over: what it owed the master is given up
	}
	held := s.outbox
	// The new session has begun: what arrives meanwhile is kept for it
	// however long the master was away (holdLocked).
	s.outbox, s.lastConn, s.masterLostAt = nil, nil, time.Time{}
	s.mu.Unlock()
	// Before anything is sent on c: nothing else knows l yet.
	if err := c.Adopt(old); err != nil {
		s.log.Warn("events of the previous session not passed on", "error", err)
	}
	passed := 0
	for {
		for _, ev := range held {
			if err := l.ForwardEvent(ctx, ev); err != nil {
				s.log.Warn("an event kept for the master not passed on", "type", ev.Type, "error", err)
			}
		}
		passed += len(held)
		s.mu.Lock()
		if len(s.outbox) == 0 {
			break // with s.mu held: l is the master's with nothing waiting
		}
		held, s.outbox = s.outbox, nil
		s.mu.Unlock()
	}
	s.master, s.masterConn, s.leaving = l, c, false
	s.masterHeard = time.Now()
	s.mu.Unlock()
	return passed
}

// setBans makes bans the bans in force, and tells the running instances
// what changed: bans given while the slave was away, or lifted.
func (s *Slave) setBans(ctx context.Context, bans []messages.Ban) {
	next := make(map[string]messages.Ban, len(bans))
	for _, b := range bans {
		next[b.Name] = b
	}
	s.mu.Lock()
	var changed []messages.Ban
	for name, b := range next {
		if s.bans[name] != b {
			changed = append(changed, b)
		}
	}
	for name := range s.bans {
		if _, ok := next[name]; !ok {
			changed = append(changed, messages.Ban{Name: name, Banned: false})
		}
	}
	s.bans = next
	s.mu.Unlock()
	if len(changed) == 0 {
		return
	}
	slices.SortFunc(changed, func(a, b messages.Ban) int { return strings.Compare(a.Name, b.Name) })
	for _, l := range s.running() {
		s.giveBans(ctx, l, changed)
	}
}

// noteBan records a ban the master broadcast.
func (s *Slave) noteBan(b messages.Ban) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.Banned {
		s.bans[b.Name] = b
	} else {
		delete(s.bans, b.Name)
	}
}

// giveBans tells the instance of link to about bans, in order.
func (s *Slave) giveBans(ctx context.Context, to *link.Link, bans []messages.Ban) {
	for _, b := range bans {
		if err := link.Emit(ctx, to, messages.BanlistUpdate, b); err != nil {
			s.log.Warn("could not give an instance a ban", "instance", to.Peer().String(), "player", b.Name, "error", err)
			return
		}
	}
}

// banList returns the bans in force, sorted by player.
func (s *Slave) banList() []messages.Ban {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]messages.Ban, 0, len(s.bans))
	for _, b := range s.bans {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b messages.Ban) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// serve pings the master every heartbeat until the link ends. A master
// silent for the peer timeout is reported to the instances as gone; one
// silent for the session timeout ends the session, and so does a master
// that says the session has ended (it expired it, or restarted).
func (s *Slave) serve(l *link.Link) {
	t := time.NewTicker(s.cfg.Timing.HeartbeatInterval)
	defer t.Stop()
	silent := false
	for {
		select {
		case <-s.stop:
			return
		case <-l.Done():
			s.lostMaster(l, "the master link closed")
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.HeartbeatInterval)
			_, err := link.Request(ctx, l, messages.Ping, messages.Empty{})
			cancel()
			if err == nil {
				s.heard(l, time.Now())
			}
			switch quiet := time.Since(s.lastAnswer(l)); {
			case err == nil:
				if silent {
					silent = false
					s.log.Info("master answering again, within the session")
					s.tellInstances("resume")
				}
			case errors.Is(err, link.ErrSessionLost):
				s.log.Warn("master session ended: the master says so", "error", err)
				_ = l.Close()
			case quiet > s.cfg.Timing.SessionTimeout:
				s.log.Warn("master session expired: no answer to heartbeats", "timeout", s.cfg.Timing.SessionTimeout, "error", err)
				_ = l.Close()
			case quiet > s.cfg.Timing.PeerTimeout && !silent:
				silent = true
				s.log.Warn("master lost: no answer to heartbeats; keeping the session", "timeout", s.cfg.Timing.PeerTimeout, "error", err)
				s.tellInstances("drop")
			}
		}
	}
}

// heard notes that the master answered on l at at: a heartbeat, the
// registration, or its word that it is shutting down (prepare_disconnect).
func (s *Slave) heard(l *link.Link, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master == l {
		s.masterHeard = at
	}
}

// masterLeaving notes that the master of l is shutting down.
func (s *Slave) masterLeaving(l *link.Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master == l {
		s.leaving = true
	}
}

// lastAnswer returns when the master last answered on l, the current
// session.
func (s *Slave) lastAnswer(l *link.Link) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master == l {
		return s.masterHeard
	}
	return time.Now() // l has just ended: serve sees it at once
}

// masterObserver passes the master link's traffic to the metrics, and
// tells heard of the master's prepare_disconnect: a master shutting down
// gracefully is alive until its link closes, though heartbeats are not
// sent on a link that is disconnecting; and it is leaving.
type masterObserver struct {
	*metrics
	heard func()
}

func (o masterObserver) Received(dir messages.Direction, m *link.Envelope) {
	o.metrics.Received(dir, m)
	if m.Kind == messages.KindRequest && m.Type == messages.PrepareDisconnect.Name() {
		o.heard()
	}
}

func (s *Slave) lostMaster(l *link.Link, why string) {
	s.mu.Lock()
	was := s.master == l
	if was {
		s.master, s.lastConn, s.masterConn = nil, s.masterConn, nil
		s.masterLostAt, s.lastHeard = time.Now(), s.masterHeard
	}
	closing := s.closing
	s.mu.Unlock()
	if was && !closing {
		s.log.Warn("disconnected from the master; registering again", "reason", why)
		s.tellInstances("close")
	}
}

func (s *Slave) masterStatus(l *link.Link, st link.Status) {
	s.mu.Lock()
	current := s.master == l
	s.mu.Unlock()
	if !current {
		return
	}
	switch st {
	case link.StatusDropped:
		s.tellInstances("drop")
	case link.StatusResumed:
		s.tellInstances("resume")
	}
}

// tellInstances sends master_connection_event to every running instance.
func (s *Slave) tellInstances(event string) {
	data, err := messages.MasterConnectionEvent.Encode(messages.ConnectionEvent{Event: event})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
	defer cancel()
	for _, l := range s.running() {
		if err := l.EmitJSON(ctx, messages.MasterConnectionEvent, data); err != nil {
			s.log.Debug("could not tell an instance", "instance", l.Peer().String(), "error", err)
		}
	}
}

// running returns the slave's links to its running instances.
func (s *Slave) running() []*link.Link {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*link.Link
	for _, h := range s.instances {
		if h.toInstance != nil {
			out = append(out, h.toInstance)
		}
	}
	return out
}

// masterLink returns the link to the master, or an error if there is none.
func (s *Slave) masterLink() (*link.Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master == nil {
		return nil, link.Errorf(link.CodeNotConnected, "slave %d is not connected to the master", s.cfg.ID)
	}
	return s.master, nil
}

func (s *Slave) assign(ctx context.Context, h messages.HostedInstance) (messages.Empty, error) {
	if err := s.allowed(h.ID, h.Name, h.Program); err != nil {
		return messages.Empty{}, err
	}
	s.mu.Lock()
	if _, ok := s.instances[h.ID]; !ok {
		s.instances[h.ID] = &hosted{id: h.ID, name: h.Name, status: messages.StatusStopped, program: h.Program}
	}
	update := messages.InstanceUpdate{Instances: s.hostedLocked()}
	master := s.master
	s.mu.Unlock()
	s.log.Info("instance assigned", "instance", h.ID, "name", h.Name)
	if master != nil {
		if err := link.Emit(ctx, master, messages.UpdateInstances, update); err != nil {
			s.log.Warn("could not report instances", "error", err)
		}
	}
	return messages.Empty{}, nil
}

// allowed reports whether the slave may run the program of an instance:
// one its allow-list names, or none.
func (s *Slave) allowed(id int64, name string, program *messages.Program) error {
	if program == nil || slices.Contains(s.cfg.AllowPrograms, program.Command) {
		return nil
	}
	return link.Errorf(CodeProgramNotAllowed, "slave %d does not run %s, the program of instance %d (%s): add it to FABRIC_SLAVE_ALLOW_PROGRAMS (absolute paths, comma-separated) in that slave's environment and restart the slave", s.cfg.ID, program.Command, id, name)
}

// deleteInstance stops an instance if it runs, and forgets it: the master
// is deleting it. An instance listed in FABRIC_SLAVE_INSTANCES comes back
// when the slave's process starts again.
func (s *Slave) deleteInstance(ctx context.Context, r messages.InstanceRef) (messages.Empty, error) {
	s.mu.Lock()
	h := s.instances[r.InstanceID]
	var to *link.Link
	if h != nil {
		to = h.toInstance
	}
	s.mu.Unlock()
	if h == nil {
		return messages.Empty{}, link.Errorf(CodeInstanceNotFound, "slave %d does not host instance %d", s.cfg.ID, r.InstanceID)
	}
	if to != nil {
		if _, err := link.Request(ctx, to, messages.StopInstance, r); err != nil && !errors.Is(err, &link.Error{Code: CodeInstanceNotRunning}) {
			return messages.Empty{}, fmt.Errorf("instance %d (%s) did not stop, and was not deleted: %w", h.id, h.name, err)
		}
		s.retire(ctx, h, to)
	}
	s.mu.Lock()
	if s.instances[r.InstanceID] == h {
		delete(s.instances, r.InstanceID)
	}
	s.mu.Unlock()
	s.log.Info("instance deleted", "instance", h.id, "name", h.name)
	return messages.Empty{}, nil
}

// route attaches the fabric's routing to every message arriving from the
// master (from == Master) or from an instance (from == Instance) that has
// no handler of its own. From the master, bans wait for welcomed to close.
func (s *Slave) route(l *link.Link, from messages.Endpoint, welcomed <-chan struct{}) {
	in := messages.Direction{Source: from, Target: messages.Slave}
	for _, def := range s.catalog.On(in) {
		switch {
		case l.Handles(def):
		case from == messages.Master:
			s.routeFromMaster(l, def, welcomed)
		case from == messages.Instance:
			s.routeFromInstance(l, def)
		}
	}
}

// routeFromMaster routes def, arriving from the master on l: to the
// instance it is forwarded to, or to every instance but the one a
// broadcast came from. A ban waits until welcomed closes: the
// registration on l has applied the master's welcome.
func (s *Slave) routeFromMaster(l *link.Link, def *messages.Definition, welcomed <-chan struct{}) {
	switch {
	case def == messages.StartInstance.Def() || def == messages.StopInstance.Def():
		// They launch and retire the instance: work that waits.
		l.HandleRequestJSON(def, s.startStop)
	case def.ForwardTo() == messages.Instance && def.Kind() == messages.KindRequest:
		l.HandleRequestAsync(def, s.forwardRequest)
	case def.ForwardTo() == messages.Instance:
		// Not NonBlocking: passing it on waits while the instance's queue
		// is full, and on the Node's routing goroutine that wait would
		// hold up every link of this slave, not just this one.
		l.HandleEventJSON(def, s.forwardEvent)
	case def.BroadcastTo() == messages.Instance:
		isBan := def == messages.BanlistUpdate.Def()
		l.HandleEventJSON(def, func(ctx context.Context, ev *link.Envelope) error {
			if isBan {
				// The welcome's ban list may be older than this ban: the
				// master answers a registration, then broadcasts the bans
				// saved after it, and the response and the broadcast
				// reach this slave by different paths, in either order.
				// Applied after this ban, the welcome would undo it
				// (docs/reliability.md: bans reach every slave).
				select {
				case <-welcomed:
				case <-ctx.Done():
					return ctx.Err()
				}
				var b messages.Ban
				if err := json.Unmarshal(ev.Data, &b); err == nil {
					s.noteBan(b)
				}
			}
			if s.hostsInstance(ev.Origin) {
				// Its own instance's broadcast, back from the master:
				// the slave gave it to its other instances already.
				return nil
			}
			return s.broadcast(ctx, ev, link.Address{})
		})
	}
}

// routeFromInstance routes def, arriving on l from the instance at its
// other end: a broadcast to the slave's other instances (and the master,
// where it goes on), a request or an event forwarded to the master, each
// speaking only for that instance.
func (s *Slave) routeFromInstance(l *link.Link, def *messages.Definition) {
	peer := l.Peer()
	switch {
	case def.BroadcastTo() == messages.Instance:
		toMaster := def.ValidOn(messages.SlaveToMaster)
		l.HandleEventJSON(def, func(ctx context.Context, ev *link.Envelope) error {
			ev.Origin = peer
			err := s.broadcast(ctx, ev, peer)
			if toMaster {
				err = errors.Join(err, s.toMaster(ctx, ev))
			}
			return err
		})
	case def.ForwardTo() == messages.Master && def.Kind() == messages.KindRequest:
		l.HandleRequestJSON(def, func(ctx context.Context, req *link.Envelope) ([]byte, error) {
			if err := s.speaksFor(peer, req.Data); err != nil {
				return nil, err
			}
			master, err := s.masterLink()
			if err != nil {
				return nil, err
			}
			return master.ForwardRequest(ctx, req)
		})
	case def.ForwardTo() == messages.Master:
		l.HandleEventJSON(def, func(ctx context.Context, ev *link.Envelope) error {
			if err := s.speaksFor(peer, ev.Data); err != nil {
				return err
			}
			return s.toMaster(ctx, ev)
		})
	}
}

// speaksFor checks that what instance inst forwards to the master speaks
// for inst only: a payload that names an instance_id names inst's.
func (s *Slave) speaksFor(inst link.Address, data []byte) error {
	id, err := instanceID(data)
	if err != nil {
		return nil // names no instance
	}
	if strconv.FormatInt(id, 10) != inst.ID {
		return link.Errorf(link.CodePermissionDenied, "%s may not speak for instance %d", inst, id)
	}
	return nil
}

// hostsInstance reports whether a is one of this slave's instances.
func (s *Slave) hostsInstance(a link.Address) bool {
	if a.Type != messages.Instance {
		return false
	}
	id, ok := parseID(a.ID)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok = s.instances[id]
	return ok
}

// toMaster passes an event on to the master, or keeps it for the next
// session while there is none.
func (s *Slave) toMaster(ctx context.Context, ev *link.Envelope) error {
	s.mu.Lock()
	master := s.master
	if master == nil || s.leaving {
		err := s.holdLocked(ev)
		s.mu.Unlock()
		return err
	}
	s.mu.Unlock()
	err := master.ForwardEvent(ctx, ev)
	if errors.Is(err, link.ErrSessionLost) { // the session ended under it
		s.mu.Lock()
		next := s.master
		if next == nil || next == master {
			// The next session takes it, after what the ended one owed.
			defer s.mu.Unlock()
			return s.holdLocked(ev)
		}
		s.mu.Unlock() // no one holds s.mu across a send
		return next.ForwardEvent(ctx, ev)
	}
	return err
}

// holdLocked keeps an event for the master's next session. s.mu must be
// held.
func (s *Slave) holdLocked(ev *link.Envelope) error {
	if !s.masterLostAt.IsZero() && time.Since(s.masterLostAt) > s.cfg.Timing.SessionTimeout {
		// The session is over: what it owed the master is given up.
		s.outbox, s.lastConn = nil, nil
		return link.Errorf(link.CodeSessionLost, "slave %d has had no master for longer than the session timeout (%s)", s.cfg.ID, s.cfg.Timing.SessionTimeout)
	}
	if len(s.outbox) >= maxOutbox {
		return link.Errorf(link.CodeUnavailable, "slave %d holds %d events for a master that is away", s.cfg.ID, maxOutbox)
	}
	s.outbox = append(s.outbox, &link.Envelope{Kind: messages.KindEvent, Type: ev.Type, Data: ev.Data, Origin: ev.Origin, Dst: ev.Dst})
	return nil
}

// broadcast passes an event to every running instance but except.
func (s *Slave) broadcast(ctx context.Context, ev *link.Envelope, except link.Address) error {
	var errs []error
	for _, l := range s.running() {
		if l.Peer() == except {
			continue
		}
		if err := l.ForwardEvent(ctx, ev); err != nil {
			errs = append(errs, fmt.Errorf("to %s: %w", l.Peer(), err))
		}
	}
	return errors.Join(errs...)
}

// target finds the hosted instance a forwarded message is for, and the
// link to it while it runs (nil while it does not).
func (s *Slave) target(data []byte) (*hosted, *link.Link, error) {
	id, err := instanceID(data)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.instances[id]
	if h == nil {
		return nil, nil, link.Errorf(CodeInstanceNotFound, "slave %d does not host instance %d", s.cfg.ID, id)
	}
	return h, h.toInstance, nil
}

// runningTarget returns the link to the running instance a forwarded
// message is for, or why there is none.
func (s *Slave) runningTarget(data []byte) (*link.Link, error) {
	h, to, err := s.target(data)
	if err == nil && to == nil {
		err = notRunning(h.id, h.name)
	}
	return to, err
}

// notRunning says that instance id (name) is not running.
func notRunning(id int64, name string) error {
	return link.Errorf(CodeInstanceNotRunning, "instance %d (%s) is not running", id, name)
}

// forwardRequest passes a request on to the instance it is for and
// leaves the instance's answer to reply, with no goroutine: it runs on
// the goroutine that delivered the request, and reply is called on the
// one that delivers the answer (the instance's own, over the virtual link,
// for a handler that answers at once).
func (s *Slave) forwardRequest(ctx context.Context, req *link.Envelope, reply link.Reply) {
	to, err := s.runningTarget(req.Data)
	if err != nil {
		reply(nil, err)
		return
	}
	to.ForwardRequestAsync(ctx, req, reply)
}

// startStop passes start_instance and stop_instance on to their instance,
// launching it first and retiring it after, as they ask.
func (s *Slave) startStop(ctx context.Context, req *link.Envelope) ([]byte, error) {
	h, _, err := s.target(req.Data)
	if err != nil {
		return nil, err
	}
	if req.Type == messages.StartInstance.Name() {
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if closing {
			return nil, link.Errorf(CodeSlaveShuttingDown, "slave %d is shutting down: instance %d (%s) was not started", s.cfg.ID, h.id, h.name)
		}
		if err := s.allowed(h.id, h.name, h.program); err != nil {
			return nil, err
		}
		launched, err := s.launch(h)
		if err != nil {
			return nil, err
		}
		if launched != nil {
			// The bans in force, before the instance starts.
			s.giveBans(ctx, launched, s.banList())
		}
	}
	s.mu.Lock()
	to := h.toInstance
	s.mu.Unlock()
	if to == nil {
		return nil, notRunning(h.id, h.name)
	}
	data, err := to.ForwardRequest(ctx, req)
	switch {
	case req.Type == messages.StartInstance.Name() && err != nil && !errors.Is(err, &link.Error{Code: CodeConflict}):
		s.retire(ctx, h, to) // it did not start
	case req.Type == messages.StopInstance.Name() && err == nil:
		s.retire(ctx, h, to)
	}
	return data, err
}

func (s *Slave) forwardEvent(ctx context.Context, ev *link.Envelope) error {
	to, err := s.runningTarget(ev.Data)
	if err != nil {
		return err
	}
	return to.ForwardEvent(ctx, ev)
}

// launch makes a stopped instance and joins it to the slave with a virtual
// link, and returns the slave's side of it. It does nothing, and returns
// nil, if the instance is running.
func (s *Slave) launch(h *hosted) (*link.Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.toInstance != nil {
		return nil, nil
	}
	addr := link.Address{Type: messages.Instance, ID: strconv.FormatInt(h.id, 10)}
	a, b := virtual.Pair()
	inst, err := link.New(b, addr, s.self, s.catalog, link.WithLogger(s.log.With("instance", h.id)), link.WithRequestTimeout(s.cfg.Timing.RequestTimeout))
	if err != nil {
		return nil, err
	}
	var made Instance
	if h.program != nil {
		made = newProgramInstance(h.id, h.name, *h.program, s.cfg.stopTimeout(), s.log)
	} else {
		made = s.factory(h.id, h.name)
	}
	made.Attach(inst)
	if !inst.Handles(messages.PrepareMasterDisconnect) {
		link.HandleRequest(inst, messages.PrepareMasterDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) {
			return messages.Empty{}, nil
		})
	}
	if !inst.Handles(messages.MasterConnectionEvent) {
		link.HandleEvent(inst, messages.MasterConnectionEvent, func(context.Context, messages.ConnectionEvent) error { return nil })
	}
	if err := inst.Start(); err != nil {
		closeInstance(context.Background(), made)
		return nil, fmt.Errorf("instance %d (%s): %w", h.id, h.name, err)
	}
	to, err := link.New(a, s.self, addr, s.catalog, link.WithLogger(s.log), link.WithRequestTimeout(s.cfg.Timing.RequestTimeout), link.WithObserver(s.metrics), link.WithRouter(slaveRouter{s}), link.WithBroadcastsUp())
	if err != nil {
		_ = inst.Close()
		closeInstance(context.Background(), made)
		return nil, err
	}
	s.wireInstance(to, h.id)
	if err := to.Start(); err != nil {
		_ = inst.Close()
		closeInstance(context.Background(), made)
		return nil, err
	}
	h.toInstance, h.instance, h.made = to, inst, made
	return to, nil
}

// wireMaster attaches the slave's handlers to its link to the master; the
// bans it receives wait for welcomed to close (routeFromMaster).
func (s *Slave) wireMaster(l *link.Link, welcomed <-chan struct{}) {
	link.HandleRequest(l, messages.AssignInstance, s.assign)
	link.HandleRequest(l, messages.DeleteInstance, s.deleteInstance)
	s.handlers.attach(l)
	s.route(l, messages.Master, welcomed)
}

// wireInstance attaches the slave's handlers to its link to instance id.
func (s *Slave) wireInstance(to *link.Link, id int64) {
	link.HandleEvent(to, messages.InstanceStarted, func(ctx context.Context, _ messages.InstanceRef) error {
		return s.relayStatus(ctx, id, messages.StatusRunning, messages.InstanceStarted)
	})
	link.HandleEvent(to, messages.InstanceStopped, func(ctx context.Context, _ messages.InstanceRef) error {
		return s.relayStatus(ctx, id, messages.StatusStopped, messages.InstanceStopped)
	})
	s.handlers.attach(to)
	s.route(to, messages.Instance, nil)
}

// relayStatus records an instance's new status and tells the master. The
// instance id is the link's, whatever the payload says.
func (s *Slave) relayStatus(ctx context.Context, id int64, status string, ev *messages.Event[messages.InstanceRef]) error {
	s.mu.Lock()
	if h := s.instances[id]; h != nil {
		h.status = status
	}
	s.mu.Unlock()
	data, err := ev.Encode(messages.InstanceRef{InstanceID: id})
	if err != nil {
		return err
	}
	return s.toMaster(ctx, &link.Envelope{Kind: messages.KindEvent, Type: ev.Name(), Data: data})
}

// retire closes the link of an instance that has stopped, once what it
// sent on the way out has been handled.
func (s *Slave) retire(ctx context.Context, h *hosted, to *link.Link) {
	s.mu.Lock()
	var made Instance
	if h.toInstance == to {
		made = h.made
		h.toInstance, h.instance, h.made = nil, nil, nil
	}
	s.mu.Unlock()
	if err := to.Disconnect(ctx); err != nil {
		s.log.Debug("instance link did not close cleanly", "instance", h.id, "error", err)
	}
	closeInstance(ctx, made)
}

// InstanceCloser is an Instance that holds what must be released when its
// link has closed, such as a process: its slave calls Close then, and
// waits (within ctx) for it to return. The instances that run a program
// (messages.Program) are InstanceClosers: Close stops the program.
type InstanceCloser interface {
	Instance
	Close(ctx context.Context) error
}

// closeInstance closes inst if it is an InstanceCloser.
func closeInstance(ctx context.Context, inst Instance) {
	if c, ok := inst.(InstanceCloser); ok {
		_ = c.Close(ctx)
	}
}

// Close stops the slave gracefully: its instances hear that the master is
// going away (prepare_master_disconnect), the master link disconnects
// (prepare_disconnect, in-flight requests end) within ctx, the instances
// stop, and the NATS connection drains.
func (s *Slave) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	master := s.master
	s.mu.Unlock()
	for _, l := range s.running() {
		if _, err := link.Request(ctx, l, messages.PrepareMasterDisconnect, messages.Empty{}); err != nil {
			s.log.Debug("instance did not prepare", "instance", l.Peer().String(), "error", err)
		}
	}
	var errs []error
	errs = append(errs, s.closeDirect(ctx))
	if master != nil {
		errs = append(errs, master.Disconnect(ctx))
	}
	close(s.stop)
	s.endLife()
	errs = append(errs, stopServing(ctx, s.httpSrv))
	s.routines.stop()
	type runningInstance struct {
		h  *hosted
		to *link.Link
	}
	var stopping []runningInstance
	s.mu.Lock()
	for _, h := range s.instances {
		if h.toInstance != nil {
			stopping = append(stopping, runningInstance{h, h.toInstance})
		}
	}
	s.mu.Unlock()
	for _, r := range stopping {
		s.retire(ctx, r.h, r.to)
	}
	errs = append(errs, s.node.Close())
	s.log.Info("slave stopped")
	return errors.Join(errs...)
}
