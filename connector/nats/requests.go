package nats

import (
	"context"
	"errors"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/link"
)

// Requests. A request is sent again until its response arrives (with
// backoff, within its deadline, and at once on reconnecting). The responder
// remembers every request it has taken, by the requester's session,
// connector and id: a copy is not handled again, but answered with the
// response already given, or not at all while the handler runs. So: each
// request's handler runs once, and every request ends with its response or
// an error.
//
// The responder forgets a request when the requester says it has the
// response: every request names the requester's oldest request still
// waiting (its low mark), and the requester has the responses of every
// request before it. Ids are the connector's own, given in the order
// requests are sent, so a low mark once said stays true, and a copy of an
// old request, sent before the low mark that passed it, arrives before it
// (NATS keeps one publisher's order). What a requester never acknowledges
// this way (it went quiet) is forgotten after the request's deadline. So
// the responder's memory follows the requests in flight, not the request
// rate.

const (
	requestRTO    = time.Second // silence before a request is sent again; doubles
	servedSweep   = time.Second // how often forgotten requesters' requests are dropped
	servedOverdue = time.Second // how long a request is remembered past its deadline
)

// outRequest is a request sent and not yet answered.
type outRequest struct {
	id       uint64 // the link's id for it
	msgType  string
	subject  string
	data     []byte
	first    time.Time
	deadline time.Time
	backoff  time.Duration // between no-responders retries
	lastSent time.Time
	rto      time.Duration // silence before sending it again
}

// outRequests are a connector's requests awaiting their responses, by the
// wire id that names each in its reply subject.
type outRequests struct {
	byWire map[uint64]*outRequest // nil once the connector has closed
	last   uint64                 // the last wire id given
	low    uint64                 // the oldest wire id still waiting; last+1 if none
}

// add gives r the next wire id.
func (o *outRequests) add(r *outRequest) (wire uint64) {
	o.last++
	if len(o.byWire) == 0 {
		o.low = o.last
	}
	o.byWire[o.last] = r
	return o.last
}

// done forgets request wire, and moves the low mark past what is done.
func (o *outRequests) done(wire uint64) *outRequest {
	r := o.byWire[wire]
	if r == nil {
		return nil
	}
	delete(o.byWire, wire)
	if len(o.byWire) == 0 {
		o.low = o.last + 1
		return r
	}
	for o.byWire[o.low] == nil {
		o.low++
	}
	return r
}

// requesterKey names one connector of one run of the peer.
type requesterKey struct {
	session string
	conn    uint64
}

// served is a request taken from the peer: its response once sent, so that
// a copy of the request is answered again rather than handled again.
type served struct {
	resp     *natsgo.Msg // nil while the handler runs
	deadline time.Time
}

// takenFrom is what a responder remembers of one requester's requests.
type takenFrom struct {
	low   uint64 // the requester has the response of every request below this
	byID  map[uint64]*served
	order ring[uint64] // the ids in the order taken
}

// requestFrom is what a responder learns from a request's reply subject.
type requestFrom struct {
	key      requesterKey
	id, low  uint64
	deadline time.Time
}

// replySubjectFor is the reply subject of request wire, with what is left
// of its budget and the current low mark. c.mu must be held.
func (c *Conn) replySubjectFor(wire uint64, r *outRequest, now time.Time) (string, bool) {
	remaining := r.deadline.Sub(now)
	if remaining <= 0 {
		return "", false
	}
	n := c.n
	return replySubject(n.opts.prefix, c.peer, n.self, c.mine, c.id, wire, uint64(max(remaining.Milliseconds(), 1)), c.requests.low), true
}

