package fabric

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Master is the cluster's master: it accepts slaves and controls, keeps the
// cluster view (which slaves are connected, which instances exist, where
// they live and how they are), routes messages forwarded to instances,
// relays instance output to the controls that follow it, and broadcasts.
type Master struct {
	cfg     MasterConfig
	log     *slog.Logger
	catalog *messages.Catalog
	perms   Permissions
	broker  *Broker // nil when NATS is external
	node    transport
	fan     broadcaster       // node's broadcasts, FlushBroadcasts
	bcast   *link.Broadcaster // to every slave, checked against the catalog
	metrics *metrics
	claims  *claims
	httpSrv *http.Server // serves metrics; nil when not asked for

	handlers  func(*link.Link)  // the plugins' (WithHandlers); may be nil
	authorize ControlAuthorizer // WithControlAuthorizer's; may be nil

	started time.Time
	stop    chan struct{}
	wg      sync.WaitGroup

	mu        sync.Mutex
	closing   bool
	slaves    map[int64]*slaveState
	instances map[int64]*instanceState
	controls  map[*link.Link]*controlState
}

type slaveState struct {
	id      int64
	name    string
	version string
	link    *link.Link // nil while it has no session
	conn    session    // link's connector
	lost    bool       // silent for the peer timeout; its session lives on
	since   time.Time
	watch   liveness
	// While the slave has no session, the connector of the one that
	// ended: the slave's next session, if it registers within the session
	// timeout, takes over the events it never acknowledged.
	lastConn session
	lostAt   time.Time
}

// connected reports whether the slave has a session and is heard from.
func (s *slaveState) connected() bool { return s != nil && s.link != nil && !s.lost }

type instanceState struct {
	id      int64
	name    string
	slaveID int64 // 0: not assigned
	status  string
}

type controlState struct {
	user   string
	follow map[int64]bool
	watch  liveness
}

// liveness notices a peer that has gone quiet: any message received
// counts as a sign of life.
type liveness struct {
	received uint64
	at       time.Time
}

func (w *liveness) quietFor(l *link.Link, now time.Time) time.Duration {
	if r := l.Stats().Received; r != w.received || w.at.IsZero() {
		w.received, w.at = r, now
	}
	return now.Sub(w.at)
}

// StartMaster starts a master. With no NATS URL configured it first starts
// an embedded NATS server on cfg.Listen. It returns once the master accepts
// slaves and controls; Close stops it.
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
	perms, _ := ParsePermissions(cfg.Permissions)
	if unknown := perms.Unknown(catalog); len(unknown) > 0 {
		return nil, fmt.Errorf("%w: FABRIC_CONTROL_PERMISSIONS=%q: %s grants nothing: no message needs such a permission (fabric messages lists them)",
			ErrConfig, cfg.Permissions, strings.Join(unknown, ", "))
	}
	m := &Master{
		cfg:       cfg,
		log:       limitLogs(o.logger).With("endpoint", "master"),
		catalog:   catalog,
		perms:     perms,
		stop:      make(chan struct{}),
		slaves:    map[int64]*slaveState{},
		instances: map[int64]*instanceState{},
		controls:  map[*link.Link]*controlState{},
		metrics:   newMetrics(catalog),
		handlers:  o.handlers,
		authorize: o.authorize,
		started:   time.Now(),
	}
	m.claims = newClaims(m.log, m.metrics)
	m.registerGauges()
	m.metrics.ready = m.ready
	// Refuse now a catalog with messages the master could not handle,
	// rather than every slave or control that connects.
	if err := checkWiring(catalog, link.MasterAddress, link.Address{Type: messages.Slave, ID: "1"}, func(l *link.Link) { m.wireSlave(l, 1, nil) }); err != nil {
		return nil, err
	}
	if err := checkWiring(catalog, link.MasterAddress, link.Address{Type: messages.Control, ID: "check"}, func(l *link.Link) {
		m.wireControl(l, &controlState{follow: map[int64]bool{}})
	}); err != nil {
		return nil, err
	}
	url := cfg.NATS.URL
	if url == "" {
		if m.broker, err = StartBroker(cfg.Listen); err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%w: FABRIC_NATS_LISTEN=%q: address already in use: another process listens there; pick a free port (0 for any), or set FABRIC_NATS_URL to use a NATS server that runs already", ErrConfig, cfg.Listen)
			}
			return nil, err
		}
		url = m.broker.ClientURL()
		m.log.Info("embedded NATS server started", "url", url)
	}
	node, err := connect(ctx, link.MasterAddress, cfg.NATS, url, m.log, role{accept: m.accept, unique: true, sessionTimeout: cfg.Timing.SessionTimeout, local: cmp.Or(m.broker, o.broker)})
	if err != nil {
		if m.broker != nil {
			m.broker.Close()
		}
		return nil, err
	}
	m.node, m.fan = node, node
	if m.bcast, err = link.NewBroadcaster(node, link.MasterAddress, messages.Slave, catalog); err != nil {
		_ = m.node.Close()
		if m.broker != nil {
			m.broker.Close()
		}
		return nil, err
	}
	if cfg.MetricsAddr != "" {
		if m.httpSrv, err = m.metrics.serve(cfg.MetricsAddr, m.log); err != nil {
			_ = m.node.Close()
			if m.broker != nil {
				m.broker.Close()
			}
			return nil, err
		}
	}
	m.wg.Add(1)
	go m.watchPeers()
	m.log.Info("master started", "nats", url)
	return m, nil
}

