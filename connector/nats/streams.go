package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Events and broadcasts between fabric endpoints are numbered, kept until
// acknowledged, sent again, delivered in order and acknowledged by the
// state machines of internal/delivery, whose package doc is the reference
// (docs/reliability.md says what is promised). This file is the glue: it
// feeds them what arrives and the time, publishes what they return, and
// hands each link what its Receiver delivers.
//
// One Sender serves the Node: a stream of events on each link (an
// OutLink), and a stream of broadcasts to each endpoint type. Each
// connector of a fabric peer has a Receiver, fed from the Node's one
// routing goroutine, in the order NATS delivered.

// outEvent is an event as the Sender keeps it until it is acknowledged.
type outEvent struct {
	typ    string
	data   []byte
	origin string // where a forwarded event started, "<type>/<id>", or ""
	dst    string // where a routed event goes, "<type>/<id>" or "<type>/*", or ""
}

// streams is the Node's outbound side.
type streams struct {
	// mu is held across a Sender call and the publishing of what it
	// returned, so that messages go out in the order they were numbered;
	// it is taken before a Conn's mu, never with the Node's.
	mu     sync.Mutex
	sender *delivery.Sender[outEvent]
	// owner is the connector of each OutLink the Sender holds: open, or
	// parked after its link closed, for the peer's next session to adopt.
	owner map[*delivery.OutLink[outEvent]]*Conn
	// ended are the connectors whose links closed with their OutLinks
	// parked, in the order they closed; endedBy finds those whose peer
	// session is known, for the acknowledgements that come after a close.
	ended   []*Conn
	endedBy map[peerKey]*Conn
	// last is the number of the last broadcast to each type.
	last map[string]uint64
	// progress is closed when an acknowledgement arrives, for those who
	// wait for one (room to send, a flush); nil while no one waits.
	progress chan struct{}
	// lastWords are the final acknowledgements of links whose Receivers
	// stopped while the connection was down: published again when it is
	// back.
	lastWords []string
	// What publishing needs each time, kept: the subjects of broadcasts, by
	// type and message type, and a buffer for the payload.
	subjects map[[2]string]string
	buf      []byte
}

func newStreams(maxUnacked int) streams {
	return streams{
		sender:   delivery.NewSender[outEvent](maxUnacked),
		owner:    map[*delivery.OutLink[outEvent]]*Conn{},
		endedBy:  map[peerKey]*Conn{},
		last:     map[string]uint64{},
		subjects: map[[2]string]string{},
	}
}

// openStream opens c's outbound stream, unless another link to the same
// peer has one: an earlier session, open or ended within the session
// timeout, that c's may replace. Then it opens when the endpoint says with
// Adopt, or at c's first event.
func (n *Node) openStream(c *Conn) {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	n.openStreamLocked(c, false, nil)
}

// openStreamLocked opens c's outbound stream if it has none; with force,
// even if another link to the same peer has one: then the streams of the
// peer's ended links, but keep's, are given up (a link to the peer still
// open keeps its own: two processes may link as one control user). It
// reports whether c has a stream. n.st.mu must be held.
func (n *Node) openStreamLocked(c *Conn, force bool, keep *Conn) bool {
	if c.out != nil {
		return true
	}
	if c.in == nil || c.isDone() {
		return false // a plain client's link has no stream; a closed one gets none
	}
	typ, key := c.peer.Type.String(), c.peer.ID
	var earlier []*Conn
	for out, o := range n.st.owner {
		if out.Type() == typ && out.Key() == key && o != keep {
			earlier = append(earlier, o)
		}
	}
	if len(earlier) > 0 && !force {
		return false
	}
	for _, o := range earlier {
		if o.ended {
			n.giveUpLocked(o)
		}
	}
	// The Sender numbers and fences by endpoint id, as the peer's
	// Receiver reads them.
	c.out = n.st.sender.Open(typ, key)
	n.st.owner[c.out] = c
	return true
}

