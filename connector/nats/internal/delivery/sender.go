package delivery

import (
	"slices"
	"time"
)

// Sender is one endpoint's outbound side: a numbered stream of events on
// each of its links, and a numbered broadcast stream to each endpoint
// type. It decides what to publish, and when to publish it again; it
// publishes nothing itself.
//
// A Sender is not safe for concurrent use: the caller holds one lock
// across a call and the publishing of what it returned, so that
// messages go out in the order they were numbered.
type Sender[E any] struct {
	maxUnacked int
	links      []*OutLink[E]   // open links, in the order opened
	streams    []*broadcast[E] // one per receiver type, in the order made
	out        []Publish[E]    // what the last call returned
	scratch    []*OutLink[E]
}

// Publish is a message the caller publishes: an event on a link (Link
// set, Head.All false), a broadcast sent again to one receiver on its
// link (Link set, Head.All true), or a broadcast published once to every
// endpoint of type Type (Link nil). The payload is AppendHead(Head)
// followed by the event's.
type Publish[E any] struct {
	Link  *OutLink[E]
	Type  string
	Head  Head
	Event E
}

// OutLink is a Sender's link to one peer: its numbered event stream,
// and, once the peer's key is known, its place among the receivers of
// its type's broadcasts.
type OutLink[E any] struct {
	s      *Sender[E]
	typ    string
	key    string
	closed bool
	parked bool

	next     uint64 // the number of the next event; the first is 1
	acked    uint64 // every event up to this one is acknowledged
	pending  ring[kept[E]]
	sentAt   time.Time // when pending was last sent or acknowledged
	rto      time.Duration
	lastGap  time.Time
	probedTo uint64 // the last event of the resend timer's window, until acknowledged

	// As a receiver of its type's broadcast stream.
	receiver bool
	backed   uint64 // it has every broadcast up to this one
	bGap     time.Time
}

// kept is an event sent and not yet acknowledged.
type kept[E any] struct {
	ev E
}

// broadcast is a Sender's numbered stream of broadcasts to one type.
type broadcast[E any] struct {
	typ     string
	next    uint64
	pending ring[bkept[E]]
	sentAt  time.Time
	rto     time.Duration
}

// bkept is a broadcast kept until every receiver has it.
type bkept[E any] struct {
	ev   E
	at   time.Time // when it was first sent
	owed int       // receivers that have not acknowledged it
}

// NewSender returns a Sender whose streams hold at most maxUnacked
// unacknowledged events each (DefaultMaxUnacked if 0).
func NewSender[E any](maxUnacked int) *Sender[E] {
	if maxUnacked <= 0 {
		maxUnacked = DefaultMaxUnacked
	}
	return &Sender[E]{maxUnacked: maxUnacked}
}

// Open starts the stream of a new link to a peer of type typ whose key
// (its session, as fences name it) is key, or "" until known (Bind).
func (s *Sender[E]) Open(typ, key string, now time.Time) *OutLink[E] {
	l := &OutLink[E]{s: s, typ: typ, key: key, next: 1, rto: ResendFirst}
	s.links = append(s.links, l)
	return l
}

// Bind names the peer's key, once known. It does nothing if the link
// has one.
func (s *Sender[E]) Bind(l *OutLink[E], key string) {
	if l.key == "" {
		l.key = key
	}
}

// Key returns the peer's key, or "".
func (l *OutLink[E]) Key() string { return l.key }

// Type returns the peer's endpoint type.
func (l *OutLink[E]) Type() string { return l.typ }

// Unacked returns how many events the peer has not acknowledged.
func (l *OutLink[E]) Unacked() int { return l.pending.len() }

// AckedUpTo returns the number of the last event the peer has
// acknowledged, with every one before it.
func (l *OutLink[E]) AckedUpTo() uint64 { return l.acked }

// BroadcastsAckedUpTo returns the number of the last broadcast the peer
// has acknowledged as a receiver, with every one before it.
func (l *OutLink[E]) BroadcastsAckedUpTo() uint64 { return l.backed }

// Room reports whether Send would take another event.
func (l *OutLink[E]) Room() bool { return !l.closed && l.pending.len() < l.s.maxUnacked }

