package delivery

import (
	"slices"
	"time"
)

// Sender is one endpoint's outbound side: a numbered stream of events on
// each of its links, and a numbered broadcast stream to each endpoint
// type, kept in one order (see the package doc). It decides what to
// publish, and when to publish it again; it publishes nothing itself.
//
// A Sender is not safe for concurrent use: the caller holds one lock
// across a call and the publishing of what it returned, so that
// messages go out in the order they were numbered.
type Sender[E any] struct {
	maxUnacked int
	links      []*OutLink[E]   // open and parked links, in the order opened
	streams    []*broadcast[E] // one per receiver type, in the order made
	out        []Publish[E]    // what the last call returned
	scratch    []*OutLink[E]
}

// Publish is a message the caller publishes: an event on a link (Link
// set, Head.All false), a broadcast sent again to one receiver on its
// link (Link set, Head.All true), or a broadcast published once to every
// endpoint of type Type (Link nil). The payload is AppendHead(Head), with
// Head.Origin set from the event, followed by the event's own.
type Publish[E any] struct {
	Link  *OutLink[E]
	Type  string
	Head  Head
	Event E
}

// OutLink is a Sender's link to one peer: its numbered event stream, and
// its place among the receivers of its type's broadcasts. Its methods
// are called under the Sender's lock.
type OutLink[E any] struct {
	s      *Sender[E]
	typ    string
	key    string
	closed bool // closed, or handed over by Adopt
	parked bool // its peer has gone: nothing is sent, its events wait for Adopt or Close

	next     uint64 // the number of the next event; the first is 1
	acked    uint64 // every event up to this one is acknowledged
	pending  ring[kept[E]]
	sentAt   time.Time // when pending was last sent or acknowledged
	rto      time.Duration
	lastGap  time.Time
	probedTo uint64 // the last event of the resend timer's window, until acknowledged

	// As a receiver of its type's broadcast stream.
	receiver bool
	bstart   uint64 // the first broadcast it is owed
	backed   uint64 // it has every broadcast up to this one
	anchored bool   // it has acknowledged one: it knows its start, and takes published copies
	copied   bool   // a broadcast has been sent to it alone: it may know its start
	bGap     time.Time
	bProbed  uint64 // the last broadcast of its resend window, until acknowledged
}

// kept is an event sent and not yet acknowledged.
type kept[E any] struct {
	ev    E
	after uint64 // the last broadcast to the peer's type sent before it
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
	ev    E
	at    time.Time    // when it was first sent
	owed  int          // receivers that have not acknowledged it
	fence []fenceAt[E] // the links with events unacknowledged when it was sent
}

// fenceAt is a link and the last event sent on it before a broadcast.
type fenceAt[E any] struct {
	l   *OutLink[E]
	seq uint64
}

// NewSender returns a Sender whose streams hold at most maxUnacked
// unacknowledged events each (DefaultMaxUnacked if 0).
func NewSender[E any](maxUnacked int) *Sender[E] {
	if maxUnacked <= 0 {
		maxUnacked = DefaultMaxUnacked
	}
	return &Sender[E]{maxUnacked: maxUnacked}
}

// Open starts the stream of a new link to a peer of type typ whose
// endpoint id is key (as fences name it; not empty). The link receives typ's
// broadcasts from now on: it is owed the next one and those after. A
// link that replaces another to the same peer (its next session) takes
// the place of that one in fences: the caller Adopts or Closes the old
// one at once, before it publishes anything else.
func (s *Sender[E]) Open(typ, key string) *OutLink[E] {
	bs := s.streamFor(typ)
	l := &OutLink[E]{s: s, typ: typ, key: key, next: 1, rto: ResendFirst,
		receiver: true, bstart: bs.next, backed: bs.next - 1}
	s.links = append(s.links, l)
	return l
}

// Key returns the peer's endpoint id.
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
func (l *OutLink[E]) Room() bool {
	return !l.closed && !l.parked && l.pending.len() < l.s.maxUnacked
}

// Closed reports whether the link has been closed, parked or handed
// over: Send refuses.
func (l *OutLink[E]) Closed() bool { return l.closed || l.parked }

func (s *Sender[E]) reset() {
	clear(s.out)
	s.out = s.out[:0]
}

