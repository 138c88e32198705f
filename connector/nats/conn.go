package nats

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/link"
)

// Headers. What is not payload travels in the subject (see subject.go), or,
// where the subject is not the sender's to choose, in these headers. A
// plain NATS client needs none of them: it may send Lf-Timeout and Lf-Id
// with a request, and reads Lf-Error on a failed response.
const (
	hdrSession = "Lf-Session" // on a response: the responder's session
	hdrID      = "Lf-Id"      // a plain client's request id, echoed in its response
	hdrTimeout = "Lf-Timeout" // milliseconds a plain client waits
	hdrError   = "Lf-Error"   // the error code of a failed response; the body is its text
	hdrOrigin  = "Lf-Origin"  // where a plain client's event started, type/id
	hdrStatus  = "Status"     // set by the server: 503 means no responders
)

var errPeerRestarted = errors.New("the peer restarted")

// Conn is the connector of one link over NATS: to one peer, and once the
// peer has spoken, to one session of that peer. It implements
// link.Connector.
type Conn struct {
	n    *Node
	id   uint64
	peer link.Address

	queue *queue
	done  chan struct{}

	mine          string        // this end's session
	sessionHeader natsgo.Header // just Lf-Session: mine; shared read-only by responses

	// The prefixes of the reply subjects the peer may have answers sent
	// to: the fabric's, and its nats.go inbox.
	replyPrefix, inboxPrefix string

	mu        sync.Mutex
	session   string // the peer's session
	bound     bool
	receiver  link.Receiver
	started   bool
	closed    bool
	peerGone  bool // the peer closed or restarted: no close notice to send
	requests  outRequests
	served    map[requesterKey]*takenFrom // requests taken from the peer, until the requester has the response
	lastSweep time.Time                   // when served was last swept
	// Requests from the peer the Node counts in flight, by reply subject,
	// until they are answered or the connector closes.
	inflight map[string]int

	outMu sync.Mutex // guards out; never held with mu
	out   outEvents
	inMu  sync.Mutex // guards in and inAll
	in    inEvents   // the peer's stream to us
	inAll inEvents   // the peer's broadcast stream
}

func newConn(n *Node, id uint64, peer link.Address, session string, bound bool) *Conn {
	c := &Conn{
		n:        n,
		id:       id,
		peer:     peer,
		session:  session,
		bound:    bound,
		queue:    newQueue(n.opts.peerQueue),
		done:     make(chan struct{}),
		requests: outRequests{byWire: map[uint64]*outRequest{}},
		served:   map[requesterKey]*takenFrom{},
		inflight: map[string]int{},
		out:      outEvents{next: 1, rto: resendFirst, maxPending: n.opts.maxUnacked},

		replyPrefix: n.prefixDot + token(n.self) + "." + token(peer) + "." + tokReply + ".",
		inboxPrefix: n.prefixDot + "_inbox." + token(peer) + ".",
	}
	return c
}

// setMine sets this end's session, before the connector is used.
func (c *Conn) setMine(session string) {
	c.mine = session
	c.sessionHeader = natsgo.Header{hdrSession: {session}}
}

// Peer returns the address of the endpoint at the other end.
func (c *Conn) Peer() link.Address { return c.peer }

// PeerSession returns the peer's session, or "" until it is known (or for
// a plain NATS client, which has none).
func (c *Conn) PeerSession() string { return c.peerSession() }

// Session returns this end's session: the Node's for a link it accepted, a
// new one for each link it dialed.
func (c *Conn) Session() string { return c.mine }

// Node returns the Node the connector belongs to.
func (c *Conn) Node() *Node { return c.n }

func (c *Conn) isBound() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bound
}

func (c *Conn) peerSession() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// bindLocked binds a dialed connector to the peer session that answered.
// It reports false if it is bound to another session. n.mu must be held.
func (c *Conn) bindLocked(session string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bound {
		return c.session == session
	}
	c.session, c.bound = session, true
	c.n.bySess[peerKey{c.peer, session}] = c
	return true
}

