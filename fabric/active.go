package fabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// activeMaster is one term of a master process: the active master, from
// the moment it wins the lease and reads the state until its term ends
// (it closes, or steps down). Its links, the slaves' sessions and the
// controls' belong to the term; the state it reads at the start and
// writes as it goes outlives it, in the state bucket.
type activeMaster struct {
	*Master
	log   *slog.Logger
	term  uint64
	node  transport
	fan   broadcaster       // node's broadcasts, FlushBroadcasts
	bcast *link.Broadcaster // to every slave, checked against the catalog

	// open is the term's half of the Node's gate (the lease's validity is
	// the other): false once the term is ending.
	open     atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
	// routines are the goroutines of the term: watchPeers, watchStart,
	// and one per link (watchSlaveLink, watchControlLink), none per
	// message. The term's end stops them and waits for them.
	routines routines

	// wired is closed once node, fan and bcast are set (or the term
	// failed to start, and bcast stays nil): the Node may offer links
	// before connect returns them.
	wired chan struct{}

	lost     chan struct{} // closed when the term must end at once
	lostOnce sync.Once
	lostWhy  error

	// ready is closed when every slave the state knows has registered
	// in this term, or the starting window is over.
	ready     chan struct{}
	readyOnce sync.Once

	// stateMu serializes the changes of durable state: each is decided,
	// written to the state bucket, then applied to memory under mu.
	stateMu sync.Mutex

	mu        sync.Mutex
	closing   bool
	slaves    map[int64]*slaveState
	instances map[int64]*instanceState
	controls  map[*link.Link]*controlState
	known     map[int64]slaveRecord // the slaves the state knows
	bans      map[string]messages.Ban
	lastID    int64 // the highest instance id ever given out
	outputs   map[int64]*outputBuffer
	// The update events' feeds, and their stamps (subscriptions.go).
	feeds  map[string]*feed
	stamps stamper
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
	plugins  []string // what its registration named
}

// connected reports whether the slave has a session and is heard from.
func (s *slaveState) connected() bool { return s != nil && s.link != nil && !s.lost }

type instanceState struct {
	id      int64
	name    string
	slaveID int64 // 0: not assigned
	status  string
	program *messages.Program // nil: the slave's default kind; never changed once made
}

func (i *instanceState) record() instanceRecord {
	return newInstanceRecord(i.id, i.name, i.slaveID, i.program)
}

type controlState struct {
	since   time.Time // when its link began
	plugins []string  // what it said it has (set_plugins)
	user    string
	conn    session // the link's connector
	follow  map[int64]bool
	watch   liveness
	// While the master relays to this control the output it asked to be
	// replayed (set_instance_output_subscriptions with since), new lines
	// wait here, so that they arrive after the replay, in order.
	replaying bool
	pending   []*link.Envelope
	// subs are the update events the control subscribed to; out is what
	// the master has queued for it of them.
	subs map[string]bool
	out  *outbox
}

func newControlState(user string, conn session) *controlState {
	return &controlState{user: user, conn: conn, follow: map[int64]bool{}, subs: map[string]bool{}, out: newOutbox(), since: time.Now()}
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

// How much of each instance's output the master keeps, to replay to a
// control that moves to it: the latest lines, at most this many, and at
// most this many bytes of them.
const (
	outputKept      = 1000
	outputKeptBytes = 1 << 20
)

// outputBuffer is an instance's latest output lines, oldest first.
type outputBuffer struct {
	lines []bufferedLine
	bytes int
}

type bufferedLine struct {
	time int64
	msg  *link.Envelope
}

func (b *outputBuffer) add(l bufferedLine) {
	b.lines = append(b.lines, l)
	b.bytes += len(l.msg.Data)
	drop := 0
	for len(b.lines)-drop > outputKept || (b.bytes > outputKeptBytes && drop < len(b.lines)-1) {
		b.bytes -= len(b.lines[drop].msg.Data)
		drop++
	}
	if drop > 0 {
		// Copied down now and then, rather than on every line.
		if drop >= len(b.lines)/2 || cap(b.lines) > 2*outputKept {
			b.lines = append([]bufferedLine(nil), b.lines[drop:]...)
		} else {
			b.lines = b.lines[drop:]
		}
	}
}

// since returns the lines whose time is at or after t, oldest first.
func (b *outputBuffer) since(t int64) []*link.Envelope {
	var out []*link.Envelope
	for _, l := range b.lines {
		if l.time >= t {
			out = append(out, l.msg)
		}
	}
	return out
}

func newActiveMaster(p *Master, snap snapshot) *activeMaster {
	m := &activeMaster{
		Master:    p,
		log:       p.log.With("term", snap.term),
		term:      snap.term,
		stop:      make(chan struct{}),
		lost:      make(chan struct{}),
		ready:     make(chan struct{}),
		wired:     make(chan struct{}),
		slaves:    map[int64]*slaveState{},
		instances: map[int64]*instanceState{},
		controls:  map[*link.Link]*controlState{},
		known:     snap.slaves,
		bans:      snap.bans,
		lastID:    snap.lastID,
		outputs:   map[int64]*outputBuffer{},
	}
	for _, r := range snap.instances {
		status := messages.StatusUnassigned
		if r.SlaveID != 0 {
			status = messages.StatusUnknown
		}
		m.instances[r.ID] = &instanceState{id: r.ID, name: r.Name, slaveID: r.SlaveID, status: status, program: r.Program}
	}
	for _, r := range snap.slaves {
		m.slaves[r.ID] = &slaveState{id: r.ID, name: r.Name}
	}
	m.initFeeds(snap)
	m.open.Store(true)
	return m
}

// gate is the Node's gate: the term may act while it is not ending and
// its lease certainly holds.
func (m *activeMaster) gate() bool { return m.open.Load() && m.lease.valid() }

// start starts the term's watchers.
func (m *activeMaster) start() {
	m.routines.start(m.watchPeers)
	m.routines.start(m.watchStart)
	m.routines.start(m.keepStamps)
}

// startWindow bounds how long a new term waits for the slaves it knows
// to register before it answers what depends on them: they register
// again as soon as they hear of the new term (its announcement), or
// within a heartbeat and the registration's backoff.
func (m *activeMaster) startWindow() time.Duration {
	return min(m.cfg.Timing.PeerTimeout, 2*m.cfg.Timing.HeartbeatInterval+time.Second)
}

// watchStart ends the starting window when every slave the state knows
// has registered, or when it is over.
func (m *activeMaster) watchStart() {
	m.checkReady()
	t := time.NewTimer(m.startWindow())
	defer t.Stop()
	select {
	case <-m.ready:
	case <-m.stop:
	case <-t.C:
		m.mu.Lock()
		var missing []int64
		for id := range m.known {
			if s := m.slaves[id]; s == nil || s.link == nil {
				missing = append(missing, id)
			}
		}
		m.mu.Unlock()
		slices.Sort(missing)
		m.log.Info("starting window over; slaves not registered yet", "slaves", missing, "window", m.startWindow())
		m.readyOnce.Do(func() { close(m.ready) })
	}
}

// checkReady ends the starting window if every slave the state knows has
// registered.
func (m *activeMaster) checkReady() {
	m.mu.Lock()
	all := true
	for id := range m.known {
		if s := m.slaves[id]; s == nil || s.link == nil {
			all = false
			break
		}
	}
	m.mu.Unlock()
	if all {
		m.readyOnce.Do(func() { close(m.ready) })
	}
}

// awaitReady waits, within ctx, for the starting window to end. A term
// that stops meanwhile never ends its window (watchStart returns): the
// wait ends then too, so that it holds up neither the shutdown's drain nor
// its wait for the term's goroutines.
func (m *activeMaster) awaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	default:
	}
	select {
	case <-m.ready:
		return nil
	case <-m.stop:
		return errMasterShuttingDown()
	case <-ctx.Done():
		return link.Errorf(CodeMasterStarting, "the master has just become active and has not heard from every slave yet; nothing was done: retry in a moment")
	}
}