// Adopt opens c's outbound stream in place of old's, a link to the same
// peer whose session has ended (the peer restarted, within the session
// timeout of WithSessionTimeout): c takes over the events old's peer never
// acknowledged, sent again first, in their order, and the broadcasts it
// was owed. With old nil, c's stream opens with nothing taken over, and
// what the peer's ended links kept is given up. An endpoint calls it when
// it takes c for the peer's link (a slave's registration), before it
// sends anything on it: until then, while another link to the same peer
// exists, c's stream is not open, and c receives no broadcasts. Requests
// are not adopted: those pending on old ended with link.ErrSessionLost when
// its link closed. It never blocks.
func (c *Conn) Adopt(old *Conn) error {
	n := c.n
	if old != nil && (old.n != n || old.peer != c.peer) {
		return fmt.Errorf("nats: %s cannot take over a link to %s", c.peer, old.peer)
	}
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	if c.in == nil {
		return nil // a plain client's link: no stream
	}
	if !n.openStreamLocked(c, true, old) {
		return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
	}
	if old == nil || old == c || old.out == nil || n.st.owner[old.out] != old {
		return nil // nothing to take over, or given up already
	}
	pubs, givenUp, err := n.st.sender.Adopt(c.out, old.out, time.Now())
	if err != nil {
		return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
	}
	n.forgetStreamLocked(old)
	if givenUp > 0 {
		n.opts.logger.Debug("broadcasts owed to a peer's earlier session given up", "node", n.self.String(), "peer", c.peer.String(), "broadcasts", givenUp)
	}
	_ = n.publishLocked(pubs) // kept: sent again if this fails
	return nil
}

// endStream ends c's outbound stream as its link closes: parked for the
// peer's next session to adopt, within the session timeout, or given up.
func (n *Node) endStream(c *Conn) {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	if c.out == nil || c.ended || n.st.owner[c.out] != c {
		return
	}
	c.ended = true
	n.wakeLocked() // a flush no longer waits for it
	if n.opts.sessionTimeout <= 0 {
		n.giveUpLocked(c)
		return
	}
	n.st.sender.Park(c.out)
	c.endedAt = time.Now()
	n.st.ended = append(n.st.ended, c)
	if ps := c.peerSession(); ps != "" {
		n.st.endedBy[peerKey{c.peer, ps}] = c
	}
}

// giveUpLocked gives up what c's stream keeps. n.st.mu must be held.
func (n *Node) giveUpLocked(c *Conn) {
	if given := n.st.sender.Close(c.out); given > 0 {
		n.opts.logger.Debug("events given up with an ended session", "node", n.self.String(), "peer", c.peer.String(), "events", given)
	}
	n.forgetStreamLocked(c)
}

// forgetStreamLocked forgets c's stream, closed or adopted. n.st.mu must be
// held.
func (n *Node) forgetStreamLocked(c *Conn) {
	n.wakeLocked()
	delete(n.st.owner, c.out)
	for k, o := range n.st.endedBy {
		if o == c {
			delete(n.st.endedBy, k)
		}
	}
	n.st.ended = slices.DeleteFunc(n.st.ended, func(o *Conn) bool { return o == c })
}

// endedStream returns the connector of a peer session whose link has
// closed with its stream parked, or nil.
func (n *Node) endedStream(k peerKey) *Conn {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	return n.st.endedBy[k]
}

// giveUpEnded gives up the streams of every ended link.
func (n *Node) giveUpEnded() {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	for len(n.st.ended) > 0 {
		n.giveUpLocked(n.st.ended[0])
	}
}

// sendEvent numbers an event on c's stream, keeps it and publishes it. It
// waits while the peer has not acknowledged the most events a link keeps,
// until ctx ends.
func (c *Conn) sendEvent(ctx context.Context, m *link.Envelope) error {
	n := c.n
	ev := newOutEvent(m)
	// The head is written when the event is published, and again each
	// time it is sent again: refuse now what the broker would refuse then.
	if err := n.fits(m.Type, len(m.Data)+linkHeadLen(ev)); err != nil {
		return err
	}
	if !n.gateOpen() {
		return link.Errorf(link.CodeUnavailable, "%s: %s may not send now", m.Type, n.self)
	}
	for {
		n.st.mu.Lock()
		if !n.openStreamLocked(c, true, nil) {
			n.st.mu.Unlock()
			return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
		}
		pubs, err := n.st.sender.Send(c.out, ev, time.Now())
		if err == nil {
			err = n.publishLocked(pubs)
			n.st.mu.Unlock()
			return streamError(err)
		}
		if !errors.Is(err, delivery.ErrFull) {
			n.st.mu.Unlock()
			return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
		}
		progress, left := n.waitLocked(), c.out.Unacked()
		n.st.mu.Unlock()
		if !link.MayWait(ctx) {
			return link.Errorf(link.CodeUnavailable, "%s: not sent: %s has not acknowledged %d events", m.Type, c.peer, left)
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return link.Errorf(link.CodeUnavailable, "%s: %s has not acknowledged %d events: %v", m.Type, c.peer, left, ctx.Err())
		case <-c.done:
			return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
		}
	}
}

