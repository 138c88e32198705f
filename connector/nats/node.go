package nats

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// AcceptFunc is called, on the goroutine that routes inbound messages,
// with a new connector for a peer that sent a message before any link to
// it existed. It should start a link on c (link.New, handlers, Start) and
// return nil, or return an error to refuse the peer.
type AcceptFunc func(c *Conn) error

// ErrClosed is returned by a Node that has been closed.
var ErrClosed = errors.New("nats: node closed")

// Node is one endpoint's presence on NATS: its connection, the one
// subscription that receives everything addressed to it, and the
// connectors of its links, one per peer session.
//
// Every link end has a session: a random id sent with every message. The
// links a Node accepts share the Node's, new every time a process starts;
// each link it dials gets a new one, so that a peer can tell a link dialed
// again from the late messages of the one before. A peer that sees a new
// session knows the link's other end is a new one (the process restarted,
// or dialed again); a message addressed to an ended session is refused
// rather than handled by the wrong link.
type Node struct {
	nc      *natsgo.Conn
	self    link.Address
	session string
	opts    options

	done      chan struct{}
	connected chan struct{}   // closed at the first connection
	noWait    context.Context // already done: Receive must not wait

	prefixDot string // the subject prefix and its dot
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu       sync.Mutex // guards what follows; held before a Conn's mu, never with st.mu
	closed   bool
	nextConn uint64
	byID     map[uint64]*Conn         // every open connector, by its number
	bySess   map[peerKey]*Conn        // connectors bound to a peer session
	dialed   map[link.Address]*Conn   // the connector Dial made for each peer
	accepted map[link.Address][]*Conn // the open connectors accepted from each peer address, oldest first
	ended    endedSessions            // peer sessions whose links have closed
	epochs   map[link.Address]uint64  // the highest epoch heard from each peer address (WithEpoch)

	st streams // the outbound streams (streams.go)

	starting   atomic.Bool           // Connect has not returned yet
	dropped    atomic.Uint64         // inbound messages dropped: malformed, full queues, refused
	connectErr atomic.Pointer[error] // why the last attempt to connect failed

	// Requests received and not yet answered, so that Close can let them
	// finish; while closing, new ones are refused.
	reqMu    sync.Mutex
	closing  bool
	inflight int
	idle     chan struct{} // closed when inflight reaches zero while closing
}

type peerKey struct {
	addr    link.Address
	session string
}

// startRequest counts a received request in, unless the Node is closing.
func (n *Node) startRequest() bool {
	n.reqMu.Lock()
	defer n.reqMu.Unlock()
	if n.closing {
		return false
	}
	n.inflight++
	return true
}

// endRequest counts a request out once its response is sent.
func (n *Node) endRequest() {
	n.reqMu.Lock()
	defer n.reqMu.Unlock()
	if n.inflight > 0 {
		n.inflight--
	}
	if n.inflight == 0 && n.idle != nil {
		close(n.idle)
		n.idle = nil
	}
}