// MetricsAddr returns where metrics are served (host:port), or "".
func (m *Master) MetricsAddr() string {
	if m.httpSrv == nil {
		return ""
	}
	return m.httpSrv.Addr
}

func (m *Master) registerGauges() {
	m.metrics.gauge("linkfabric_requests_pending", "Requests this endpoint sent that wait for a response.", func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for _, s := range m.slaves {
			if s.link != nil {
				n += s.link.Stats().Pending
			}
		}
		for l := range m.controls {
			n += l.Stats().Pending
		}
		return float64(n)
	})
	m.metrics.gauge("linkfabric_slaves_connected", "Slaves connected to the master.", func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for _, s := range m.slaves {
			if s.connected() {
				n++
			}
		}
		return float64(n)
	})
	m.metrics.gauge("linkfabric_controls_connected", "Controls connected to the master.", func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return float64(len(m.controls))
	})
	m.metrics.gauge("linkfabric_cluster_instances", "Instances the master knows, on every slave or none.", func() float64 {
		return float64(len(m.Instances()))
	})
	m.metrics.gauge("linkfabric_cluster_instances_running", "Instances running on connected slaves, as the master knows.", func() float64 {
		n := 0
		for _, i := range m.Instances() {
			if i.Status == messages.StatusRunning {
				n++
			}
		}
		return float64(n)
	})
}

// ready says why the master cannot serve (nil: it can), for /readyz.
func (m *Master) ready() error {
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	switch {
	case closing:
		return errors.New("the master is shutting down")
	case m.node == nil || !m.node.Connected():
		return errors.New("not connected to NATS")
	}
	return nil
}

// NATSURL returns the URL of the NATS server the master uses: the embedded
// one's, or the first configured.
func (m *Master) NATSURL() string {
	if m.broker != nil {
		return m.broker.ClientURL()
	}
	return m.node.URL()
}

// Catalog returns the master's message catalog.
func (m *Master) Catalog() *messages.Catalog { return m.catalog }

// Slaves returns the master's view of the slaves, sorted by id.
func (m *Master) Slaves() []messages.SlaveInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]messages.SlaveInfo, 0, len(m.slaves))
	for _, s := range m.slaves {
		n := 0
		for _, i := range m.instances {
			if i.slaveID == s.id {
				n++
			}
		}
		out = append(out, messages.SlaveInfo{ID: s.id, Name: s.name, Connected: s.connected(), Instances: n})
	}
	slices.SortFunc(out, func(a, b messages.SlaveInfo) int { return cmpInt(a.ID, b.ID) })
	return out
}

// Status returns the master's whole view: itself, every slave with its
// version and when the master last heard from it (sorted by id), and every
// instance (as Instances).
func (m *Master) Status() messages.ClusterStatus {
	now := time.Now()
	st := messages.ClusterStatus{
		Master: messages.MasterStatus{Version: Version, Commit: Commit(), Started: m.started.UnixMilli(), UptimeMS: now.Sub(m.started).Milliseconds()},
	}
	if st.Master.Commit == "unknown" {
		st.Master.Commit = ""
	}
	infos := m.Slaves()
	m.mu.Lock()
	for _, info := range infos {
		s := m.slaves[info.ID]
		seen := s.lastSeen()
		st.Slaves = append(st.Slaves, messages.SlaveStatus{SlaveInfo: info, Version: s.version, LastSeen: seen.UnixMilli(), SilentMS: max(0, now.Sub(seen).Milliseconds())})
	}
	m.mu.Unlock()
	st.Instances = m.Instances()
	return st
}