// errMasterShuttingDown is the error of what a term refuses, or stops
// waiting for, once it is ending.
func errMasterShuttingDown() error {
	return link.Errorf(link.CodeUnavailable, "the master is shutting down")
}

// lose ends the term at once, for why.
func (m *activeMaster) lose(why error) {
	m.lostOnce.Do(func() {
		m.open.Store(false)
		m.lostWhy = why
		close(m.lost)
	})
}

// stateErr turns an error of the state store into the error a request
// ends with, ending the term if the store says it is over.
func (m *activeMaster) stateErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errFenced):
		m.lose(err)
		return link.Errorf(link.CodeUnavailable, "this master's term has ended and another master has taken over; nothing was changed: retry")
	case errors.Is(err, errUnknown):
		m.lose(err)
		m.log.Error("a state write was not confirmed; stepping down", "error", err)
		return link.Errorf(link.CodeSessionLost, "the master could not confirm that it saved the change (its JetStream did not answer); it may or may not have been made, and the master is stepping down: check, and retry if it was not")
	}
	return err
}

// change is one write to the state bucket.
type change struct {
	key   string
	value any // nil: delete the key
}

// save writes changes in order, as the master of this term. The caller
// holds stateMu.
func (m *activeMaster) save(ctx context.Context, changes ...change) error {
	for _, c := range changes {
		var err error
		if c.value == nil {
			err = m.store.del(ctx, m.term, c.key)
		} else {
			err = m.store.put(ctx, m.term, c.key, c.value)
		}
		if err != nil {
			return m.stateErr(err)
		}
	}
	return nil
}

func (m *activeMaster) pending() int {
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
	return n
}

func (m *activeMaster) controlCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.controls)
}

func (m *activeMaster) slaveList() []messages.SlaveInfo {
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

// shownStatusLocked is the status a list shows for i: unassigned without
// a slave, unknown while its slave is not connected, else its own. m.mu
// must be held.
func (m *activeMaster) shownStatusLocked(i *instanceState) string {
	switch {
	case i.slaveID == 0:
		return messages.StatusUnassigned
	case !m.slaves[i.slaveID].connected():
		return messages.StatusUnknown
	}
	return i.status
}

func (m *activeMaster) instanceList() []messages.InstanceInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]messages.InstanceInfo, 0, len(m.instances))
	for _, i := range m.instances {
		out = append(out, messages.InstanceInfo{ID: i.id, Name: i.name, SlaveID: i.slaveID, Status: m.shownStatusLocked(i)})
	}
	slices.SortFunc(out, func(a, b messages.InstanceInfo) int { return cmpInt(a.ID, b.ID) })
	return out
}

// slaveStatus returns every slave with its version and when the master
// last heard from it, sorted by id.
func (m *activeMaster) slaveStatus(now time.Time) []messages.SlaveStatus {
	infos := m.slaveList()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]messages.SlaveStatus, 0, len(infos))
	for _, info := range infos {
		s := m.slaves[info.ID]
		if s == nil {
			continue // gone between the two looks
		}
		seen := s.lastSeen()
		silent := int64(0)
		if !seen.IsZero() {
			silent = max(0, now.Sub(seen).Milliseconds())
		}
		out = append(out, messages.SlaveStatus{SlaveInfo: info, Version: s.version, LastSeen: max(0, seen.UnixMilli()), SilentMS: silent})
	}
	return out
}

// lastSeen is when the master last heard from the slave, as far as its
// peer watch knows: it looks once a tick of watchPeers, and a link that
// closed was heard from last when it closed. Zero for a slave the state
// knows that has not registered with this master.
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
func (m *activeMaster) accept(c session) error {
	<-m.wired
	if m.bcast == nil {
		return link.Errorf(link.CodeUnavailable, "the master's term did not start")
	}
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return errMasterShuttingDown()
	}
	switch c.Peer().Type {
	case messages.Slave:
		return m.acceptSlave(c)
	case messages.Control:
		return m.acceptControl(c)
	}
	return link.Errorf(link.CodeNotConnected, "the master takes links from slaves and controls only, not %s", c.Peer())
}

func (m *activeMaster) newLink(c session, opts ...link.Option) (*link.Link, error) {
	opts = append([]link.Option{link.WithLogger(m.log), link.WithRequestTimeout(m.cfg.Timing.RequestTimeout), link.WithObserver(m.metrics), link.WithRouter(masterRouter{m})}, opts...)
	return link.New(c, link.MasterAddress, c.Peer(), m.catalog, opts...)
}

