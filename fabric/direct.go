package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Direct links between slaves (docs/protocol.md, "Addressed messages"): a
// message a slave sends, as itself, to another slave goes on a link of its
// own from the one to the other, not by way of the master. Nothing the
// master checks is lost: the broker enforces the sender (the subject names
// it, and slave N may publish only lf.slave.N.slave.*.>), and the receiver
// checks what the master would have, the message's Src and Dst and its
// plugin. A message that started at an instance still goes by way of the
// master, the only one that knows which slave hosts which instance.
//
// The sender dials the link on first use, and keeps it; the receiver
// accepts it (Slave.acceptSlave), at most maxDirectSessions sessions of
// one slave at once. A receiver that restarted answers a message for its
// earlier session with session_lost (WithAnswerStaleFrom), and one that is
// not connected at all is one NATS says nothing subscribes to: a request
// ends at once either way, never by its timeout.

// maxDirectSessions bounds the sessions of one slave that a slave keeps
// links from at once: a slave dials one link to each other slave, and
// dials again only when it ended.
const maxDirectSessions = 4

// directTo reports whether a message from src to dst goes on a direct link
// from this slave: it is the slave's own, to one other slave.
func (s *Slave) directTo(src, dst link.Address) (int64, bool) {
	if src != s.self || dst.Type != messages.Slave || dst.IsBroadcast() || dst == s.self {
		return 0, false
	}
	id, ok := parseID(dst.ID)
	return id, ok
}

// directEnd is one of the slave's direct links, dialed or accepted, and
// what the reaper knows of it.
type directEnd struct {
	l        *link.Link
	c        session
	dialed   bool
	activity uint64    // the link's Sent+Received when last looked at
	activeAt time.Time // when it last changed
	flushing bool      // a check that the peer acknowledges is running
}

// directLink returns the slave's link to slave id, dialing it if there is
// none, or none still open. A link dialed again takes over what the one
// before never had acknowledged, first and in order (the peer restarted,
// or stopped acknowledging), within the session timeout.
func (s *Slave) directLink(id int64) (*link.Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, link.Errorf(CodeSlaveShuttingDown, "slave %d is shutting down", s.cfg.ID)
	}
	var prev session
	if d := s.direct[id]; d != nil {
		select {
		case <-d.l.Done():
			prev = d.c
		default:
			return d.l, nil
		}
	}
	peer := link.SlaveAddress(id)
	c, err := s.node.Dial(peer)
	if err != nil {
		return nil, err
	}
	if err := c.Adopt(prev); err != nil {
		s.log.Debug("events of the previous direct link not taken over", "peer", peer.String(), "error", err)
	}
	l, err := s.newDirectLink(c, peer)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	s.direct[id] = &directEnd{l: l, c: c, dialed: true, activeAt: time.Now()}
	return l, nil
}

// newDirectLink makes and starts a link to peer, a slave, on c: the
// plugins' handlers for what slaves send, and no router, so that nothing
// addressed to a third endpoint passes.
func (s *Slave) newDirectLink(c session, peer link.Address) (*link.Link, error) {
	l, err := link.New(directGate{c, s.self, s.catalog, s.log}, s.self, peer, s.catalog, link.WithLogger(s.log), link.WithRequestTimeout(s.cfg.Timing.RequestTimeout), link.WithObserver(s.metrics))
	if err != nil {
		return nil, err
	}
	s.wireSlave(l)
	if err := l.Start(); err != nil {
		return nil, err
	}
	return l, nil
}

// acceptSlave makes the link for another slave that spoke first.
func (s *Slave) acceptSlave(c session) error {
	peer := c.Peer()
	if peer.Type != messages.Slave {
		return link.Errorf(link.CodeNotConnected, "slave %d takes links from slaves only, not %s", s.cfg.ID, peer)
	}
	if _, ok := parseID(peer.ID); !ok {
		return link.Errorf(link.CodeInvalidMessage, "slave ids are positive integers written without a sign or leading zeros, not %q", peer.ID)
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return link.Errorf(CodeSlaveShuttingDown, "slave %d is shutting down", s.cfg.ID)
	}
	l, err := s.newDirectLink(c, peer)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.accepted[l] = &directEnd{l: l, c: c, activeAt: time.Now()}
	s.mu.Unlock()
	return nil
}

// reapDirect closes, every heartbeat until the slave stops, the direct
// links that are done with: any link, dialed or accepted, that carried
// nothing for the session timeout (its peer went away without closing
// it, or has nothing more to say), and a dialed link whose peer does not
// acknowledge what it was sent within the peer timeout (it restarted, or
// is not there: the next message dials again, and takes over what was
// not acknowledged).
func (s *Slave) reapDirect() {
	t := time.NewTicker(s.cfg.Timing.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			idle, check := s.directEnds(now)
			for _, l := range idle {
				s.log.Debug("idle direct link closed", "peer", l.Peer().String())
				_ = l.Close()
			}
			for _, d := range check {
				s.checkAcks(d)
			}
		}
	}
}

// directEnds forgets the accepted links that have ended, and returns the
// links idle for the session timeout, and the dialed ones that carried
// something since the last look, whose acknowledgements checkAcks checks
// (marked flushing until it has).
func (s *Slave) directEnds(now time.Time) (idle []*link.Link, check []*directEnd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	look := func(d *directEnd) (ended bool) {
		select {
		case <-d.l.Done():
			return true
		default:
		}
		st := d.l.Stats()
		switch activity := st.Sent + st.Received; {
		case activity != d.activity || st.Pending > 0 || st.Handling > 0:
			d.activity, d.activeAt = activity, now
			if d.dialed && !d.flushing {
				d.flushing = true
				check = append(check, d)
			}
		case now.Sub(d.activeAt) > s.cfg.Timing.SessionTimeout:
			idle = append(idle, d.l)
		}
		return false
	}
	for l, d := range s.accepted {
		if look(d) {
			delete(s.accepted, l)
		}
	}
	for _, d := range s.direct {
		look(d) // an ended dialed link stays, for the next to take over from
	}
	return idle, check
}