// finishRequests refuses new requests and waits, at most d, for the ones
// received to be answered.
func (n *Node) finishRequests(d time.Duration) error {
	n.reqMu.Lock()
	n.closing = true
	if n.inflight == 0 {
		n.reqMu.Unlock()
		return nil
	}
	if n.idle == nil {
		n.idle = make(chan struct{})
	}
	idle, left := n.idle, n.inflight
	n.reqMu.Unlock()
	select {
	case <-idle:
		return nil
	case <-time.After(d):
		return fmt.Errorf("nats: %s: %d requests still unanswered after %s", n.self, left, d)
	}
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// ConnectError returns why the last attempt to connect to NATS failed, or
// nil.
func (n *Node) ConnectError() error {
	if err := n.nc.LastError(); err != nil {
		return err
	}
	if p := n.connectErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Self returns the Node's address.
func (n *Node) Self() link.Address { return n.self }

// Session returns the Node's session id: that of the links it accepts.
func (n *Node) Session() string { return n.session }

// Prefix returns the first token of the Node's subjects.
func (n *Node) Prefix() string { return n.opts.prefix }

// NATS returns the underlying connection, for inspection (status, RTT,
// statistics). Publishing on it bypasses every check of the fabric.
func (n *Node) NATS() *natsgo.Conn { return n.nc }

// Dropped counts inbound messages the Node dropped: malformed subjects or
// headers, messages for an earlier session, refused peers, full queues.
func (n *Node) Dropped() uint64 { return n.dropped.Load() }

// Dial returns a new connector for a link to peer. It replaces any earlier
// connector Dial made for peer. The peer's session is learned from the
// first message it sends back.
func (n *Node) Dial(peer link.Address) (*Conn, error) {
	if err := peer.Validate(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	c := n.newConnLocked(peer, "", false)
	c.setMine(newSession())
	if old := n.dialed[peer]; old != nil && old.peerSession() != "" {
		delete(n.bySess, peerKey{peer, old.peerSession()})
	}
	n.dialed[peer] = c
	n.mu.Unlock()
	n.openStream(c)
	return c, nil
}

// newConnLocked makes a connector; a bound one talks to the given session
// only. n.mu must be held.
func (n *Node) newConnLocked(peer link.Address, session string, bound bool) *Conn {
	n.nextConn++
	c := newConn(n, n.nextConn, peer, session, bound)
	c.setMine(n.session)
	n.byID[c.id] = c
	if bound {
		n.bySess[peerKey{peer, session}] = c
	}
	return c
}

// forget removes a closed connector from the Node's tables.
func (n *Node) forget(c *Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byID[c.id] == c {
		delete(n.byID, c.id)
	}
	k := peerKey{c.peer, c.peerSession()}
	if n.bySess[k] == c {
		delete(n.bySess, k)
	}
	if a, ok := n.accepted[c.peer]; ok {
		if a = slices.DeleteFunc(a, func(o *Conn) bool { return o == c }); len(a) == 0 {
			delete(n.accepted, c.peer)
		} else {
			n.accepted[c.peer] = a
		}
	}
	if n.dialed[c.peer] == c {
		delete(n.dialed, c.peer)
	}
	if c.isBound() && k.session != "" {
		n.ended.add(k)
	}
}

// conns returns the open connectors.
func (n *Node) conns() []*Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Conn, 0, len(n.byID))
	for _, c := range n.byID {
		out = append(out, c)
	}
	return out
}

// status passes a connection change to every connector.
func (n *Node) status(s link.Status, err error) {
	for _, c := range n.conns() {
		c.status(s, err)
	}
	if s == link.StatusResumed {
		n.resumeStreams(time.Now()) // what the peers or the broker missed meanwhile
	}
}

// parse parses msg's subject, refusing msg if it is not a fabric subject
// addressed to this endpoint.
func (n *Node) parse(msg *natsgo.Msg) (subject, bool) {
	sub, err := parseSubject(n.prefixDot, msg.Subject)
	if err != nil || sub.src == n.self || (sub.dst != n.self && sub.dst != (link.Address{Type: n.self.Type, ID: BroadcastID})) {
		// The sender chose the subject: quoting it back tells a client
		// author what was wrong, and tells no one else anything.
		n.refuse(msg, link.Errorf(link.CodeInvalidMessage, "subject %q is not a fabric subject addressed to %s", msg.Subject, n.self))
		return sub, false
	}
	return sub, true
}

// routeAll routes what the subscriptions receive, in order, until the
// Node shuts down.
func (n *Node) routeAll(inbox <-chan *natsgo.Msg) {
	defer n.wg.Done()
	r := &router{n: n, known: make(map[string]subject)}
	for {
		select {
		case msg := <-inbox:
			r.route(msg)
		case <-n.done:
			return
		}
	}
}

// router routes the Node's inbound messages, on one goroutine. It
// remembers the subjects that recur (a link's requests and events), so
// that each is parsed once rather than with every message.
type router struct {
	n     *Node
	known map[string]subject
}

// maxKnownSubjects bounds what a router remembers.
const maxKnownSubjects = 1024

func (r *router) route(msg *natsgo.Msg) {
	sub, ok := r.known[msg.Subject]
	if !ok {
		if sub, ok = r.n.parse(msg); !ok {
			return
		}
		if sub.kind == subjMessage || sub.kind == subjClose { // not replies and acknowledgements: used once
			if len(r.known) >= maxKnownSubjects {
				clear(r.known)
			}
			r.known[msg.Subject] = sub
		}
	}
	r.n.dispatch(sub, msg)
}

// dispatch hands a message to what its subject names.
func (n *Node) dispatch(sub subject, msg *natsgo.Msg) {
	if !n.gateOpen() {
		n.dropped.Add(1) // this endpoint may not act now
		return
	}
	if n.opts.epoch != nil && n.fenced(sub, msg) {
		n.dropped.Add(1)
		return
	}
	if msg.Reply != "" && sub.kind != subjMessage {
		// Responses, acknowledgements and close notices take no answer;
		// a request sent there gets one rather than wait for its timeout.
		n.refuse(msg, link.Errorf(link.CodeInvalidMessage, "%s takes requests only for message types; tokens that start with _ are the fabric's own", n.self))
		return
	}
	switch sub.kind {
	case subjReply:
		n.mu.Lock()
		c := n.byID[sub.conn]
		n.mu.Unlock()
		// The reply subject names the requester's connector; only that
		// link's peer may answer on it. Anyone else (another endpoint
		// that learned the session and guessed the number) is dropped:
		// a response from an unexpected session ends a link.
		if c == nil || sub.session != c.mine || sub.src != c.peer {
			n.dropped.Add(1) // a reply to a link that has ended, or not from its peer
			return
		}
		c.reply(sub.seq, sub.respSession, msg)
	case subjAck:
		c := n.lookup(sub.src, sub.srcSession)
		if c == nil {
			c = n.endedStream(peerKey{sub.src, sub.srcSession}) // the peer's last word may come after the close
		}
		if c == nil || sub.dstSession != c.mine {
			n.dropped.Add(1) // for a link that has ended
			return
		}
		c.confirm()
		n.acked(c, sub.ackSeq, sub.gap, sub.all)
	case subjClose:
		c := n.lookup(sub.src, sub.srcSession)
		if c == nil || !c.closedBy(sub.dstSession) {
			n.dropped.Add(1) // it ends another link, not this one
			return
		}
		c.peerClosed()
	case subjHello:
		// Only news of a session: fenced above.
	case subjMessage:
		if sub.dst.ID == BroadcastID && n.opts.broadcastsFrom != nil && !n.opts.broadcastsFrom(sub.src) {
			n.refuse(msg, link.Errorf(link.CodeInvalidMessage, "%s takes no broadcast from %s", n.self, sub.src))
			return
		}
		c, err := n.connFor(sub.src, sub.srcSession, sub.dstSession)
		switch {
		case err == errStale:
			n.stale(sub.src, msg)
		case err != nil:
			n.refuse(msg, err)
		default:
			c.inbound(sub, msg)
		}
	}
}

// fenced reports whether msg comes from a run of its sender that a newer
// one has replaced (see WithEpoch), and ends the links dialed to a run
// that this message shows replaced.
func (n *Node) fenced(sub subject, msg *natsgo.Msg) bool {
	session := sub.srcSession
	if sub.kind == subjReply {
		session = cmp.Or(sub.respSession, msg.Header.Get(hdrSession))
	}
	if session == "" {
		return false
	}
	e := n.opts.epoch(sub.src, session)
	if e == 0 {
		return false
	}
	n.mu.Lock()
	highest := n.epochs[sub.src]
	if e < highest {
		n.mu.Unlock()
		return true
	}
	var replaced *Conn
	if e > highest {
		n.epochs[sub.src] = e
		if c := n.dialed[sub.src]; c != nil {
			if ps := c.peerSession(); ps != "" && ps != session && n.opts.epoch(sub.src, ps) < e {
				replaced = c
			}
		}
	}
	n.mu.Unlock()
	if replaced != nil {
		n.opts.logger.Debug("peer replaced by a newer run", "node", n.self.String(), "peer", sub.src.String(), "session", session)
		replaced.peerRestarted()
	}
	return false
}

// Announce tells every endpoint of type to that this Node's session is
// now the one of its address: a peer whose link was dialed to an older
// run of this address (see WithEpoch) ends it at once and dials again,
// rather than wait for its heartbeat to find out. It sends one message.
func (n *Node) Announce(ctx context.Context, to messages.Endpoint) error {
	subject := n.prefixDot + token(n.self) + "." + to.String() + "." + BroadcastID + "." + tokHello + "." + n.session
	return n.publishParts(ctx, subject, "", nil, nil, "announce")
}

// lookup finds the connector of a peer session, or nil.
func (n *Node) lookup(peer link.Address, session string) *Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.bySess[peerKey{peer, session}]; c != nil {
		return c
	}
	if c := n.dialed[peer]; c != nil && !c.isBound() {
		return c
	}
	return nil
}

