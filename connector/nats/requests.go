package nats

import (
	"context"
	"errors"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Requests between fabric endpoints are sent again until their responses
// come, and answered once, by the state machines of internal/delivery: a
// connector's Requests table gives each request its wire id and says when
// to send it again and when it has ended; its Served memory says whether a
// request that arrives is to be handled, ignored, or answered again. This
// file is the glue: reply subjects, publishing, and the link's responses.

// outRequest is a request as the table keeps it until its response.
type outRequest struct {
	id      uint64 // the link's id for it
	typ     string
	subject string
	data    []byte
	hdr     natsgo.Header // Lf-Origin and Lf-Dst of a routed request; nil for a direct one
}

// sendRequest keeps a request until its response and publishes it.
func (c *Conn) sendRequest(ctx context.Context, m *link.Envelope, peerSession string) error {
	now := time.Now()
	if m.Deadline.IsZero() || !m.Deadline.After(now) {
		return link.Errorf(link.CodeTimeout, "%s: deadline passed before sending", m.Type)
	}
	n := c.n
	r := outRequest{id: m.ID, typ: m.Type, data: m.Data, subject: messageSubject(n.opts.prefix, n.self, c.peer, m.Type, c.mine, peerSession), hdr: routeHeader(m)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
	}
	ask, err := c.reqs.Send(r, m.Deadline, now)
	c.mu.Unlock()
	if err != nil { // the deadline passed just now
		return link.Errorf(link.CodeTimeout, "%s: deadline passed before sending", m.Type)
	}
	if err := c.publishAsk(ctx, ask); err != nil {
		if transient(err) {
			return nil // kept: sent again when the connection is back
		}
		c.mu.Lock()
		c.reqs.End(ask.Wire)
		c.mu.Unlock()
		return err
	}
	return nil
}

// publishAsk publishes a request, with a reply subject that names it and
// says its budget and the table's low mark.
func (c *Conn) publishAsk(ctx context.Context, a delivery.Ask[outRequest]) error {
	n := c.n
	budget := uint64(max(a.Budget.Milliseconds(), 1))
	reply := replySubject(n.opts.prefix, c.peer, n.self, c.mine, c.id, a.Wire, budget, a.Low)
	return n.publishParts(ctx, a.Req.subject, reply, a.Req.hdr, a.Req.data, a.Req.typ)
}

// publishAsks publishes requests again; one the broker refuses for good
// (too large, say, after a failover to a server with a smaller
// max_payload) fails.
func (c *Conn) publishAsks(asks []delivery.Ask[outRequest]) {
	for _, a := range asks {
		if err := c.publishAsk(context.Background(), a); err != nil && !transient(err) {
			c.mu.Lock()
			_, ok := c.reqs.End(a.Wire)
			c.mu.Unlock()
			if ok {
				c.fail(a.Req.id, err)
			}
		}
	}
}

// fail ends the link's request id with err: a response the connector
// makes itself (nothing came from the peer).
func (c *Conn) fail(id uint64, err error) {
	var le *link.Error
	if !errors.As(err, &le) {
		le = link.Errorf(link.CodeUnavailable, "%v", err)
	}
	c.enqueue(&link.Envelope{Kind: messages.KindResponse, ID: id, Error: le, Local: true})
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
	waiting := c.reqs.Waiting(wire)
	c.mu.Unlock()
	if !waiting {
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
	r, ok := c.reqs.End(wire)
	c.mu.Unlock()
	if !ok {
		return // answered meanwhile by a copy
	}
	m := &link.Envelope{Kind: messages.KindResponse, ID: r.id}
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

// noResponders takes NATS's word that nothing subscribed to request
// wire's subject: the table sends it again a little later, for a while
// (right after a reconnect or failover the peer may not have subscribed
// yet), then it fails with link.ErrNotConnected. NATS says so only when
// no subscriber got the request, so sending it again runs no handler
// twice.
func (c *Conn) noResponders(wire uint64) {
	c.mu.Lock()
	ended, failed := c.reqs.NoResponders(wire, time.Now())
	at, retry := c.reqs.NextRetry()
	if retry && !c.closed {
		c.retryAtLocked(at)
	}
	c.mu.Unlock()
	if failed {
		c.n.opts.logger.Debug("no responders", "node", c.n.self.String(), "subject", ended.Req.subject)
		c.fail(ended.Req.id, link.Errorf(link.CodeNotConnected, "%s is not connected: nothing receives its messages", c.peer))
	}
}

// retryAtLocked has the table ticked at at, rather than on the next tick.
// c.mu must be held.
func (c *Conn) retryAtLocked(at time.Time) {
	d := max(time.Until(at), 0)
	if c.retry == nil {
		c.retry = time.AfterFunc(d, func() { c.tickRequests(time.Now()) })
		return
	}
	c.retry.Reset(d)
}

// tickRequests sends again what is due, and forgets, at most once per
// delivery.ServedSweep, the responses of requests taken from requesters
// that went quiet. A request whose deadline passed needs nothing: the
// link ends it itself at that deadline.
func (c *Conn) tickRequests(now time.Time) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	asks, _ := c.reqs.Tick(now)
	asks = append([]delivery.Ask[outRequest](nil), asks...) // the table's slice
	if at, ok := c.reqs.NextRetry(); ok {
		c.retryAtLocked(at)
	}
	c.served.Sweep(now)
	c.mu.Unlock()
	c.publishAsks(asks)
}

// resendRequests sends every request waiting again, when the connection
// comes back.
func (c *Conn) resendRequests(now time.Time) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	asks := append([]delivery.Ask[outRequest](nil), c.reqs.Resumed(now)...)
	c.mu.Unlock()
	c.publishAsks(asks)
}

// requestFrom is what a responder learns from a request's reply subject.
type requestFrom struct {
	from     delivery.Requester
	id, low  uint64
	deadline time.Time
}

// take records a request of a fabric requester before it is handled, and
// reports false for a copy of one taken before, which it answers with the
// response already given, if there is one yet.
func (c *Conn) take(rf requestFrom) bool {
	c.mu.Lock()
	verdict, resp := c.served.Take(rf.from, rf.id, rf.low, rf.deadline)
	c.mu.Unlock()
	if verdict == delivery.Answer && c.n.gateOpen() {
		_ = c.n.nc.PublishMsg(resp)
	}
	return verdict == delivery.Handle
}

// answered keeps the response to a request taken, for its copies.
func (c *Conn) answered(reply string, resp *natsgo.Msg) {
	r, err := parseSubject(c.n.prefixDot, reply)
	if err != nil || r.kind != subjReply {
		return
	}
	c.mu.Lock()
	c.served.Answered(delivery.Requester{Session: r.session, Conn: r.conn}, r.seq, resp)
	c.mu.Unlock()
}