// checkAcks closes d's link if its peer does not acknowledge, within the
// peer timeout, what was sent on it. (d's link and session do not change;
// its other fields are under the slave's mu.)
func (s *Slave) checkAcks(d *directEnd) {
	s.routines.start(func() {
		ctx, cancel := context.WithTimeout(s.life, s.cfg.Timing.PeerTimeout)
		err := d.c.Flush(ctx)
		cancel()
		if err != nil && s.life.Err() == nil {
			s.log.Debug("direct link closed: its peer does not acknowledge", "peer", d.l.Peer().String(), "error", err)
			_ = d.l.Close()
		}
		s.mu.Lock()
		d.flushing = false
		s.mu.Unlock()
	})
}

// directRequest sends req on the direct link to slave id.
func (s *Slave) directRequest(ctx context.Context, id int64, req *link.Envelope) ([]byte, error) {
	l, err := s.directLink(id)
	if err != nil {
		return nil, err
	}
	req.Origin, req.Dst = link.Address{}, link.Address{} // the link's own ends
	data, err := l.ForwardRequest(ctx, req)
	return data, directError(id, req.Type, err)
}

// directEvent sends ev on the direct link to slave id.
func (s *Slave) directEvent(ctx context.Context, id int64, ev *link.Envelope) error {
	l, err := s.directLink(id)
	if err != nil {
		return err
	}
	ev.Origin, ev.Dst = link.Address{}, link.Address{}
	return directError(id, ev.Type, l.ForwardEvent(ctx, ev))
}

// directError says in the fabric's words why a message on the direct link
// to slave id did not arrive: nothing subscribes to its subjects (NATS
// no-responders), so it is not connected; other errors are the link's.
func directError(id int64, typ string, err error) error {
	if errors.Is(err, link.ErrNotConnected) {
		return link.Errorf(CodeSlaveNotConnected, "slave %d is not connected: %s did not reach it", id, typ)
	}
	return err
}

// closeDirect disconnects the slave's direct links, all at once, each
// within ctx and the peer timeout: a peer that has gone away must not hold
// up the slave's shutdown.
func (s *Slave) closeDirect(ctx context.Context) error {
	s.mu.Lock()
	var ls []*link.Link
	for _, d := range s.direct {
		ls = append(ls, d.l)
	}
	for l := range s.accepted {
		ls = append(ls, l)
	}
	clear(s.direct)
	clear(s.accepted)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timing.PeerTimeout)
	defer cancel()
	errs := make([]error, len(ls))
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Go(func() {
			if err := l.Disconnect(ctx); err != nil && !errors.Is(err, link.ErrSessionLost) {
				errs[i] = fmt.Errorf("direct link to %s: %w", l.Peer(), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// directGate is a direct link's connector, which lets through to the
// link only what a direct link carries: the peer slave's own messages
// (no Origin but the peer's), to this slave (no Dst but its own: a
// broadcast to every slave comes only from the master), of a plugin this
// slave has. It refuses the rest as the master would: a false origin with
// permission_denied, another destination with invalid_message, and a
// request of a plugin the slave does not have with plugin_missing, as the
// master does on the route by way of it (an event of it is skipped).
type directGate struct {
	session
	self    link.Address
	catalog *messages.Catalog
	log     *slog.Logger
}

func (g directGate) Start(r link.Receiver) error {
	return g.session.Start(gateReceiver{r, g})
}

// Stop stops the session's delivery, as link.Disconnect asks of a
// link.Stopper.
func (g directGate) Stop(ctx context.Context) error {
	if st, ok := g.session.(link.Stopper); ok {
		return st.Stop(ctx)
	}
	return nil
}

type gateReceiver struct {
	link.Receiver
	g directGate
}

func (r gateReceiver) Receive(ctx context.Context, m *link.Envelope) error {
	if m.Kind == messages.KindResponse {
		return r.Receiver.Receive(ctx, m)
	}
	peer := r.g.Peer()
	var refusal *link.Error
	plugin, _, qualified := strings.Cut(m.Type, ":")
	_, known := r.g.catalog.Lookup(m.Type)
	switch {
	case !m.Origin.IsZero() && m.Origin != peer:
		refusal = link.Errorf(link.CodePermissionDenied, "%s sent %s as %s: a slave speaks only for itself to another", peer, m.Type, m.Origin)
	case !m.Dst.IsZero() && m.Dst != r.g.self:
		refusal = link.Errorf(link.CodeInvalidMessage, "%s: %s takes from %s only what is addressed to it, not to %s", m.Type, r.g.self, peer, m.Dst)
	case !known && qualified:
		if m.Kind != messages.KindRequest {
			return nil // an event skips an endpoint without its plugin
		}
		refusal = link.Errorf(CodePluginMissing, "%s does not have %s (plugin %s), so it was not handled", r.g.self, m.Type, plugin)
	default:
		return r.Receiver.Receive(ctx, m)
	}
	r.g.log.Debug("refused on a direct link", "peer", peer.String(), "type", m.Type, "error", refusal.Error())
	if m.Kind != messages.KindRequest {
		return nil
	}
	return r.g.Send(ctx, &link.Envelope{Kind: messages.KindResponse, Type: m.Type, ID: m.ID, Reply: m.Reply, Error: refusal})
}

// wireSlave attaches the plugins' handlers for what other slaves send.
func (s *Slave) wireSlave(l *link.Link) { s.handlers.attach(l) }