// Start begins delivering to r, in arrival order, from a goroutine of the
// connector's own.
func (c *Conn) Start(r link.Receiver) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("nats: connector started twice")
	}
	if c.closed {
		return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
	}
	c.receiver, c.started = r, true
	go c.deliver(r)
	return nil
}

func (c *Conn) deliver(r link.Receiver) {
	// Waiting for room in the link's event queue holds up only this peer,
	// and ends when the connector closes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.done
		cancel()
	}()
	for {
		for m, ok := c.queue.pop(); ok; m, ok = c.queue.pop() {
			if m == closeNotice {
				c.status(link.StatusClosed, nil)
				return
			}
			_ = r.Receive(ctx, m)
		}
		select {
		case <-c.queue.ready:
		case <-c.done:
			return
		}
	}
}

// enqueue hands a converted message to the link without ever blocking the
// routing goroutine: one slow link must not hold up the others. While no
// message waits for the link, it is delivered here and now.
func (c *Conn) enqueue(m *link.Message) bool {
	direct, ok := c.queue.offer(m)
	if !ok {
		c.n.dropped.Add(1)
		c.n.opts.logger.Warn("link queue full; message dropped", "node", c.n.self.String(), "peer", c.peer.String(), "type", m.Type)
		return false
	}
	if !direct {
		return true
	}
	if m == closeNotice {
		c.status(link.StatusClosed, nil)
		return true
	}
	c.mu.Lock()
	r := c.receiver
	c.mu.Unlock()
	if err := r.Receive(c.n.noWait, m); err != nil {
		// The link's event queue is full: m and what follows wait for the
		// connector's own goroutine.
		c.queue.handOver(m)
	}
	return true
}

// inbound converts a request or event from the peer.
func (c *Conn) inbound(sub subject, msg *natsgo.Msg) {
	m := &link.Message{Type: sub.msgType, Data: msg.Data}
	if msg.Reply != "" {
		if sub.dst.ID == BroadcastID {
			c.n.refuseAs(msg, link.Errorf(link.CodeInvalidMessage, "requests cannot be broadcast"), c.mine)
			return
		}
		if !c.repliesTo(msg.Reply) {
			// Answering would make this endpoint publish, with its own
			// rights, on a subject the requester chose: refuse to be used.
			c.n.dropped.Add(1)
			c.n.opts.logger.Warn("request with a reply subject that is not the requester's; dropped", "node", c.n.self.String(), "peer", c.peer.String(), "reply", msg.Reply)
			return
		}
		m.Kind, m.Reply = link.KindRequest, msg.Reply
		if v := msg.Header.Get(hdrID); v != "" {
			id, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				c.n.refuseAs(msg, link.Errorf(link.CodeInvalidMessage, "header %s: %q is not an unsigned integer", hdrID, v), c.mine)
				return
			}
			m.ID = id
		}
		if r, err := parseSubject(c.n.prefixDot, msg.Reply); err == nil && r.kind == subjReply && r.budget > 0 {
			if r.budget > uint64(24*time.Hour/time.Millisecond) {
				c.n.refuseAs(msg, link.Errorf(link.CodeInvalidMessage, "a budget of %d ms in the reply subject is more than a day", r.budget), c.mine)
				return
			}
			m.Deadline = time.Now().Add(time.Duration(r.budget) * time.Millisecond)
			if !c.take(requestFrom{key: requesterKey{r.session, r.conn}, id: r.seq, low: r.low, deadline: m.Deadline}) {
				return // a copy of a request already taken
			}
		} else if v := msg.Header.Get(hdrTimeout); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ms <= 0 || ms > int64(24*time.Hour/time.Millisecond) {
				c.n.refuseAs(msg, link.Errorf(link.CodeInvalidMessage, "header %s: %q is not a number of milliseconds between 1 and 86400000", hdrTimeout, v), c.mine)
				return
			}
			m.Deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
		}
	} else {
		m.Kind = link.KindEvent
		if sub.stream {
			h, payload, err := parseEventHead(msg.Data)
			if err != nil {
				c.n.dropped.Add(1)
				c.n.opts.logger.Warn("numbered event dropped", "node", c.n.self.String(), "peer", c.peer.String(), "type", m.Type, "error", err)
				return
			}
			m.Data, m.Origin = payload, h.origin
			c.inboundEvent(m, h.seq, h.floor, h.all || sub.dst.ID == BroadcastID)
			return
		}
		if v := msg.Header.Get(hdrOrigin); v != "" {
			origin, err := link.ParseAddress(v)
			if err != nil {
				c.n.dropped.Add(1)
				return
			}
			m.Origin = origin
		}
	}
	if m.Kind == link.KindRequest {
		if !c.n.startRequest() {
			c.n.refuseAs(msg, link.Errorf(link.CodeUnavailable, "%s is shutting down", c.n.self), c.mine)
			return
		}
		if !c.countIn(m.Reply) {
			c.n.endRequest()
			c.n.refuseAs(msg, link.Errorf(link.CodeSessionLost, "%s has closed its link to %s", c.n.self, c.peer), c.mine)
			return
		}
	}
	if !c.enqueue(m) && m.Kind == link.KindRequest {
		c.countOut(m.Reply)
		c.n.refuseAs(msg, link.Errorf(link.CodeUnavailable, "%s is overloaded: its link to %s has too many messages waiting", c.n.self, c.peer), c.mine)
	}
}