// lastSeen is when the master last heard from the slave, as far as its
// peer watch knows: it looks once a tick of watchPeers, and a link that
// closed was heard from last when it closed.
func (s *slaveState) lastSeen() time.Time {
	seen := s.since
	if s.watch.at.After(seen) {
		seen = s.watch.at
	}
	if s.link == nil && s.lostAt.After(seen) {
		seen = s.lostAt
	}
	return seen
}

// Instances returns the master's view of the instances, sorted by id.
func (m *Master) Instances() []messages.InstanceInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]messages.InstanceInfo, 0, len(m.instances))
	for _, i := range m.instances {
		info := messages.InstanceInfo{ID: i.id, Name: i.name, SlaveID: i.slaveID, Status: i.status}
		switch s := m.slaves[i.slaveID]; {
		case i.slaveID == 0:
			info.Status = messages.StatusUnassigned
		case !s.connected():
			info.Status = messages.StatusUnknown
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b messages.InstanceInfo) int { return cmpInt(a.ID, b.ID) })
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// accept makes the link for a slave or a control that spoke first.
func (m *Master) accept(c session) error {
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return link.Errorf(link.CodeUnavailable, "the master is shutting down")
	}
	switch c.Peer().Type {
	case messages.Slave:
		return m.acceptSlave(c)
	case messages.Control:
		return m.acceptControl(c)
	}
	return link.Errorf(link.CodeNotConnected, "the master takes links from slaves and controls only, not %s", c.Peer())
}

func (m *Master) newLink(c session, opts ...link.Option) (*link.Link, error) {
	opts = append([]link.Option{link.WithLogger(m.log), link.WithRequestTimeout(m.cfg.Timing.RequestTimeout), link.WithObserver(m.metrics)}, opts...)
	return link.New(c, link.MasterAddress, c.Peer(), m.catalog, opts...)
}

func (m *Master) acceptSlave(c session) error {
	id, err := strconv.ParseInt(c.Peer().ID, 10, 64)
	if err != nil || id < 1 {
		return link.Errorf(link.CodeInvalidMessage, "slave ids are positive integers, not %q", c.Peer().ID)
	}
	l, err := m.newLink(c)
	if err != nil {
		return err
	}
	m.wireSlave(l, id, c)
	if err := l.Start(); err != nil {
		return err
	}
	go m.watchRegistration(id, l)
	go func() {
		<-l.Done()
		m.slaveGone(id, l)
	}()
	return nil
}

// wireSlave attaches the master's handlers to its link to slave id, which
// c carries.
func (m *Master) wireSlave(l *link.Link, id int64, c session) {
	link.HandleRequest(l, messages.RegisterSlave, func(ctx context.Context, r messages.SlaveRegistration) (messages.Empty, error) {
		return messages.Empty{}, m.register(ctx, l, c, id, r)
	})
	// What a slave reports is refused (counted, and logged at a bounded
	// rate by m.claims) unless it registered on this link and speaks of
	// instances it hosts; a refused event's handler returns nil, since the
	// link would log every failure.
	//
	// The handlers marked nb only take m.mu, which no one holds across a
	// wait, and send nothing: they run where the message is delivered.
	nb := link.NonBlocking()
	link.HandleEvent(l, messages.UpdateInstances, func(_ context.Context, u messages.InstanceUpdate) error {
		m.updateInstances(l, id, u.Instances)
		return nil
	}, nb)
	link.HandleEvent(l, messages.InstanceStarted, func(_ context.Context, r messages.InstanceRef) error {
		m.setStatus(l, id, r.InstanceID, messages.StatusRunning)
		return nil
	}, nb)
	link.HandleEvent(l, messages.InstanceStopped, func(_ context.Context, r messages.InstanceRef) error {
		m.setStatus(l, id, r.InstanceID, messages.StatusStopped)
		return nil
	}, nb)
	l.HandleEventJSON(messages.InstanceOutput, func(ctx context.Context, ev *link.Message) error {
		return m.relayOutput(ctx, l, id, ev)
	})
	link.HandleEvent(l, messages.PlayerEvent, func(_ context.Context, p messages.PlayerActivity) error {
		if m.speaksFor(l, id, p.InstanceID) {
			m.log.Info("player event", "instance", p.InstanceID, "type", p.Type, "player", p.Name)
		}
		return nil
	}, nb)
	m.wire(l)
}

// wire attaches what every link of the master gets: the plugins' handlers,
// then the fabric's routing for what is still unhandled.
func (m *Master) wire(l *link.Link) {
	if m.handlers != nil {
		m.handlers(l)
	}
	m.route(l)
}