func (m *activeMaster) acceptSlave(c session) error {
	id, ok := parseID(c.Peer().ID)
	if !ok {
		return link.Errorf(link.CodeInvalidMessage, "slave ids are positive integers written without a sign or leading zeros, not %q", c.Peer().ID)
	}
	l, err := m.newLink(c)
	if err != nil {
		return err
	}
	m.wireSlave(l, id, c)
	if err := l.Start(); err != nil {
		return err
	}
	if !m.routines.start(func() { m.watchSlaveLink(id, l) }) {
		_ = l.Close()
		return errMasterShuttingDown()
	}
	return nil
}

// wireSlave attaches the master's handlers to its link to slave id, which
// c carries.
func (m *activeMaster) wireSlave(l *link.Link, id int64, c session) {
	link.HandleRequest(l, messages.RegisterSlave, func(ctx context.Context, r messages.SlaveRegistration) (messages.SlaveWelcome, error) {
		return m.register(ctx, l, c, id, r)
	})
	// What a slave reports is refused (counted, and logged at a bounded
	// rate by m.claims) unless it registered on this link and speaks of
	// instances it hosts; a refused event's handler returns nil, since the
	// link would log every failure.
	link.HandleEvent(l, messages.UpdateInstances, func(ctx context.Context, u messages.InstanceUpdate) error {
		m.updateInstances(ctx, l, id, u.Instances)
		return nil
	})
	// The handlers marked nb only take m.mu, which no one holds across a
	// wait, and send and store nothing: they run where the message is
	// delivered, without a hand-off. The others wait (for the state
	// bucket, the starting window, or a peer's answer that the Node's
	// routing goroutine must deliver), so they must not.
	nb := link.NonBlocking()
	link.HandleEvent(l, messages.InstanceStarted, func(_ context.Context, r messages.InstanceRef) error {
		m.setStatus(l, id, r.InstanceID, messages.StatusRunning)
		return nil
	}, nb)
	link.HandleEvent(l, messages.InstanceStopped, func(_ context.Context, r messages.InstanceRef) error {
		m.setStatus(l, id, r.InstanceID, messages.StatusStopped)
		return nil
	}, nb)
	l.HandleEventJSON(messages.InstanceOutput, func(ctx context.Context, ev *link.Envelope) error {
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
func (m *activeMaster) wire(l *link.Link) {
	m.handlers.attach(l)
	m.route(l)
}

// watchSlaveLink follows a slave's link until it ends (then the slave is
// gone: slaveGone) or the term does. It closes the link if the slave has
// not registered on it within twice the peer timeout: a slave registers as
// soon as it speaks, so such a link is left over from a process that died
// before registering, or is someone else speaking as the slave. Only
// registered links are watched by their heartbeats, so without this it
// would stay open for ever.
func (m *activeMaster) watchSlaveLink(id int64, l *link.Link) {
	t := time.NewTimer(2 * m.cfg.Timing.PeerTimeout)
	defer t.Stop()
	for {
		select {
		case <-l.Done():
			m.slaveGone(id, l)
			return
		case <-m.stop:
			return
		case <-t.C:
			m.mu.Lock()
			s := m.slaves[id]
			registered := s != nil && s.link == l
			m.mu.Unlock()
			if !registered {
				m.log.Warn("closed a slave link that did not register", "slave", id, "timeout", 2*m.cfg.Timing.PeerTimeout)
				_ = l.Close()
			}
		}
	}
}

// register binds a slave id to the link it registered on, saves what is
// new in what it hosts, and answers with the ban list. A second process
// claiming an id that is still answering is refused; one whose earlier
// process has gone silent takes its place. The new session takes over
// the events the slave's previous one never acknowledged, if that ended
// within the session timeout: what was sent to the process that went
// away reaches the one that came back, as a slave does for a restarted
// master.
func (m *activeMaster) register(ctx context.Context, l *link.Link, c session, id int64, r messages.SlaveRegistration) (messages.SlaveWelcome, error) {
	if r.ID != id {
		return messages.SlaveWelcome{}, link.Errorf(link.CodeInvalidMessage, "slave_id %d does not match the sender %s", r.ID, l.Peer())
	}
	old, oldConn, err := m.replaceable(ctx, l, id, r.Name)
	if err != nil {
		return messages.SlaveWelcome{}, err
	}

	// Save what the registration changes before anything is answered: the
	// bans given below are the ones in force once it is registered, and a
	// ban given afterwards reaches it by broadcast.
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	if err := m.claimableLocked(id, r.Instances); err != nil {
		m.mu.Unlock()
		return messages.SlaveWelcome{}, m.claims.refuse(l.Peer(), claimHosting, err)
	}
	changes := m.hostingChangesLocked(id, r.Instances)
	if k, ok := m.known[id]; !ok || k.Name != r.Name {
		changes = append(changes, change{slaveKey(id), slaveRecord{V: stateVersion, ID: id, Name: r.Name}})
	}
	m.mu.Unlock()
	if err := m.save(ctx, changes...); err != nil {
		return messages.SlaveWelcome{}, err
	}
	welcome := m.bind(l, c, id, r, old, oldConn)
	m.log.Info("slave registered", "slave", id, "name", r.Name, "instances", len(r.Instances))
	m.checkReady()
	return welcome, nil
}

// replaceable checks whether slave id may register on l when another link
// is the slave's: only if the process at its other end no longer answers
// (then that link is closed, and returned with its connector, for the new
// session to take over what it was owed). A process that still answers
// keeps its id, and the new one is refused.
func (m *activeMaster) replaceable(ctx context.Context, l *link.Link, id int64, name string) (*link.Link, session, error) {
	m.mu.Lock()
	var old *link.Link
	var oldConn session
	if s := m.slaves[id]; s != nil && s.link != nil && s.link != l {
		old, oldConn = s.link, s.conn
	}
	m.mu.Unlock()
	if old == nil {
		return nil, nil, nil
	}
	pctx, cancel := context.WithTimeout(ctx, min(2*time.Second, m.cfg.Timing.PeerTimeout))
	_, err := link.Request(pctx, old, messages.Ping, messages.Empty{})
	cancel()
	if err == nil {
		m.log.Warn("refused a second slave with a connected id", "slave", id, "name", name)
		return nil, nil, link.Errorf(CodeAlreadyConnected, "slave %d is already connected from another process; stop that one first, or give this one another FABRIC_SLAVE_ID", id)
	}
	m.log.Info("slave reconnected from a new process; the old one does not answer", "slave", id, "error", err)
	_ = old.Close()
	return old, oldConn, nil
}

// bind makes l, carried by c, slave id's link, its registration r saved:
// c takes over what the slave's previous session (old's, or the one that
// ended within the session timeout) was never acknowledged, and the
// master's view takes the slave's instances. It returns the welcome, with
// the bans in force. The caller holds stateMu.
func (m *activeMaster) bind(l *link.Link, c session, id int64, r messages.SlaveRegistration, old *link.Link, oldConn session) messages.SlaveWelcome {
	m.mu.Lock()
	m.known[id] = slaveRecord{V: stateVersion, ID: id, Name: r.Name}
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
	adopt := c != nil && s.link != l
	m.mu.Unlock()
	if adopt {
		// Before the link is the slave's, and so before the master sends
		// anything on it (broadcasts included: the session receives them
		// from the adoption on), what the previous session never
		// acknowledged comes first. Adopt publishes what it takes over,
		// so it runs outside m.mu, which no one holds across a send. What
		// it read under m.mu still holds: stateMu, held since the save,
		// keeps every other registration out, and what may happen
		// meanwhile (the old link ends: slaveGone; the session expires:
		// watchPeers) only clears s.link and s.lastConn, which this
		// registration replaces below all the same.
		if err := c.Adopt(prev); err != nil {
			m.log.Warn("events for the slave's previous session not passed on", "slave", id, "error", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s.name, s.version, s.link, s.conn, s.since, s.lost = r.Name, r.Version, l, c, time.Now(), false
	s.plugins = r.Plugins
	s.lastConn, s.lostAt = nil, time.Time{}
	s.watch = liveness{}
	m.setInstancesLocked(id, r.Instances)
	m.reconcileLocked()
	return messages.SlaveWelcome{Bans: m.banListLocked()}
}

// hostingChangesLocked returns the writes that make hosted the full list
// of slave id's instances in the state: new instances, renamed or newly
// assigned ones, the ones it no longer hosts (unassigned), and the id
// counter if an id passes it.
func (m *activeMaster) hostingChangesLocked(id int64, hosted []messages.HostedInstance) []change {
	var out []change
	for _, i := range m.instances {
		if i.slaveID == id && !slices.ContainsFunc(hosted, func(h messages.HostedInstance) bool { return h.ID == i.id }) {
			r := i.record()
			r.SlaveID = 0
			out = append(out, change{instanceKey(i.id), r})
		}
	}
	last := m.lastID
	for _, h := range hosted {
		if i := m.instances[h.ID]; i == nil {
			out = append(out, change{instanceKey(h.ID), newInstanceRecord(h.ID, h.Name, id, nil)})
		} else if i.name != h.Name || i.slaveID != id {
			// A slave does not say what program an instance runs: the
			// master's record does.
			out = append(out, change{instanceKey(h.ID), newInstanceRecord(h.ID, h.Name, id, i.program)})
		}
		last = max(last, h.ID)
	}
	if last != m.lastID {
		// An id a slave brought is never given out by create_instance.
		out = append(out, change{keyNextID, counterRecord{V: stateVersion, Last: last}})
	}
	return out
}

// setInstancesLocked makes hosted the full list of slave id's instances.
func (m *activeMaster) setInstancesLocked(id int64, hosted []messages.HostedInstance) {
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
		var program *messages.Program
		if i := m.instances[h.ID]; i != nil {
			program = i.program
		}
		m.instances[h.ID] = &instanceState{id: h.ID, name: h.Name, slaveID: id, status: status, program: program}
		m.lastID = max(m.lastID, h.ID)
	}
}

func (m *activeMaster) banListLocked() []messages.Ban {
	out := slices.Collect(maps.Values(m.bans))
	slices.SortFunc(out, func(a, b messages.Ban) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// claimableLocked reports whether slave id may host every instance of
// hosted: one the master does not know, or knows as unassigned or as
// this slave's. An instance assigned to another slave stays that slave's,
// connected or not, until it is unassigned or deleted: a slave speaks for
// the instances it hosts, and never takes another's.
func (m *activeMaster) claimableLocked(id int64, hosted []messages.HostedInstance) *link.Error {
	for _, h := range hosted {
		if i := m.instances[h.ID]; i != nil && i.slaveID != 0 && i.slaveID != id {
			return link.Errorf(CodeConflict, "instance %d (%s) is assigned to slave %d, not to slave %d: remove it from this slave's instances, or delete it on the master first", h.ID, i.name, i.slaveID, id)
		}
	}
	return nil
}

// registeredLocked reports whether l is the link slave id registered on.
func (m *activeMaster) registeredLocked(l *link.Link, id int64) *link.Error {
	if s := m.slaves[id]; s == nil || s.link != l {
		return link.Errorf(CodeNotRegistered, "%s has not registered", l.Peer())
	}
	return nil
}

// speaksForLocked reports whether slave id, on l, may speak for instance
// instanceID: it registered on l and hosts the instance. A refused claim
// is counted.
func (m *activeMaster) speaksForLocked(l *link.Link, id, instanceID int64) bool {
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
func (m *activeMaster) speaksFor(l *link.Link, id, instanceID int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.speaksForLocked(l, id, instanceID)
}

func (m *activeMaster) updateInstances(ctx context.Context, l *link.Link, id int64, hosted []messages.HostedInstance) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	if err := m.registeredLocked(l, id); err != nil {
		m.mu.Unlock()
		m.claims.refuse(l.Peer(), claimHosting, err)
		return
	}
	if err := m.claimableLocked(id, hosted); err != nil {
		m.mu.Unlock()
		m.claims.refuse(l.Peer(), claimHosting, err)
		return
	}
	changes := m.hostingChangesLocked(id, hosted)
	m.mu.Unlock()
	if err := m.save(ctx, changes...); err != nil {
		m.log.Warn("could not save a slave's instances; it reports them again when it registers", "slave", id, "error", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.registeredLocked(l, id) == nil {
		m.setInstancesLocked(id, hosted)
		m.reconcileLocked()
	}
}

func (m *activeMaster) setStatus(l *link.Link, slaveID, instanceID int64, status string) {
	m.mu.Lock()
	ok := m.speaksForLocked(l, slaveID, instanceID)
	if ok {
		m.instances[instanceID].status = status
		m.reconcileLocked()
	}
	m.mu.Unlock()
	if ok {
		m.log.Info("instance "+status, "instance", instanceID, "slave", slaveID)
	}
}

func (m *activeMaster) slaveGone(id int64, l *link.Link) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.slaves[id]; s != nil && s.link == l {
		s.link, s.lastConn, s.conn, s.lostAt = nil, s.conn, nil, time.Now()
		m.log.Info("slave disconnected", "slave", id, "name", s.name)
		m.reconcileLocked()
	}
}

func (m *activeMaster) slaveLink(id int64) *link.Link {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.slaves[id]; s != nil {
		return s.link
	}
	return nil
}

func (m *activeMaster) acceptControl(c session) error {
	user := c.Peer().ID
	l, err := m.newLink(c, link.WithAuthorizer(func(ctx context.Context, def *messages.Definition, msg *link.Envelope) error {
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
	st := newControlState(user, c)
	m.wireControl(l, st)
	if err := l.Start(); err != nil {
		return err
	}
	m.mu.Lock()
	m.controls[l] = st
	m.mu.Unlock()
	if !m.routines.start(func() { m.watchControlLink(l, st) }) {
		m.forgetControl(l)
		_ = l.Close()
		return errMasterShuttingDown()
	}
	return nil
}

// watchControlLink sends the control the updates queued for it (st.out),
// and forgets its link when it ends, unless the term ends first.
func (m *activeMaster) watchControlLink(l *link.Link, st *controlState) {
	for {
		select {
		case <-l.Done():
			m.forgetControl(l)
			return
		case <-m.stop:
			return
		case <-st.out.wake:
			st.out.send(m, l)
		}
	}
}

func (m *activeMaster) forgetControl(l *link.Link) {
	m.mu.Lock()
	delete(m.controls, l)
	m.mu.Unlock()
}

// wireControl attaches the master's handlers to its link to a control.
func (m *activeMaster) wireControl(l *link.Link, st *controlState) {
	link.HandleRequest(l, messages.ListSlaves, func(ctx context.Context, _ messages.Empty) (messages.SlaveList, error) {
		if err := m.awaitReady(ctx); err != nil {
			return messages.SlaveList{}, err
		}
		return messages.SlaveList{Slaves: m.slaveList()}, nil
	})
	link.HandleRequest(l, messages.ListInstances, func(ctx context.Context, _ messages.Empty) (messages.InstanceList, error) {
		if err := m.awaitReady(ctx); err != nil {
			return messages.InstanceList{}, err
		}
		return messages.InstanceList{Instances: m.instanceList()}, nil
	})
	link.HandleRequest(l, messages.CreateInstance, m.createInstance)
	link.HandleRequest(l, messages.AssignInstanceCommand, m.assignInstance)
	link.HandleRequest(l, messages.DeleteInstance, m.deleteInstance)
	link.HandleRequest(l, messages.GetClusterStatus, func(ctx context.Context, _ messages.Empty) (messages.ClusterStatus, error) {
		return m.status(ctx, m)
	})
	link.HandleRequest(l, messages.SetInstanceOutputSubscriptions, func(ctx context.Context, r messages.OutputSubscriptions) (messages.Empty, error) {
		return messages.Empty{}, m.follow(ctx, l, st, r)
	})
	link.HandleRequest(l, messages.Subscribe, func(ctx context.Context, r messages.Subscription) (messages.Empty, error) {
		return messages.Empty{}, m.subscribe(ctx, l, st, r)
	})
	link.HandleRequest(l, messages.ListBannedPlayers, func(context.Context, messages.Empty) (messages.BanList, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return messages.BanList{Bans: m.banListLocked()}, nil
	}, link.NonBlocking()) // only m.mu: no hand-off
	link.HandleRequest(l, messages.SetPlugins, func(_ context.Context, p messages.PluginList) (messages.Empty, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		st.plugins = p.Plugins
		return messages.Empty{}, nil
	}, link.NonBlocking()) // only m.mu: no hand-off
	link.HandleRequest(l, messages.SetPlayerBanned, func(ctx context.Context, b messages.Ban) (messages.Empty, error) {
		return messages.Empty{}, m.setBanned(ctx, l, st, b)
	})
	m.wire(l)
}

// setBanned saves a ban (or its lifting), then broadcasts it to every
// slave linked now; the others get the ban list when they register.
func (m *activeMaster) setBanned(ctx context.Context, l *link.Link, st *controlState, b messages.Ban) error {
	data, err := messages.BanlistUpdate.Encode(b)
	if err != nil {
		return err
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	c := change{key: banKey(b.Name)}
	if b.Banned {
		c.value = banRecord{V: stateVersion, Name: b.Name, Reason: b.Reason}
	}
	if err := m.save(ctx, c); err != nil {
		return err
	}
	m.mu.Lock()
	if b.Banned {
		m.bans[b.Name] = b
	} else {
		delete(m.bans, b.Name)
	}
	m.mu.Unlock()
	m.log.Info("player ban changed", "player", b.Name, "banned", b.Banned, "by", st.user)
	// Still under stateMu (not m.mu: a broadcast may wait for the
	// slowest slave's acknowledgements): bans reach the slaves in the
	// order they were saved, and a slave that registers meanwhile, which
	// takes stateMu too, gets each ban either in its welcome or in this
	// broadcast.
	if err := m.broadcast(ctx, &link.Envelope{Kind: messages.KindEvent, Type: messages.BanlistUpdate.Name(), Data: data, Origin: l.Peer()}); err != nil {
		return link.Errorf(link.CodeUnavailable, "the ban is saved, and every slave gets it when it next registers, but it was not sent to the slaves now: %v", err)
	}
	return nil
}

func (m *activeMaster) createInstance(ctx context.Context, r messages.NewInstance) (messages.InstanceRef, error) {
	if p := r.Program; p != nil && (!filepath.IsAbs(p.Command) || (p.Dir != "" && !filepath.IsAbs(p.Dir))) {
		return messages.InstanceRef{}, link.Errorf(link.CodeInvalidMessage, "instance %s was not created: its program (%q) and working directory (%q) must be absolute paths", r.Name, p.Command, p.Dir)
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	highest := m.lastID
	for existing := range m.instances {
		highest = max(highest, existing)
	}
	m.mu.Unlock()
	// A slave may bring any id up to messages.MaxInstanceID (the schema
	// refuses larger ones): past it there is no id to give out.
	if highest >= messages.MaxInstanceID {
		return messages.InstanceRef{}, link.Errorf(CodeConflict, "no instance id is left: a slave brought instance id %d, the largest there is", highest)
	}
	id := highest + 1
	rec := newInstanceRecord(id, r.Name, 0, r.Program)
	if err := m.save(ctx, change{keyNextID, counterRecord{V: stateVersion, Last: id}}, change{instanceKey(id), rec}); err != nil {
		return messages.InstanceRef{}, err
	}
	m.mu.Lock()
	m.lastID = id
	m.instances[id] = &instanceState{id: id, name: r.Name, status: messages.StatusUnassigned, program: r.Program}
	m.reconcileLocked()
	m.mu.Unlock()
	if r.Program != nil {
		m.log.Info("instance created", "instance", id, "name", r.Name, "program", r.Program.Command)
	} else {
		m.log.Info("instance created", "instance", id, "name", r.Name)
	}
	return messages.InstanceRef{InstanceID: id}, nil
}

func (m *activeMaster) assignInstance(ctx context.Context, a messages.Assignment) (messages.Empty, error) {
	m.mu.Lock()
	connected := m.slaves[a.SlaveID].connected()
	m.mu.Unlock()
	if !connected {
		if err := m.awaitReady(ctx); err != nil {
			return messages.Empty{}, err
		}
	}
	hosted, sl, err := m.assignee(a)
	if err != nil || sl == nil {
		return messages.Empty{}, err
	}
	if _, err := link.Request(ctx, sl, messages.AssignInstance, hosted); err != nil {
		if errors.Is(err, link.ErrNotConnected) {
			m.log.Debug("assign_instance not passed to the slave", "slave", a.SlaveID, "error", err)
			return messages.Empty{}, link.Errorf(CodeSlaveNotConnected, "slave %d is not connected", a.SlaveID)
		}
		return messages.Empty{}, err
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	i := m.instances[a.InstanceID]
	var changes []change
	if i != nil && i.slaveID != a.SlaveID {
		r := i.record()
		r.SlaveID = a.SlaveID
		changes = append(changes, change{instanceKey(i.id), r})
	}
	m.mu.Unlock()
	if err := m.save(ctx, changes...); err != nil {
		return messages.Empty{}, err
	}
	m.mu.Lock()
	if i != nil && i.slaveID == 0 {
		i.slaveID, i.status = a.SlaveID, messages.StatusStopped
	}
	m.reconcileLocked()
	m.mu.Unlock()
	m.log.Info("instance assigned", "instance", a.InstanceID, "slave", a.SlaveID)
	return messages.Empty{}, nil
}

// assignee returns the name of the instance a assigns and the link to the
// slave it is assigned to; no link and no error when it is that slave's
// already, and an error that says why when it cannot be assigned.
func (m *activeMaster) assignee(a messages.Assignment) (messages.HostedInstance, *link.Link, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.instances[a.InstanceID]
	s := m.slaves[a.SlaveID]
	var none messages.HostedInstance
	switch {
	case i == nil:
		return none, nil, link.Errorf(CodeInstanceNotFound, "instance %d does not exist", a.InstanceID)
	case s == nil:
		return none, nil, link.Errorf(CodeSlaveNotFound, "slave %d does not exist: no slave with that id has registered with the master", a.SlaveID)
	case i.slaveID == a.SlaveID:
		return none, nil, nil
	case i.slaveID != 0:
		return none, nil, link.Errorf(CodeConflict, "instance %d is assigned to slave %d already", a.InstanceID, i.slaveID)
	case !s.connected():
		return none, nil, link.Errorf(CodeSlaveNotConnected, "slave %d is not connected", a.SlaveID)
	}
	return messages.HostedInstance{ID: i.id, Name: i.name, Program: i.program}, s.link, nil
}

// deleteInstance deletes an instance: the slave that hosts it stops it if
// it runs and forgets it, then the master forgets it. An instance whose
// slave is not connected is not deleted (the slave would bring it back).
func (m *activeMaster) deleteInstance(ctx context.Context, r messages.InstanceRef) (messages.Empty, error) {
	sl, err := m.slaveFor(r.InstanceID)
	if err != nil && !errors.Is(err, &link.Error{Code: CodeInstanceNotAssigned}) {
		if waitErr := m.awaitReady(ctx); waitErr != nil {
			return messages.Empty{}, waitErr
		}
		sl, err = m.slaveFor(r.InstanceID)
	}
	switch {
	case errors.Is(err, &link.Error{Code: CodeInstanceNotAssigned}):
	case err != nil:
		return messages.Empty{}, err
	default:
		if _, err := link.Request(ctx, sl, messages.DeleteInstance, r); err != nil && !errors.Is(err, &link.Error{Code: CodeInstanceNotFound}) {
			return messages.Empty{}, err
		}
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	// The deletion is kept (gone.instance.<id>), written first, so that a
	// later term tells subscribers of it (subscriptions.go).
	gone := goneRecord{V: stateVersion, ID: r.InstanceID, At: time.Now().UTC()}
	m.mu.Lock()
	if i := m.instances[r.InstanceID]; i != nil {
		gone.Name, gone.SlaveID = i.name, i.slaveID
	}
	m.mu.Unlock()
	if err := m.save(ctx, change{goneKey(r.InstanceID), gone}, change{key: instanceKey(r.InstanceID)}); err != nil {
		return messages.Empty{}, err
	}
	m.mu.Lock()
	delete(m.instances, r.InstanceID)
	delete(m.outputs, r.InstanceID)
	m.reconcileLocked()
	m.mu.Unlock()
	m.log.Info("instance deleted", "instance", r.InstanceID)
	return messages.Empty{}, nil
}

// follow sets the instances whose output the master relays to the control
// of l, and relays first what it holds of it since the times asked for.
func (m *activeMaster) follow(ctx context.Context, l *link.Link, st *controlState, r messages.OutputSubscriptions) error {
	m.mu.Lock()
	// An id that names no instance is a mistake the operator should hear
	// of, rather than follow in silence for ever; the set the control
	// followed before stays as it was. The instances come from the state,
	// so a new term knows them all at once.
	for _, id := range r.InstanceIDs {
		if m.instances[id] == nil {
			m.mu.Unlock()
			return link.Errorf(CodeInstanceNotFound, "instance %d does not exist", id)
		}
	}
	clear(st.follow)
	for _, id := range r.InstanceIDs {
		st.follow[id] = true
	}
	var replay []*link.Envelope
	for _, c := range r.Since {
		if b := m.outputs[c.InstanceID]; b != nil && st.follow[c.InstanceID] {
			replay = append(replay, b.since(c.Time)...)
		}
	}
	if r.SinceMS > 0 {
		for _, id := range r.InstanceIDs {
			if b := m.outputs[id]; b != nil && !slices.ContainsFunc(r.Since, func(c messages.OutputCursor) bool { return c.InstanceID == id }) {
				replay = append(replay, b.since(r.SinceMS+1)...) // printed after since_ms
			}
		}
	}
	if len(replay) == 0 {
		m.mu.Unlock()
		return nil
	}
	st.replaying = true
	m.mu.Unlock()
	var errs []error
	for {
		for _, ev := range replay {
			if err := l.ForwardEvent(ctx, ev); err != nil {
				errs = append(errs, err)
				break
			}
		}
		m.mu.Lock()
		replay, st.pending = st.pending, nil
		if len(replay) == 0 {
			st.replaying = false
			m.mu.Unlock()
			break
		}
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}

// route attaches the fabric's routing to every message arriving on l that
// has no handler of its own: forwarding to an instance, broadcasting.
func (m *activeMaster) route(l *link.Link) {
	in := messages.Direction{Source: l.Peer().Type, Target: messages.Master}
	// One func value for all the types: the master keeps a handler per
	// type for every link.
	forwardRequest, forwardEvent := link.AsyncRequestHandler(m.forwardRequest), link.EventHandler(m.forwardEvent)
	for _, def := range m.catalog.On(in) {
		if l.Handles(def) {
			continue
		}
		switch {
		case def.ForwardTo() == messages.Instance && def.Kind() == messages.KindRequest:
			l.HandleRequestAsync(def, forwardRequest)
		case def.ForwardTo() == messages.Instance:
			l.HandleEventJSON(def, forwardEvent)
		case def.BroadcastTo() == messages.Instance:
			l.HandleEventJSON(def, func(ctx context.Context, ev *link.Envelope) error {
				if !m.checkOrigin(l, ev) {
					return nil // refused and counted
				}
				// A new term broadcasts once the slaves it knows have
				// registered (or the window is over): a slave that comes
				// back after its peers is owed what they sent meanwhile.
				_ = m.awaitReady(ctx)
				return m.broadcast(ctx, ev)
			})
		}
	}
}

// checkOrigin checks, and completes, the origin of a broadcast that
// arrived on l, as the master's router does of what it passes on
// (claimed).
func (m *activeMaster) checkOrigin(l *link.Link, ev *link.Envelope) bool {
	_, src, err := m.claimed(l, ev)
	if err != nil {
		return false
	}
	ev.Origin = src
	return true
}

// slaveFor finds the link to the slave that hosts an instance, or the
// error that says why there is none.
func (m *activeMaster) slaveFor(instanceID int64) (*link.Link, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.hostLocked(instanceID)
	if err != nil {
		return nil, err
	}
	return s.link, nil
}

// hostLocked is slaveFor under m.mu, returning the slave's state.
func (m *activeMaster) hostLocked(instanceID int64) (*slaveState, error) {
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
	return s, nil
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
func (m *activeMaster) hostUnreachable(err error, instanceID int64) error {
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

// slaveForReady is slaveFor, waiting (within ctx) for the starting window
// to end before it says that no slave is there.
func (m *activeMaster) slaveForReady(ctx context.Context, instanceID int64) (*link.Link, error) {
	sl, err := m.slaveFor(instanceID)
	if err == nil {
		return sl, nil
	}
	select {
	case <-m.ready:
		return nil, err
	default:
	}
	if err := m.awaitReady(ctx); err != nil {
		return nil, err
	}
	return m.slaveFor(instanceID)
}

// forwardRequest passes a request for an instance on to the slave that
// hosts it and leaves the slave's answer to reply, with no goroutine: it
// runs on the goroutine that delivered the request, and reply is called
// on the one that delivers the answer. Only before the term is ready,
// when the slave may not have registered yet, does a goroutine of the
// term's wait for it.
func (m *activeMaster) forwardRequest(ctx context.Context, req *link.Envelope, reply link.Reply) {
	id, err := instanceID(req.Data)
	if err != nil {
		reply(nil, err)
		return
	}
	sl, err := m.slaveFor(id)
	if err == nil {
		m.forwardTo(ctx, sl, id, req, reply)
		return
	}
	select {
	case <-m.ready:
		reply(nil, err)
		return
	default:
	}
	if !m.routines.start(func() {
		sl, err := m.slaveForReady(ctx, id)
		if err != nil {
			reply(nil, err)
			return
		}
		m.forwardTo(ctx, sl, id, req, reply)
	}) {
		reply(nil, errMasterShuttingDown())
	}
}

// forwardTo forwards req, for instance id, to its slave on sl.
func (m *activeMaster) forwardTo(ctx context.Context, sl *link.Link, id int64, req *link.Envelope, reply link.Reply) {
	sl.ForwardRequestAsync(ctx, req, func(data []byte, err error) {
		if err != nil {
			err = m.hostUnreachable(err, id)
		}
		reply(data, err)
	})
}

func (m *activeMaster) forwardEvent(ctx context.Context, ev *link.Envelope) error {
	id, err := instanceID(ev.Data)
	if err != nil {
		return err
	}
	sl, err := m.slaveForReady(ctx, id)
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
func (m *activeMaster) broadcast(ctx context.Context, ev *link.Envelope) error {
	return m.bcast.ForwardEvent(ctx, ev)
}

// relayOutput passes the output of an instance that slave id, on l,
// hosts to the controls following it, and keeps it for those that move
// to this master later and ask for what they missed.
func (m *activeMaster) relayOutput(ctx context.Context, l *link.Link, slaveID int64, ev *link.Envelope) error {
	var line struct {
		InstanceID int64 `json:"instance_id"`
		Time       int64 `json:"time"`
	}
	if err := json.Unmarshal(ev.Data, &line); err != nil || line.InstanceID < 1 {
		return link.Errorf(link.CodeInvalidMessage, "instance_output without an instance_id")
	}
	id := line.InstanceID
	kept := &link.Envelope{Kind: messages.KindEvent, Type: ev.Type, Data: ev.Data, Origin: ev.Origin}
	m.mu.Lock()
	if !m.speaksForLocked(l, slaveID, id) {
		m.mu.Unlock()
		return nil
	}
	b := m.outputs[id]
	if b == nil {
		b = &outputBuffer{}
		m.outputs[id] = b
	}
	b.add(bufferedLine{time: line.Time, msg: kept})
	var to []*link.Link
	for l, st := range m.controls {
		switch {
		case !st.follow[id]:
		case st.replaying:
			st.pending = append(st.pending, kept)
		default:
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
// for longer than the session timeout, and shows a slave quiet for the
// peer timeout as lost: a killed process, a half-open connection. Slaves
// and controls ping at every heartbeat, so a live one never is.
func (m *activeMaster) watchPeers() {
	every := min(m.cfg.Timing.HeartbeatInterval, m.cfg.Timing.PeerTimeout/4)
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			// Silence while this master could not hear (its gate closed:
			// what arrived was dropped), or while it did not run (paused,
			// starved: the tick is long overdue), says nothing of its
			// peers: they are given their timeouts afresh.
			overdue := now.Sub(last) > every+m.cfg.Timing.PeerTimeout/4
			last = now
			if overdue || !m.gate() {
				m.forgetSilences()
				continue
			}
			for _, l := range m.checkPeers(now) {
				_ = l.Close()
			}
		}
	}
}

// forgetSilences gives every peer its timeouts afresh.
func (m *activeMaster) forgetSilences() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.slaves {
		s.watch = liveness{}
	}
	for _, st := range m.controls {
		st.watch = liveness{}
	}
}

// checkPeers notes, at now, which slaves have been silent for the peer
// timeout (shown as lost) and which are back, and returns the links of the
// peers silent for the session timeout, for the caller to close outside
// m.mu. What the master owed a slave whose session ended longer ago than
// the session timeout is given up.
func (m *activeMaster) checkPeers(now time.Time) (dead []*link.Link) {
	m.mu.Lock()
	defer m.mu.Unlock()
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
	m.reconcileLocked()
	return dead
}

// quietLimit is how long a peer may have been silent and still be drained
// when the master shuts down: live slaves and controls ping at every
// heartbeat, so one silent for longer has died or is cut off, and waiting
// for its answer to prepare_disconnect would only hold everyone else up.
func (m *activeMaster) quietLimit() time.Duration {
	return 2*m.cfg.Timing.HeartbeatInterval + 500*time.Millisecond
}

// controlQuietLocked reports whether the control at the other end of l
// is one a graceful stop does not wait for: silent for longer than
// quietLimit, or a session that never showed it hears the master (named in
// one plain message: made up, or of a process gone since), which would
// never answer prepare_disconnect (the master's peer of that address, if
// any, drops it as another session's). The caller holds m.mu.
func (m *activeMaster) controlQuietLocked(l *link.Link, st *controlState, now time.Time) bool {
	return st.watch.quietFor(l, now) > m.quietLimit() || !st.conn.Confirmed()
}

// shutdown ends the term gracefully: each live slave and control is told
// (prepare_disconnect) and its in-flight requests end, within ctx; the
// links of peers that have gone quiet are closed at once; then the Node
// closes. It returns an error only for what the master itself failed to
// release (its NATS connection); peers that did not answer in time are
// logged.
func (m *activeMaster) shutdown(ctx context.Context) error {
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return nil
	}
	m.closing = true
	now := time.Now()
	var drain, quiet []*link.Link
	for _, s := range m.slaves {
		if s.link == nil {
			continue
		}
		if s.watch.quietFor(s.link, now) > m.quietLimit() {
			quiet = append(quiet, s.link)
		} else {
			drain = append(drain, s.link)
		}
	}
	for l, st := range m.controls {
		if m.controlQuietLocked(l, st, now) {
			quiet = append(quiet, l)
		} else {
			drain = append(drain, l)
		}
	}
	m.mu.Unlock()
	m.stopOnce.Do(func() { close(m.stop) })
	m.routines.stop()
	m.log.Info("draining the links of live peers; closing the others without waiting for them", "drained", len(drain), "closed", len(quiet))
	for _, l := range quiet {
		_ = l.Close()
	}

	// Every link drains before any closes, and the slaves keep what their
	// instances send for the next master once told (prepare_disconnect):
	// what a slave forwarded before then is still broadcast to every
	// slave, and acknowledged by each, before their links close.
	//
	// A peer that cannot take part (a killed slave, a follower gone
	// without a word) is no failure of the master's: what it could not
	// flush is logged, and the master stops cleanly all the same.
	// One goroutine per live link, waited for here: the links drain at
	// once, not one after another.
	var wg sync.WaitGroup
	for _, l := range drain {
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
	// The links close, and the master's Close returns only once their
	// handlers have (within ctx): no handler of the term runs after it.
	for _, l := range append(quiet, drain...) {
		if err := l.CloseWait(ctx); err != nil {
			m.log.Warn("handlers still running as the master stops", "peer", l.Peer().String(), "error", err)
		}
	}
	err := m.node.Close()
	m.open.Store(false)
	return err
}

// abort ends the term without a word: the gate closes first, so nothing
// more is handled or sent, then the links and the Node close.
func (m *activeMaster) abort() {
	m.open.Store(false)
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	m.stopOnce.Do(func() { close(m.stop) })
	m.routines.stop()
	_ = m.node.Close()
}
