package delivery

import "time"

// Receiver is one link's inbound side: what it knows of its peer's event
// stream to it and of its peer's broadcast stream to its type. It
// decides what to deliver to the link, in which order, and what to
// acknowledge: it acknowledges only what it has delivered.
//
// A Receiver is not safe for concurrent use: the caller serialises the
// calls (one ordered channel for the messages of the link's subscription
// and of the broadcast subscription) and hands the deliveries to the
// link in the order returned, before its next call.
type Receiver[E any] struct {
	key      string // this end's endpoint id, as the peer's fences name it
	link     inStream[E]
	all      inStream[E]
	anchored bool // it knows where the broadcast stream starts for it
	told     bool // it has acknowledged a broadcast: the sender knows it knows
	stopped  bool

	out  []E
	acks []Ack
}

// Ack is an acknowledgement the caller publishes: of every event up to
// UpTo of the peer's link stream (or, with All, of its broadcast
// stream), and with Gap, the word that the next one is missing.
type Ack struct {
	UpTo uint64
	Gap  bool
	All  bool
}

// inStream is what a receiver knows of one of its peer's streams.
type inStream[E any] struct {
	started   bool
	next      uint64           // the number of the next event to deliver
	held      ring[waiting[E]] // next, next+1...: arrived, and waiting for the first one's turn
	ackedSent uint64           // the last number acknowledged
	ackDue    bool             // something arrived since (a copy too)
	lastGap   time.Time        // when a gap was last reported
	ahead     uint64           // the furthest event that came ahead of its turn, unreported for the rate: the tick reports it
	dropped   bool             // events that came in order were dropped while held was full
}

// waiting is an event held until the other stream has delivered its
// dependency: for a link event, the broadcast it came after; for a
// broadcast, the link event its fence names.
type waiting[E any] struct {
	ev  E
	dep uint64
}

// NewReceiver returns the Receiver of a link whose own endpoint id (as
// the peer's fences name it) is key.
func NewReceiver[E any](key string) *Receiver[E] {
	return &Receiver[E]{key: key}
}

func (r *Receiver[E]) reset() {
	clear(r.out)
	r.out, r.acks = r.out[:0], r.acks[:0]
}

// Event takes an event that came on the link: of the peer's link stream,
// or, with h.All, a broadcast sent again to this receiver alone. It
// returns the events to deliver, in order, and the acknowledgements to
// publish; the slices are the Receiver's, valid until its next call.
func (r *Receiver[E]) Event(h Head, ev E, now time.Time) ([]E, []Ack) {
	r.reset()
	switch {
	case r.stopped:
		r.afterStop(h.All, h.Seq)
	case h.All:
		r.takeBroadcast(h, ev, true, now)
	default:
		r.takeLink(h, ev, now)
	}
	return r.out, r.acks
}

// Broadcast takes a broadcast published to every receiver. It returns
// what Event returns.
func (r *Receiver[E]) Broadcast(h Head, ev E, now time.Time) ([]E, []Ack) {
	r.reset()
	if r.stopped {
		r.afterStop(true, h.Seq)
	} else {
		r.takeBroadcast(h, ev, false, now)
	}
	return r.out, r.acks
}

// afterStop answers a copy of what was delivered with the last
// acknowledgement again, in case the first was lost.
func (r *Receiver[E]) afterStop(all bool, seq uint64) {
	if in := r.stream(all); in.started && seq < in.next {
		r.acks = append(r.acks, Ack{UpTo: in.next - 1, All: all})
	}
}

func (r *Receiver[E]) takeLink(h Head, ev E, now time.Time) {
	r.start(&r.link, h.Floor)
	r.arrive(&r.link, false, h.Seq, h.After, ev, now)
	r.release(now)
}

func (r *Receiver[E]) takeBroadcast(h Head, ev E, onLink bool, now time.Time) {
	if !r.anchored {
		if !onLink {
			// Where its stream starts, only the sender can say: on the
			// link, in the floor of a copy sent to it alone. Until then a
			// published copy is not for it (or not yet).
			return
		}
		r.anchored = true
	}
	var dep uint64
	for _, f := range h.Fence {
		if f.Key == r.key {
			dep = f.Seq
		}
	}
	if !onLink && h.More && dep == 0 {
		return // not listed in an incomplete fence: a copy comes on the link
	}
	r.start(&r.all, h.Floor)
	r.arrive(&r.all, true, h.Seq, dep, ev, now)
	r.release(now)
}

// start takes a stream's floor: on first contact, where it starts; after,
// the sender's word that it let go of what this receiver was never owed.
func (r *Receiver[E]) start(in *inStream[E], floor uint64) {
	if !in.started {
		in.started, in.next, in.ackedSent = true, floor, floor-1
		return
	}
	if floor > in.next {
		in.held.drop(min(in.held.len(), int(floor-in.next)))
		in.next = floor
		in.ackedSent = max(in.ackedSent, floor-1)
	}
}

