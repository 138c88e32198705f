package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
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
	hdrOrigin  = "Lf-Origin"  // where a routed request or a plain client's event started, type/id
	hdrDst     = "Lf-Dst"     // where a routed request or a plain client's event goes, type/id or type/*
	hdrStatus  = "Status"     // set by the server: 503 means no responders
)

// maxBudget bounds the time a requester may say it waits.
const maxBudget = 24 * time.Hour

var errPeerRestarted = errors.New("the peer restarted")

var (
	_ link.Connector = (*Conn)(nil)
	_ link.Stopper   = (*Conn)(nil)
)

// Conn is the connector of one link over NATS: to one peer, and once the
// peer has spoken, to one session of that peer. It implements
// link.Connector and link.Stopper.
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

	mu       sync.Mutex // held after the Node's mu and its streams' mu, never before
	session  string     // the peer's session
	bound    bool
	receiver link.Receiver
	started  bool
	stopped  bool // Stop: nothing more is delivered to the link
	closed   bool
	peerGone bool // the peer closed or restarted: no close notice to send
	reqs     *delivery.Requests[outRequest]
	served   *delivery.Served[*natsgo.Msg] // requests taken from the peer, until the requester has the response
	retry    *time.Timer                   // the table's next no-responders retry
	room     chan struct{}                 // closed when a request ends, for a Send waiting for the window (nil if none waits)
	// Requests from the peer the Node counts in flight, by reply subject,
	// until they are answered or the connector closes.
	inflight map[string]int
	ask      *askCache // made by the first request: many links never carry one this way

	// The peer has shown it is a live fabric peer that hears this end
	// (Confirmed).
	confirmed atomic.Bool

	inMu sync.Mutex                         // guards in, and is held while what it delivers is handed on
	in   *delivery.Receiver[*link.Envelope] // the peer's streams to this end; nil for a plain client

	// Guarded by the Node's streams' mu (streams.go).
	out         *delivery.OutLink[outEvent] // this end's stream to the peer; nil until opened
	ended       bool                        // the link closed; out is parked, or given up
	endedAt     time.Time
	subjects    map[string]string // the subjects of events to the peer, by type
	subjectsFor string            // the peer session they name
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
		reqs:     delivery.NewRequests[outRequest](n.opts.noRespondersWindow()),
		served:   delivery.NewServed[*natsgo.Msg](),
		inflight: map[string]int{},

		replyPrefix: n.prefixDot + token(n.self) + "." + token(peer) + "." + tokReply + ".",
		inboxPrefix: n.prefixDot + "_inbox." + token(peer) + ".",
	}
	if !bound || session != "" {
		// A fabric peer: numbered streams both ways. (A plain NATS client
		// has no session, and gets what NATS delivers.)
		c.in = delivery.NewReceiver[*link.Envelope](n.self.ID)
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

// Confirmed reports whether the peer has shown it is a live fabric peer:
// it named this end's session (a message or an acknowledgement after
// hearing from it), answered one of its requests, or asked on its own
// reply subjects, as a fabric requester does. A session named in one
// plain message (made up, or a process gone since) never is. A Node
// replaces an unconfirmed link first (WithMaxPeerSessions); an endpoint
// shutting down need not wait for one.
func (c *Conn) Confirmed() bool { return c.confirmed.Load() }

// confirm marks the peer confirmed. It is called for every message and
// acknowledgement that shows it: the load keeps the common case a read.
func (c *Conn) confirm() {
	if !c.confirmed.Load() {
		c.confirmed.Store(true)
	}
}

// busy reports whether a request of the peer's is being answered.
func (c *Conn) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inflight) > 0
}

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

