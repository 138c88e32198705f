package nats

import (
	"context"
	"errors"
	"time"

	"github.com/linkfabric/linkfabric/link"
)

// Core NATS delivers at most once: what is published while the receiver
// is cut off from the broker (a reconnect, a failover) is gone. The
// connector keeps the link's promise on top of it:
//
// Events. Each connector numbers the events it sends (seq 1, 2, 3...) and
// keeps every one until the peer acknowledges it. The receiver delivers
// them strictly in order: a duplicate is dropped, and an event that skips
// ahead is dropped too and answered with a gap acknowledgement, on which
// the sender sends everything unacknowledged again (go-back-N). The
// receiver acknowledges cumulatively, every 64 events or within a tick;
// the sender also sends again what stays unacknowledged too long, and
// everything at once when the connection comes back. An event carries its
// number and its sender's floor (the oldest event it still holds), so a
// receiver that has never heard from this sender knows where the stream
// starts. They ride at the start of the payload, not in the subject, so
// that the subject of a link's events stays the same and the broker's
// cache of where subjects go keeps working. So: no loss, no duplicate, one order, for as long as the session
// lasts.

const (
	ackEvery    = 64                     // acknowledge at least this often, in events
	tickEvery   = 50 * time.Millisecond  // how often acknowledgements and resends are due
	resendFirst = 500 * time.Millisecond // silence before events are sent again; doubles to resendMax
	resendMax   = 5 * time.Second
	gapResend   = 20 * time.Millisecond // at most one go-back-N per this, however many gaps
	// probeWindow bounds what the resend timer sends a silent peer at a
	// time: a peer that is not there (its node is frozen) costs the broker
	// no more than this per round. A peer that is there acknowledges the
	// window, and is sent the next one.
	probeWindow = 1024
)

// outEvent is an event sent and not yet acknowledged.
type outEvent struct {
	typ    string
	data   []byte
	origin link.Address
}

// outEvents is a connector's numbered stream of events to its peer.
type outEvents struct {
	next       uint64         // the number of the next event; the first is 1
	acked      uint64         // every event up to this one is acknowledged
	pending    ring[outEvent] // acked+1 .. next-1, in order
	sentAt     time.Time      // when pending was last sent or acknowledged
	rto        time.Duration
	lastGap    time.Time
	probedTo   uint64        // the last event of the resend timer's window, until acknowledged
	room       chan struct{} // closed when an acknowledgement makes room
	maxPending int

	// What publishing needs each time, kept: the subject of each type of
	// event to the peer's session, and a buffer for the payload.
	subjects    map[string]string
	subjectsFor string // the peer session subjects name
	buf         []byte
}

// inEvents is what a connector knows of its peer's stream.
type inEvents struct {
	next      uint64 // the number of the next event expected; 0 until the first
	ackedSent uint64 // the last number acknowledged
	ackDue    bool   // something arrived since (a duplicate too)
	lastGap   time.Time
}

// sendEvent numbers an event, keeps it, and publishes it. It waits while
// too many events are unacknowledged, until ctx ends.
func (c *Conn) sendEvent(ctx context.Context, m *link.Message, peerSession string) error {
	c.outMu.Lock()
	for c.out.pending.len() >= c.out.maxPending {
		if c.out.room == nil {
			c.out.room = make(chan struct{})
		}
		room := c.out.room
		c.outMu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return link.Errorf(link.CodeUnavailable, "%s: %s has not acknowledged %d events: %v", m.Type, c.peer, c.out.maxPending, ctx.Err())
		case <-c.done:
			return link.Errorf(link.CodeSessionLost, "connector to %s is closed", c.peer)
		}
		c.outMu.Lock()
	}
	defer c.outMu.Unlock()
	seq := c.out.next
	ev := outEvent{typ: m.Type, data: m.Data, origin: m.Origin}
	// Published under the lock, so that events go out in their order. If
	// the connection is failing the event is kept all the same: it goes
	// out again when the connection is back.
	if err := c.publishEvent(ctx, seq, ev, peerSession); err != nil && !transient(err) {
		return err
	}
	c.out.next++
	if c.out.pending.len() == 0 {
		c.out.sentAt = time.Now()
	}
	c.out.pending.push(ev)
	return nil
}

// transient reports whether a publish failed only for want of a
// connection, so that sending the message again later may succeed.
func transient(err error) bool {
	var le *link.Error
	return errors.As(err, &le) && (le.Code == link.CodeUnavailable || le.Code == link.CodeNotConnected)
}