// sendRequest keeps a request until its response and publishes it.
func (c *Conn) sendRequest(ctx context.Context, m *link.Message, peerSession string) error {
	now := time.Now()
	if m.Deadline.IsZero() || !m.Deadline.After(now) {
		return link.Errorf(link.CodeTimeout, "%s: deadline passed before sending", m.Type)
	}
	n := c.n
	r := &outRequest{
		id: m.ID, msgType: m.Type, data: m.Data,
		subject: messageSubject(n.opts.prefix, n.self, c.peer, m.Type, c.mine, peerSession),
		first:   now, deadline: m.Deadline, backoff: 20 * time.Millisecond, lastSent: now, rto: requestRTO,
	}
	c.mu.Lock()
	if c.requests.byWire == nil {
		c.mu.Unlock()
		return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
	}
	wire := c.requests.add(r)
	reply, _ := c.replySubjectFor(wire, r, now)
	c.mu.Unlock()
	if err := n.publishParts(ctx, r.subject, reply, nil, r.data, r.msgType); err != nil {
		if transient(err) {
			return nil // kept: sent again when the connection is back
		}
		c.mu.Lock()
		c.requests.done(wire)
		c.mu.Unlock()
		return err
	}
	return nil
}

// resend sends request wire again, if it still waits.
func (c *Conn) resend(wire uint64) {
	c.mu.Lock()
	r := c.requests.byWire[wire]
	if r == nil || c.closed {
		c.mu.Unlock()
		return
	}
	reply, ok := c.replySubjectFor(wire, r, time.Now())
	c.mu.Unlock()
	if !ok {
		return // the tick fails it
	}
	if err := c.n.publishParts(context.Background(), r.subject, reply, nil, r.data, r.msgType); err != nil && !transient(err) {
		c.fail(wire, err)
	}
}

// fail ends request wire with err.
func (c *Conn) fail(wire uint64, err error) {
	c.mu.Lock()
	r := c.requests.done(wire)
	c.mu.Unlock()
	if r == nil {
		return
	}
	var le *link.Error
	if !errors.As(err, &le) {
		le = link.Errorf(link.CodeUnavailable, "%v", err)
	}
	c.enqueue(&link.Message{Kind: link.KindResponse, ID: r.id, Error: le})
}

// reply takes the response to request wire from the responder's session
// (from the subject, or else a header), or NATS's word that nothing
// subscribes to the request's subject.
func (c *Conn) reply(wire uint64, session string, msg *natsgo.Msg) {
	if session == "" {
		if len(msg.Data) == 0 && msg.Header.Get(hdrStatus) == "503" {
			c.noResponders(wire)
			return
		}
		session = msg.Header.Get(hdrSession)
	}
	c.mu.Lock()
	pending := c.requests.byWire[wire] != nil
	c.mu.Unlock()
	if !pending {
		// Answered already, given up on, or never asked: whoever sent it,
		// it changes nothing.
		c.n.dropped.Add(1)
		return
	}
	c.n.mu.Lock()
	ok := c.bindLocked(session)
	c.n.mu.Unlock()
	if !ok {
		if c.mine == c.n.session {
			// A link this end accepted is bound to the peer session that
			// opened it, and its requests name that session: only it can
			// answer them. Another session's answer is another process
			// speaking as the peer, and ends nothing.
			c.n.dropped.Add(1)
			return
		}
		// The peer answered a request of this dialed link from a new
		// session: it restarted, and the session the link was bound to
		// is over.
		c.peerRestarted()
		return
	}
	c.mu.Lock()
	r := c.requests.done(wire)
	c.mu.Unlock()
	if r == nil {
		return // answered meanwhile by a copy
	}
	m := &link.Message{Kind: link.KindResponse, ID: r.id}
	if code := msg.Header.Get(hdrError); code != "" {
		e := &link.Error{Code: link.Code(code), Message: string(msg.Data)}
		if !link.ValidCode(e.Code) {
			e = link.Errorf(link.CodeInternal, "%s answered with a malformed error code %q: %s", c.peer, code, msg.Data)
		}
		m.Error = e
	} else {
		m.Data = msg.Data
	}
	c.enqueue(m)
}

