package delivery

import "time"

// Receiver is one link's inbound side: what it knows of its peer's event
// stream to it and of its peer's broadcast stream to its type. It
// decides what to deliver to the link, in which order, and what to
// acknowledge.
//
// A Receiver is not safe for concurrent use: the caller serialises the
// calls (one ordered channel for the link's and the broadcast
// subscription's messages) and hands the deliveries over in the order
// returned.
type Receiver[E any] struct {
	key     string // this end's key, as the peer's fences name it
	link    inStream
	all     inStream
	stopped bool

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
type inStream struct {
	next      uint64 // the number of the next event expected; 0 until the first
	ackedSent uint64 // the last number acknowledged
	ackDue    bool   // something arrived since (a copy too)
	lastGap   time.Time
}

// NewReceiver returns the Receiver of a link whose own key is key.
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
// publish. The slices are the Receiver's, valid until its next call.
func (r *Receiver[E]) Event(h Head, ev E, now time.Time) ([]E, []Ack) {
	r.reset()
	if h.All {
		r.take(&r.all, true, h, ev, now)
	} else {
		r.take(&r.link, false, h, ev, now)
	}
	return r.out, r.acks
}

// Broadcast takes a broadcast published to every receiver. It returns
// what Event returns.
func (r *Receiver[E]) Broadcast(h Head, ev E, now time.Time) ([]E, []Ack) {
	r.reset()
	r.take(&r.all, true, h, ev, now)
	return r.out, r.acks
}

func (r *Receiver[E]) take(in *inStream, all bool, h Head, ev E, now time.Time) {
	if r.stopped {
		return
	}
	if in.next < h.Floor {
		// First contact: the stream starts at the sender's floor. Or, of
		// a broadcast stream, the sender let go of broadcasts this
		// receiver never had: it was not owed them.
		in.next = h.Floor
		in.ackedSent = max(in.ackedSent, h.Floor-1)
	}
	switch {
	case h.Seq < in.next: // a copy: acknowledge again, so the sender lets go
		in.ackDue = true
		return
	case h.Seq > in.next: // one or more lost in transit: ask for them again
		if now.Sub(in.lastGap) >= GapResend {
			in.lastGap = now
			r.acks = append(r.acks, Ack{UpTo: in.next - 1, Gap: true, All: all})
		}
		return
	}
	in.next++
	in.ackDue = true
	r.out = append(r.out, ev)
	if h.Seq-in.ackedSent >= AckEvery {
		in.ackedSent, in.ackDue = h.Seq, false
		r.acks = append(r.acks, Ack{UpTo: h.Seq, All: all})
	}
}

// Tick returns the acknowledgements due: of what has arrived since the
// last.
func (r *Receiver[E]) Tick(now time.Time) []Ack {
	r.reset()
	r.flush()
	return r.acks
}

func (r *Receiver[E]) flush() {
	for _, all := range []bool{false, true} {
		in := &r.link
		if all {
			in = &r.all
		}
		if !in.ackDue || in.next == 0 {
			continue
		}
		in.ackedSent, in.ackDue = in.next-1, false
		r.acks = append(r.acks, Ack{UpTo: in.next - 1, All: all})
	}
}

// Stop ends delivery: it returns the last acknowledgements, of what was
// delivered, and from then on delivers and acknowledges nothing.
func (r *Receiver[E]) Stop() []Ack {
	r.reset()
	if !r.stopped {
		r.flush()
		r.stopped = true
	}
	return r.acks
}