// countIn records a request the Node has counted in flight, unless the
// connector has closed.
func (c *Conn) countIn(reply string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.inflight[reply]++
	return true
}

// countOut counts a request out of the Node's requests in flight: it is
// answered, or will never be. A request the connector's Close has already
// counted out is not counted again.
func (c *Conn) countOut(reply string) {
	c.mu.Lock()
	n, ok := c.inflight[reply]
	switch {
	case n > 1:
		c.inflight[reply] = n - 1
	case ok:
		delete(c.inflight, reply)
	}
	c.mu.Unlock()
	if ok {
		c.n.endRequest()
	}
}

// repliesTo reports whether reply is a subject the peer may have answers
// sent to: its reply subjects under this endpoint's address, its own
// nats.go inbox prefix, or a plain client's default inbox.
func (c *Conn) repliesTo(reply string) bool {
	return strings.HasPrefix(reply, c.replyPrefix) || strings.HasPrefix(reply, c.inboxPrefix) || strings.HasPrefix(reply, "_INBOX.")
}

// fabricReply reports whether reply is a reply subject a fabric requester
// made for the peer: one of ours, with a budget (session, conn, id and
// budget and low mark: four dots) and room for the responder's session.
func (c *Conn) fabricReply(reply string) bool {
	rest, ok := strings.CutPrefix(reply, c.replyPrefix)
	return ok && strings.Count(rest, ".") == 4
}

