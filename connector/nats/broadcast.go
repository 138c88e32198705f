package nats

import (
	"context"
	"fmt"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Broadcasts. A broadcast is one publish that NATS fans out to every
// endpoint of a type, and a receiver cut off from the broker at that moment
// would miss it. So a Node numbers its broadcasts to each type in a stream
// of their own, as a connector numbers a link's events (stream.go), and
// keeps each until every receiver has acknowledged it. The receivers are
// the fabric peers of that type the Node has links to when it broadcasts:
// a peer that links later is owed only what is broadcast after. A receiver
// delivers in order and drops copies; it acknowledges on its link, and
// reports a gap, on which the Node sends what that receiver lacks again,
// to it alone, on its link (marked as of the broadcast stream). What stays
// unacknowledged too long, and everything unacknowledged when the
// connection comes back, is sent again too: to the receivers that lack it,
// or, when most do, published once more to all. A broadcast costs one
// NATS message per receiver when nothing is lost.
//
// A receiver that joins while another is still owed earlier broadcasts
// starts at the oldest one kept (the floor each broadcast carries), so it
// may also get some broadcast before it linked. A receiver is counted as
// lacking a broadcast on the timer only once it has had resendFirst to
// acknowledge it: the others are not sent again what their
// acknowledgements are on the way for.

// broadcastStream is a Node's numbered stream of broadcasts to one type.
type broadcastStream struct {
	to       link.Address // <type>/_all
	next     uint64       // the number of the next broadcast; the first is 1
	pending  ring[kept]
	receiver map[*Conn]*receiver // every receiver
	sentAt   time.Time           // when pending was last sent or acknowledged
	rto      time.Duration
	subjects map[string]string // by message type
	buf      []byte
}

// receiver is what a broadcastStream knows of one receiver.
type receiver struct {
	acked   uint64    // it has every broadcast up to this one
	lastGap time.Time // when what it lacks was last sent on its word
}

// kept is a broadcast kept until every receiver has it.
type kept struct {
	ev   outEvent
	at   time.Time // when it was first sent
	owed int       // receivers that have not acknowledged it
}

// floor is the number of the oldest broadcast kept.
func (bs *broadcastStream) floor() uint64 { return bs.next - uint64(bs.pending.len()) }

// Broadcast publishes an event once to every endpoint of type to that
// subscribes to broadcasts: NATS fans it out. It keeps the event until the
// fabric peers of that type linked to this Node have acknowledged it (see
// above). The caller has checked the message against the catalog.
func (n *Node) Broadcast(ctx context.Context, to link.Address, m *link.Message) error {
	if m.Kind != link.KindEvent {
		return link.Errorf(link.CodeInvalidMessage, "%s: only events can be broadcast", m.Type)
	}
	if to.ID != BroadcastID {
		return fmt.Errorf("nats: %s is not a broadcast address", to)
	}
	receivers := n.receiversOf(to.Type)
	n.bmu.Lock()
	defer n.bmu.Unlock()
	bs := n.bcast[to.Type]
	if bs == nil {
		bs = &broadcastStream{to: to, next: 1, rto: resendFirst, receiver: map[*Conn]*receiver{}, subjects: map[string]string{}}
		n.bcast[to.Type] = bs
	}
	for _, c := range receivers {
		if _, ok := bs.receiver[c]; !ok && !c.isDone() {
			// Owed what is broadcast from now on. A connector closed since
			// receiversOf has been forgotten already (its Close forgets
			// it after closing done, under n.bmu): it must not come back.
			bs.receiver[c] = &receiver{acked: bs.next - 1}
		}
	}
	if bs.pending.len() >= n.opts.maxUnacked {
		return link.Errorf(link.CodeUnavailable, "%s: %d broadcasts to %s are not yet acknowledged by every receiver", m.Type, bs.pending.len(), to)
	}
	ev := outEvent{typ: m.Type, data: m.Data, origin: m.Origin}
	// Published under the lock, so that broadcasts go out in their order.
	// If the connection is failing the broadcast is kept all the same: it
	// goes out again when the connection is back.
	if err := n.publishBroadcast(ctx, bs, bs.next, ev); err != nil && !transient(err) {
		return err
	}
	now := time.Now()
	if bs.pending.len() == 0 {
		bs.sentAt = now
	}
	bs.next++
	bs.pending.push(kept{ev: ev, at: now, owed: len(bs.receiver)})
	bs.trim()
	return nil
}

// receiversOf returns the open connectors to fabric peers of type t.
func (n *Node) receiversOf(t messages.Endpoint) []*Conn {
	var out []*Conn
	for _, c := range n.conns() {
		if c.peer.Type == t && c.peerSession() != "" {
			out = append(out, c)
		}
	}
	return out
}

// publishBroadcast publishes broadcast seq of bs. n.bmu must be held.
func (n *Node) publishBroadcast(ctx context.Context, bs *broadcastStream, seq uint64, ev outEvent) error {
	subject, ok := bs.subjects[ev.typ]
	if !ok {
		subject = messageSubject(n.opts.prefix, n.self, bs.to, ev.typ, n.session, "")
		bs.subjects[ev.typ] = subject
	}
	bs.buf = append(appendEventHead(bs.buf[:0], eventHead{seq: seq, floor: bs.floor(), origin: ev.origin}), ev.data...)
	err := n.publishParts(ctx, subject, "", nil, bs.buf, ev.typ)
	if cap(bs.buf) > 64<<10 {
		bs.buf = nil
	}
	return err
}

// resend sends again what each of the receivers lacks: to each alone, or,
// when they are most of the receivers, published once more to all; with
// probe, no more than probeWindow broadcasts (see stream.go). n.bmu must
// be held.
func (n *Node) resend(bs *broadcastStream, lacking []*Conn, now time.Time, probe bool) {
	bs.sentAt = now
	if len(lacking) == 0 {
		return
	}
	if 2*len(lacking) > len(bs.receiver) {
		from := bs.next - 1
		for _, c := range lacking {
			from = min(from, bs.receiver[c].acked)
		}
		start := max(from+1, bs.floor())
		for seq := start; seq < bs.end(start, probe); seq++ {
			if err := n.publishBroadcast(n.ctx, bs, seq, bs.pending.at(int(seq-bs.floor())).ev); err != nil {
				return // not connected: the next tick or the reconnect tries again
			}
		}
		return
	}
	for _, c := range lacking {
		if err := n.sendBroadcastTo(bs, c, bs.receiver[c].acked+1, probe); err != nil {
			return
		}
	}
}

// sendBroadcastTo sends receiver c the broadcasts of bs from from (or the
// oldest kept), on its link; with probe, no more than probeWindow. n.bmu
// must be held.
func (n *Node) sendBroadcastTo(bs *broadcastStream, c *Conn, from uint64, probe bool) error {
	peerSession := c.peerSession()
	floor := bs.floor()
	from = max(from, floor)
	for seq := from; seq < bs.end(from, probe); seq++ {
		ev := bs.pending.at(int(seq - floor)).ev
		subject := eventSubject(n.opts.prefix, n.self, c.peer, ev.typ, c.mine, peerSession)
		bs.buf = append(appendEventHead(bs.buf[:0], eventHead{seq: seq, floor: floor, origin: ev.origin, all: true}), ev.data...)
		if err := n.publishParts(n.ctx, subject, "", nil, bs.buf, ev.typ); err != nil {
			return err
		}
	}
	return nil
}

// end returns the number after the last broadcast to send from from:
// the next one, or, with probe, no more than probeWindow on.
func (bs *broadcastStream) end(from uint64, probe bool) uint64 {
	if probe {
		return min(bs.next, from+probeWindow)
	}
	return bs.next
}

// lacking returns the receivers that have not acknowledged a broadcast
// sent before due. n.bmu must be held.
func (bs *broadcastStream) lacking(due time.Time) []*Conn {
	floor, upTo := bs.floor(), uint64(0)
	for i := bs.pending.len() - 1; i >= 0; i-- {
		if !bs.pending.at(i).at.After(due) {
			upTo = floor + uint64(i)
			break
		}
	}
	var out []*Conn
	for c, r := range bs.receiver {
		if r.acked < upTo {
			out = append(out, c)
		}
	}
	return out
}

// settle counts the broadcasts after from, up to upTo, as no longer owed
// by one receiver. n.bmu must be held.
func (bs *broadcastStream) settle(from, upTo uint64) {
	floor := bs.floor()
	for seq := max(from+1, floor); seq <= upTo; seq++ {
		i := int(seq - floor)
		k := bs.pending.at(i)
		k.owed--
		bs.pending.set(i, k)
	}
}

// trim drops the broadcasts no receiver is owed. n.bmu must be held.
func (bs *broadcastStream) trim() {
	drop := 0
	for drop < bs.pending.len() && bs.pending.at(drop).owed <= 0 {
		drop++
	}
	bs.pending.drop(drop)
}

// broadcastAcked takes receiver c's acknowledgement of every broadcast up
// to upTo and, with gap, its word that the next one is missing.
func (n *Node) broadcastAcked(c *Conn, upTo uint64, gap bool) {
	now := time.Now()
	n.bmu.Lock()
	defer n.bmu.Unlock()
	bs := n.bcast[c.peer.Type]
	if bs == nil {
		return
	}
	r := bs.receiver[c]
	if r == nil || upTo >= bs.next {
		return // not a receiver, or acknowledges what was never sent
	}
	if upTo > r.acked {
		bs.settle(r.acked, upTo)
		r.acked = upTo
		before := bs.pending.len()
		bs.trim()
		if bs.pending.len() < before {
			bs.sentAt, bs.rto = now, resendFirst
		}
	}
	// A receiver that joined while another lagged lacks broadcasts it was
	// not owed (see above): it is sent what it says it lacks, not only
	// what it owes.
	if gap && now.Sub(r.lastGap) >= gapResend {
		r.lastGap = now
		_ = n.sendBroadcastTo(bs, c, upTo+1, false)
	}
}

// forgetReceiver stops waiting for a closed connector's acknowledgements.
func (n *Node) forgetReceiver(c *Conn) {
	n.bmu.Lock()
	defer n.bmu.Unlock()
	if bs := n.bcast[c.peer.Type]; bs != nil {
		if r := bs.receiver[c]; r != nil {
			delete(bs.receiver, c)
			bs.settle(r.acked, bs.next-1)
			bs.trim()
		}
	}
}

// tickBroadcasts publishes again what has waited too long for its
// acknowledgements; with all, everything unacknowledged (the connection is
// back).
func (n *Node) tickBroadcasts(now time.Time, all bool) {
	n.bmu.Lock()
	defer n.bmu.Unlock()
	for _, bs := range n.bcast {
		if bs.pending.len() > 0 && (all || now.Sub(bs.sentAt) >= bs.rto) {
			due := now.Add(-resendFirst)
			if all {
				due = now
			}
			n.resend(bs, bs.lacking(due), now, !all)
			if !all {
				bs.rto = min(2*bs.rto, resendMax)
			}
		}
	}
}

// FlushBroadcasts waits until every receiver has acknowledged every
// broadcast, or ctx ends, or the Node closes.
func (n *Node) FlushBroadcasts(ctx context.Context) error {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		left := n.broadcastsUnacked()
		if left == 0 {
			return nil
		}
		select {
		case <-t.C:
		case <-n.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("nats: %s: %d broadcasts not acknowledged by every receiver: %w", n.self, left, ctx.Err())
		}
	}
}

// broadcastsUnacked reports how many broadcasts await acknowledgements.
func (n *Node) broadcastsUnacked() int {
	n.bmu.Lock()
	defer n.bmu.Unlock()
	left := 0
	for _, bs := range n.bcast {
		left += bs.pending.len()
	}
	return left
}