// isDone reports whether Close has closed c.done.
func (c *Conn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
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
	// Waiting for the link to take a message holds up only this peer, and
	// ends when the connector closes.
	ctx := closingCtx{c.done}
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

// closingCtx is a context that ends when done is closed (the connector
// closes), with no goroutine to watch it: the context a connector's
// deliveries wait with.
type closingCtx struct{ done <-chan struct{} }

func (c closingCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c closingCtx) Done() <-chan struct{}       { return c.done }
func (c closingCtx) Value(any) any               { return nil }

func (c closingCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// enqueue hands a converted message to the link without ever blocking the
// routing goroutine: one slow link must not hold up the others. While no
// message waits for the link, it is delivered here and now. It reports
// false if the link's queue is full and m was dropped.
func (c *Conn) enqueue(m *link.Envelope) bool {
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
		// The link cannot take m yet (its event queue is full, or as many
		// requests wait as it runs handlers): m and what follows wait for
		// the connector's own goroutine.
		c.queue.handOver(m)
	}
	return true
}

// inbound takes a request or an event from the peer.
func (c *Conn) inbound(sub subject, msg *natsgo.Msg) {
	if msg.Reply != "" {
		c.inboundRequest(sub, msg)
		return
	}
	if sub.stream {
		c.inboundNumbered(sub, msg)
		return
	}
	c.inboundPlain(sub, msg)
}

// inboundRequest takes a request: from a fabric peer, with its budget and
// its requester's low mark in the reply subject; from a plain client, with
// the Lf-Id and Lf-Timeout it may send.
func (c *Conn) inboundRequest(sub subject, msg *natsgo.Msg) {
	if sub.dst.ID == BroadcastID {
		c.refuse(msg, link.Errorf(link.CodeInvalidMessage, "requests cannot be broadcast"))
		return
	}
	if !c.repliesTo(msg.Reply) {
		// Answering would make this endpoint publish, with its own
		// rights, on a subject the requester chose: refuse to be used.
		c.n.dropped.Add(1)
		c.n.opts.logger.Warn("request with a reply subject that is not the requester's; dropped", "node", c.n.self.String(), "peer", c.peer.String(), "reply", msg.Reply)
		return
	}
	m := &link.Envelope{Kind: messages.KindRequest, Type: sub.msgType, Data: msg.Data, Reply: msg.Reply}
	if msg.Header != nil {
		var err error
		if m.Origin, m.Dst, err = parseEnds(msg.Header.Get(hdrOrigin), msg.Header.Get(hdrDst)); err != nil {
			c.refuse(msg, link.Errorf(link.CodeInvalidMessage, "%v", err))
			return
		}
	}
	if v := msg.Header.Get(hdrID); v != "" {
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			c.refuse(msg, link.Errorf(link.CodeInvalidMessage, "header %s: %q is not an unsigned integer", hdrID, v))
			return
		}
		m.ID = id
	}
	if r, err := parseSubject(c.n.prefixDot, msg.Reply); err == nil && r.kind == subjReply && r.budget > 0 {
		if !c.takeRequest(m, msg, r) {
			return
		}
	} else if v := msg.Header.Get(hdrTimeout); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 || ms > maxBudget.Milliseconds() {
			c.refuse(msg, link.Errorf(link.CodeInvalidMessage, "header %s: %q is not a number of milliseconds between 1 and %d", hdrTimeout, v, maxBudget.Milliseconds()))
			return
		}
		m.Deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
	}
	c.deliverRequest(m, msg)
}

// takeRequest sets the deadline of a fabric requester's request from the
// budget of its reply subject r, and records it (delivery.Served). It
// reports false for a request not to be handled: refused, or a copy of one
// taken before. What a peer may make the connector remember is bounded
// (delivery.Served): the requester must be the link's peer session, its
// budget is clipped to WithMaxRequestBudget, and a request too far past
// the requester's low mark is refused.
func (c *Conn) takeRequest(m *link.Envelope, msg *natsgo.Msg, r subject) bool {
	if r.budget > uint64(maxBudget.Milliseconds()) {
		c.refuse(msg, link.Errorf(link.CodeInvalidMessage, "a budget of %d ms in the reply subject is more than a day", r.budget))
		return false
	}
	if ps := c.peerSession(); r.session != ps || ps == "" {
		// Only the link's peer asks on it: a reply subject naming another
		// requester (made up, with numbers never meant to rise) would
		// otherwise be remembered for as long as the link lives.
		c.refuse(msg, link.Errorf(link.CodeInvalidMessage, "the reply subject names another session than the request's sender"))
		return false
	}
	budget := min(time.Duration(r.budget)*time.Millisecond, c.n.opts.maxBudget)
	m.Deadline = time.Now().Add(budget)
	c.mu.Lock()
	verdict, resp := c.served.Take(r.requester(), r.seq, r.low, m.Deadline)
	c.mu.Unlock()
	switch verdict {
	case delivery.Handle:
		c.confirm() // a fabric requester, its own session in its reply subject
		return true
	case delivery.Answer:
		if c.n.gateOpen() {
			_ = c.n.nc.PublishMsg(resp)
		}
	case delivery.TooFarAhead:
		c.refuse(msg, link.Errorf(link.CodeUnavailable, "%d or more requests sent since the oldest still waiting: send it again once that one has ended", delivery.RequestWindow))
	case delivery.OtherRequester:
		c.refuse(msg, link.Errorf(link.CodeInvalidMessage, "the reply subject names another connector than the one that asks on this link"))
	}
	return false
}

