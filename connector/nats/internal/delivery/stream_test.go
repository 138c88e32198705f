package delivery_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at is t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// numbers returns the numbers in the heads of what a Sender returned.
func numbers(ps []delivery.Publish[int]) []uint64 {
	var out []uint64
	for _, p := range ps {
		out = append(out, p.Head.Seq)
	}
	return out
}

// span returns from, from+1, ..., to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func mustSend(t *testing.T, s *delivery.Sender[int], l *delivery.OutLink[int], ev int, now time.Time) delivery.Publish[int] {
	t.Helper()
	ps, err := s.Send(l, ev, now)
	if err != nil || len(ps) != 1 {
		t.Fatalf("Send(%d) = %v, %v", ev, ps, err)
	}
	return ps[0]
}

// arrival is an event of the link stream coming to a Receiver.
type arrival struct {
	ms         int // when
	seq, floor uint64
}

// A receiver delivers the peer's link stream strictly in order, once,
// from where the stream starts; it acknowledges copies again, reports a
// gap at most once per GapResend, and acknowledges what it delivered.
func TestReceiverLinkStream(t *testing.T) {
	for _, tc := range []struct {
		name     string
		arrivals []arrival
		deliver  []int          // the events delivered, by number
		acks     []delivery.Ack // what the arrivals and a tick after them acknowledge
	}{
		{"in order", []arrival{{0, 1, 1}, {1, 2, 1}, {2, 3, 1}}, []int{1, 2, 3}, []delivery.Ack{{UpTo: 3}}},
		{"a copy is dropped and acknowledged again", []arrival{{0, 1, 1}, {1, 2, 1}, {2, 1, 1}}, []int{1, 2}, []delivery.Ack{{UpTo: 2}}},
		{"what skips ahead is dropped, and the gap reported", []arrival{{0, 1, 1}, {1, 3, 1}}, []int{1}, []delivery.Ack{{UpTo: 1, Gap: true}, {UpTo: 1}}},
		{"a gap is reported once per GapResend; the tick reports one it held back",
			[]arrival{{0, 1, 1}, {1, 3, 1}, {5, 4, 1}, {30, 5, 1}, {31, 6, 1}},
			[]int{1}, []delivery.Ack{{UpTo: 1, Gap: true}, {UpTo: 1, Gap: true}, {UpTo: 1}, {UpTo: 1, Gap: true}}},
		{"the first contact starts at the sender's floor", []arrival{{0, 5, 5}, {1, 6, 5}}, []int{5, 6}, []delivery.Ack{{UpTo: 6}}},
		{"a first contact past the floor is a gap", []arrival{{0, 7, 5}}, nil, []delivery.Ack{{UpTo: 4, Gap: true}}},
		{"a floor that moves past what is expected: the sender let go of it", []arrival{{0, 1, 1}, {1, 9, 9}}, []int{1, 9}, []delivery.Ack{{UpTo: 9}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := delivery.NewReceiver[int]("1")
			var got []int
			var acks []delivery.Ack
			last := 0
			for _, a := range tc.arrivals {
				evs, as := r.Event(delivery.Head{Seq: a.seq, Floor: a.floor}, int(a.seq), at(a.ms))
				got = append(got, evs...)
				acks = append(acks, as...)
				last = a.ms
			}
			acks = append(acks, r.Tick(at(last+int(delivery.GapResend.Milliseconds())))...)
			if !reflect.DeepEqual(got, tc.deliver) {
				t.Errorf("delivered %v, want %v", got, tc.deliver)
			}
			if !reflect.DeepEqual(acks, tc.acks) {
				t.Errorf("acknowledged %+v, want %+v", acks, tc.acks)
			}
		})
	}
}

// A receiver acknowledges every AckEvery events as they come, and what
// came since on the tick: one acknowledgement per AckEvery events under
// load, and none on a tick with nothing new.
func TestReceiverAcknowledgesEvery64OrOnTheTick(t *testing.T) {
	r := delivery.NewReceiver[int]("1")
	var acks []delivery.Ack
	for seq := uint64(1); seq <= delivery.AckEvery+6; seq++ {
		_, as := r.Event(delivery.Head{Seq: seq, Floor: 1}, 0, t0)
		if seq < delivery.AckEvery && len(as) > 0 {
			t.Fatalf("event %d acknowledged at once: %+v", seq, as)
		}
		acks = append(acks, as...)
	}
	if want := []delivery.Ack{{UpTo: delivery.AckEvery}}; !reflect.DeepEqual(acks, want) {
		t.Fatalf("acknowledged %+v as they came, want %+v", acks, want)
	}
	if got, want := r.Tick(at(50)), []delivery.Ack{{UpTo: delivery.AckEvery + 6}}; !reflect.DeepEqual(got, want) {
		t.Errorf("the tick acknowledged %+v, want %+v", got, want)
	}
	if got := r.Tick(at(100)); len(got) != 0 {
		t.Errorf("a tick with nothing new acknowledged %+v", got)
	}
}