// Closed reports whether the link has been closed or handed over.
func (l *OutLink[E]) Closed() bool { return l.closed }

func (s *Sender[E]) reset() []Publish[E] {
	clear(s.out)
	s.out = s.out[:0]
	return s.out
}

// Send numbers ev, keeps it until the peer acknowledges it, and returns
// it to publish. It returns ErrFull while the peer has not acknowledged
// the most events the link holds, and ErrClosed on a closed link.
func (s *Sender[E]) Send(l *OutLink[E], ev E, now time.Time) ([]Publish[E], error) {
	s.reset()
	if l.closed || l.parked {
		return nil, ErrClosed
	}
	if l.pending.len() >= s.maxUnacked {
		return nil, ErrFull
	}
	seq := l.next
	l.next++
	if l.pending.len() == 0 {
		l.sentAt = now
	}
	l.pending.push(kept[E]{ev: ev})
	s.publishEvent(l, seq)
	return s.out, nil
}

func (s *Sender[E]) publishEvent(l *OutLink[E], seq uint64) {
	k := l.pending.at(int(seq - l.acked - 1))
	s.out = append(s.out, Publish[E]{Link: l, Type: l.typ, Head: Head{Seq: seq, Floor: l.acked + 1}, Event: k.ev})
}

// resend sends the unacknowledged events again: every one, or, with
// probe, the first ProbeWindow.
func (s *Sender[E]) resend(l *OutLink[E], now time.Time, probe bool) {
	n := l.pending.len()
	l.probedTo = 0
	if probe && n > ProbeWindow {
		n = ProbeWindow
		l.probedTo = l.acked + uint64(n)
	}
	for i := range n {
		s.publishEvent(l, l.acked+1+uint64(i))
	}
	l.sentAt = now
}

// Acked takes the peer's acknowledgement of every event up to upTo on
// l, and, with gap, its word that the next one is missing. It returns
// what to send again. After it, Room may have changed.
func (s *Sender[E]) Acked(l *OutLink[E], upTo uint64, gap bool, now time.Time) []Publish[E] {
	s.reset()
	if l.closed || l.parked || upTo >= l.next {
		return nil // acknowledges what was never sent: not from our peer
	}
	if upTo > l.acked {
		l.pending.drop(int(upTo - l.acked))
		l.acked = upTo
		l.sentAt, l.rto = now, ResendFirst
		if l.probedTo != 0 && upTo >= l.probedTo && !gap {
			s.resend(l, now, true) // the peer is there: the next window
		}
	}
	if gap && l.pending.len() > 0 && now.Sub(l.lastGap) >= GapResend {
		l.lastGap = now
		s.resend(l, now, false)
	}
	return s.out
}

// Park stops l: the peer has closed its side or gone away. Nothing is
// sent on it again, Send refuses, and its unacknowledged events wait for
// Adopt (the peer's next session takes them) or Close.
func (s *Sender[E]) Park(l *OutLink[E]) {
	if l.closed || l.parked {
		return
	}
	l.parked = true
	if l.receiver {
		if bs := s.stream(l.typ); bs != nil {
			bs.settle(l.backed, bs.next-1)
			bs.trim()
		}
		l.receiver = false
	}
}

// Close closes l: its unacknowledged events are given up, and it is no
// longer a receiver of broadcasts. It returns how many events it gave
// up.
func (s *Sender[E]) Close(l *OutLink[E]) int {
	if l.closed {
		return 0
	}
	l.closed = true
	n := l.pending.len()
	l.pending.clear()
	s.links = slices.DeleteFunc(s.links, func(x *OutLink[E]) bool { return x == l })
	if l.receiver {
		if bs := s.stream(l.typ); bs != nil {
			bs.settle(l.backed, bs.next-1)
			bs.trim()
		}
		l.receiver = false
	}
	return n
}