// noResponders sends a request again, with backoff, for a while: right
// after a reconnect or failover the peer may not have resubscribed. Then
// it fails the request with link.ErrNotConnected. NATS answers 503 only
// when no subscriber got the request, so sending it again cannot run a
// handler twice.
func (c *Conn) noResponders(wire uint64) {
	c.mu.Lock()
	r := c.requests.byWire[wire]
	if r == nil {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if now.Sub(r.first) < c.n.opts.noRespondersFor && now.Add(r.backoff).Before(r.deadline) && !c.closed {
		wait := r.backoff
		r.backoff = min(2*r.backoff, 250*time.Millisecond)
		c.mu.Unlock()
		time.AfterFunc(wait, func() { c.resend(wire) })
		return
	}
	c.mu.Unlock()
	c.fail(wire, link.Errorf(link.CodeNotConnected, "%s is not connected: nothing subscribes to %s", c.peer, r.subject))
}

// take records a request of a fabric requester before it is handled, and
// reports false for a copy of one taken before, which it answers with the
// response already given, if there is one yet. It forgets the requests
// below the requester's low mark.
func (c *Conn) take(rf requestFrom) bool {
	c.mu.Lock()
	t := c.served[rf.key]
	if t == nil {
		t = &takenFrom{byID: map[uint64]*served{}}
		c.served[rf.key] = t
	}
	if rf.low > t.low {
		t.low = rf.low
		for t.order.len() > 0 && t.order.at(0) < t.low {
			delete(t.byID, t.order.at(0))
			t.order.drop(1)
		}
	}
	if rf.id < t.low {
		// A copy of a request whose response the requester has: it was
		// on its way before the requester said so.
		c.mu.Unlock()
		return false
	}
	s := t.byID[rf.id]
	if s == nil {
		// Kept a little past the deadline: the requester stops sending
		// copies then, but one may still be on its way.
		t.byID[rf.id] = &served{deadline: rf.deadline.Add(servedOverdue)}
		t.order.push(rf.id)
		c.mu.Unlock()
		return true
	}
	resp := s.resp
	c.mu.Unlock()
	if resp != nil && !c.n.gated() {
		_ = c.n.nc.PublishMsg(resp)
	}
	return false
}

// answered keeps the response to a request taken, for its copies.
func (c *Conn) answered(reply string, resp *natsgo.Msg) {
	r, err := parseSubject(c.n.prefixDot, reply)
	if err != nil || r.kind != subjReply {
		return
	}
	c.mu.Lock()
	if t := c.served[requesterKey{r.session, r.conn}]; t != nil {
		if s := t.byID[r.seq]; s != nil {
			s.resp = resp
		}
	}
	c.mu.Unlock()
}

// tickRequests sends again what has waited too long for its response,
// fails what is past its deadline, and, at most once per servedSweep,
// forgets the requests taken from requesters that went quiet.
func (c *Conn) tickRequests(now time.Time) {
	c.mu.Lock()
	var again, overdue []uint64
	for wire, r := range c.requests.byWire {
		switch {
		case now.After(r.deadline):
			overdue = append(overdue, wire) // the link has given up on it
		case now.Sub(r.lastSent) >= r.rto:
			r.lastSent, r.rto = now, 2*r.rto
			again = append(again, wire)
		}
	}
	for _, wire := range overdue {
		c.requests.done(wire)
	}
	if now.Sub(c.lastSweep) >= servedSweep {
		c.lastSweep = now
		for key, t := range c.served {
			for id, s := range t.byID {
				if now.After(s.deadline) {
					delete(t.byID, id)
				}
			}
			if len(t.byID) == 0 {
				delete(c.served, key)
			}
		}
	}
	c.mu.Unlock()
	for _, wire := range again {
		c.resend(wire)
	}
}

// resendRequests sends every unanswered request again, when the
// connection comes back.
func (c *Conn) resendRequests(now time.Time) {
	c.mu.Lock()
	wires := make([]uint64, 0, len(c.requests.byWire))
	for wire, r := range c.requests.byWire {
		r.lastSent = now
		wires = append(wires, wire)
	}
	c.mu.Unlock()
	for _, wire := range wires {
		c.resend(wire)
	}
}