// A stopped receiver delivers nothing more and acknowledges nothing it
// did not deliver; its last acknowledgement covers exactly what it
// delivered, and a copy of that gets it again (the first may be lost).
func TestReceiverStop(t *testing.T) {
	r := delivery.NewReceiver[int]("1")
	for seq := uint64(1); seq <= 3; seq++ {
		r.Event(delivery.Head{Seq: seq, Floor: 1}, int(seq), t0)
	}
	// Broadcast 1, held until link event 5 comes.
	if evs, _ := r.Event(delivery.Head{Seq: 1, Floor: 1, All: true, Fence: []delivery.Fence{{Key: "1", Seq: 5}}}, 0, t0); len(evs) != 0 {
		t.Fatalf("a broadcast fenced on link event 5 delivered after 3: %v", evs)
	}
	if got, want := r.Stop(), []delivery.Ack{{UpTo: 3}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Stop acknowledged %+v, want %+v", got, want)
	}
	if evs, acks := r.Event(delivery.Head{Seq: 4, Floor: 1}, 4, at(1)); len(evs)+len(acks) != 0 {
		t.Errorf("after Stop, event 4: delivered %v, acknowledged %+v", evs, acks)
	}
	if _, acks := r.Event(delivery.Head{Seq: 2, Floor: 1}, 2, at(2)); !reflect.DeepEqual(acks, []delivery.Ack{{UpTo: 3}}) {
		t.Errorf("after Stop, a copy of 2 acknowledged %+v, want up to 3 again", acks)
	}
	if got := r.Tick(at(50)); len(got) != 0 {
		t.Errorf("a stopped receiver's tick acknowledged %+v", got)
	}
	if got := r.Stop(); len(got) != 0 {
		t.Errorf("Stop twice acknowledged %+v", got)
	}
}

// A sender numbers a link's events from 1, with the oldest it holds as
// the floor, and forgets them as they are acknowledged.
func TestSenderNumbersAndForgets(t *testing.T) {
	s := delivery.NewSender[int](0)
	l := s.Open("slave", "1")
	for i := 1; i <= 3; i++ {
		if p := mustSend(t, s, l, i, t0); !reflect.DeepEqual(p.Head, delivery.Head{Seq: uint64(i), Floor: 1}) || p.Link != l || p.Event != i {
			t.Fatalf("event %d published as %+v", i, p)
		}
	}
	s.Acked(l, 2, false, at(10))
	if p := mustSend(t, s, l, 4, at(11)); p.Head.Floor != 3 {
		t.Errorf("after an acknowledgement of 2, the floor is %d, want 3", p.Head.Floor)
	}
	if l.Unacked() != 2 || l.AckedUpTo() != 2 {
		t.Errorf("Unacked %d, AckedUpTo %d; want 2, 2", l.Unacked(), l.AckedUpTo())
	}
	if ps := s.Acked(l, 9, false, at(12)); len(ps) != 0 || l.AckedUpTo() != 2 {
		t.Errorf("an acknowledgement of what was never sent was taken: %v, acked %d", numbers(ps), l.AckedUpTo())
	}
}

// A gap report brings everything unacknowledged again (go-back-N), at
// most once per GapResend however many reports come.
func TestSenderGoBackN(t *testing.T) {
	s := delivery.NewSender[int](0)
	l := s.Open("slave", "1")
	for i := 1; i <= 5; i++ {
		mustSend(t, s, l, i, t0)
	}
	for _, step := range []struct {
		ms   int
		upTo uint64
		want []uint64
	}{
		{10, 2, span(3, 5)},
		{15, 2, nil}, // within GapResend of the last
		{29, 3, nil},
		{30, 3, span(4, 5)},
	} {
		if got := numbers(s.Acked(l, step.upTo, true, at(step.ms))); !reflect.DeepEqual(got, step.want) {
			t.Errorf("at %d ms, a gap after %d sent %v again, want %v", step.ms, step.upTo, got, step.want)
		}
	}
}