// Send numbers ev, keeps it until the peer acknowledges it, and returns
// it to publish (the slice is the Sender's, valid until its next call).
// It returns ErrFull while the peer has not acknowledged the most events
// a link holds, and ErrClosed on a closed, parked or adopted link.
func (s *Sender[E]) Send(l *OutLink[E], ev E, now time.Time) ([]Publish[E], error) {
	s.reset()
	if l.closed || l.parked {
		return nil, ErrClosed
	}
	if l.pending.len() >= s.maxUnacked {
		return nil, ErrFull
	}
	var after uint64
	if bs := s.stream(l.typ); bs != nil {
		after = bs.next - 1
	}
	s.push(l, kept[E]{ev: ev, after: after}, now)
	return s.out, nil
}

// push numbers k on l, keeps it and publishes it.
func (s *Sender[E]) push(l *OutLink[E], k kept[E], now time.Time) {
	seq := l.next
	l.next++
	if l.pending.len() == 0 {
		l.sentAt = now
	}
	l.pending.push(k)
	s.publishEvent(l, seq)
}

func (s *Sender[E]) publishEvent(l *OutLink[E], seq uint64) {
	k := l.pending.at(int(seq - l.acked - 1))
	h := Head{Seq: seq, Floor: l.acked + 1}
	if l.receiver && k.after >= l.bstart {
		// A broadcast the peer is owed went before: it delivers that
		// first. (One it is not owed it never waits for.)
		h.After = k.after
	}
	s.out = append(s.out, Publish[E]{Link: l, Type: l.typ, Head: h, Event: k.ev})
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
// what to send again. A parked link takes acknowledgements too (the
// peer's last ones may come after its close), and sends nothing. After
// it, Room may have changed.
func (s *Sender[E]) Acked(l *OutLink[E], upTo uint64, gap bool, now time.Time) []Publish[E] {
	s.reset()
	if l.closed || upTo >= l.next {
		return nil // acknowledges what was never sent: not from our peer
	}
	if upTo > l.acked {
		l.pending.drop(int(upTo - l.acked))
		l.acked = upTo
		l.sentAt, l.rto = now, ResendFirst
		if !l.parked && l.probedTo != 0 && upTo >= l.probedTo && !gap {
			s.resend(l, now, true) // the peer is there: the next window
		}
	}
	if gap && !l.parked && l.pending.len() > 0 && now.Sub(l.lastGap) >= GapResend {
		l.lastGap = now
		s.resend(l, now, false)
	}
	return s.out
}

// Park stops l: its peer has closed its side, or gone away. Nothing is
// sent on it again and Send refuses; it still takes acknowledgements,
// and its unacknowledged events and the broadcasts it is owed wait for
// the peer's next session to adopt them (Adopt), or for Close.
func (s *Sender[E]) Park(l *OutLink[E]) {
	if !l.closed {
		l.parked = true
	}
}

// Close closes l: its unacknowledged events, and the broadcasts it is
// owed, are given up. It returns how many events it gave up.
func (s *Sender[E]) Close(l *OutLink[E]) int {
	if l.closed {
		return 0
	}
	n := l.pending.len()
	s.forget(l)
	return n
}

// forget closes l and takes it out of the receivers.
func (s *Sender[E]) forget(l *OutLink[E]) {
	l.closed, l.parked = true, false
	l.pending.clear()
	s.links = slices.DeleteFunc(s.links, func(x *OutLink[E]) bool { return x == l })
	if l.receiver {
		if bs := s.stream(l.typ); bs != nil {
			bs.settle(l, bs.next-1)
			bs.trim()
		}
		l.receiver = false
	}
}

// Adopt hands over to l, which replaces old (the peer restarted within
// the session), what old's peer never acknowledged. If l has sent
// nothing, it takes old's stream over: the same numbers, sent again from
// the first unacknowledged, so that the fences that name them hold for
// l's peer; otherwise they are numbered after l's own, and the order of
// the broadcasts sent after them against them is not kept. And l is
// owed the broadcasts old was owed, from the first old lacked, provided
// nothing of the broadcast stream has been sent to l alone yet (l's peer
// would know its start). So: call Adopt as soon as l is opened. old is
// closed. It returns what to publish, and how many broadcasts old was
// owed that l cannot be (given up); ErrClosed if l is not open.
func (s *Sender[E]) Adopt(l, old *OutLink[E], now time.Time) ([]Publish[E], int, error) {
	s.reset()
	if l.closed || l.parked {
		return nil, 0, ErrClosed
	}
	if old.closed || old == l || old.typ != l.typ {
		return nil, 0, nil // nothing to hand over
	}
	givenUp := s.adoptReceiver(l, old)
	fresh := l.next == 1
	if bs := s.stream(l.typ); bs != nil {
		for i := range bs.pending.len() {
			k := bs.pending.ptr(i)
			if !fresh {
				k.fence = slices.DeleteFunc(k.fence, func(f fenceAt[E]) bool { return f.l == old })
			}
			for j := range k.fence {
				if k.fence[j].l == old {
					k.fence[j].l = l
				}
			}
		}
	}
	if fresh {
		l.next, l.acked, l.pending = old.next, old.acked, old.pending
		old.pending = ring[kept[E]]{}
		l.rto = ResendFirst
		s.resend(l, now, false)
	} else {
		for i := range old.pending.len() {
			s.push(l, old.pending.at(i), now)
		}
	}
	s.forget(old)
	if bs := s.stream(l.typ); bs != nil && !l.anchored && l.backed+1 < bs.next {
		s.sendBroadcastTo(bs, l, l.backed+1, false) // where it starts, and what it lacks
	}
	return s.out, givenUp, nil
}

// adoptReceiver makes l owe the broadcasts old owes, if it can.
func (s *Sender[E]) adoptReceiver(l, old *OutLink[E]) (givenUp int) {
	bs := s.stream(l.typ)
	if bs == nil || !old.receiver {
		return 0
	}
	start := old.backed + 1
	floor := bs.floor()
	if l.copied || l.anchored {
		// l's peer may have started its broadcast stream already: what
		// old lacked before l's start cannot come after.
		for seq := max(start, floor); seq < l.bstart && seq < bs.next; seq++ {
			givenUp++
		}
		return givenUp
	}
	// Recount: old no longer owes anything; l owes from start.
	for seq := floor; seq < bs.next; seq++ {
		k := bs.pending.ptr(int(seq - floor))
		if old.owes(seq) {
			k.owed--
		}
		if l.owes(seq) {
			k.owed--
		}
		if seq >= start {
			k.owed++
		}
	}
	l.bstart, l.backed = start, start-1
	old.receiver = false // counted out above
	bs.trim()
	return 0
}

// owes reports whether receiver l has not acknowledged broadcast seq,
// which it is owed.
func (l *OutLink[E]) owes(seq uint64) bool {
	return l.receiver && seq >= l.bstart && seq > l.backed
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

// streamFor returns the broadcast stream to typ, made if need be.
func (s *Sender[E]) streamFor(typ string) *broadcast[E] {
	bs := s.stream(typ)
	if bs == nil {
		bs = &broadcast[E]{typ: typ, next: 1, rto: ResendFirst}
		s.streams = append(s.streams, bs)
	}
	return bs
}

// floor is the number of the oldest broadcast kept.
func (bs *broadcast[E]) floor() uint64 { return bs.next - uint64(bs.pending.len()) }

// receivers returns the links that receive bs and are not parked.
func (s *Sender[E]) receivers(bs *broadcast[E]) []*OutLink[E] {
	s.scratch = s.scratch[:0]
	for _, l := range s.links {
		if l.receiver && !l.parked && l.typ == bs.typ {
			s.scratch = append(s.scratch, l)
		}
	}
	return s.scratch
}

// Broadcast numbers ev in the broadcast stream to typ, keeps it until
// every receiver has acknowledged it, and returns it to publish: once to
// every endpoint of the type, and to each receiver that cannot take the
// published copy (it does not yet know where its stream starts, or the
// fence could not list it) on its link. The receivers are the links to
// peers of that type, parked ones included: a peer that links later is
// owed only what is broadcast after. It returns ErrFull while the most
// broadcasts the stream holds are not yet acknowledged by every
// receiver.
func (s *Sender[E]) Broadcast(typ string, ev E, now time.Time) ([]Publish[E], error) {
	s.reset()
	bs := s.streamFor(typ)
	if bs.pending.len() >= s.maxUnacked {
		return nil, ErrFull
	}
	k := bkept[E]{ev: ev, at: now}
	for _, l := range s.links {
		if l.typ != typ {
			continue
		}
		if l.receiver {
			k.owed++
		}
		// A later link to the same peer (its next session) takes its
		// predecessor's place, once it has sent something: until then
		// it may take the predecessor's stream over (Adopt).
		i := slices.IndexFunc(k.fence, func(f fenceAt[E]) bool { return f.l.key == l.key })
		switch {
		case i >= 0 && l.next == 1:
		case i >= 0 && l.pending.len() > 0:
			k.fence[i] = fenceAt[E]{l: l, seq: l.next - 1}
		case i >= 0:
			k.fence = slices.Delete(k.fence, i, i+1)
		case l.pending.len() > 0:
			k.fence = append(k.fence, fenceAt[E]{l: l, seq: l.next - 1})
		}
	}
	seq := bs.next
	if bs.pending.len() == 0 {
		bs.sentAt = now
	}
	bs.next++
	bs.pending.push(k)
	s.publishBroadcast(bs, seq, s.receivers(bs))
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

// publishBroadcast publishes broadcast seq to every endpoint of the
// type, and to each of to that lacks it and cannot take the published
// copy, on its link.
func (s *Sender[E]) publishBroadcast(bs *broadcast[E], seq uint64, to []*OutLink[E]) {
	k := bs.pending.ptr(int(seq - bs.floor()))
	h := Head{Seq: seq, Floor: bs.floor()}
	var listed []*OutLink[E]
	for _, f := range k.fence {
		if f.l.closed || f.l.acked >= f.seq {
			continue // it has that event: it need not wait
		}
		if len(h.Fence) == MaxFence {
			h.More = true
			break
		}
		h.Fence = append(h.Fence, Fence{Key: f.l.key, Seq: f.seq})
		listed = append(listed, f.l)
	}
	s.out = append(s.out, Publish[E]{Type: bs.typ, Head: h, Event: k.ev})
	for _, l := range to {
		if !l.owes(seq) {
			continue
		}
		if l.anchored && (!h.More || slices.Contains(listed, l)) {
			continue // it takes the published copy
		}
		s.copyTo(bs, l, seq)
	}
}

// copyTo sends broadcast seq of bs to receiver l alone, on its link: with
// l's own start as its floor, and l's fence entry.
func (s *Sender[E]) copyTo(bs *broadcast[E], l *OutLink[E], seq uint64) {
	floor := bs.floor()
	k := bs.pending.at(int(seq - floor))
	h := Head{Seq: seq, Floor: max(floor, l.backed+1, l.bstart), All: true}
	for _, f := range k.fence {
		if f.l == l && l.acked < f.seq {
			h.Fence = []Fence{{Key: l.key, Seq: f.seq}}
		}
	}
	l.copied = true
	s.out = append(s.out, Publish[E]{Link: l, Type: bs.typ, Head: h, Event: k.ev})
}

// sendBroadcastTo sends receiver l the broadcasts of bs it lacks from
// from, on its link; with probe, no more than ProbeWindow.
func (s *Sender[E]) sendBroadcastTo(bs *broadcast[E], l *OutLink[E], from uint64, probe bool) {
	from = max(from, bs.floor(), l.bstart)
	end := bs.end(from, probe)
	l.bProbed = 0
	if end < bs.next {
		l.bProbed = end - 1
	}
	for seq := from; seq < end; seq++ {
		s.copyTo(bs, l, seq)
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

// resendBroadcasts sends again what each of the lacking receivers lacks:
// to each alone, or, when they are most of the receivers, published
// once more to all (and to those that cannot take the published copy on
// their links); with probe, no more than ProbeWindow broadcasts.
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
			s.publishBroadcast(bs, seq, lacking)
		}
		return
	}
	for _, l := range lacking {
		s.sendBroadcastTo(bs, l, l.backed+1, probe)
	}
}

// lacking returns the receivers, not parked, that have not acknowledged
// a broadcast they are owed sent before due.
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

// settle counts the broadcasts up to upTo as no longer owed by l.
func (bs *broadcast[E]) settle(l *OutLink[E], upTo uint64) {
	floor := bs.floor()
	for seq := max(l.backed+1, l.bstart, floor); seq <= upTo && seq < bs.next; seq++ {
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
// upTo and, with gap, its word that the next one is missing (upTo 0 with
// gap: it does not know where its stream starts). It returns what to
// send l again.
func (s *Sender[E]) AckedAll(l *OutLink[E], upTo uint64, gap bool, now time.Time) []Publish[E] {
	s.reset()
	bs := s.stream(l.typ)
	if bs == nil || !l.receiver || l.closed || upTo >= bs.next {
		return nil // not a receiver, or acknowledges what was never sent
	}
	if upTo > l.backed {
		bs.settle(l, upTo)
		l.backed = upTo
		if upTo >= l.bstart {
			l.anchored = true
		}
		before := bs.pending.len()
		bs.trim()
		if bs.pending.len() < before {
			bs.sentAt, bs.rto = now, ResendFirst
		}
		if !l.parked && l.bProbed != 0 && upTo >= l.bProbed && !gap {
			s.sendBroadcastTo(bs, l, l.backed+1, true) // it is there: the next window
		}
	}
	if gap && !l.parked && now.Sub(l.bGap) >= GapResend {
		l.bGap = now
		s.sendBroadcastTo(bs, l, l.backed+1, false)
	}
	return s.out
}

// Tick returns what is due again: the events and broadcasts that have
// waited too long for their acknowledgements. The caller calls it every
// TickEvery.
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