func (r *Receiver[E]) arrive(in *inStream[E], all bool, seq, dep uint64, ev E, now time.Time) {
	top := in.next + uint64(in.held.len())
	switch {
	case seq < top: // a copy: acknowledge again, so the sender lets go
		in.ackDue = true
	case seq > top: // one or more lost in transit: ask for them again
		r.gap(in, all, now, seq)
	case in.held.len() == 0 && r.ready(all, dep):
		r.deliver(in, all, ev)
	case in.held.len() < MaxHeld:
		in.held.push(waiting[E]{ev: ev, dep: dep})
	default:
		in.dropped = true // sent again once the first is delivered
	}
}

// ready reports whether an event of the stream all (or the link stream)
// whose dependency is dep may be delivered.
func (r *Receiver[E]) ready(all bool, dep uint64) bool {
	switch {
	case dep == 0:
		return true
	case all: // a broadcast, after link event dep
		return r.link.started && r.link.next > dep
	default: // a link event, after broadcast dep
		return r.anchored && r.all.started && r.all.next > dep
	}
}

func (r *Receiver[E]) deliver(in *inStream[E], all bool, ev E) {
	seq := in.next
	in.next++
	in.ackDue = true
	r.out = append(r.out, ev)
	// The first broadcast is acknowledged at once: until it hears, the
	// sender sends every broadcast to this receiver on its link too.
	if seq-in.ackedSent >= AckEvery || (all && !r.told) {
		r.told = r.told || all
		in.ackedSent, in.ackDue = seq, false
		r.acks = append(r.acks, Ack{UpTo: seq, All: all})
	}
}

// gap reports what stream all lacks, at most once per GapResend: what
// comes before event ahead, or, with ahead 0, what the other stream
// waits for.
func (r *Receiver[E]) gap(in *inStream[E], all bool, now time.Time, ahead uint64) {
	if now.Sub(in.lastGap) < GapResend {
		// Reported on the tick if it is still lacking then: what was sent
		// again after the first report may have been lost too.
		in.ahead = max(in.ahead, ahead)
		return
	}
	in.lastGap, in.ahead = now, 0
	var upTo uint64
	if in.started {
		upTo = in.next - 1
	}
	r.acks = append(r.acks, Ack{UpTo: upTo, Gap: true, All: all})
}

// release delivers what the streams hold as their turns come, and asks
// for what holds them up.
func (r *Receiver[E]) release(now time.Time) {
	for progress := true; progress; {
		progress = false
		for _, all := range [2]bool{false, true} {
			in := r.stream(all)
			for in.held.len() > 0 && r.ready(all, in.held.at(0).dep) {
				w := in.held.at(0)
				in.held.drop(1)
				r.deliver(in, all, w.ev)
				progress = true
				if in.held.len() == 0 && in.dropped {
					in.dropped, in.lastGap = false, time.Time{}
					r.gap(in, all, now, 0) // what came while it was full
				}
			}
		}
	}
	for _, all := range [2]bool{false, true} {
		if r.stream(all).held.len() > 0 {
			// Its first waits for the other stream: ask for what that lacks.
			r.gap(r.stream(!all), !all, now, 0)
		}
	}
}

func (r *Receiver[E]) stream(all bool) *inStream[E] {
	if all {
		return &r.all
	}
	return &r.link
}

// Tick returns the acknowledgements due (of what was delivered since the
// last), reports a gap the rate held back, and asks again, every
// ResendFirst, for what a held event waits for. The caller calls it every
// TickEvery.
func (r *Receiver[E]) Tick(now time.Time) []Ack {
	r.reset()
	if r.stopped {
		return nil
	}
	r.flush()
	for _, all := range [2]bool{false, true} {
		if in := r.stream(all); in.ahead != 0 && in.ahead >= in.next+uint64(in.held.len()) {
			r.gap(in, all, now, 0)
		}
		if other := r.stream(!all); r.stream(all).held.len() > 0 && now.Sub(other.lastGap) >= ResendFirst {
			// Still waiting: ask again, now and then (each ask may bring
			// everything unacknowledged again).
			r.gap(other, !all, now, 0)
		}
	}
	return r.acks
}

func (r *Receiver[E]) flush() {
	for _, all := range [2]bool{false, true} {
		in := r.stream(all)
		if !in.ackDue || !in.started {
			continue
		}
		in.ackedSent, in.ackDue = in.next-1, false
		r.acks = append(r.acks, Ack{UpTo: in.next - 1, All: all})
	}
}

// Stop ends delivery: it returns the last acknowledgements, of what was
// delivered, and from then on delivers nothing and acknowledges nothing
// more; what it held is dropped, unacknowledged, for the sender to pass
// on to the link's successor. It answers a copy of what it delivered with
// the last acknowledgement again. The caller stops the Receiver before
// the link stops taking what it delivers.
func (r *Receiver[E]) Stop() []Ack {
	r.reset()
	if r.stopped {
		return nil
	}
	r.stopped = true
	for _, all := range [2]bool{false, true} {
		in := r.stream(all)
		in.held.clear()
		if in.started && in.next > 1 {
			// Even if it was said already: the last word may have been lost.
			in.ackDue = true
		}
	}
	r.flush()
	return r.acks
}
