package delivery

import (
	"slices"
	"time"
)

// Requests is a link's table of requests awaiting their responses. Each
// request gets a wire id, in the order sent, that names it in its reply
// subject; the table sends it again until its response comes (after
// RequestRTO of silence, doubling; at once when the connection comes
// back; with backoff while nothing subscribes to its subject), and ends
// it exactly once: with its response, or failed by the caller (End), or
// with an error.
//
// Requests is not safe for concurrent use.
type Requests[R any] struct {
	byWire          map[uint64]*request[R]
	wires           []uint64 // the ids waiting, in order
	last            uint64   // the last wire id given
	low             uint64   // the oldest wire id still waiting; last+1 if none
	closed          bool
	noRespondersFor time.Duration

	asks  []Ask[R]
	ended []Ended[R]
}

type request[R any] struct {
	req      R
	first    time.Time
	deadline time.Time
	lastSent time.Time
	rto      time.Duration // silence before sending it again
	backoff  time.Duration // between no-responders retries
	retryAt  time.Time     // when to send it again for want of responders; zero if not
	// Copies handed out to publish, and those NATS said nothing
	// subscribed to: while every copy was refused, none can have run.
	copies, refused int
}

// Ask is a request to publish: Req with the reply subject naming Wire,
// the Budget left until its deadline, and the table's Low mark (the
// requester has the response of every request below it).
type Ask[R any] struct {
	Wire   uint64
	Budget time.Duration
	Low    uint64
	Req    R
}

// Ended is a request that ended without its response: Err is
// ErrTimeout, ErrNoResponders (it certainly did not run) or
// ErrSessionLost (it may have).
type Ended[R any] struct {
	Wire uint64
	Req  R
	Err  error
}

// NewRequests returns an empty table that sends a request again for
// noRespondersFor (DefaultNoRespondersFor if 0) while nothing subscribes
// to its subject.
func NewRequests[R any](noRespondersFor time.Duration) *Requests[R] {
	if noRespondersFor <= 0 {
		noRespondersFor = DefaultNoRespondersFor
	}
	return &Requests[R]{byWire: map[uint64]*request[R]{}, low: 1, noRespondersFor: noRespondersFor}
}

// Low returns the oldest wire id still waiting, or the next to be given.
func (t *Requests[R]) Low() uint64 { return t.low }

// Room reports whether Send may give the next wire id: it is less than
// RequestWindow past the oldest request still waiting.
func (t *Requests[R]) Room() bool {
	return len(t.byWire) == 0 || t.last+1-t.low < RequestWindow
}

// Waiting reports whether request wire waits for its response.
func (t *Requests[R]) Waiting(wire uint64) bool {
	_, ok := t.byWire[wire]
	return ok
}

// Len returns how many requests wait.
func (t *Requests[R]) Len() int { return len(t.byWire) }

// Send gives req the next wire id and returns it to publish. It returns
// ErrTimeout if deadline is not after now, ErrClosed once the table is
// closed, and ErrWindow while the next id would be RequestWindow or more
// past the oldest request still waiting (a responder refuses it: it
// remembers no more of one requester).
func (t *Requests[R]) Send(req R, deadline, now time.Time) (Ask[R], error) {
	if t.closed {
		return Ask[R]{}, ErrClosed
	}
	if !deadline.After(now) {
		return Ask[R]{}, ErrTimeout
	}
	if !t.Room() {
		return Ask[R]{}, ErrWindow
	}
	t.last++
	if len(t.byWire) == 0 {
		t.low = t.last
	}
	t.byWire[t.last] = &request[R]{req: req, first: now, deadline: deadline, lastSent: now, rto: RequestRTO, backoff: NoRespondersFirst}
	t.wires = append(t.wires, t.last)
	a, _ := t.ask(t.last, now)
	return a, nil
}

// ask is request wire to publish, with what is left of its budget; false
// once its deadline has passed.
func (t *Requests[R]) ask(wire uint64, now time.Time) (Ask[R], bool) {
	r := t.byWire[wire]
	left := r.deadline.Sub(now)
	if left <= 0 {
		return Ask[R]{}, false
	}
	r.copies++
	return Ask[R]{Wire: wire, Budget: max(left, time.Millisecond), Low: t.low, Req: r.req}, true
}