// watchRegistration closes a slave's link that has not registered within
// twice the peer timeout: a slave registers as soon as it speaks, so such
// a link is left over from a process that died before registering, or is
// someone else speaking as the slave. Only registered links are watched
// by their heartbeats, so without this it would stay open for ever.
func (m *Master) watchRegistration(id int64, l *link.Link) {
	t := time.NewTimer(2 * m.cfg.Timing.PeerTimeout)
	defer t.Stop()
	select {
	case <-l.Done():
		return
	case <-m.stop:
		return
	case <-t.C:
	}
	m.mu.Lock()
	s := m.slaves[id]
	registered := s != nil && s.link == l
	m.mu.Unlock()
	if !registered {
		m.log.Warn("closed a slave link that did not register", "slave", id, "timeout", 2*m.cfg.Timing.PeerTimeout)
		_ = l.Close()
	}
}

// register binds a slave id to the link it registered on. A second process
// claiming an id that is still answering is refused; one whose earlier
// process has gone silent takes its place. The new session takes over
// the events the slave's previous one never acknowledged, if that ended
// within the session timeout: what was sent to the process that went
// away reaches the one that came back, as a slave does for a restarted
// master.
func (m *Master) register(ctx context.Context, l *link.Link, c session, id int64, r messages.SlaveRegistration) error {
	if r.ID != id {
		return link.Errorf(link.CodeInvalidMessage, "slave_id %d does not match the sender %s", r.ID, l.Peer())
	}
	m.mu.Lock()
	var old *link.Link
	var oldConn session
	if s := m.slaves[id]; s != nil && s.link != nil && s.link != l {
		old, oldConn = s.link, s.conn
	}
	m.mu.Unlock()
	if old != nil {
		pctx, cancel := context.WithTimeout(ctx, min(2*time.Second, m.cfg.Timing.PeerTimeout))
		_, err := link.Request(pctx, old, messages.Ping, messages.Empty{})
		cancel()
		if err == nil {
			m.log.Warn("refused a second slave with a connected id", "slave", id, "name", r.Name)
			return link.Errorf(CodeAlreadyConnected, "slave %d is already connected from another process; stop that one first, or give this one another FABRIC_SLAVE_ID", id)
		}
		m.log.Info("slave reconnected from a new process; the old one does not answer", "slave", id, "error", err)
		_ = old.Close()
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.claimableLocked(id, r.Instances); err != nil {
		return m.claims.refuse(l.Peer(), claimHosting, err)
	}
	s := m.slaves[id]
	if s == nil {
		s = &slaveState{id: id}
		m.slaves[id] = s
	}
	prev, lostAt := s.lastConn, s.lostAt
	if oldConn != nil && s.link == old {
		prev, lostAt = oldConn, time.Now() // the session it replaces ends now
	}
	if prev == c || time.Since(lostAt) > m.cfg.Timing.SessionTimeout {
		prev = nil // nothing to take over: what the previous session owed is given up
	}
	if c != nil && s.link != l {
		// Under the lock, before the link is the slave's, and before
		// anything is sent on it (broadcasts included: the session
		// receives them from now on): what the previous session never
		// acknowledged comes first.
		if err := c.Adopt(prev); err != nil {
			m.log.Warn("events for the slave's previous session not passed on", "slave", id, "error", err)
		}
	}
	s.name, s.version, s.link, s.conn, s.since, s.lost = r.Name, r.Version, l, c, time.Now(), false
	s.lastConn, s.lostAt = nil, time.Time{}
	s.watch = liveness{}
	m.setInstancesLocked(id, r.Instances)
	m.log.Info("slave registered", "slave", id, "name", r.Name, "instances", len(r.Instances))
	return nil
}

// setInstancesLocked makes hosted the full list of slave id's instances.
func (m *Master) setInstancesLocked(id int64, hosted []messages.HostedInstance) {
	for _, i := range m.instances {
		if i.slaveID == id && !slices.ContainsFunc(hosted, func(h messages.HostedInstance) bool { return h.ID == i.id }) {
			i.slaveID, i.status = 0, messages.StatusUnassigned
		}
	}
	for _, h := range hosted {
		status := h.Status
		if status == "" {
			status = messages.StatusStopped
		}
		m.instances[h.ID] = &instanceState{id: h.ID, name: h.Name, slaveID: id, status: status}
	}
}

// claimableLocked reports whether slave id may host every instance of
// hosted: one the master does not know, or knows as unassigned or as
// this slave's. An instance assigned to another slave stays that slave's,
// connected or not, until it is unassigned or deleted: a slave speaks for
// the instances it hosts, and never takes another's.
func (m *Master) claimableLocked(id int64, hosted []messages.HostedInstance) *link.Error {
	for _, h := range hosted {
		if i := m.instances[h.ID]; i != nil && i.slaveID != 0 && i.slaveID != id {
			return link.Errorf(CodeConflict, "instance %d (%s) is assigned to slave %d, not to slave %d: remove it from this slave's instances, or delete it on the master first", h.ID, i.name, i.slaveID, id)
		}
	}
	return nil
}

// registeredLocked reports whether l is the link slave id registered on.
func (m *Master) registeredLocked(l *link.Link, id int64) *link.Error {
	if s := m.slaves[id]; s == nil || s.link != l {
		return link.Errorf(CodeNotRegistered, "%s has not registered", l.Peer())
	}
	return nil
}

// speaksForLocked reports whether slave id, on l, may speak for instance
// instanceID: it registered on l and hosts the instance. A refused claim
// is counted.
func (m *Master) speaksForLocked(l *link.Link, id, instanceID int64) bool {
	if err := m.registeredLocked(l, id); err != nil {
		m.claims.refuse(l.Peer(), claimInstance, err)
		return false
	}
	if i := m.instances[instanceID]; i == nil || i.slaveID != id {
		m.claims.refuse(l.Peer(), claimInstance, link.Errorf(link.CodePermissionDenied, "slave %d spoke for instance %d, which it does not host", id, instanceID))
		return false
	}
	return true
}

// speaksFor is speaksForLocked for callers that do not hold m.mu.
func (m *Master) speaksFor(l *link.Link, id, instanceID int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.speaksForLocked(l, id, instanceID)
}

func (m *Master) updateInstances(l *link.Link, id int64, hosted []messages.HostedInstance) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.registeredLocked(l, id); err != nil {
		m.claims.refuse(l.Peer(), claimHosting, err)
		return
	}
	if err := m.claimableLocked(id, hosted); err != nil {
		m.claims.refuse(l.Peer(), claimHosting, err)
		return
	}
	m.setInstancesLocked(id, hosted)
}