// deliverRequest hands a request to the link, counted in flight until it
// is answered, so that the Node's Close can let it finish.
func (c *Conn) deliverRequest(m *link.Envelope, msg *natsgo.Msg) {
	if !c.n.startRequest() {
		c.refuse(msg, link.Errorf(link.CodeUnavailable, "%s is shutting down", c.n.self))
		return
	}
	if !c.countIn(m.Reply) {
		c.n.endRequest()
		c.refuse(msg, link.Errorf(link.CodeSessionLost, "%s has closed its link to %s", c.n.self, c.peer))
		return
	}
	if !c.enqueue(m) {
		c.countOut(m.Reply)
		c.refuse(msg, link.Errorf(link.CodeUnavailable, "%s is overloaded: its link to %s has too many messages waiting", c.n.self, c.peer))
	}
}

// inboundNumbered takes an event of one of the peer's numbered streams:
// its head says where it stands (delivery.Head), and the Receiver decides
// what is delivered.
func (c *Conn) inboundNumbered(sub subject, msg *natsgo.Msg) {
	h, payload, err := delivery.ParseHead(msg.Data)
	var origin, dst link.Address
	if err == nil {
		origin, dst, err = parseEnds(h.Origin, h.Dst)
	}
	if err == nil && c.in == nil {
		err = errors.New("numbered events from a peer without a session")
	}
	if err != nil {
		c.n.dropped.Add(1)
		c.n.opts.logger.Warn("numbered event dropped", "node", c.n.self.String(), "peer", c.peer.String(), "type", sub.msgType, "error", err)
		return
	}
	c.receive(h, &link.Envelope{Kind: messages.KindEvent, Type: sub.msgType, Data: payload, Origin: origin, Dst: dst}, sub.dst.ID == BroadcastID)
}

// inboundPlain takes a plain client's event: no numbers, its origin in a
// header. It gets what NATS delivers.
func (c *Conn) inboundPlain(sub subject, msg *natsgo.Msg) {
	m := &link.Envelope{Kind: messages.KindEvent, Type: sub.msgType, Data: msg.Data}
	if msg.Header != nil {
		var err error
		if m.Origin, m.Dst, err = parseEnds(msg.Header.Get(hdrOrigin), msg.Header.Get(hdrDst)); err != nil {
			c.n.dropped.Add(1)
			return
		}
	}
	if c.isStopped() {
		c.n.dropped.Add(1)
		return
	}
	c.enqueue(m)
}

// refuse answers a request as this link's end.
func (c *Conn) refuse(msg *natsgo.Msg, e *link.Error) { c.n.refuseAs(msg, e, c.mine) }

func (c *Conn) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped || c.closed
}

