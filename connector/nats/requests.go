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
	head    string // of its reply subject (see replyHead)
	data    []byte
	hdr     natsgo.Header // Lf-Origin and Lf-Dst of a routed request; nil for a direct one
}

// sendRequest keeps a request until its response and publishes it. While
// delivery.RequestWindow requests have been sent since the oldest still
// waiting (a responder would refuse the next), it waits for one to end,
// until the request's deadline or ctx.
func (c *Conn) sendRequest(ctx context.Context, m *link.Envelope, peerSession string) error {
	now := time.Now()
	if m.Deadline.IsZero() || !m.Deadline.After(now) {
		return link.Errorf(link.CodeTimeout, "%s: deadline passed before sending", m.Type)
	}
	r := outRequest{id: m.ID, typ: m.Type, data: m.Data, hdr: routeHeader(m)}
	var deadline *time.Timer
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
		}
		if r.subject == "" {
			r.subject, r.head = c.askSubjectLocked(m.Type, peerSession)
		}
		ask, err := c.reqs.Send(r, m.Deadline, now)
		if errors.Is(err, delivery.ErrWindow) {
			if !link.MayWait(ctx) {
				c.mu.Unlock()
				return link.Errorf(link.CodeUnavailable, "%s: not sent: %d requests to %s sent since the oldest still waiting", m.Type, delivery.RequestWindow, c.peer)
			}
			if c.room == nil {
				c.room = make(chan struct{})
			}
			room := c.room
			c.mu.Unlock()
			if deadline == nil {
				deadline = time.NewTimer(time.Until(m.Deadline))
				defer deadline.Stop()
			}
			select {
			case <-room:
				now = time.Now()
				continue
			case <-deadline.C:
				return link.Errorf(link.CodeTimeout, "%s: deadline passed while %d requests to %s sent since the oldest still waiting were answered first", m.Type, delivery.RequestWindow, c.peer)
			case <-ctx.Done():
				return link.Errorf(link.CodeUnavailable, "%s: not sent: %d requests to %s sent since the oldest still waiting: %v", m.Type, delivery.RequestWindow, c.peer, ctx.Err())
			}
		}
		c.mu.Unlock()
		if err != nil { // the deadline passed just now
			return link.Errorf(link.CodeTimeout, "%s: deadline passed before sending", m.Type)
		}
		if err := c.publishAsk(ctx, ask); err != nil {
			if transient(err) {
				return nil // kept: sent again when the connection is back
			}
			c.endRequest(ask.Wire)
			return err
		}
		return nil
	}
}

// askCache keeps what a link's requests have in common: the subject of
// each type, for the peer session they name (it is the same every time),
// and the head of their reply subjects (see replyHead).
type askCache struct {
	subjects    map[string]string
	peerSession string
	head        string
}

// askSubjectLocked returns the subject of a request of type msgType to
// the peer's session peerSession, and the head of its reply subject. c.mu
// must be held.
func (c *Conn) askSubjectLocked(msgType, peerSession string) (subject, head string) {
	a := c.ask
	if a == nil {
		a = &askCache{head: replyHead(c.n.opts.prefix, c.peer, c.n.self, c.mine, c.id)}
		c.ask = a
	}
	if a.subjects == nil || a.peerSession != peerSession || len(a.subjects) >= maxKnownSubjects {
		a.subjects, a.peerSession = map[string]string{}, peerSession
	}
	s, ok := a.subjects[msgType]
	if !ok {
		s = messageSubject(c.n.opts.prefix, c.n.self, c.peer, msgType, c.mine, peerSession)
		a.subjects[msgType] = s
	}
	return s, a.head
}

// endRequest ends request wire (delivery.Requests.End), and wakes the
// Sends waiting for the window it leaves.
func (c *Conn) endRequest(wire uint64) (outRequest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.reqs.End(wire)
	if ok {
		c.wakeLocked()
	}
	return r, ok
}

// wakeLocked wakes the Sends waiting for the request window: a request
// ended. c.mu must be held.
func (c *Conn) wakeLocked() {
	if c.room != nil {
		close(c.room)
		c.room = nil
	}
}

// publishAsk publishes a request, with a reply subject that names it and
// says its budget and the table's low mark.
func (c *Conn) publishAsk(ctx context.Context, a delivery.Ask[outRequest]) error {
	budget := uint64(max(a.Budget.Milliseconds(), 1))
	return c.n.publishParts(ctx, a.Req.subject, replyNumbers(a.Req.head, a.Wire, budget, a.Low), a.Req.hdr, a.Req.data, a.Req.typ)
}

// publishAsks publishes requests again; one the broker refuses for good
// (too large, say, after a failover to a server with a smaller
// max_payload) fails.
func (c *Conn) publishAsks(asks []delivery.Ask[outRequest]) {
	for _, a := range asks {
		if err := c.publishAsk(context.Background(), a); err != nil && !transient(err) {
			if _, ok := c.endRequest(a.Wire); ok {
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
	if ok {
		c.confirm() // its peer answered
	}
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
	r, ok := c.endRequest(wire)
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
	if failed {
		c.wakeLocked()
	}
	at, retry := c.reqs.NextRetry()
	if retry && !c.closed {
		c.retryAtLocked(at)
	}
	c.mu.Unlock()
	if failed {
		c.n.opts.logger.Debug("no responders", "node", c.n.self.String(), "subject", ended.Req.subject, "certain", ended.Err == delivery.ErrNoResponders)
		if ended.Err == delivery.ErrNoResponders {
			c.fail(ended.Req.id, link.Errorf(link.CodeNotConnected, "%s is not connected: nothing receives its messages", c.peer))
		} else {
			c.fail(ended.Req.id, link.Errorf(link.CodeSessionLost, "%s stopped receiving its messages after the request may have reached it: it may have run", c.peer))
		}
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
	asks, ended := c.reqs.Tick(now)
	if len(ended) > 0 {
		c.wakeLocked()
	}
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

// answered keeps the response to a request taken, for its copies.
func (c *Conn) answered(reply string, resp *natsgo.Msg) {
	r, err := parseSubject(c.n.prefixDot, reply)
	if err != nil || r.kind != subjReply {
		return
	}
	c.mu.Lock()
	c.served.Answered(r.requester(), r.seq, resp)
	c.mu.Unlock()
}