func (m *Master) setStatus(l *link.Link, slaveID, instanceID int64, status string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.speaksForLocked(l, slaveID, instanceID) {
		return
	}
	m.instances[instanceID].status = status
	m.log.Info("instance "+status, "instance", instanceID, "slave", slaveID)
}

func (m *Master) slaveGone(id int64, l *link.Link) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.slaves[id]; s != nil && s.link == l {
		s.link, s.lastConn, s.conn, s.lostAt = nil, s.conn, nil, time.Now()
		m.log.Info("slave disconnected", "slave", id, "name", s.name)
	}
}

// SlaveLink returns the link slave id registered on, or nil while it has
// no session. The link stays the slave's while the slave is silent within
// the session timeout: what is sent on it then reaches the slave when it
// is back. Plugins send the slave events of their own on it.
func (m *Master) SlaveLink(id int64) *link.Link {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.slaves[id]; s != nil {
		return s.link
	}
	return nil
}

func (m *Master) acceptControl(c session) error {
	user := c.Peer().ID
	l, err := m.newLink(c, link.WithAuthorizer(func(ctx context.Context, def *messages.Definition, msg *link.Message) error {
		if !m.perms.Allows(user, def.Permission()) {
			return link.Errorf(link.CodePermissionDenied, "user %s does not have permission %s", user, def.Permission())
		}
		if m.authorize != nil {
			return m.authorize(ctx, user, def, msg)
		}
		return nil
	}))
	if err != nil {
		return err
	}
	st := &controlState{user: user, follow: map[int64]bool{}}
	m.wireControl(l, st)
	if err := l.Start(); err != nil {
		return err
	}
	m.mu.Lock()
	m.controls[l] = st
	m.mu.Unlock()
	go func() {
		<-l.Done()
		m.mu.Lock()
		delete(m.controls, l)
		m.mu.Unlock()
	}()
	return nil
}