// Adopt hands the events old sent and its peer never acknowledged over
// to l, which replaces it (the peer restarted within the session): they
// are sent on l, in their order, after those l has sent. old is closed.
func (s *Sender[E]) Adopt(l, old *OutLink[E], now time.Time) []Publish[E] {
	s.reset()
	if l.closed || old.closed || l == old {
		return nil
	}
	evs := old.pending
	old.pending = ring[kept[E]]{}
	s.Close(old)
	for i := range evs.len() {
		seq := l.next
		l.next++
		if l.pending.len() == 0 {
			l.sentAt = now
		}
		l.pending.push(evs.at(i))
		s.publishEvent(l, seq)
	}
	return s.out
}

// stream returns the broadcast stream to typ, or nil.
func (s *Sender[E]) stream(typ string) *broadcast[E] {
	for _, bs := range s.streams {
		if bs.typ == typ {
			return bs
		}
	}
	return nil
}

// floor is the number of the oldest broadcast kept.
func (bs *broadcast[E]) floor() uint64 { return bs.next - uint64(bs.pending.len()) }

// receivers returns the open links that receive bs.
func (s *Sender[E]) receivers(bs *broadcast[E]) []*OutLink[E] {
	s.scratch = s.scratch[:0]
	for _, l := range s.links {
		if l.receiver && l.typ == bs.typ {
			s.scratch = append(s.scratch, l)
		}
	}
	return s.scratch
}

// Broadcast numbers ev in the broadcast stream to typ, keeps it until
// every receiver has acknowledged it, and returns it to publish. The
// receivers are the links to peers of that type whose key is known: a
// peer that links later is owed only what is broadcast after. It
// returns ErrFull while the most broadcasts the stream holds are not yet
// acknowledged by every receiver.
func (s *Sender[E]) Broadcast(typ string, ev E, now time.Time) ([]Publish[E], error) {
	s.reset()
	bs := s.stream(typ)
	if bs == nil {
		bs = &broadcast[E]{typ: typ, next: 1, rto: ResendFirst}
		s.streams = append(s.streams, bs)
	}
	for _, l := range s.links {
		if l.typ == typ && l.key != "" && !l.receiver && !l.parked {
			l.receiver, l.backed = true, bs.next-1 // owed what is broadcast from now on
		}
	}
	if bs.pending.len() >= s.maxUnacked {
		return nil, ErrFull
	}
	seq := bs.next
	s.out = append(s.out, Publish[E]{Type: typ, Head: Head{Seq: seq, Floor: bs.floor()}, Event: ev})
	if bs.pending.len() == 0 {
		bs.sentAt = now
	}
	bs.next++
	bs.pending.push(bkept[E]{ev: ev, at: now, owed: len(s.receivers(bs))})
	bs.trim()
	return s.out, nil
}

// Broadcasts returns how many broadcasts, over every type, some receiver
// has not acknowledged.
func (s *Sender[E]) Broadcasts() int {
	n := 0
	for _, bs := range s.streams {
		n += bs.pending.len()
	}
	return n
}

func (s *Sender[E]) publishBroadcast(bs *broadcast[E], seq uint64) {
	k := bs.pending.at(int(seq - bs.floor()))
	s.out = append(s.out, Publish[E]{Type: bs.typ, Head: Head{Seq: seq, Floor: bs.floor()}, Event: k.ev})
}

// resendBroadcasts sends again what each of the lacking receivers lacks:
// to each alone, or, when they are most of the receivers, published
// once more to all; with probe, no more than ProbeWindow broadcasts.
func (s *Sender[E]) resendBroadcasts(bs *broadcast[E], lacking []*OutLink[E], now time.Time, probe bool) {
	bs.sentAt = now
	if len(lacking) == 0 {
		return
	}
	if 2*len(lacking) > len(s.receivers(bs)) {
		from := bs.next - 1
		for _, l := range lacking {
			from = min(from, l.backed)
		}
		start := max(from+1, bs.floor())
		for seq := start; seq < bs.end(start, probe); seq++ {
			s.publishBroadcast(bs, seq)
		}
		return
	}
	for _, l := range lacking {
		s.sendBroadcastTo(bs, l, l.backed+1, probe)
	}
}