// What stays unacknowledged is sent again after ResendFirst of silence,
// then after twice as long each time up to ResendMax; an acknowledgement
// starts the clock again.
func TestSenderResendTimer(t *testing.T) {
	s := delivery.NewSender[int](0)
	l := s.Open("slave", "1")
	mustSend(t, s, l, 1, t0)
	mustSend(t, s, l, 2, t0)
	var resent []int
	for ms := 0; ms <= 25000; ms += 50 {
		if ps := s.Tick(at(ms)); len(ps) > 0 {
			if got := numbers(ps); !reflect.DeepEqual(got, []uint64{1, 2}) {
				t.Fatalf("at %d ms the timer sent %v", ms, got)
			}
			resent = append(resent, ms)
		}
	}
	if want := []int{500, 1500, 3500, 7500, 12500, 17500, 22500}; !reflect.DeepEqual(resent, want) {
		t.Errorf("sent again at %v ms, want %v", resent, want)
	}
	s.Acked(l, 1, false, at(25000))
	if ps := s.Tick(at(25450)); len(ps) != 0 {
		t.Errorf("sent again %v within ResendFirst of an acknowledgement", numbers(ps))
	}
	if got := numbers(s.Tick(at(25500))); !reflect.DeepEqual(got, []uint64{2}) {
		t.Errorf("after an acknowledgement the timer sent %v at ResendFirst, want [2]", got)
	}
}

// The timer sends a silent peer no more than ProbeWindow events; a peer
// that acknowledges the window is sent the next one at once. A gap, or
// the connection coming back, sends everything.
func TestSenderProbeWindow(t *testing.T) {
	s := delivery.NewSender[int](0)
	l := s.Open("slave", "1")
	const n = 2*delivery.ProbeWindow + 500
	for i := 1; i <= n; i++ {
		mustSend(t, s, l, i, t0)
	}
	if got := numbers(s.Tick(at(500))); !reflect.DeepEqual(got, span(1, delivery.ProbeWindow)) {
		t.Fatalf("the timer sent %d events (%v...), want the first %d", len(got), got[:min(3, len(got))], delivery.ProbeWindow)
	}
	if got := s.Acked(l, 100, false, at(510)); len(got) != 0 {
		t.Errorf("an acknowledgement within the window brought %d events", len(got))
	}
	got := numbers(s.Acked(l, delivery.ProbeWindow, false, at(520)))
	if !reflect.DeepEqual(got, span(delivery.ProbeWindow+1, 2*delivery.ProbeWindow)) {
		t.Errorf("the window's acknowledgement brought %d events from %v, want the next %d", len(got), got[:min(1, len(got))], delivery.ProbeWindow)
	}
	if got := numbers(s.Resumed(at(530))); !reflect.DeepEqual(got, span(delivery.ProbeWindow+1, n)) {
		t.Errorf("on resuming, sent %d events, want every one unacknowledged (%d)", len(got), n-delivery.ProbeWindow)
	}
	if got := numbers(s.Acked(l, delivery.ProbeWindow+1, true, at(540))); len(got) != n-delivery.ProbeWindow-1 {
		t.Errorf("a gap sent %d events, want every one unacknowledged (%d)", len(got), n-delivery.ProbeWindow-1)
	}
}

// A link holds at most maxUnacked events: then Send refuses with ErrFull
// until an acknowledgement makes room.
func TestSenderBackPressure(t *testing.T) {
	s := delivery.NewSender[int](4)
	l := s.Open("slave", "1")
	for i := 1; i <= 4; i++ {
		mustSend(t, s, l, i, t0)
	}
	if _, err := s.Send(l, 5, t0); !errors.Is(err, delivery.ErrFull) || l.Room() {
		t.Fatalf("a fifth event: %v, Room %v; want ErrFull, no room", err, l.Room())
	}
	s.Acked(l, 1, false, at(1))
	if !l.Room() {
		t.Fatal("no room after an acknowledgement")
	}
	if p := mustSend(t, s, l, 5, at(2)); p.Head.Seq != 5 {
		t.Errorf("the event refused was numbered: the next is %d, want 5", p.Head.Seq)
	}
}

