package delivery_test

import (
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

// to returns the receivers (by key, "*" for the published copy) of what
// a Sender returned, with the broadcast numbers each was sent.
func to(ps []delivery.Publish[int]) map[string][]uint64 {
	out := map[string][]uint64{}
	for _, p := range ps {
		k := "*"
		if p.Link != nil {
			k = p.Link.Key()
		}
		out[k] = append(out[k], p.Head.Seq)
	}
	return out
}

// receivers opens n links to slaves "1".."n" and brings each to know
// where its broadcast stream starts: a first broadcast, sent to each on
// its link, and acknowledged.
func receivers(t *testing.T, s *delivery.Sender[int], n int) []*delivery.OutLink[int] {
	t.Helper()
	var ls []*delivery.OutLink[int]
	for i := 1; i <= n; i++ {
		ls = append(ls, s.Open("slave", strconv.Itoa(i)))
	}
	ps, err := s.Broadcast("slave", 0, t0)
	if err != nil {
		t.Fatal(err)
	}
	got := to(ps)
	for _, l := range ls {
		if !reflect.DeepEqual(got[l.Key()], []uint64{1}) {
			t.Fatalf("a receiver that does not know its start was not sent the broadcast on its link: %v", got)
		}
		s.AckedAll(l, 1, false, t0)
	}
	if s.Broadcasts() != 0 {
		t.Fatalf("%d broadcasts kept after every receiver acknowledged", s.Broadcasts())
	}
	return ls
}

func mustBroadcast(t *testing.T, s *delivery.Sender[int], ev int, ms int) map[string][]uint64 {
	t.Helper()
	ps, err := s.Broadcast("slave", ev, at(ms))
	if err != nil {
		t.Fatal(err)
	}
	return to(ps)
}

// A broadcast is published once when every receiver takes the published
// copy, and kept until every receiver has acknowledged it.
func TestBroadcastSettleAndTrim(t *testing.T) {
	s := delivery.NewSender[int](0)
	ls := receivers(t, s, 2)
	for i := 2; i <= 4; i++ {
		if got := mustBroadcast(t, s, i, 0); !reflect.DeepEqual(got, map[string][]uint64{"*": {uint64(i)}}) {
			t.Fatalf("broadcast %d sent as %v, want one published copy", i, got)
		}
	}
	for _, step := range []struct {
		l    int
		upTo uint64
		kept int
	}{
		{0, 3, 3}, // 2, 3 still owed by the other
		{1, 2, 2},
		{1, 4, 1},
		{0, 4, 0},
	} {
		s.AckedAll(ls[step.l], step.upTo, false, at(1))
		if s.Broadcasts() != step.kept {
			t.Errorf("after receiver %d acknowledged %d, %d kept, want %d", step.l+1, step.upTo, s.Broadcasts(), step.kept)
		}
	}
}

// The timer sends what a receiver lacks to it alone, on its link; when
// most receivers lack it, it publishes it once more to all instead. Only
// receivers that had ResendFirst to acknowledge count as lacking.
func TestBroadcastResendToTheLacking(t *testing.T) {
	s := delivery.NewSender[int](0)
	ls := receivers(t, s, 3)
	mustBroadcast(t, s, 2, 0)
	mustBroadcast(t, s, 3, 0)
	mustBroadcast(t, s, 4, 400)
	s.AckedAll(ls[0], 3, false, at(10))
	s.AckedAll(ls[1], 3, false, at(10))
	// At 500 ms: 2 and 3 had their time, 4 not yet. Receiver 3 lacks 2, 3.
	if got, want := to(s.Tick(at(500))), map[string][]uint64{"3": {2, 3, 4}}; !reflect.DeepEqual(got, want) {
		t.Errorf("the timer sent %v, want %v (what receiver 3 lacks, on its link)", got, want)
	}
	// At 1500 ms: all three lack 4; published once more to all.
	if got, want := to(s.Tick(at(1500))), map[string][]uint64{"*": {2, 3, 4}}; !reflect.DeepEqual(got, want) {
		t.Errorf("the timer sent %v, want %v (published from the oldest lacked)", got, want)
	}
	s.AckedAll(ls[2], 4, false, at(1600))
	s.AckedAll(ls[0], 4, false, at(1600))
	s.AckedAll(ls[1], 4, false, at(1600))
	if ps := s.Tick(at(9000)); len(ps) != 0 || s.Broadcasts() != 0 {
		t.Errorf("after every receiver acknowledged: sent %v, %d kept", to(ps), s.Broadcasts())
	}
}

// A receiver's gap report brings what it lacks, to it alone, at most
// once per GapResend; and its acknowledgement of a probe window brings
// the next.
func TestBroadcastGapAndProbe(t *testing.T) {
	s := delivery.NewSender[int](0)
	ls := receivers(t, s, 3)
	for i := 2; i <= 5; i++ {
		mustBroadcast(t, s, i, 0)
	}
	if got, want := to(s.AckedAll(ls[1], 2, true, at(10))), map[string][]uint64{"2": {3, 4, 5}}; !reflect.DeepEqual(got, want) {
		t.Errorf("a gap after 2 brought %v, want %v", got, want)
	}
	if got := s.AckedAll(ls[1], 2, true, at(20)); len(got) != 0 {
		t.Errorf("a second gap within GapResend brought %v", to(got))
	}
	if got, want := to(s.AckedAll(ls[1], 2, true, at(30))), map[string][]uint64{"2": {3, 4, 5}}; !reflect.DeepEqual(got, want) {
		t.Errorf("a gap after GapResend brought %v, want %v", got, want)
	}

	s2 := delivery.NewSender[int](0)
	ls = receivers(t, s2, 3)
	for i := 0; i < delivery.ProbeWindow+10; i++ {
		mustBroadcast(t, s2, i, 0)
	}
	s2.AckedAll(ls[0], delivery.ProbeWindow+11, false, at(1))
	s2.AckedAll(ls[1], delivery.ProbeWindow+11, false, at(1))
	got := to(s2.Tick(at(500)))["3"]
	if len(got) != delivery.ProbeWindow || got[0] != 2 {
		t.Fatalf("the timer sent receiver 3 %d broadcasts from %v, want the first %d", len(got), got[:min(1, len(got))], delivery.ProbeWindow)
	}
	next := to(s2.AckedAll(ls[2], delivery.ProbeWindow+1, false, at(510)))["3"]
	if !reflect.DeepEqual(next, span(delivery.ProbeWindow+2, delivery.ProbeWindow+11)) {
		t.Errorf("the window's acknowledgement brought %v, want the rest", next)
	}
}

// A receiver that links later is owed only what is broadcast after, and
// is told on its link where its stream starts: its receiver delivers
// exactly that, never a broadcast from before it linked, even when the
// others' lag keeps the older ones.
func TestBroadcastReceiverJoiningLate(t *testing.T) {
	s := delivery.NewSender[int](0)
	ls := receivers(t, s, 1)
	mustBroadcast(t, s, 2, 0) // receiver 1 does not acknowledge: kept
	late := s.Open("slave", "2")
	ps, err := s.Broadcast("slave", 3, at(10))
	if err != nil {
		t.Fatal(err)
	}
	var toLate, published []delivery.Publish[int]
	for _, p := range ps {
		switch p.Link {
		case late:
			toLate = append(toLate, p)
		case nil:
			published = append(published, p)
		}
	}
	if len(toLate) != 1 || toLate[0].Head.Seq != 3 || toLate[0].Head.Floor != 3 || !toLate[0].Head.All {
		t.Fatalf("the late receiver was sent %+v, want broadcast 3 on its link with its start, 3, as floor", toLate)
	}
	if published[0].Head.Floor != 2 {
		t.Errorf("the published floor is %d, want the oldest kept, 2", published[0].Head.Floor)
	}
	r := delivery.NewReceiver[int]("2")
	// A published copy first: it does not know its start yet, so it waits.
	if evs, acks := r.Broadcast(published[0].Head, 3, at(11)); len(evs)+len(acks) != 0 {
		t.Errorf("a receiver that does not know its start took a published copy: %v, %+v", evs, acks)
	}
	if evs, _ := r.Event(toLate[0].Head, 3, at(12)); !reflect.DeepEqual(evs, []int{3}) {
		t.Errorf("the copy on its link delivered %v, want 3", evs)
	}
	// Broadcast 2, published again (receiver 1 lags), is not for it.
	if evs, _ := r.Broadcast(delivery.Head{Seq: 2, Floor: 2}, 2, at(13)); len(evs) != 0 {
		t.Errorf("a broadcast from before it linked was delivered: %v", evs)
	}
	s.AckedAll(late, 3, false, at(20))
	s.AckedAll(ls[0], 3, false, at(20))
	if s.Broadcasts() != 0 {
		t.Errorf("%d broadcasts kept; the late receiver owed only 3", s.Broadcasts())
	}
}

// A receiver whose link closed is no longer waited for; one whose peer
// went away (parked) is, and is sent nothing, until its next session
// adopts it or it closes.
func TestBroadcastForgottenReceiver(t *testing.T) {
	s := delivery.NewSender[int](0)
	ls := receivers(t, s, 3)
	mustBroadcast(t, s, 2, 0)
	s.AckedAll(ls[0], 2, false, at(1))
	s.Park(ls[1])
	s.Close(ls[2])
	if s.Broadcasts() != 1 {
		t.Fatalf("%d kept; the parked receiver still owes broadcast 2", s.Broadcasts())
	}
	if got := to(s.Tick(at(600))); len(got) != 0 {
		t.Errorf("the timer sent %v; a parked receiver is sent nothing", got)
	}
	s.Close(ls[1])
	if s.Broadcasts() != 0 {
		t.Errorf("%d kept after the parked receiver closed", s.Broadcasts())
	}
}

// A receiver's next session (Adopt) is owed what the previous one was
// owed and lacked, from the first it lacked: it is sent that on its link
// at once, with that as its start. If it was sent something alone before
// (it may have started its stream), what the previous session lacked
// from before its start is given up, and Adopt says how much.
func TestBroadcastAdopt(t *testing.T) {
	s := delivery.NewSender[int](0)
	ls := receivers(t, s, 2)
	mustBroadcast(t, s, 2, 0)
	mustBroadcast(t, s, 3, 0)
	s.AckedAll(ls[0], 2, false, at(1)) // receiver 1 lacks 3
	s.Park(ls[0])
	next := s.Open("slave", "1")
	ps, givenUp, err := s.Adopt(next, ls[0], at(2))
	if err != nil || givenUp != 0 {
		t.Fatalf("Adopt: %v, %d given up", err, givenUp)
	}
	if len(ps) != 1 || ps[0].Link != next || ps[0].Head.Seq != 3 || ps[0].Head.Floor != 3 || !ps[0].Head.All {
		t.Errorf("the next session was sent %+v, want broadcast 3 on its link, floor 3", ps)
	}
	s.AckedAll(ls[1], 3, false, at(3))
	s.AckedAll(next, 3, false, at(3))
	if s.Broadcasts() != 0 {
		t.Errorf("%d kept after the next session acknowledged", s.Broadcasts())
	}

	t.Run("after it was sent a broadcast alone", func(t *testing.T) {
		s := delivery.NewSender[int](0)
		ls := receivers(t, s, 2)
		mustBroadcast(t, s, 2, 0)
		mustBroadcast(t, s, 3, 0) // receiver 1 lacks both
		s.Park(ls[0])
		next := s.Open("slave", "1")
		if got := mustBroadcast(t, s, 4, 1); !slices.Equal(got["1"], []uint64{4}) {
			t.Fatalf("broadcast 4 sent as %v, want it on the new link", got)
		}
		_, givenUp, err := s.Adopt(next, ls[0], at(2))
		if err != nil || givenUp != 2 {
			t.Errorf("Adopt: %v, %d given up, want 2 (broadcasts 2 and 3)", err, givenUp)
		}
		s.AckedAll(ls[1], 4, false, at(3))
		s.AckedAll(next, 4, false, at(3))
		if s.Broadcasts() != 0 {
			t.Errorf("%d kept", s.Broadcasts())
		}
	})
}

// Past MaxFence receivers with events unacknowledged, the published copy
// says its fence is incomplete: a receiver it does not list waits for a
// copy of its own on its link, which the broadcast brings.
func TestBroadcastFenceOverflow(t *testing.T) {
	s := delivery.NewSender[int](0)
	n := delivery.MaxFence + 2
	ls := receivers(t, s, n)
	for _, l := range ls[:n-1] { // all but the last have an event unacknowledged
		mustSend(t, s, l, 0, t0)
	}
	ps, err := s.Broadcast("slave", 2, at(1))
	if err != nil {
		t.Fatal(err)
	}
	var pub delivery.Publish[int]
	own := map[string]delivery.Head{}
	for _, p := range ps {
		if p.Link == nil {
			pub = p
		} else {
			own[p.Link.Key()] = p.Head
		}
	}
	if len(pub.Head.Fence) != delivery.MaxFence || !pub.Head.More {
		t.Fatalf("published with %d fence entries, More %v; want %d and More", len(pub.Head.Fence), pub.Head.More, delivery.MaxFence)
	}
	// The two not listed: one with an event unacknowledged, one without.
	lagging, caughtUp := strconv.Itoa(n-1), strconv.Itoa(n)
	if h := own[lagging]; !reflect.DeepEqual(h.Fence, []delivery.Fence{{Key: lagging, Seq: 1}}) {
		t.Errorf("the lagging receiver not listed was sent %+v, want a copy fenced on its event 1", h)
	}
	if h, ok := own[caughtUp]; !ok || len(h.Fence) != 0 {
		t.Errorf("the receiver not listed with nothing unacknowledged was sent %+v (%v), want a copy with no fence", h, ok)
	}
	if len(own) != 2 {
		t.Errorf("copies sent on %d links, want 2", len(own))
	}
	r := delivery.NewReceiver[int](caughtUp)
	r.Event(delivery.Head{Seq: 1, Floor: 1, All: true}, 0, t0) // its start
	if evs, _ := r.Broadcast(pub.Head, 2, at(2)); len(evs) != 0 {
		t.Errorf("a receiver an incomplete fence does not list took the published copy: %v", evs)
	}
	if evs, _ := r.Event(own[caughtUp], 2, at(2)); !reflect.DeepEqual(evs, []int{2}) {
		t.Errorf("its own copy delivered %v, want 2", evs)
	}
}

// A receiver acknowledges the first broadcast it delivers at once, not on
// its tick: until the sender hears, it sends the receiver every broadcast
// on its link too. After, a broadcast is one published message, which the
// receiver acknowledges on its tick.
func TestBroadcastFirstAcknowledgedAtOnce(t *testing.T) {
	s := delivery.NewSender[int](0)
	l := s.Open("slave", "1")
	r := delivery.NewReceiver[int]("1")
	ps, err := s.Broadcast("slave", 1, at(0))
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	var acks []delivery.Ack
	for _, p := range slices.Clone(ps) {
		if p.Link == nil {
			continue // not for it yet: it does not know where its stream starts
		}
		evs, a := r.Event(p.Head, p.Event, at(1))
		got, acks = append(got, evs...), append(acks, a...)
	}
	if !slices.Equal(got, []int{1}) || len(acks) != 1 || acks[0] != (delivery.Ack{UpTo: 1, All: true}) {
		t.Fatalf("the first broadcast: delivered %v, acknowledged %+v; want [1], at once", got, acks)
	}
	s.AckedAll(l, acks[0].UpTo, acks[0].Gap, at(2))
	ps, err = s.Broadcast("slave", 2, at(3))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Link != nil {
		t.Fatalf("the second broadcast goes out as %v, want one published copy", to(ps))
	}
	evs, a := r.Broadcast(ps[0].Head, ps[0].Event, at(4))
	if !slices.Equal(evs, []int{2}) || len(a) != 0 {
		t.Fatalf("the second broadcast: delivered %v, acknowledged %+v; want [2], acknowledged on the tick", evs, a)
	}
	if a := r.Tick(at(50)); len(a) != 1 || a[0] != (delivery.Ack{UpTo: 2, All: true}) {
		t.Errorf("the tick acknowledges %+v, want up to 2", a)
	}
}