// errStale stands for a message addressed to a session of this endpoint
// that has ended, or sent by a peer session whose link has ended.
var errStale = &link.Error{Code: link.CodeSessionLost, Message: "stale session"}

// connFor finds the connector for a message from a peer session to one of
// ours (dst, if the peer said): one bound to it, the one Dial made for the
// peer (binding it on first contact), or a new one offered to the accept
// function. It returns errStale for a message of a link that has ended.
func (n *Node) connFor(peer link.Address, session, dst string) (*Conn, *link.Error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, link.Errorf(link.CodeUnavailable, "%s is shutting down", n.self)
	}
	if c := n.bySess[peerKey{peer, session}]; c != nil {
		n.mu.Unlock()
		if dst != "" && dst != c.mine {
			return nil, errStale
		}
		if dst != "" {
			c.confirm() // the peer heard from this end
		}
		return c, nil
	}
	// A dialed link binds to the peer session that names it: its session
	// is new with each Dial, so only a peer that heard from it knows it.
	// Anything else addressed to the peer's address (another process of
	// the same identity, a plain client's traffic relayed to it) is not
	// its peer speaking.
	dialed := n.dialed[peer]
	if dialed != nil && session != "" && dst == dialed.mine && dialed.bindLocked(session) {
		n.mu.Unlock()
		return dialed, nil
	}
	// Another session of the peer we dialed (a restarted peer, or someone
	// else using its address) is not the dialed link's peer, and an
	// unsolicited message is no proof of a restart (a reply to one of our
	// requests is; see Conn.reply): it may only start a link of its own.
	if (dst != "" && dst != n.session) || n.ended.has(peerKey{peer, session}) {
		// Late mail of a link that has ended: its peer must start over,
		// with a new session, not pick up a link nobody registered.
		n.mu.Unlock()
		return nil, errStale
	}
	accept := n.opts.accept
	switch {
	case accept == nil && dialed != nil:
		n.mu.Unlock()
		return nil, link.Errorf(link.CodeSessionLost, "%s has no link to this session of %s", n.self, peer)
	case accept == nil:
		n.mu.Unlock()
		return nil, link.Errorf(link.CodeNotConnected, "%s does not accept links from %s", n.self, peer)
	}
	victim, ok := n.roomForLocked(peer)
	if !ok {
		n.mu.Unlock()
		return nil, link.Errorf(link.CodeUnavailable, "%s has links to %d sessions of %s, each live: close one, or try again later", n.self, n.opts.maxSessions, peer)
	}
	c := n.newConnLocked(peer, session, true)
	n.accepted[peer] = append(n.accepted[peer], c)
	n.mu.Unlock()
	if victim != nil {
		n.opts.logger.Debug("link to an unconfirmed session replaced by a newer session", "node", n.self.String(), "peer", peer.String(), "session", victim.peerSession())
		victim.evict()
	}
	n.openStream(c)
	if err := accept(c); err != nil {
		_ = c.Close()
		var le *link.Error
		if errors.As(err, &le) {
			return nil, le
		}
		return nil, link.Errorf(link.CodeNotConnected, "%s refused a link from %s: %v", n.self, peer, err)
	}
	return c, nil
}