// done forgets request wire, and moves the low mark past what is done.
func (t *Requests[R]) done(wire uint64) (*request[R], bool) {
	r := t.byWire[wire]
	if r == nil {
		return nil, false
	}
	delete(t.byWire, wire)
	if i, ok := slices.BinarySearch(t.wires, wire); ok {
		t.wires = slices.Delete(t.wires, i, i+1)
	}
	if len(t.byWire) == 0 {
		t.low = t.last + 1
	} else {
		t.low = t.wires[0]
	}
	return r, true
}

// End ends request wire: its response came, or the caller fails it
// (a publish the broker refused for good). It returns the request, and
// false if it had ended already (a copy of the response, or one that
// came too late).
func (t *Requests[R]) End(wire uint64) (R, bool) {
	r, ok := t.done(wire)
	if !ok {
		var zero R
		return zero, false
	}
	return r.req, true
}

// NoResponders takes NATS's word that nothing subscribed to request
// wire's subject when a copy of it was sent. For a while after the
// request was first sent it is sent again, with backoff (the peer may be
// resubscribing after a failover), by Tick; then it ends, and
// NoResponders returns it: with ErrNoResponders if NATS refused every
// copy (the request certainly did not run), or with ErrSessionLost if a
// copy may have reached the peer before it went (it may have run). NATS
// answers a connection's copies in the order sent, so when it refuses the
// last, it has refused every earlier one it is going to.
func (t *Requests[R]) NoResponders(wire uint64, now time.Time) (Ended[R], bool) {
	r := t.byWire[wire]
	if r == nil {
		return Ended[R]{}, false
	}
	r.refused++
	if now.Sub(r.first) < t.noRespondersFor && now.Add(r.backoff).Before(r.deadline) {
		r.retryAt = now.Add(r.backoff)
		r.backoff = min(2*r.backoff, NoRespondersMax)
		return Ended[R]{}, false
	}
	t.done(wire)
	err := ErrNoResponders
	if r.refused < r.copies {
		err = ErrSessionLost
	}
	return Ended[R]{Wire: wire, Req: r.req, Err: err}, true
}

// NextRetry returns when the earliest no-responders retry is due, so
// that the caller may call Tick then rather than on its next tick.
func (t *Requests[R]) NextRetry() (time.Time, bool) {
	var at time.Time
	for _, w := range t.wires {
		if r := t.byWire[w]; !r.retryAt.IsZero() && (at.IsZero() || r.retryAt.Before(at)) {
			at = r.retryAt
		}
	}
	return at, !at.IsZero()
}

// Tick returns the requests to send again (silent too long, or due a
// no-responders retry) and those that ended because their deadline
// passed. The slices are the table's, valid until its next call.
func (t *Requests[R]) Tick(now time.Time) ([]Ask[R], []Ended[R]) {
	t.asks, t.ended = t.asks[:0], t.ended[:0]
	var overdue []uint64
	for _, w := range t.wires {
		r := t.byWire[w]
		switch {
		case now.After(r.deadline):
			overdue = append(overdue, w)
		case !r.retryAt.IsZero() && !now.Before(r.retryAt):
			r.retryAt, r.lastSent = time.Time{}, now
			if a, ok := t.ask(w, now); ok {
				t.asks = append(t.asks, a)
			}
		case now.Sub(r.lastSent) >= r.rto:
			r.lastSent, r.rto = now, 2*r.rto
			if a, ok := t.ask(w, now); ok {
				t.asks = append(t.asks, a)
			}
		}
	}
	for _, w := range overdue {
		r, _ := t.done(w)
		t.ended = append(t.ended, Ended[R]{Wire: w, Req: r.req, Err: ErrTimeout})
	}
	return t.asks, t.ended
}

// Resumed returns every request waiting, to send again when the
// connection comes back.
func (t *Requests[R]) Resumed(now time.Time) []Ask[R] {
	t.asks = t.asks[:0]
	for _, w := range t.wires {
		t.byWire[w].lastSent = now
		if a, ok := t.ask(w, now); ok {
			t.asks = append(t.asks, a)
		}
	}
	return t.asks
}

// Close ends every request waiting with ErrSessionLost, and refuses new
// ones.
func (t *Requests[R]) Close() []Ended[R] {
	t.ended = t.ended[:0]
	t.closed = true
	for _, w := range slices.Clone(t.wires) {
		r, _ := t.done(w)
		t.ended = append(t.ended, Ended[R]{Wire: w, Req: r.req, Err: ErrSessionLost})
	}
	return t.ended
}