// Send publishes m: a request on the peer's subject with a reply subject of
// ours, a response on the reply subject its request named, an event on the
// peer's subject.
func (c *Conn) Send(ctx context.Context, m *link.Message) error {
	if m.Kind == link.KindResponse {
		defer c.countOut(m.Reply) // answered, or never to be: no longer in flight
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
	}
	peerSession := c.session
	plain := c.bound && c.session == "" // a plain NATS client: no sessions, no stream
	c.mu.Unlock()

	switch {
	case m.Kind == link.KindEvent && !plain:
		return c.sendEvent(ctx, m, peerSession)
	case m.Kind == link.KindRequest:
		return c.sendRequest(ctx, m, peerSession)
	}
	n := c.n
	msg := &natsgo.Msg{Data: m.Data}
	keep := false // the response, for copies of its request
	switch m.Kind {
	case link.KindResponse:
		if m.Reply == "" {
			return link.Errorf(link.CodeInvalidMessage, "%s: response without a reply subject", m.Type)
		}
		// The requester chose the subject. A fabric requester's has room
		// for the responder's session; others are told in a header.
		msg.Subject = m.Reply
		keep = strings.HasPrefix(m.Reply, c.replyPrefix)
		if c.fabricReply(m.Reply) {
			msg.Subject = responseSubject(m.Reply, c.mine)
		} else {
			msg.Header = c.sessionHeader
		}
		if m.ID != 0 || m.Error != nil {
			msg.Header = natsgo.Header{hdrSession: {c.mine}}
		}
		if m.ID != 0 { // a plain client's own correlation id
			msg.Header[hdrID] = []string{strconv.FormatUint(m.ID, 10)}
		}
		if m.Error != nil {
			msg.Header[hdrError] = []string{string(m.Error.Code)}
			msg.Data = []byte(m.Error.Message)
		}
	case link.KindEvent:
		// A plain client cannot acknowledge: it gets what NATS delivers.
		msg.Subject = messageSubject(n.opts.prefix, n.self, c.peer, m.Type, "", "")
		if !m.Origin.IsZero() {
			msg.Header = natsgo.Header{hdrOrigin: {m.Origin.String()}}
		}
	default:
		return link.Errorf(link.CodeInvalidMessage, "unknown message kind %d", m.Kind)
	}
	if keep {
		c.answered(m.Reply, msg)
	}
	return n.publish(ctx, msg, m.Type)
}

// status passes a connection change to the link.
func (c *Conn) status(s link.Status, err error) {
	c.mu.Lock()
	r := c.receiver
	if s == link.StatusClosed {
		if c.closed {
			c.mu.Unlock()
			return
		}
		c.peerGone = true
	}
	c.mu.Unlock()
	if r != nil {
		r.Status(s, err)
	}
	switch s {
	case link.StatusResumed:
		c.resendAll() // what the peer or the broker missed meanwhile
	case link.StatusClosed:
		_ = c.Close()
	}
}

// closeNotice, queued like a message, stands for the peer's notice that it
// closed its side: the link hears of it after what the peer sent before.
var closeNotice = &link.Message{}

// isDone reports whether Close has closed c.done.
func (c *Conn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// closedBy reports whether a close notice naming dst as this end's session
// is for this link. A peer names the session it talks to whenever it
// knows it; only a dialer that has not heard back yet does not, and the
// link it closes is one this end accepted. A dialed link's session is its
// own, so a notice that does not name it is for another link of the same
// addresses (a plain client's, say).
func (c *Conn) closedBy(dst string) bool {
	return dst == c.mine || (dst == "" && c.mine == c.n.session)
}

// peerClosed handles the peer's notice that it closed its side.
func (c *Conn) peerClosed() {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if !started {
		c.status(link.StatusClosed, nil)
		return
	}
	c.enqueue(closeNotice) // after what the peer sent before it
}

// peerRestarted ends the link to a peer that came back with a new session.
func (c *Conn) peerRestarted() { c.status(link.StatusClosed, errPeerRestarted) }

// Close stops delivery, forgets the connector and tells the peer, whose
// link closes too. It is idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	notify := !c.peerGone
	peerSession := c.session
	c.requests.byWire = nil
	// Requests from the peer still waiting for the link, or for their
	// handlers, will never be answered from here: the Node's Close need
	// not wait for them.
	unanswered := 0
	for _, n := range c.inflight {
		unanswered += n
	}
	clear(c.inflight)
	c.mu.Unlock()
	for range unanswered {
		c.n.endRequest()
	}
	close(c.done)
	c.n.forget(c)
	c.n.forgetReceiver(c)
	if notify && !c.n.gated() {
		// Acknowledge what arrived first, so that the peer does not send
		// it again to whoever takes this session over.
		c.flushAck()
		_ = c.n.nc.Publish(closeSubject(c.n.opts.prefix, c.n.self, c.peer, c.mine, peerSession), nil)
	}
	return nil
}