// roomForLocked makes room for a new session of peer among the links
// accepted from it (WithMaxPeerSessions): it returns the connector to
// close for it, the oldest that is neither confirmed nor answering a
// request, or nil if there is room already; false if every one is
// confirmed or busy (for a single peer, WithSinglePeers: busy). n.mu must
// be held.
func (n *Node) roomForLocked(peer link.Address) (*Conn, bool) {
	a := n.accepted[peer]
	if len(a) < n.opts.maxSessions {
		return nil, true
	}
	for _, c := range a {
		if !c.Confirmed() && !c.busy() {
			return c, true
		}
	}
	if n.opts.singlePeer != nil && n.opts.singlePeer(peer) {
		// Confirmed links of a peer that one process holds at most are
		// of its earlier runs, or idle (WithSinglePeers).
		for _, c := range a {
			if !c.busy() {
				return c, true
			}
		}
	}
	return nil, false
}

// stale handles a message from peer addressed to an ended session of this
// endpoint's address, or sent by a peer session whose link has ended:
// answered with session_lost if the Node is told to (WithAnswerStale,
// WithAnswerStaleFrom), dropped otherwise.
func (n *Node) stale(peer link.Address, msg *natsgo.Msg) {
	if n.opts.answerStale != nil && n.opts.answerStale(peer) {
		n.refuse(msg, link.Errorf(link.CodeSessionLost, "%s restarted or ended the link: the session this message was sent to has ended", n.self))
		return
	}
	n.dropped.Add(1)
}