// publishEvent publishes event seq. c.outMu must be held.
func (c *Conn) publishEvent(ctx context.Context, seq uint64, ev outEvent, peerSession string) error {
	n := c.n
	o := &c.out
	if o.subjectsFor != peerSession || o.subjects == nil {
		o.subjects, o.subjectsFor = make(map[string]string), peerSession
	}
	subject, ok := o.subjects[ev.typ]
	if !ok {
		subject = eventSubject(n.opts.prefix, n.self, c.peer, ev.typ, c.mine, peerSession)
		o.subjects[ev.typ] = subject
	}
	// nats.go copies the payload before Publish returns: the buffer
	// serves the next event too.
	o.buf = append(appendEventHead(o.buf[:0], eventHead{seq: seq, floor: o.acked + 1, origin: ev.origin}), ev.data...)
	err := n.publishParts(ctx, subject, "", nil, o.buf, ev.typ)
	if cap(o.buf) > 64<<10 {
		o.buf = nil // do not keep a large event's buffer for good
	}
	return err
}

// resendEvents sends the unacknowledged events again: every one, or, with
// probe, the first probeWindow. c.outMu must be held.
func (c *Conn) resendEvents(now time.Time, probe bool) {
	peerSession := c.peerSession()
	n := c.out.pending.len()
	c.out.probedTo = 0
	if probe && n > probeWindow {
		n = probeWindow
		c.out.probedTo = c.out.acked + uint64(n)
	}
	for i := range n {
		ev := c.out.pending.at(i)
		if err := c.publishEvent(c.n.ctx, c.out.acked+1+uint64(i), ev, peerSession); err != nil {
			break // not connected: the next tick or the reconnect tries again
		}
	}
	c.out.sentAt = now
}

// acked takes the peer's acknowledgement of every event up to upTo, and,
// with gap, its word that the next one is missing.
func (c *Conn) acked(upTo uint64, gap bool) {
	now := time.Now()
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if upTo >= c.out.next {
		return // acknowledges what was never sent: not from our peer
	}
	if upTo > c.out.acked {
		done := upTo - c.out.acked
		c.out.pending.drop(int(done))
		c.out.acked = upTo
		c.out.sentAt, c.out.rto = now, resendFirst
		if c.out.room != nil {
			close(c.out.room)
			c.out.room = nil
		}
		if c.out.probedTo != 0 && upTo >= c.out.probedTo && !gap {
			c.resendEvents(now, true) // the peer is there: the next window
		}
	}
	if gap && c.out.pending.len() > 0 && now.Sub(c.out.lastGap) >= gapResend {
		c.out.lastGap = now
		c.resendEvents(now, false)
	}
}

// inboundEvent takes event seq of the peer's stream (or, with all, of its
// broadcast stream), delivering it if it is the next one. The routing
// goroutine calls it, one event at a time; for the broadcast stream, the
// routing goroutines of two subscriptions (the broadcast subject's, and
// the link's, which carries what is sent again to this receiver alone).
func (c *Conn) inboundEvent(m *link.Message, seq, floor uint64, all bool) {
	in := &c.in
	if all {
		in = &c.inAll
	}
	c.inMu.Lock()
	if in.next < floor {
		// First contact: the stream starts at the sender's floor. Or, of
		// a broadcast stream, the sender let go of broadcasts this
		// receiver never had: it was not owed them (it linked while
		// another receiver lagged, and took the floor of then).
		in.next = floor
		in.ackedSent = max(in.ackedSent, floor-1)
	}
	switch {
	case seq < in.next: // a copy: acknowledge again, so the sender lets go
		in.ackDue = true
		c.inMu.Unlock()
		return
	case seq > in.next: // one or more lost in transit: ask for them again
		now := time.Now()
		sendGap := now.Sub(in.lastGap) >= gapResend
		if sendGap {
			in.lastGap = now
		}
		upTo := in.next - 1
		c.inMu.Unlock()
		if sendGap {
			c.sendAck(upTo, true, all)
		}
		return
	}
	in.next++
	in.ackDue = true
	ackNow := seq-in.ackedSent >= ackEvery
	if ackNow {
		in.ackedSent, in.ackDue = seq, false
	}
	if all {
		// Handed over under the lock: the other subscription's goroutine
		// must not hand over the next broadcast before this one.
		c.enqueue(m)
		c.inMu.Unlock()
	} else {
		c.inMu.Unlock()
		c.enqueue(m)
	}
	if ackNow {
		c.sendAck(seq, false, all)
	}
}