// sendBroadcastTo sends receiver l the broadcasts of bs from from (or
// the oldest kept), on its link; with probe, no more than ProbeWindow.
func (s *Sender[E]) sendBroadcastTo(bs *broadcast[E], l *OutLink[E], from uint64, probe bool) {
	floor := bs.floor()
	from = max(from, floor)
	for seq := from; seq < bs.end(from, probe); seq++ {
		k := bs.pending.at(int(seq - floor))
		s.out = append(s.out, Publish[E]{Link: l, Type: bs.typ, Head: Head{Seq: seq, Floor: floor, All: true}, Event: k.ev})
	}
}

// end returns the number after the last broadcast to send from from:
// the next one, or, with probe, no more than ProbeWindow on.
func (bs *broadcast[E]) end(from uint64, probe bool) uint64 {
	if probe {
		return min(bs.next, from+ProbeWindow)
	}
	return bs.next
}

// lacking returns the receivers that have not acknowledged a broadcast
// sent before due.
func (s *Sender[E]) lacking(bs *broadcast[E], due time.Time) []*OutLink[E] {
	floor, upTo := bs.floor(), uint64(0)
	for i := bs.pending.len() - 1; i >= 0; i-- {
		if !bs.pending.at(i).at.After(due) {
			upTo = floor + uint64(i)
			break
		}
	}
	var out []*OutLink[E]
	for _, l := range s.receivers(bs) {
		if l.backed < upTo {
			out = append(out, l)
		}
	}
	return out
}

// settle counts the broadcasts after from, up to upTo, as no longer owed
// by one receiver.
func (bs *broadcast[E]) settle(from, upTo uint64) {
	floor := bs.floor()
	for seq := max(from+1, floor); seq <= upTo; seq++ {
		bs.pending.ptr(int(seq-floor)).owed--
	}
}

// trim drops the broadcasts no receiver is owed.
func (bs *broadcast[E]) trim() {
	drop := 0
	for drop < bs.pending.len() && bs.pending.at(drop).owed <= 0 {
		drop++
	}
	bs.pending.drop(drop)
}

// AckedAll takes receiver l's acknowledgement of every broadcast up to
// upTo and, with gap, its word that the next one is missing. It returns
// what to send l again.
func (s *Sender[E]) AckedAll(l *OutLink[E], upTo uint64, gap bool, now time.Time) []Publish[E] {
	s.reset()
	bs := s.stream(l.typ)
	if bs == nil || !l.receiver || upTo >= bs.next {
		return nil // not a receiver, or acknowledges what was never sent
	}
	if upTo > l.backed {
		bs.settle(l.backed, upTo)
		l.backed = upTo
		before := bs.pending.len()
		bs.trim()
		if bs.pending.len() < before {
			bs.sentAt, bs.rto = now, ResendFirst
		}
	}
	// A receiver that joined while another lagged lacks broadcasts it was
	// not owed: it is sent what it says it lacks, not only what it owes.
	if gap && now.Sub(l.bGap) >= GapResend {
		l.bGap = now
		s.sendBroadcastTo(bs, l, upTo+1, false)
	}
	return s.out
}

// Tick returns what is due again: the events and broadcasts that have
// waited too long for their acknowledgements.
func (s *Sender[E]) Tick(now time.Time) []Publish[E] {
	s.reset()
	for _, l := range s.links {
		if !l.parked && l.pending.len() > 0 && now.Sub(l.sentAt) >= l.rto {
			s.resend(l, now, true)
			l.rto = min(2*l.rto, ResendMax)
		}
	}
	for _, bs := range s.streams {
		if bs.pending.len() > 0 && now.Sub(bs.sentAt) >= bs.rto {
			s.resendBroadcasts(bs, s.lacking(bs, now.Add(-ResendFirst)), now, true)
			bs.rto = min(2*bs.rto, ResendMax)
		}
	}
	return s.out
}

// Resumed returns everything unacknowledged, to send again when the
// connection comes back.
func (s *Sender[E]) Resumed(now time.Time) []Publish[E] {
	s.reset()
	for _, l := range s.links {
		if !l.parked && l.pending.len() > 0 {
			s.resend(l, now, false)
		}
	}
	for _, bs := range s.streams {
		if bs.pending.len() > 0 {
			s.resendBroadcasts(bs, s.lacking(bs, now), now, false)
		}
	}
	return s.out
}