// refuse answers a request the Node cannot deliver, and drops anything else.
func (n *Node) refuse(msg *natsgo.Msg, e *link.Error) { n.refuseAs(msg, e, n.session) }

// refuseAs is refuse, answering as the link end whose session is session.
func (n *Node) refuseAs(msg *natsgo.Msg, e *link.Error, session string) {
	n.dropped.Add(1)
	n.opts.logger.Debug("refused message", "node", n.self.String(), "subject", msg.Subject, "error", e.Error())
	if msg.Reply == "" || !n.mayAnswer(msg) {
		return
	}
	resp := natsgo.NewMsg(msg.Reply)
	resp.Header.Set(hdrSession, session)
	if id := msg.Header.Get(hdrID); id != "" {
		resp.Header.Set(hdrID, id)
	}
	resp.Header.Set(hdrError, string(e.Code))
	resp.Data = []byte(e.Message)
	if !n.gateOpen() {
		return // a gated Node says nothing, not even a refusal
	}
	_ = n.nc.PublishMsg(resp)
}

// mayAnswer reports whether msg's reply subject is one its sender owns
// (see Conn.repliesTo): a sender the subject does not name gets an answer
// only on a plain inbox.
func (n *Node) mayAnswer(msg *natsgo.Msg) bool {
	if strings.HasPrefix(msg.Reply, "_INBOX.") {
		return true
	}
	sub, err := parseSubject(n.prefixDot, msg.Subject)
	if err != nil {
		return false
	}
	owner := token(sub.src)
	return strings.HasPrefix(msg.Reply, n.prefixDot+token(n.self)+"."+owner+"."+tokReply+".") ||
		strings.HasPrefix(msg.Reply, n.prefixDot+"_inbox."+owner+".")
}

// gateOpen reports whether the Node may act now (see WithGate): while it
// is closed nothing is sent, not even the connector's own acknowledgements,
// close notices, refusals or responses sent again.
func (n *Node) gateOpen() bool { return n.opts.gate == nil || n.opts.gate() }

// publish sends msg, refusing what the broker would refuse.
func (n *Node) publish(ctx context.Context, msg *natsgo.Msg, what string) error {
	return n.publishParts(ctx, msg.Subject, msg.Reply, msg.Header, msg.Data, what)
}

// publishParts is publish for a message not yet made into a natsgo.Msg:
// without headers, none is made. It waits, as long as ctx allows, for the
// Node's first connection.
func (n *Node) publishParts(ctx context.Context, subject, reply string, hdr natsgo.Header, data []byte, what string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !n.gateOpen() {
		return link.Errorf(link.CodeUnavailable, "%s: %s may not send now", what, n.self)
	}
	select {
	case <-n.connected:
	default:
		// Until it has met a server, nats.go refuses every message with
		// headers (ErrHeadersNotSupported) instead of buffering it: wait
		// for the first connection, as long as the caller allows.
		select {
		case <-n.connected:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return link.Errorf(link.CodeSessionLost, "%s: NATS connection closed", what)
		}
	}
	var err error
	switch {
	case hdr == nil && reply == "":
		err = n.nc.Publish(subject, data)
	case hdr == nil:
		err = n.nc.PublishRequest(subject, reply, data)
	default:
		err = n.nc.PublishMsg(&natsgo.Msg{Subject: subject, Reply: reply, Header: hdr, Data: data})
	}
	return n.publishError(err, what, data, hdr)
}

