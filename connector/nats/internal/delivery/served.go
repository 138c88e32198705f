package delivery

import "time"

// Served is a responder's memory of the requests it has taken from its
// peer's requesters, so that a copy of a request never runs its handler
// again: a copy of one being handled is ignored, a copy of one answered
// is answered again with the response kept.
//
// It forgets a request once the requester says it has the response (its
// low mark has passed it). A requester that went quiet never says so:
// ServedOverdue after a request's deadline the response is dropped, and
// only the request's id is kept, so that a copy that comes later still
// (held up on a frozen broker node, say) is ignored rather than run
// again. Ids, and each requester's low mark, go when the link does (the
// caller drops the Served with it): the memory follows the requests in
// flight, not the request rate.
//
// What a peer may make it keep is bounded whatever the peer claims: at
// most MaxRequesters requesters, and of each at most RequestWindow
// requests, those from its low mark on; a request beyond is refused
// before anything of it is kept. (A responder also bounds the deadline a
// requester may claim: the caller clips it.)
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
	expired  bool      // its response was dropped: a copy is ignored
	deadline time.Time // the response is dropped after this, if the requester never says
}

// Verdict is what to do with a request Take was given.
type Verdict uint8

const (
	// Handle: a request not seen before; run its handler, then call
	// Answered with the response.
	Handle Verdict = iota + 1
	// Ignore: a copy of a request whose handler is running, or whose
	// response the requester has or no longer waits for.
	Ignore
	// Answer: a copy of a request answered before; send the response
	// Take returned again.
	Answer
	// TooFarAhead: the request is RequestWindow or more past the
	// requester's low mark, which an honest requester never sends
	// (Requests.Send waits): refuse it; nothing of it is kept.
	TooFarAhead
	// OtherRequester: MaxRequesters requesters are remembered already,
	// and this is another: refuse it; nothing of it is kept.
	OtherRequester
)

// NewServed returns an empty memory.
func NewServed[R any]() *Served[R] { return &Served[R]{from: map[Requester]*takenFrom[R]{}} }

// Take records request id of requester from, whose low mark is low and
// whose handler has until deadline, before it is handled, and says what
// to do with it. It forgets the requests below the low mark.
func (s *Served[R]) Take(from Requester, id, low uint64, deadline time.Time) (Verdict, R) {
	var zero R
	t := s.from[from]
	if t == nil && len(s.from) >= MaxRequesters {
		return OtherRequester, zero
	}
	// Checked before anything is kept or the low mark moves: a request
	// that is refused changes nothing.
	if t != nil {
		low = max(low, t.low)
	}
	if id >= low && id-low >= RequestWindow {
		return TooFarAhead, zero
	}
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
	switch {
	case k == nil:
		t.byID[id] = &taken[R]{deadline: deadline.Add(ServedOverdue)}
		t.order.push(id)
		return Handle, zero
	case k.answered && !k.expired:
		return Answer, k.resp
	}
	return Ignore, zero
}

// Answered keeps the response to request id of from, for its copies.
func (s *Served[R]) Answered(from Requester, id uint64, resp R) {
	if t := s.from[from]; t != nil {
		if k := t.byID[id]; k != nil && !k.expired {
			k.resp, k.answered = resp, true
		}
	}
}

// Sweep drops, at most once per ServedSweep, the responses of requests
// past their deadline and ServedOverdue. The caller calls it on its tick.
func (s *Served[R]) Sweep(now time.Time) {
	if now.Sub(s.lastSweep) < ServedSweep {
		return
	}
	s.lastSweep = now
	var zero R
	for _, t := range s.from {
		for _, k := range t.byID {
			if !k.expired && now.After(k.deadline) {
				k.resp, k.expired = zero, true
			}
		}
	}
}

// Len returns how many requests are remembered, and how many of them
// keep a response.
func (s *Served[R]) Len() (requests, responses int) {
	for _, t := range s.from {
		requests += len(t.byID)
		for _, k := range t.byID {
			if k.answered && !k.expired {
				responses++
			}
		}
	}
	return requests, responses
}