// streamError is what a caller hears of a failed publish of a numbered
// event: nothing if it failed for want of a connection (the event is kept,
// and sent again when the connection is back).
func streamError(err error) error {
	if err == nil || transient(err) {
		return nil
	}
	return err
}

// linkHeadLen bounds the head of an event on a link: its numbers, its
// origin and destination, the broadcast it comes after.
func linkHeadLen(ev outEvent) int {
	return 1 + 20 + 1 + 20 + 1 + len(ev.origin) + 3 + len(ev.dst) + 3 + 20 + 1
}

// newOutEvent is m as the Sender keeps it.
func newOutEvent(m *link.Envelope) outEvent {
	ev := outEvent{typ: m.Type, data: m.Data}
	if !m.Origin.IsZero() {
		ev.origin = m.Origin.String()
	}
	if !m.Dst.IsZero() {
		ev.dst = m.Dst.String()
	}
	return ev
}

// fits refuses an event the broker would refuse, payload and head.
func (n *Node) fits(what string, size int) error {
	if limit := n.nc.MaxPayload(); limit > 0 && int64(size) > limit {
		return link.Errorf(link.CodeTooLarge, "%s: %d bytes with its head is more than the broker's max_payload of %d", what, size, limit)
	}
	return nil
}

// Broadcast publishes an event once to every endpoint of type to.Type
// (to.ID is BroadcastID) that subscribes to broadcasts: NATS fans it out.
// It keeps the event until the fabric peers of that type linked to this
// Node when it was sent have acknowledged it (see internal/delivery). It
// checks that m is an event, and that it fits, and nothing else: a caller
// that broadcasts checks m against the catalog first (link.Broadcaster
// does). It returns CodeUnavailable, at once, while the most broadcasts a
// stream keeps wait for acknowledgements.
func (n *Node) Broadcast(ctx context.Context, to link.Address, m *link.Envelope) error {
	if m.Kind != messages.KindEvent {
		return link.Errorf(link.CodeInvalidMessage, "%s: only events can be broadcast", m.Type)
	}
	if to.ID != BroadcastID {
		return fmt.Errorf("nats: %s is not a broadcast address", to)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !n.gateOpen() {
		return link.Errorf(link.CodeUnavailable, "%s: %s may not send now", m.Type, n.self)
	}
	if err := n.fits(m.Type, len(m.Data)+delivery.MaxHeadLen); err != nil {
		return err
	}
	ev := newOutEvent(m)
	typ := to.Type.String()
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	pubs, err := n.st.sender.Broadcast(typ, ev, time.Now())
	if err != nil {
		return link.Errorf(link.CodeUnavailable, "%s: too many broadcasts to %s are not yet acknowledged by every receiver", m.Type, to)
	}
	n.st.last[typ] = pubs[0].Head.Seq // the published copy comes first
	return streamError(n.publishLocked(pubs))
}

// publishLocked publishes what the Sender returned, in order; it returns
// the first error. n.st.mu must be held.
func (n *Node) publishLocked(pubs []delivery.Publish[outEvent]) error {
	var first error
	for i := range pubs {
		if err := n.publishOneLocked(&pubs[i]); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (n *Node) publishOneLocked(p *delivery.Publish[outEvent]) error {
	var subject string
	if p.Link == nil {
		subject = n.broadcastSubjectLocked(p.Type, p.Event.typ)
	} else {
		c := n.st.owner[p.Link]
		if c == nil {
			return nil
		}
		subject = c.eventSubjectLocked(p.Event.typ)
	}
	h := p.Head
	h.Origin, h.Dst = p.Event.origin, p.Event.dst
	// nats.go copies the payload before Publish returns: the buffer serves
	// the next message too.
	n.st.buf = append(delivery.AppendHead(n.st.buf[:0], h), p.Event.data...)
	err := n.publishStream(subject, n.st.buf, p.Event.typ)
	if cap(n.st.buf) > 64<<10 {
		n.st.buf = nil // do not keep a large event's buffer for good
	}
	return err
}

// publishStream publishes a message of the streams: a numbered event or an
// acknowledgement, which has no headers and so needs no wait for the first
// connection (nats.go buffers it). A gated Node sends nothing: what it
// keeps goes out once the gate opens.
func (n *Node) publishStream(subject string, data []byte, what string) error {
	if !n.gateOpen() {
		return nil
	}
	return n.publishError(n.nc.Publish(subject, data), what, data, nil)
}

// broadcastSubjectLocked is the subject of broadcasts of msgType to typ.
func (n *Node) broadcastSubjectLocked(typ, msgType string) string {
	k := [2]string{typ, msgType}
	s, ok := n.st.subjects[k]
	if !ok {
		to, _ := parseAddress(typ, BroadcastID, true)
		s = messageSubject(n.opts.prefix, n.self, to, msgType, n.session, "")
		n.st.subjects[k] = s
	}
	return s
}

// eventSubjectLocked is the subject of c's events of type msgType, to the
// peer session c knows. n.st.mu must be held.
func (c *Conn) eventSubjectLocked(msgType string) string {
	ps := c.peerSession()
	if c.subjectsFor != ps || c.subjects == nil {
		c.subjects, c.subjectsFor = map[string]string{}, ps
	}
	s, ok := c.subjects[msgType]
	if !ok {
		s = eventSubject(c.n.opts.prefix, c.n.self, c.peer, msgType, c.mine, ps)
		c.subjects[msgType] = s
	}
	return s
}

// acked takes c's peer's acknowledgement of every event up to upTo of c's
// stream (with all, of the broadcast stream), and with gap, its word that
// the next one is missing.
func (n *Node) acked(c *Conn, upTo uint64, gap, all bool) {
	now := time.Now()
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	if c.out == nil || n.st.owner[c.out] != c {
		return
	}
	var pubs []delivery.Publish[outEvent]
	if all {
		pubs = n.st.sender.AckedAll(c.out, upTo, gap, now)
	} else {
		pubs = n.st.sender.Acked(c.out, upTo, gap, now)
	}
	_ = n.publishLocked(pubs)
	n.wakeLocked()
}

// wakeLocked wakes those who wait for what the streams keep to change: an
// acknowledgement, a stream that ends. n.st.mu must be held.
func (n *Node) wakeLocked() {
	if n.st.progress != nil {
		close(n.st.progress)
		n.st.progress = nil
	}
}

// waitLocked returns a channel closed by the next acknowledgement, or the
// next stream to end. n.st.mu must be held.
func (n *Node) waitLocked() <-chan struct{} {
	if n.st.progress == nil {
		n.st.progress = make(chan struct{})
	}
	return n.st.progress
}

// flush waits until left reports nothing left, or ctx ends, or the Node
// shuts down. left is called with n.st.mu held.
func (n *Node) flush(ctx context.Context, left func() int) error {
	for {
		n.st.mu.Lock()
		k := left()
		progress := n.waitLocked()
		n.st.mu.Unlock()
		if k == 0 {
			return nil
		}
		select {
		case <-progress:
		case <-n.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%d not acknowledged: %w", k, ctx.Err())
		}
	}
}

// unackedEvents counts the events of open links that their peers have not
// acknowledged. n.st.mu must be held.
func (n *Node) unackedEvents() int {
	k := 0
	for out := range n.st.owner {
		if !out.Closed() {
			k += out.Unacked()
		}
	}
	return k
}

// broadcastsLacked counts, over the receivers whose links are open, the
// broadcasts they lack. n.st.mu must be held.
func (n *Node) broadcastsLacked() int {
	k := 0
	for out := range n.st.owner {
		if last := n.st.last[out.Type()]; !out.Closed() && out.BroadcastsAckedUpTo() < last {
			k += int(last - out.BroadcastsAckedUpTo())
		}
	}
	return k
}

// FlushBroadcasts waits until every receiver whose link is open has
// acknowledged every broadcast, or ctx ends, or the Node closes.
func (n *Node) FlushBroadcasts(ctx context.Context) error {
	if err := n.flush(ctx, n.broadcastsLacked); err != nil {
		return fmt.Errorf("nats: %s: broadcasts not acknowledged by every receiver: %w", n.self, err)
	}
	return nil
}

// Flush waits until the peer has acknowledged every event sent on c, or
// ctx ends, or the connector closes.
func (c *Conn) Flush(ctx context.Context) error {
	n := c.n
	for {
		n.st.mu.Lock()
		left := 0
		if c.out != nil && n.st.owner[c.out] == c {
			left = c.out.Unacked()
		}
		progress := n.waitLocked()
		n.st.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-progress:
		case <-c.done:
			return link.Errorf(link.CodeSessionLost, "connector to %s closed with %d events unacknowledged", c.peer, left)
		case <-ctx.Done():
			return link.Errorf(link.CodeTimeout, "%s has not acknowledged %d events: %v", c.peer, left, ctx.Err())
		}
	}
}

// tickStreams sends again what has waited too long for its
// acknowledgement, and gives up the streams of links that closed longer
// than the session timeout ago.
func (n *Node) tickStreams(now time.Time) {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	_ = n.publishLocked(n.st.sender.Tick(now))
	for len(n.st.ended) > 0 && now.Sub(n.st.ended[0].endedAt) > n.opts.sessionTimeout {
		n.giveUpLocked(n.st.ended[0])
	}
}

// resumeStreams sends everything unacknowledged again, and the last words
// of links that ended meanwhile, when the connection is back.
func (n *Node) resumeStreams(now time.Time) {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	for _, s := range n.st.lastWords {
		_ = n.publishStream(s, nil, "acknowledgement")
	}
	n.st.lastWords = nil
	_ = n.publishLocked(n.st.sender.Resumed(now))
}

// maxDelivered bounds how many events one message can have a Receiver
// deliver: itself, and what it held on both streams.
const maxDelivered = 1 + 2*delivery.MaxHeld

// receive feeds an event of one of the peer's streams to c's Receiver
// (published: a broadcast published to every receiver), and hands the
// link what it delivers, in order. The Receiver acknowledges what it has
// delivered; the link takes it, or c's queue keeps it for the link.
func (c *Conn) receive(h delivery.Head, m *link.Envelope, published bool) {
	if !c.queue.room(maxDelivered) {
		// The link is far behind: the event is not taken, so not
		// acknowledged, and it comes again.
		c.n.dropped.Add(1)
		return
	}
	now := time.Now()
	// Held across the hand-over, so that Stop, which takes it too, is
	// atomic with delivery: nothing is delivered after it, and its last
	// acknowledgement covers all that was.
	c.inMu.Lock()
	defer c.inMu.Unlock()
	var evs []*link.Envelope
	var acks []delivery.Ack
	if published {
		evs, acks = c.in.Broadcast(h, m, now)
	} else {
		evs, acks = c.in.Event(h, m, now)
	}
	for _, ev := range evs {
		c.enqueue(ev)
	}
	c.publishAcks(acks)
}

// tickReceiver publishes the acknowledgements due, and the gaps to report.
func (c *Conn) tickReceiver(now time.Time) {
	if c.in == nil {
		return
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	c.publishAcks(c.in.Tick(now))
}

// stopReceiving stops c's Receiver: from now on nothing is delivered, and
// its last acknowledgements, of what it delivered, go to the peer, whose
// Sender hands the rest to the link's successor. The link must still be
// taking events: a connector stops before its link stops (link.Stopper).
func (c *Conn) stopReceiving() {
	if c.in == nil {
		return
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	acks := c.in.Stop()
	c.publishAcks(acks)
	if len(acks) > 0 && !c.n.nc.IsConnected() {
		// Published into nats.go's reconnect buffer, which may not keep
		// it: said again when the connection is back.
		n := c.n
		n.st.mu.Lock()
		for _, a := range acks {
			n.st.lastWords = append(n.st.lastWords, c.ackSubject(a))
		}
		n.st.mu.Unlock()
	}
}

// publishAcks tells the peer what arrived.
func (c *Conn) publishAcks(acks []delivery.Ack) {
	for _, a := range acks {
		if s := c.ackSubject(a); s != "" {
			_ = c.n.publishStream(s, nil, "acknowledgement")
		}
	}
}

// ackSubject is the subject of an acknowledgement to c's peer, or "" for
// a peer with no session (a plain client has no stream).
func (c *Conn) ackSubject(a delivery.Ack) string {
	ps := c.peerSession()
	if ps == "" {
		return ""
	}
	n := c.n
	return ackSubject(n.opts.prefix, n.self, c.peer, c.mine, ps, a.UpTo, a.Gap, a.All)
}
