package delivery

import "time"

// Served is a responder's memory of the requests it has taken from its
// peer's requesters, so that a copy of a request never runs its handler
// again: a copy of one being handled is ignored, a copy of one answered
// is answered again with the response kept. It forgets a request once
// the requester says it has the response (its low mark has passed it),
// and, for a requester that went quiet, ServedOverdue after the
// request's deadline.
//
// Served is not safe for concurrent use.
type Served[R any] struct {
	from      map[Requester]*takenFrom[R]
	lastSweep time.Time
}

// Requester names one requesting connector of one run of the peer: the
// session and connector in its reply subjects.
type Requester struct {
	Session string
	Conn    uint64
}

// takenFrom is what a responder remembers of one requester's requests.
type takenFrom[R any] struct {
	low   uint64 // the requester has the response of every request below this
	byID  map[uint64]*taken[R]
	order ring[uint64] // the ids in the order taken
}

type taken[R any] struct {
	resp     R
	answered bool
	deadline time.Time // forgotten after this, if the requester never says
}

// Verdict is what to do with a request Take was given.
type Verdict uint8

const (
	// Handle: a request not seen before; run its handler, then call
	// Answered with the response.
	Handle Verdict = iota + 1
	// Ignore: a copy of a request whose handler is running, or whose
	// response the requester has.
	Ignore
	// Answer: a copy of a request answered before; send the response
	// Take returned again.
	Answer
)

// NewServed returns an empty memory.
func NewServed[R any]() *Served[R] { return &Served[R]{from: map[Requester]*takenFrom[R]{}} }

// Take records request id of requester from, whose low mark is low and
// whose handler has until deadline, before it is handled, and says what
// to do with it. It forgets the requests below the low mark.
func (s *Served[R]) Take(from Requester, id, low uint64, deadline time.Time) (Verdict, R) {
	var zero R
	t := s.from[from]
	if t == nil {
		t = &takenFrom[R]{byID: map[uint64]*taken[R]{}}
		s.from[from] = t
	}
	if low > t.low {
		t.low = low
		for t.order.len() > 0 && t.order.at(0) < t.low {
			delete(t.byID, t.order.at(0))
			t.order.drop(1)
		}
	}
	if id < t.low {
		// A copy of a request whose response the requester has: it was on
		// its way before the requester said so.
		return Ignore, zero
	}
	k := t.byID[id]
	if k == nil {
		// Kept a little past the deadline: the requester stops sending
		// copies then, but one may still be on its way.
		t.byID[id] = &taken[R]{deadline: deadline.Add(ServedOverdue)}
		t.order.push(id)
		return Handle, zero
	}
	if k.answered {
		return Answer, k.resp
	}
	return Ignore, zero
}

// Answered keeps the response to request id of from, for its copies.
func (s *Served[R]) Answered(from Requester, id uint64, resp R) {
	if t := s.from[from]; t != nil {
		if k := t.byID[id]; k != nil {
			k.resp, k.answered = resp, true
		}
	}
}

// Sweep forgets, at most once per ServedSweep, the requests past their
// deadline and ServedOverdue. The caller calls it on its tick.
func (s *Served[R]) Sweep(now time.Time) {
	if now.Sub(s.lastSweep) < ServedSweep {
		return
	}
	s.lastSweep = now
	for key, t := range s.from {
		for id, k := range t.byID {
			if now.After(k.deadline) {
				delete(t.byID, id)
			}
		}
		if len(t.byID) == 0 {
			delete(s.from, key)
		}
	}
}

// Len returns how many requests are remembered.
func (s *Served[R]) Len() int {
	n := 0
	for _, t := range s.from {
		n += len(t.byID)
	}
	return n
}