// wireControl attaches the master's handlers to its link to a control.
func (m *Master) wireControl(l *link.Link, st *controlState) {
	// The handlers marked nb only take m.mu, which no one holds across a
	// wait, and send nothing: they run where the request is delivered.
	// Those that send (assign_instance_command, set_player_banned) wait
	// for what the Node's routing goroutine delivers, so they must not.
	nb := link.NonBlocking()
	link.HandleRequest(l, messages.ListSlaves, func(context.Context, messages.Empty) (messages.SlaveList, error) {
		return messages.SlaveList{Slaves: m.Slaves()}, nil
	}, nb)
	link.HandleRequest(l, messages.ListInstances, func(context.Context, messages.Empty) (messages.InstanceList, error) {
		return messages.InstanceList{Instances: m.Instances()}, nil
	}, nb)
	link.HandleRequest(l, messages.GetClusterStatus, func(context.Context, messages.Empty) (messages.ClusterStatus, error) {
		return m.Status(), nil
	}, nb)
	link.HandleRequest(l, messages.CreateInstance, m.createInstance, nb)
	link.HandleRequest(l, messages.AssignInstanceCommand, m.assignInstance)
	link.HandleRequest(l, messages.SetInstanceOutputSubscriptions, func(_ context.Context, r messages.OutputSubscriptions) (messages.Empty, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		// An id that names no instance is a mistake the operator should
		// hear of, rather than follow in silence for ever; the set the
		// control followed before stays as it was.
		for _, id := range r.InstanceIDs {
			if m.instances[id] == nil {
				return messages.Empty{}, link.Errorf(CodeInstanceNotFound, "instance %d does not exist", id)
			}
		}
		clear(st.follow)
		for _, id := range r.InstanceIDs {
			st.follow[id] = true
		}
		return messages.Empty{}, nil
	}, nb)
	link.HandleRequest(l, messages.SetPlayerBanned, func(ctx context.Context, b messages.Ban) (messages.Empty, error) {
		data, err := messages.BanlistUpdate.Encode(b)
		if err != nil {
			return messages.Empty{}, err
		}
		m.log.Info("player ban changed", "player", b.Name, "banned", b.Banned, "by", st.user)
		return messages.Empty{}, m.broadcast(ctx, &link.Message{Kind: link.KindEvent, Type: messages.BanlistUpdate.Name(), Data: data, Origin: l.Peer()})
	})
	m.wire(l)
}

func (m *Master) createInstance(_ context.Context, r messages.NewInstance) (messages.InstanceRef, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var id int64 = 1
	for existing := range m.instances {
		id = max(id, existing+1)
	}
	m.instances[id] = &instanceState{id: id, name: r.Name, status: messages.StatusUnassigned}
	m.log.Info("instance created", "instance", id, "name", r.Name)
	return messages.InstanceRef{InstanceID: id}, nil
}