// publishError explains a failed publish in the link's terms.
func (n *Node) publishError(err error, what string, data []byte, hdr natsgo.Header) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, natsgo.ErrMaxPayload):
		// nats.go checks before sending; say by how much.
		size := len(data)
		if hdr != nil {
			size = (&natsgo.Msg{Header: hdr, Data: data}).Size()
		}
		return link.Errorf(link.CodeTooLarge, "%s: %d bytes with headers is more than the broker's max_payload of %d", what, size, n.nc.MaxPayload())
	case errors.Is(err, natsgo.ErrConnectionClosed):
		return link.Errorf(link.CodeSessionLost, "%s: NATS connection closed", what)
	case errors.Is(err, natsgo.ErrReconnectBufExceeded):
		return link.Errorf(link.CodeNotConnected, "%s: NATS is unreachable and the reconnect buffer is full", what)
	}
	return link.Errorf(link.CodeUnavailable, "%s: %v", what, err)
}

// transient reports whether a publish failed only for want of a
// connection, so that sending the message again later may succeed.
func transient(err error) bool {
	var le *link.Error
	return errors.As(err, &le) && (le.Code == link.CodeUnavailable || le.Code == link.CodeNotConnected)
}

// Close shuts the Node down gracefully, within the drain timeout: it
// refuses new requests (CodeUnavailable), lets the requests it has received
// be answered and its peers acknowledge what it sent, closes every
// connector (their peers' links are told), then drains the connection,
// flushing what was sent. It returns when the connection has closed. Close
// is idempotent.
func (n *Node) Close() error {
	drainErr := errors.Join(n.finishRequests(n.opts.drainTimeout), n.finishEvents(n.opts.drainTimeout))
	for _, c := range n.conns() {
		_ = c.Close()
	}
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.giveUpEnded() // no later session of a peer can take over from a Node that is gone

	var err error
	closed := make(chan struct{})
	n.nc.SetClosedHandler(func(*natsgo.Conn) { close(closed) })
	if n.nc.IsClosed() {
		close(closed)
	} else if derr := n.nc.Drain(); derr != nil {
		n.nc.Close()
	}
	select {
	case <-closed:
	case <-time.After(n.opts.drainTimeout + time.Second):
		n.nc.Close()
		err = fmt.Errorf("nats: %s: drain did not finish within %s", n.self, n.opts.drainTimeout)
	}
	n.shutdown()
	return errors.Join(drainErr, err)
}

// shutdown closes the connection, and with it the subscriptions.
func (n *Node) shutdown() {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		n.nc.Close()
		close(n.done)
	})
	n.wg.Wait()
}

// ticker does, every tick, what the streams and each connector have due:
// acknowledgements, events and requests to send again, ended links to
// give up.
func (n *Node) ticker() {
	defer n.wg.Done()
	t := time.NewTicker(delivery.TickEvery)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case now := <-t.C:
			n.tickStreams(now)
			for _, c := range n.conns() {
				c.tick(now)
			}
		}
	}
}

// finishEvents acknowledges what has arrived, then waits, at most d, for
// the peers to acknowledge what this Node sent.
func (n *Node) finishEvents(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	now := time.Now()
	for _, c := range n.conns() {
		c.tickReceiver(now)
	}
	if err := n.flush(ctx, func() int { return n.unackedEvents() + n.broadcastsLacked() }); err != nil {
		return fmt.Errorf("nats: %s: events still unacknowledged after %s: %w", n.self, d, err)
	}
	return nil
}

// endedSessions remembers the peer sessions whose links have closed, the
// latest maxEnded of them, so that their late messages are refused.
type endedSessions struct {
	set   map[peerKey]struct{}
	order []peerKey
}

const maxEnded = 4096

func (e *endedSessions) add(k peerKey) {
	if e.set == nil {
		e.set = map[peerKey]struct{}{}
	}
	if _, ok := e.set[k]; ok {
		return
	}
	if len(e.order) >= maxEnded {
		delete(e.set, e.order[0])
		e.order = e.order[1:]
	}
	e.set[k] = struct{}{}
	e.order = append(e.order, k)
}

func (e *endedSessions) has(k peerKey) bool {
	_, ok := e.set[k]
	return ok
}
