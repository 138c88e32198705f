package fabric

import (
	"context"
	"errors"
	"slices"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Addressed messages (messages.Spec's Src and Dst) between any two
// endpoints. Every route that leaves a slave goes by way of the master
// (docs/protocol.md, "Addressed messages"), but a slave's own messages to
// another slave, which take the direct link between them (direct.go):
// only the master knows where
// each instance lives, which plugins each endpoint has, and the user of
// each control, and its links to slaves are the ones whose sessions,
// acknowledgements and ordering the fabric keeps across faults. A slave
// passes what is addressed to its own instances straight to them.

// Sender is an endpoint that sends addressed messages: *Master, *Slave
// and *Control. (An instance sends through its link to its slave, with
// link.RequestTo and link.EmitTo.)
type Sender interface {
	// Address returns the endpoint's own address.
	Address() link.Address
	// sendRequest and sendEvent send m, checked, on its first hop.
	sendRequest(ctx context.Context, m *link.Envelope) ([]byte, error)
	sendEvent(ctx context.Context, m *link.Envelope) error
}

// Request sends req, a request of type m, from the endpoint from to the
// endpoint at to (link.SlaveAddress, link.InstanceAddress,
// link.ControlAddress, link.MasterAddress), by the route of
// docs/protocol.md, and returns the response. An address m does not allow,
// or from itself, is refused before anything is sent
// (link.CheckAddress), and so is a payload that breaks m's schema; a
// destination that cannot be reached ends the request with the code that
// says why (instance_not_found, slave_not_connected, plugin_missing,
// control_not_connected...), and one that answers with its handler's
// response or error. It blocks until then, or until ctx ends.
func Request[Req, Resp any](ctx context.Context, from Sender, to link.Address, m *messages.Request[Req, Resp], req Req) (Resp, error) {
	var resp Resp
	if err := link.CheckAddress(m.Definition, from.Address(), to); err != nil {
		return resp, err
	}
	payload, err := m.EncodeRequest(req)
	if err != nil {
		return resp, link.Errorf(link.CodeInvalidMessage, "%v", err)
	}
	data, err := from.sendRequest(ctx, &link.Envelope{Kind: messages.KindRequest, Type: m.Name(), Data: payload, Dst: to})
	if err != nil {
		return resp, err
	}
	if resp, err = m.DecodeResponse(data); err != nil {
		return resp, link.Errorf(link.CodeInvalidMessage, "%v", err)
	}
	return resp, nil
}

// Emit sends ev, an event of type m, from the endpoint from to to: one
// endpoint, or every endpoint of a type (link.All), never from itself,
// checked as Request checks. Events reach their destinations in the
// order one sender sent them, none lost or twice, as docs/reliability.md
// promises of each link they travel. It returns once the first hop has
// taken the event.
func Emit[T any](ctx context.Context, from Sender, to link.Address, m *messages.Event[T], ev T) error {
	if err := link.CheckAddress(m.Definition, from.Address(), to); err != nil {
		return err
	}
	payload, err := m.Encode(ev)
	if err != nil {
		return link.Errorf(link.CodeInvalidMessage, "%v", err)
	}
	return from.sendEvent(ctx, &link.Envelope{Kind: messages.KindEvent, Type: m.Name(), Data: payload, Dst: to})
}

// hasPlugin reports whether plugins (an endpoint's) has def's plugin;
// every endpoint has the core messages.
func hasPlugin(plugins []string, def *messages.Definition) bool {
	return def.Plugin() == "" || slices.Contains(plugins, def.Plugin())
}

func pluginNames(ps []messages.Plugin) []string {
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	return names
}

func pluginMissing(def *messages.Definition, to link.Address) error {
	return link.Errorf(CodePluginMissing, "%s does not have plugin %s, so %s was not sent to it", to, def.Plugin(), def.Name())
}

// --- the master ---

// Address returns link.MasterAddress.
func (p *Master) Address() link.Address { return link.MasterAddress }

func (p *Master) sendRequest(ctx context.Context, req *link.Envelope) ([]byte, error) {
	m := p.current()
	if m == nil {
		return nil, link.Errorf(link.CodeUnavailable, "this master is not active")
	}
	def, _ := m.catalog.Lookup(req.Type)
	return m.passRequest(ctx, def, req)
}

func (p *Master) sendEvent(ctx context.Context, ev *link.Envelope) error {
	m := p.current()
	if m == nil {
		return link.Errorf(link.CodeUnavailable, "this master is not active")
	}
	def, _ := m.catalog.Lookup(ev.Type)
	return m.passEvent(ctx, def, ev)
}

// masterRouter is the master's link.Router: it passes on what its links
// bring for other endpoints.
type masterRouter struct{ m *activeMaster }

func (r masterRouter) RouteRequest(ctx context.Context, from *link.Link, req *link.Envelope) ([]byte, error) {
	def, src, err := r.m.claimed(from, req)
	if err != nil {
		return nil, err
	}
	if err := link.CheckAddress(def, src, req.Dst); err != nil {
		return nil, err
	}
	req.Origin = src
	return r.m.passRequest(ctx, def, req)
}

func (r masterRouter) RouteEvent(ctx context.Context, from *link.Link, ev *link.Envelope) error {
	def, src, err := r.m.claimed(from, ev)
	if err != nil {
		return nil // refused and counted
	}
	if err := link.CheckAddress(def, src, ev.Dst); err != nil {
		return err
	}
	ev.Origin = src
	return r.m.passEvent(ctx, def, ev)
}

// claimed checks where a message that arrived on from says it started:
// the peer itself, or, from a slave, an instance that slave hosts.
func (m *activeMaster) claimed(from *link.Link, msg *link.Envelope) (*messages.Definition, link.Address, error) {
	def, _ := m.catalog.Lookup(msg.Type) // the link found it there
	peer := from.Peer()
	switch {
	case msg.Origin.IsZero(), msg.Origin == peer:
		return def, peer, nil
	case peer.Type == messages.Slave && msg.Origin.Type == messages.Instance:
		slaveID, ok1 := parseID(peer.ID)
		instanceID, ok2 := parseID(msg.Origin.ID)
		if ok1 && ok2 {
			if m.speaksFor(from, slaveID, instanceID) {
				return def, msg.Origin, nil
			}
			return nil, link.Address{}, refusedOrigin(peer, msg) // counted by speaksFor
		}
	}
	return nil, link.Address{}, m.claims.refuse(peer, claimOrigin, refusedOrigin(peer, msg))
}

func refusedOrigin(peer link.Address, msg *link.Envelope) *link.Error {
	return link.Errorf(link.CodePermissionDenied, "%s sent %s as %s", peer, msg.Type, msg.Origin)
}

// passRequest passes a checked request, from req.Origin, on to req.Dst.
func (m *activeMaster) passRequest(ctx context.Context, def *messages.Definition, req *link.Envelope) ([]byte, error) {
	if req.Origin.IsZero() {
		req.Origin = link.MasterAddress
	}
	var to *link.Link
	switch dst := req.Dst; dst.Type {
	case messages.Control:
		ls, err := m.controlLinks(def, dst)
		if err != nil {
			return nil, link.Undeliverable(err)
		}
		to = ls[len(ls)-1]
	default:
		l, err := m.slaveHop(ctx, def, dst)
		if err != nil {
			return nil, link.Undeliverable(err)
		}
		to = l
	}
	data, err := to.ForwardRequest(ctx, req)
	if errors.Is(err, link.ErrNotConnected) {
		m.log.Debug("addressed request not passed on", "to", req.Dst.String(), "error", err)
		return nil, link.Undeliverable(link.Errorf(link.CodeNotConnected, "%s is not connected: %s did not reach it", req.Dst, def.Name()))
	}
	return data, err
}

// passEvent passes a checked event, from ev.Origin, on to ev.Dst: one
// endpoint, or every one of a type but where it started, each once.
func (m *activeMaster) passEvent(ctx context.Context, def *messages.Definition, ev *link.Envelope) error {
	if ev.Origin.IsZero() {
		ev.Origin = link.MasterAddress
	}
	dst := ev.Dst
	switch {
	case dst.Type == messages.Control:
		ls, err := m.controlLinks(def, dst)
		if err != nil && !dst.IsBroadcast() && !errors.Is(err, &link.Error{Code: CodePluginMissing}) {
			return err
		}
		var errs []error
		for _, l := range ls {
			if l.Peer() != ev.Origin {
				errs = append(errs, l.ForwardEvent(ctx, ev))
			}
		}
		return errors.Join(errs...)
	case dst.IsBroadcast():
		// Slaves that registered since the term began get what their
		// peers were sent; those without the plugin get nothing.
		_ = m.awaitReady(ctx)
		all, with := m.slavesWith(def)
		if len(with) == len(all) {
			return m.bcast.ForwardEvent(ctx, ev) // one NATS message for every slave
		}
		var errs []error
		for _, l := range with {
			errs = append(errs, l.ForwardEvent(ctx, ev))
		}
		return errors.Join(errs...)
	}
	l, err := m.slaveHop(ctx, def, dst)
	if errors.Is(err, &link.Error{Code: CodePluginMissing}) {
		m.log.Debug("addressed event not sent", "to", dst.String(), "error", err)
		return nil // skipped: it has no use for it
	}
	if err != nil {
		return err
	}
	return l.ForwardEvent(ctx, ev)
}

// slaveHop returns the link to the slave that is, or hosts, dst.
func (m *activeMaster) slaveHop(ctx context.Context, def *messages.Definition, dst link.Address) (*link.Link, error) {
	id, ok := parseID(dst.ID)
	if !ok {
		return nil, link.Errorf(link.CodeInvalidMessage, "%s: %s is not an address of the cluster", def.Name(), dst)
	}
	switch dst.Type {
	case messages.Instance:
		// Waits out a new term's start; then looked up again, with the
		// host's plugins: the instance may have moved or gone meanwhile.
		if _, err := m.slaveForReady(ctx, id); err != nil {
			return nil, err
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		s, err := m.hostLocked(id)
		switch {
		case err != nil:
			return nil, err
		case !hasPlugin(s.plugins, def):
			return nil, pluginMissing(def, dst)
		}
		return s.link, nil
	case messages.Slave:
		_ = m.awaitReady(ctx)
		m.mu.Lock()
		defer m.mu.Unlock()
		s := m.slaves[id]
		switch {
		case s == nil:
			return nil, link.Errorf(CodeSlaveNotFound, "slave %d has never registered with the master", id)
		case !s.connected():
			return nil, link.Errorf(CodeSlaveNotConnected, "slave %d is not connected", id)
		case !hasPlugin(s.plugins, def):
			return nil, pluginMissing(def, dst)
		}
		return s.link, nil
	}
	return nil, link.Errorf(link.CodeInvalidMessage, "%s: the master passes nothing on to %s", def.Name(), dst)
}

// slavesWith returns the links of every connected slave, and of those
// with def's plugin.
func (m *activeMaster) slavesWith(def *messages.Definition) (all, with []*link.Link) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.slaves {
		if s.link == nil {
			continue
		}
		all = append(all, s.link)
		if hasPlugin(s.plugins, def) {
			with = append(with, s.link)
		}
	}
	return all, with
}

// controlLinks returns the links of the controls dst names (every one
// for a broadcast) that have def's plugin, oldest first, or why there are
// none.
func (m *activeMaster) controlLinks(def *messages.Definition, dst link.Address) ([]*link.Link, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ls []*link.Link
	lacking := false
	for l, st := range m.controls {
		switch {
		case !dst.IsBroadcast() && st.user != dst.ID:
		case !hasPlugin(st.plugins, def):
			lacking = true
		default:
			ls = append(ls, l)
		}
	}
	slices.SortFunc(ls, func(a, b *link.Link) int { return m.controls[a].since.Compare(m.controls[b].since) })
	switch {
	case len(ls) > 0:
		return ls, nil
	case lacking:
		return nil, pluginMissing(def, dst)
	}
	return nil, link.Errorf(CodeControlNotConnected, "no control of user %s is connected", dst.ID)
}

// --- a slave ---

// Address returns the slave's address.
func (s *Slave) Address() link.Address { return s.self }

func (s *Slave) sendRequest(ctx context.Context, req *link.Envelope) ([]byte, error) {
	req.Origin = s.self
	return s.passRequest(ctx, req, false)
}

func (s *Slave) sendEvent(ctx context.Context, ev *link.Envelope) error {
	ev.Origin = s.self
	return s.passEvent(ctx, ev, false)
}

// slaveRouter is a slave's link.Router, on its link to the master and to
// each instance.
type slaveRouter struct{ s *Slave }

func (r slaveRouter) RouteRequest(ctx context.Context, from *link.Link, req *link.Envelope) ([]byte, error) {
	if err := r.s.claimed(from, req); err != nil {
		return nil, err
	}
	return r.s.passRequest(ctx, req, from.Peer().Type == messages.Master)
}

func (r slaveRouter) RouteEvent(ctx context.Context, from *link.Link, ev *link.Envelope) error {
	if err := r.s.claimed(from, ev); err != nil {
		return err
	}
	return r.s.passEvent(ctx, ev, from.Peer().Type == messages.Master)
}

// claimed checks, and completes, where a message that arrived on from
// started: what an instance sends starts at that instance, and may go
// only where its type allows; what the master passes on starts where the
// master says (the master checked).
func (s *Slave) claimed(from *link.Link, msg *link.Envelope) error {
	peer := from.Peer()
	switch {
	case msg.Origin.IsZero():
		msg.Origin = peer
	case peer.Type == messages.Master:
	case msg.Origin != peer:
		return link.Errorf(link.CodePermissionDenied, "%s may not send %s as %s", peer, msg.Type, msg.Origin)
	}
	if peer.Type == messages.Instance {
		def, _ := s.catalog.Lookup(msg.Type) // the link found it there
		return link.CheckAddress(def, msg.Origin, msg.Dst)
	}
	return nil
}

// local returns the link to the running instance a names, if this slave
// hosts it; an error if it hosts it and it does not run.
func (s *Slave) local(a link.Address) (to *link.Link, hosted bool, err error) {
	if a.Type != messages.Instance || a.IsBroadcast() {
		return nil, false, nil
	}
	id, ok := parseID(a.ID)
	if !ok {
		return nil, false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.instances[id]
	switch {
	case h == nil:
		return nil, false, nil
	case h.toInstance == nil:
		return nil, true, notRunning(h.id, h.name)
	}
	return h.toInstance, true, nil
}

// passRequest passes a request on: to an instance of this slave's, or,
// unless it came from the master, to the master, which knows where
// everything else is.
func (s *Slave) passRequest(ctx context.Context, req *link.Envelope, fromMaster bool) ([]byte, error) {
	if id, ok := s.directTo(req.Origin, req.Dst); ok && !fromMaster {
		return s.directRequest(ctx, id, req)
	}
	to, hosted, err := s.local(req.Dst)
	switch {
	case err != nil:
		return nil, link.Undeliverable(err)
	case hosted:
		return to.ForwardRequest(ctx, req)
	case fromMaster:
		return nil, link.Undeliverable(link.Errorf(CodeInstanceNotFound, "slave %d does not host %s", s.cfg.ID, req.Dst))
	}
	master, err := s.masterLink()
	if err != nil {
		return nil, link.Undeliverable(err)
	}
	return master.ForwardRequest(ctx, req)
}

// passEvent passes an event on: to an instance of this slave's; to every
// instance of this slave's but where it started; and, unless it came from
// the master, to the master for the rest of the cluster.
func (s *Slave) passEvent(ctx context.Context, ev *link.Envelope, fromMaster bool) error {
	if ev.Dst == link.All(messages.Instance) {
		switch {
		case !fromMaster:
			return errors.Join(s.broadcast(ctx, ev, ev.Origin), s.toMaster(ctx, ev))
		case ev.Origin == s.self || s.hostsInstance(ev.Origin):
			return nil // back from the master: given to these instances already
		}
		return s.broadcast(ctx, ev, link.Address{})
	}
	if id, ok := s.directTo(ev.Origin, ev.Dst); ok && !fromMaster {
		return s.directEvent(ctx, id, ev)
	}
	if fromMaster && ev.Dst == link.All(messages.Slave) {
		return nil // to every slave: delivered here, and the master sent the others theirs
	}
	to, hosted, err := s.local(ev.Dst)
	switch {
	case err != nil:
		return err
	case hosted:
		return to.ForwardEvent(ctx, ev)
	case fromMaster:
		return link.Errorf(CodeInstanceNotFound, "slave %d does not host %s", s.cfg.ID, ev.Dst)
	}
	return s.toMaster(ctx, ev)
}