func (m *Master) assignInstance(ctx context.Context, a messages.Assignment) (messages.Empty, error) {
	m.mu.Lock()
	i := m.instances[a.InstanceID]
	s := m.slaves[a.SlaveID]
	var name string
	var sl *link.Link
	var err error
	switch {
	case i == nil:
		err = link.Errorf(CodeInstanceNotFound, "instance %d does not exist", a.InstanceID)
	case s == nil:
		err = link.Errorf(CodeSlaveNotFound, "slave %d does not exist: no slave with that id has registered with the master", a.SlaveID)
	case i.slaveID == a.SlaveID:
	case i.slaveID != 0:
		err = link.Errorf(CodeConflict, "instance %d is assigned to slave %d already", a.InstanceID, i.slaveID)
	case !s.connected():
		err = link.Errorf(CodeSlaveNotConnected, "slave %d is not connected", a.SlaveID)
	default:
		name, sl = i.name, s.link
	}
	m.mu.Unlock()
	if err != nil || sl == nil {
		return messages.Empty{}, err
	}
	if _, err := link.Request(ctx, sl, messages.AssignInstance, messages.HostedInstance{ID: a.InstanceID, Name: name}); err != nil {
		if errors.Is(err, link.ErrNotConnected) {
			m.log.Debug("assign_instance not passed to the slave", "slave", a.SlaveID, "error", err)
			return messages.Empty{}, link.Errorf(CodeSlaveNotConnected, "slave %d is not connected", a.SlaveID)
		}
		return messages.Empty{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if i.slaveID == 0 {
		i.slaveID, i.status = a.SlaveID, messages.StatusStopped
	}
	m.log.Info("instance assigned", "instance", a.InstanceID, "slave", a.SlaveID)
	return messages.Empty{}, nil
}

// route attaches the fabric's routing to every message arriving on l that
// has no handler of its own: forwarding to an instance, broadcasting.
func (m *Master) route(l *link.Link) {
	in := messages.Direction{Source: l.Peer().Type, Target: messages.Master}
	for _, def := range m.catalog.On(in) {
		if l.Handles(def) {
			continue
		}
		switch {
		case def.ForwardTo() == messages.Instance && def.Kind() == messages.KindRequest:
			l.HandleRequestJSON(def, m.forwardRequest)
		case def.ForwardTo() == messages.Instance:
			l.HandleEventJSON(def, m.forwardEvent)
		case def.BroadcastTo() == messages.Instance:
			l.HandleEventJSON(def, func(ctx context.Context, ev *link.Message) error {
				if !m.checkOrigin(l, ev) {
					return nil // refused and counted
				}
				return m.broadcast(ctx, ev)
			})
		}
	}
}

// checkOrigin checks, and completes, the origin of a broadcast that
// arrived on l: the peer itself, or, from a slave, an instance it hosts
// (the slave passes on its instances' broadcasts). A control's broadcast
// starts at the control, whatever it says.
func (m *Master) checkOrigin(l *link.Link, ev *link.Message) bool {
	peer := l.Peer()
	switch {
	case ev.Origin.IsZero(), ev.Origin == peer:
		ev.Origin = peer
		return true
	case peer.Type == messages.Slave && ev.Origin.Type == messages.Instance:
		slaveID, err1 := strconv.ParseInt(peer.ID, 10, 64)
		instanceID, err2 := strconv.ParseInt(ev.Origin.ID, 10, 64)
		if err1 == nil && err2 == nil && m.speaksFor(l, slaveID, instanceID) {
			return true
		}
		return false
	}
	m.claims.refuse(peer, claimOrigin, link.Errorf(link.CodePermissionDenied, "%s sent a broadcast as %s", peer, ev.Origin))
	return false
}

// slaveFor finds the link to the slave that hosts an instance, or the
// error that says why there is none.
func (m *Master) slaveFor(instanceID int64) (*link.Link, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.instances[instanceID]
	switch {
	case i == nil:
		return nil, link.Errorf(CodeInstanceNotFound, "instance %d does not exist", instanceID)
	case i.slaveID == 0:
		return nil, link.Errorf(CodeInstanceNotAssigned, "instance %d (%s) is not assigned to a slave", instanceID, i.name)
	}
	s := m.slaves[i.slaveID]
	if !s.connected() {
		return nil, hostNotConnected(i)
	}
	return s.link, nil
}

// hostNotConnected says that the slave hosting i is not connected.
func hostNotConnected(i *instanceState) error {
	return link.Errorf(CodeSlaveNotConnected, "slave %d, which hosts instance %d (%s), is not connected", i.slaveID, i.id, i.name)
}

// hostUnreachable turns the error of a message the master could not pass
// to the slave hosting an instance, because nothing listens for that slave
// any more (a killed process whose session has not yet expired), into
// slave_not_connected: the message certainly did not reach the slave. The
// transport's text, which names subjects, goes to the debug log only. Any
// other error is returned as it is.
func (m *Master) hostUnreachable(err error, instanceID int64) error {
	if !errors.Is(err, link.ErrNotConnected) {
		return err
	}
	m.log.Debug("message for an instance not passed to its slave", "instance", instanceID, "error", err)
	m.mu.Lock()
	defer m.mu.Unlock()
	if i := m.instances[instanceID]; i != nil && i.slaveID != 0 {
		return hostNotConnected(i)
	}
	return link.Errorf(CodeSlaveNotConnected, "the slave that hosts instance %d is not connected", instanceID)
}

func (m *Master) forwardRequest(ctx context.Context, req *link.Message) ([]byte, error) {
	id, err := instanceID(req.Data)
	if err != nil {
		return nil, err
	}
	sl, err := m.slaveFor(id)
	if err != nil {
		return nil, err
	}
	data, err := sl.ForwardRequest(ctx, req)
	if err != nil {
		return nil, m.hostUnreachable(err, id)
	}
	return data, nil
}

func (m *Master) forwardEvent(ctx context.Context, ev *link.Message) error {
	id, err := instanceID(ev.Data)
	if err != nil {
		return err
	}
	sl, err := m.slaveFor(id)
	if err != nil {
		return err
	}
	if err := sl.ForwardEvent(ctx, ev); err != nil {
		return m.hostUnreachable(err, id)
	}
	return nil
}

// broadcast sends an event to every slave with one NATS message, checked
// against the catalog as any message the master sends; each slave passes
// it on to its instances, except the one it came from.
func (m *Master) broadcast(ctx context.Context, ev *link.Message) error {
	return m.bcast.ForwardEvent(ctx, ev)
}

// relayOutput passes the output of an instance that slave id, on l,
// hosts to the controls following it.
func (m *Master) relayOutput(ctx context.Context, l *link.Link, slaveID int64, ev *link.Message) error {
	id, err := instanceID(ev.Data)
	if err != nil {
		return err
	}
	m.mu.Lock()
	if !m.speaksForLocked(l, slaveID, id) {
		m.mu.Unlock()
		return nil
	}
	var to []*link.Link
	for l, st := range m.controls {
		if st.follow[id] {
			to = append(to, l)
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, l := range to {
		if err := l.ForwardEvent(ctx, ev); err != nil {
			errs = append(errs, fmt.Errorf("relay to %s: %w", l.Peer(), err))
		}
	}
	return errors.Join(errs...)
}

// watchPeers closes the links of slaves and controls that have gone quiet
// for longer than the peer timeout: a killed process, a half-open
// connection. Slaves ping at every heartbeat, so a live one never does.
func (m *Master) watchPeers() {
	defer m.wg.Done()
	t := time.NewTicker(min(m.cfg.Timing.HeartbeatInterval, m.cfg.Timing.PeerTimeout/4))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			var dead []*link.Link
			m.mu.Lock()
			for _, s := range m.slaves {
				if s.lastConn != nil && now.Sub(s.lostAt) > m.cfg.Timing.SessionTimeout {
					s.lastConn = nil // what it owed the slave is given up
				}
				if s.link == nil {
					continue
				}
				quiet := s.watch.quietFor(s.link, now)
				switch {
				case quiet > m.cfg.Timing.SessionTimeout:
					m.log.Warn("slave session expired", "slave", s.id, "name", s.name, "timeout", m.cfg.Timing.SessionTimeout)
					dead = append(dead, s.link)
					// The session is over: nothing of it passes to the next.
					s.link, s.conn = nil, nil
				case quiet > m.cfg.Timing.PeerTimeout && !s.lost:
					// Shown as gone; the session is kept, and what is sent to
					// the slave meanwhile reaches it if it comes back in time.
					s.lost = true
					m.log.Warn("slave lost: no heartbeat", "slave", s.id, "name", s.name, "timeout", m.cfg.Timing.PeerTimeout)
				case quiet <= m.cfg.Timing.PeerTimeout && s.lost:
					s.lost = false
					m.log.Info("slave back within its session", "slave", s.id, "name", s.name)
				}
			}
			for l, st := range m.controls {
				if st.watch.quietFor(l, now) > m.cfg.Timing.SessionTimeout {
					dead = append(dead, l)
				}
			}
			m.mu.Unlock()
			for _, l := range dead {
				_ = l.Close()
			}
		}
	}
}

// Close shuts the master down gracefully: each slave and control is told
// (prepare_disconnect) and its in-flight requests end, within ctx; then
// the NATS connection drains and the embedded server, if any, stops. It
// returns an error only for what the master itself failed to release (its
// NATS connection, its metrics server); peers that did not answer in time
// are logged.
func (m *Master) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil
	}
	m.closing = true
	var links []*link.Link
	for _, s := range m.slaves {
		if s.link != nil {
			links = append(links, s.link)
		}
	}
	for l := range m.controls {
		links = append(links, l)
	}
	m.mu.Unlock()
	close(m.stop)
	m.wg.Wait()

	// Every link drains before any closes, and the slaves keep what their
	// instances send for the next master once told (prepare_disconnect):
	// what a slave forwarded before then is still broadcast to every
	// slave, and acknowledged by each, before their links close.
	//
	// A peer that cannot take part (a killed slave, a follower gone
	// without a word) is no failure of the master's: what it could not
	// flush is logged, and the master stops cleanly all the same.
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Drain(ctx); err != nil {
				m.log.Warn("a peer did not finish in time", "peer", l.Peer().String(), "error", err)
			}
		}()
	}
	wg.Wait()
	if err := m.fan.FlushBroadcasts(ctx); err != nil {
		m.log.Warn("broadcasts not acknowledged by every slave before the stop", "error", err)
	}
	for _, l := range links {
		_ = l.Close()
	}
	err := errors.Join(m.node.Close(), stopServing(ctx, m.httpSrv))
	if m.broker != nil {
		m.broker.Close()
	}
	m.log.Info("master stopped")
	return err
}

// Broker returns the NATS server the master embeds, or nil when it uses
// an external one. Endpoints started in the same process can reach it
// in-process (WithLocalBroker).
func (m *Master) Broker() *Broker { return m.broker }