// sendAck tells the peer that its events up to upTo have arrived: of its
// stream to us, or, with all, of its broadcast stream.
func (c *Conn) sendAck(upTo uint64, gap, all bool) {
	peerSession := c.peerSession()
	if peerSession == "" || c.n.gated() {
		return // a plain client has no stream; a gated Node says nothing
	}
	_ = c.n.nc.Publish(ackSubject(c.n.opts.prefix, c.n.self, c.peer, c.mine, peerSession, upTo, gap, all), nil)
}

// flushAck acknowledges what has arrived since the last acknowledgement.
func (c *Conn) flushAck() {
	for _, all := range []bool{false, true} {
		in := &c.in
		if all {
			in = &c.inAll
		}
		c.inMu.Lock()
		if !in.ackDue || in.next == 0 {
			c.inMu.Unlock()
			continue
		}
		upTo := in.next - 1
		in.ackedSent, in.ackDue = upTo, false
		c.inMu.Unlock()
		c.sendAck(upTo, false, all)
	}
}

// tick does what is due: acknowledgements, events and requests to send
// again, remembered requests to forget.
func (c *Conn) tick(now time.Time) {
	c.flushAck()

	c.outMu.Lock()
	if c.out.pending.len() > 0 && now.Sub(c.out.sentAt) >= c.out.rto {
		c.resendEvents(now, true)
		c.out.rto = min(2*c.out.rto, resendMax)
	}
	c.outMu.Unlock()

	c.tickRequests(now)
}

// resendAll sends every unacknowledged event and unanswered request again,
// when the connection comes back.
func (c *Conn) resendAll() {
	now := time.Now()
	c.outMu.Lock()
	if c.out.pending.len() > 0 {
		c.resendEvents(now, false)
	}
	c.outMu.Unlock()
	c.resendRequests(now)
}

// Flush waits until the peer has acknowledged every event sent, or ctx
// ends, or the connector closes.
func (c *Conn) Flush(ctx context.Context) error {
	for {
		c.outMu.Lock()
		if c.out.pending.len() == 0 {
			c.outMu.Unlock()
			return nil
		}
		if c.out.room == nil {
			c.out.room = make(chan struct{})
		}
		progress := c.out.room // closed by the next acknowledgement
		left := c.out.pending.len()
		c.outMu.Unlock()
		select {
		case <-progress:
		case <-c.done:
			return link.Errorf(link.CodeSessionLost, "connector to %s closed with %d events unacknowledged", c.peer, left)
		case <-ctx.Done():
			return link.Errorf(link.CodeTimeout, "%s has not acknowledged %d events: %v", c.peer, left, ctx.Err())
		}
	}
}

// unacked reports how many events await the peer's acknowledgement.
func (c *Conn) unacked() int {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.out.pending.len()
}

// Adopt takes over the events old sent and its peer never acknowledged,
// and sends them on c, in their order, after those c has sent. An endpoint
// calls it when a new session with the same peer replaces old's (the peer
// restarted), so that what was sent to the process that went away reaches
// the one that came back. Requests are not adopted: those pending on old
// end with link.ErrSessionLost when its link closes.
func (c *Conn) Adopt(ctx context.Context, old *Conn) error {
	old.outMu.Lock()
	events := old.out.pending
	old.out.pending = ring[outEvent]{}
	old.outMu.Unlock()
	peerSession := c.peerSession()
	for i := range events.len() {
		ev := events.at(i)
		if err := c.sendEvent(ctx, &link.Message{Kind: link.KindEvent, Type: ev.typ, Data: ev.data, Origin: ev.origin}, peerSession); err != nil {
			return err
		}
	}
	return nil
}

// ring is a queue that grows as needed: pushing at the back and dropping
// from the front move nothing, and it gives its memory back when empty.
type ring[T any] struct {
	buf  []T // len(buf) is 0 or a power of two
	head int
	n    int
}

func (r *ring[T]) len() int { return r.n }

// at returns the i'th element from the front.
func (r *ring[T]) at(i int) T { return r.buf[(r.head+i)&(len(r.buf)-1)] }

// set replaces the i'th element from the front.
func (r *ring[T]) set(i int, v T) { r.buf[(r.head+i)&(len(r.buf)-1)] = v }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		grown := make([]T, max(16, 2*len(r.buf)))
		for i := range r.n {
			grown[i] = r.at(i)
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

// drop removes the k front elements.
func (r *ring[T]) drop(k int) {
	var zero T
	for range k {
		r.buf[r.head] = zero
		r.head = (r.head + 1) & (len(r.buf) - 1)
	}
	r.n -= k
	if r.n == 0 && len(r.buf) > 1024 {
		*r = ring[T]{} // give a backlog's memory back
	}
}