// A parked link (its peer went away) sends nothing, refuses Send, and
// still takes acknowledgements; Close gives up what it holds.
func TestSenderParkAndClose(t *testing.T) {
	s := delivery.NewSender[int](0)
	l := s.Open("slave", "1")
	for i := 1; i <= 3; i++ {
		mustSend(t, s, l, i, t0)
	}
	s.Park(l)
	if _, err := s.Send(l, 4, t0); !errors.Is(err, delivery.ErrClosed) {
		t.Errorf("Send on a parked link: %v, want ErrClosed", err)
	}
	if ps := s.Tick(at(600)); len(ps) != 0 {
		t.Errorf("a parked link's events sent again: %v", numbers(ps))
	}
	if ps := s.Acked(l, 1, true, at(601)); len(ps) != 0 || l.AckedUpTo() != 1 {
		t.Errorf("a parked link took an acknowledgement as %v, acked %d; want nothing sent, acked 1", numbers(ps), l.AckedUpTo())
	}
	if ps := s.Resumed(at(602)); len(ps) != 0 {
		t.Errorf("a parked link's events sent again on resuming: %v", numbers(ps))
	}
	if n := s.Close(l); n != 2 {
		t.Errorf("Close gave up %d events, want 2", n)
	}
	if _, err := s.Send(l, 5, t0); !errors.Is(err, delivery.ErrClosed) {
		t.Errorf("Send on a closed link: %v, want ErrClosed", err)
	}
}

// Adopt hands what the peer's previous session never acknowledged to
// its next one: a fresh link takes the stream over, numbers and all; a
// link that has sent already numbers them after its own. The old link
// takes nothing more.
func TestSenderAdopt(t *testing.T) {
	t.Run("a fresh link takes the stream over", func(t *testing.T) {
		s := delivery.NewSender[int](0)
		old := s.Open("slave", "1")
		for i := 1; i <= 5; i++ {
			mustSend(t, s, old, i, t0)
		}
		s.Acked(old, 2, false, at(1))
		s.Park(old)
		l := s.Open("slave", "1")
		ps, givenUp, err := s.Adopt(l, old, at(2))
		ps = slices.Clone(ps) // the Sender's own, until its next call
		if err != nil || givenUp != 0 {
			t.Fatalf("Adopt: %v, %d given up", err, givenUp)
		}
		if got := numbers(ps); !reflect.DeepEqual(got, []uint64{3, 4, 5}) || ps[0].Link != l || ps[0].Head.Floor != 3 || ps[0].Event != 3 {
			t.Errorf("adopted as %v (first %+v), want 3, 4, 5 on the new link, floor 3", got, ps[0])
		}
		if p := mustSend(t, s, l, 6, at(3)); p.Head.Seq != 6 {
			t.Errorf("the next event on the new link is %d, want 6", p.Head.Seq)
		}
		if _, err := s.Send(old, 7, at(4)); !errors.Is(err, delivery.ErrClosed) {
			t.Errorf("Send on the adopted link: %v, want ErrClosed", err)
		}
		// Its receiver, new, starts at the floor.
		r := delivery.NewReceiver[int]("1")
		var got []int
		for _, p := range ps {
			evs, _ := r.Event(p.Head, p.Event, at(5))
			got = append(got, evs...)
		}
		if !reflect.DeepEqual(got, []int{3, 4, 5}) {
			t.Errorf("the new receiver delivered %v, want 3, 4, 5", got)
		}
	})
	t.Run("after the new link's own", func(t *testing.T) {
		s := delivery.NewSender[int](0)
		old := s.Open("slave", "1")
		mustSend(t, s, old, 1, t0)
		mustSend(t, s, old, 2, t0)
		l := s.Open("slave", "1")
		mustSend(t, s, l, 10, t0)
		ps, _, err := s.Adopt(l, old, at(1))
		if err != nil || !reflect.DeepEqual(numbers(ps), []uint64{2, 3}) || ps[0].Event != 1 || ps[1].Event != 2 {
			t.Errorf("adopted as %+v, %v; want events 1, 2 numbered 2, 3", ps, err)
		}
	})
	t.Run("onto a closed link", func(t *testing.T) {
		s := delivery.NewSender[int](0)
		old, l := s.Open("slave", "1"), s.Open("slave", "1")
		s.Close(l)
		if _, _, err := s.Adopt(l, old, t0); !errors.Is(err, delivery.ErrClosed) {
			t.Errorf("Adopt onto a closed link: %v, want ErrClosed", err)
		}
	})
}