// countIn records a request the Node has counted in flight, unless the
// connector has stopped delivering.
func (c *Conn) countIn(reply string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.stopped {
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
// peer's subject (numbered, to a fabric peer).
func (c *Conn) Send(ctx context.Context, m *link.Envelope) error {
	if m.Kind == messages.KindResponse {
		defer c.countOut(m.Reply) // answered, or never to be: no longer in flight
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
	}
	peerSession := c.session
	c.mu.Unlock()
	switch m.Kind {
	case messages.KindEvent:
		if c.in == nil { // a plain NATS client cannot acknowledge: it gets what NATS delivers
			return c.sendPlainEvent(ctx, m)
		}
		return c.sendEvent(ctx, m)
	case messages.KindRequest:
		return c.sendRequest(ctx, m, peerSession)
	case messages.KindResponse:
		return c.sendResponse(ctx, m)
	}
	return link.Errorf(link.CodeInvalidMessage, "unknown message kind %d", m.Kind)
}

// sendResponse publishes a response on the reply subject the requester
// chose: a fabric requester's has room for the responder's session; others
// are told it in a header. A fabric requester's request is remembered
// with its response, for its copies.
func (c *Conn) sendResponse(ctx context.Context, m *link.Envelope) error {
	if m.Reply == "" {
		return link.Errorf(link.CodeInvalidMessage, "%s: response without a reply subject", m.Type)
	}
	msg := &natsgo.Msg{Subject: m.Reply, Data: m.Data}
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
	if strings.HasPrefix(m.Reply, c.replyPrefix) {
		c.answered(m.Reply, msg)
	}
	return c.n.publish(ctx, msg, m.Type)
}

// sendPlainEvent publishes an event to a plain NATS client: no numbers, its
// origin in a header.
func (c *Conn) sendPlainEvent(ctx context.Context, m *link.Envelope) error {
	n := c.n
	msg := &natsgo.Msg{Subject: messageSubject(n.opts.prefix, n.self, c.peer, m.Type, "", ""), Data: m.Data, Header: routeHeader(m)}
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
	if s == link.StatusClosed {
		// Before the link stops taking events: its last acknowledgement
		// covers exactly what it took.
		c.stopReceiving()
	}
	if r != nil {
		r.Status(s, err)
	}
	switch s {
	case link.StatusResumed:
		c.resendRequests(time.Now()) // what the peer or the broker missed meanwhile
	case link.StatusClosed:
		_ = c.Close()
	}
}

// tick does what is due: acknowledgements, requests to send again,
// requests taken to forget.
func (c *Conn) tick(now time.Time) {
	c.tickReceiver(now)
	c.tickRequests(now)
}

// closeNotice, queued like a message, stands for the peer's notice that it
// closed its side: the link hears of it after what the peer sent before.
var closeNotice = &link.Envelope{}

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

// errReplaced ends a link to an unconfirmed session that a newer session
// of its peer's address replaced (WithMaxPeerSessions).
var errReplaced = errors.New("replaced by a newer session of the peer's address")

// evict ends the link to make room for a newer session of the peer's
// address: the link hears that it closed, and the peer (if it is there)
// is sent a close notice.
func (c *Conn) evict() {
	c.mu.Lock()
	r := c.receiver
	c.mu.Unlock()
	c.stopReceiving()
	if r != nil {
		r.Status(link.StatusClosed, errReplaced)
	}
	_ = c.Close()
}

// peerRestarted ends the link to a peer that came back with a new session.
func (c *Conn) peerRestarted() { c.status(link.StatusClosed, errPeerRestarted) }

// Stop ends delivery, for a graceful close (link.Stopper): the Receiver
// stops, its last acknowledgement, of what it delivered, goes to the peer,
// and Stop waits, until ctx ends, for the link to have taken everything
// delivered. From then on the link gets only the responses to its own
// requests; requests are refused, and events are left to the peer to pass
// on to the link's successor. The link may still send.
func (c *Conn) Stop(ctx context.Context) error {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.stopReceiving()
	drained := c.queue.drained()
	if drained == nil {
		return nil
	}
	select {
	case <-drained:
		return nil
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nats: %d messages from %s not yet taken by the link: %w", c.queue.len(), c.peer, ctx.Err())
	}
}

// Close stops delivery, forgets the connector and tells the peer, whose
// link closes too. What the peer has not acknowledged is kept for its next
// session for the session timeout (WithSessionTimeout). Close is
// idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	notify := !c.peerGone
	peerSession := c.session
	c.reqs.Close() // the link fails its pending requests itself
	c.wakeLocked()
	if c.retry != nil {
		c.retry.Stop()
	}
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
	c.stopReceiving()
	close(c.done)
	// The stream first: the peer's last acknowledgements, which may come
	// after the close, still find it.
	c.n.endStream(c)
	c.n.forget(c)
	if notify && c.n.gateOpen() {
		_ = c.n.nc.Publish(closeSubject(c.n.opts.prefix, c.n.self, c.peer, c.mine, peerSession), nil)
	}
	return nil
}

// routeHeader returns the headers that say a routed message's ends, or nil
// for one that travels between the link's ends.
func routeHeader(m *link.Envelope) natsgo.Header {
	if m.Origin.IsZero() && m.Dst.IsZero() {
		return nil
	}
	h := natsgo.Header{}
	if !m.Origin.IsZero() {
		h[hdrOrigin] = []string{m.Origin.String()}
	}
	if !m.Dst.IsZero() {
		h[hdrDst] = []string{m.Dst.String()}
	}
	return h
}

// parseEnds reads a routed message's origin (one endpoint) and destination
// (one endpoint, or a broadcast address), either of which may be absent.
// (link.ParseAddress takes only the form Address.String writes.)
func parseEnds(origin, dst string) (o, d link.Address, err error) {
	if origin != "" {
		if o, err = link.ParseAddress(origin); err == nil && o.IsBroadcast() {
			err = errors.New("a broadcast address, not one endpoint")
		}
		if err != nil {
			return o, d, fmt.Errorf("origin %q: %w", origin, err)
		}
	}
	if dst != "" {
		if d, err = link.ParseAddress(dst); err != nil {
			return o, d, fmt.Errorf("destination %q: %w", dst, err)
		}
	}
	return o, d, nil
}
