package delivery_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

// The order rule's heads: a link event names the last broadcast its
// receiver is owed that went before it (a=), and a broadcast names, for
// each receiver with link events unacknowledged, the last of them (f=),
// until that receiver has acknowledged it.
func TestOrderHeads(t *testing.T) {
	s := delivery.NewSender[int](0)
	ls := receivers(t, s, 2) // broadcast 1, acknowledged
	early := mustSend(t, s, ls[0], 1, t0)
	if early.Head.After != 1 {
		t.Errorf("a link event after broadcast 1 says a=%d", early.Head.After)
	}
	late := s.Open("slave", "3")
	if p := mustSend(t, s, late, 1, t0); p.Head.After != 0 {
		t.Errorf("a link event to a receiver that linked after broadcast 1 says a=%d; it is not owed 1", p.Head.After)
	}
	ps, err := s.Broadcast("slave", 2, at(1))
	if err != nil {
		t.Fatal(err)
	}
	want := []delivery.Fence{{Key: "1", Seq: 1}, {Key: "3", Seq: 1}}
	if !reflect.DeepEqual(ps[0].Head.Fence, want) || ps[0].Link != nil {
		t.Errorf("broadcast 2 published with fence %+v, want %+v (receiver 2 has nothing unacknowledged)", ps[0].Head.Fence, want)
	}
	for _, p := range ps[1:] {
		if p.Link != late || !reflect.DeepEqual(p.Head.Fence, []delivery.Fence{{Key: "3", Seq: 1}}) {
			t.Errorf("broadcast 2 sent on a link as %+v; want only to receiver 3 (it does not know its start), with its own entry", p)
		}
	}
	if p := mustSend(t, s, ls[1], 2, at(2)); p.Head.After != 2 {
		t.Errorf("a link event after broadcast 2 says a=%d", p.Head.After)
	}
	s.Acked(ls[0], 1, false, at(3))
	s.AckedAll(late, 2, false, at(3))
	// At 600 ms the timer publishes broadcast 2 again (receivers 1 and 2
	// lack it), and sends the unacknowledged link events again.
	var again []delivery.Head
	for _, p := range s.Tick(at(600)) {
		if p.Link == nil {
			again = append(again, p.Head)
		}
	}
	if len(again) != 1 || !reflect.DeepEqual(again[0].Fence, []delivery.Fence{{Key: "3", Seq: 1}}) {
		t.Errorf("broadcast 2 published again as %+v; want receiver 1 no longer fenced (it acknowledged its event)", again)
	}
}

// The receiver's side: a broadcast fenced on a link event it lacks is
// held, and the link event asked for; a link event after a broadcast it
// lacks likewise. Each is delivered as soon as what it waits for is.
func TestOrderHolds(t *testing.T) {
	r := delivery.NewReceiver[int]("1")
	r.Event(delivery.Head{Seq: 1, Floor: 1, All: true}, 100, t0) // its start: broadcast 1
	evs, acks := r.Broadcast(delivery.Head{Seq: 2, Floor: 1, Fence: []delivery.Fence{{Key: "9", Seq: 3}, {Key: "1", Seq: 1}}}, 200, at(1))
	if len(evs) != 0 || !slices.Contains(acks, delivery.Ack{UpTo: 0, Gap: true}) {
		t.Fatalf("broadcast 2, fenced on link event 1: delivered %v, acknowledged %+v; want held, and the link's first event asked for", evs, acks)
	}
	if evs, _ = r.Event(delivery.Head{Seq: 2, Floor: 1, After: 3}, 2, at(2)); len(evs) != 0 {
		t.Fatalf("link event 2 before 1 delivered %v", evs)
	}
	evs, _ = r.Event(delivery.Head{Seq: 1, Floor: 1}, 1, at(3))
	if !reflect.DeepEqual(evs, []int{1, 200}) {
		t.Fatalf("link event 1 delivered %v, want 1 then broadcast 2", evs)
	}
	evs, acks = r.Event(delivery.Head{Seq: 2, Floor: 1, After: 3}, 2, at(30))
	if len(evs) != 0 || !slices.Contains(acks, delivery.Ack{UpTo: 2, Gap: true, All: true}) {
		t.Fatalf("link event 2, after broadcast 3: delivered %v, acknowledged %+v; want held, and broadcast 3 asked for", evs, acks)
	}
	if got := r.Tick(at(100)); slices.Contains(got, delivery.Ack{UpTo: 2, Gap: true, All: true}) {
		t.Errorf("the tick acknowledged %+v; asked for broadcast 3 again within ResendFirst", got)
	}
	if got := r.Tick(at(530)); !slices.Contains(got, delivery.Ack{UpTo: 2, Gap: true, All: true}) {
		t.Errorf("the tick acknowledged %+v; want broadcast 3 asked for again, ResendFirst on, while link event 2 waits", got)
	}
	evs, _ = r.Broadcast(delivery.Head{Seq: 3, Floor: 1}, 300, at(531))
	if !reflect.DeepEqual(evs, []int{300, 2}) {
		t.Errorf("broadcast 3 delivered %v, want 3 then link event 2", evs)
	}
}

// In every order of arrival, with any of the messages lost in transit
// (and so sent again, as the acknowledgements ask), a receiver delivers
// a sender's link events and broadcasts in the order they were sent,
// each once, and the sender ends up holding nothing. Two receivers: one
// whose events interleave with the broadcasts, one that only has the
// broadcasts.
func TestOrderEveryArrival(t *testing.T) {
	// Sent: e1 to receiver 1, b2, e3 to 1, b4, e5 to 1 (ids are the send
	// order; odd ids are link events), after a first broadcast that tells
	// the receivers where their streams start.
	type msg struct {
		to   string // "1", "2", or "*" for every receiver
		head delivery.Head
		id   int
	}
	toMsg := func(p delivery.Publish[int]) msg {
		m := msg{to: "*", head: p.Head, id: p.Event}
		if p.Link != nil {
			m.to = p.Link.Key()
		}
		return m
	}
	scenario := func() (*delivery.Sender[int], []*delivery.OutLink[int], map[string]*delivery.Receiver[int], []msg) {
		s := delivery.NewSender[int](0)
		ls := []*delivery.OutLink[int]{s.Open("slave", "1"), s.Open("slave", "2")}
		rs := map[string]*delivery.Receiver[int]{"1": delivery.NewReceiver[int]("1"), "2": delivery.NewReceiver[int]("2")}
		ps, err := s.Broadcast("slave", 0, t0)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range slices.Clone(ps) {
			if p.Link != nil {
				_, acks := rs[p.Link.Key()].Event(p.Head, p.Event, t0)
				for _, a := range slices.Clone(acks) { // the first broadcast is acknowledged at once
					s.AckedAll(p.Link, a.UpTo, a.Gap, t0)
				}
			}
		}
		for i, l := range ls {
			for _, a := range rs[l.Key()].Tick(t0) {
				s.AckedAll(ls[i], a.UpTo, a.Gap, t0)
			}
		}
		var sent []msg
		add := func(ps []delivery.Publish[int], err error) {
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				sent = append(sent, toMsg(p))
			}
		}
		for id := 1; id <= 5; id++ {
			if id%2 == 1 {
				add(s.Send(ls[0], id, t0))
			} else {
				add(s.Broadcast("slave", id, t0))
			}
		}
		return s, ls, rs, sent
	}
	_, _, _, first := scenario()
	if len(first) != 5 {
		t.Fatalf("the scenario publishes %d messages, want 5", len(first))
	}
	var perms [][]int
	var permute func(prefix []int, rest []int)
	permute = func(prefix, rest []int) {
		if len(rest) == 0 {
			perms = append(perms, slices.Clone(prefix))
		}
		for i := range rest {
			permute(append(prefix, rest[i]), append(slices.Clone(rest[:i]), rest[i+1:]...))
		}
	}
	permute(nil, []int{0, 1, 2, 3, 4})
	runs := 0
	for _, perm := range perms {
		for lost := range 1 << 5 {
			runs++
			s, ls, rs, sent := scenario()
			links := map[string]*delivery.OutLink[int]{"1": ls[0], "2": ls[1]}
			got := map[string][]int{}
			now := t0
			var deliver func(m msg)
			answer := func(from string, acks []delivery.Ack) {
				for _, a := range acks {
					var ps []delivery.Publish[int]
					if a.All {
						ps = s.AckedAll(links[from], a.UpTo, a.Gap, now)
					} else {
						ps = s.Acked(links[from], a.UpTo, a.Gap, now)
					}
					for _, p := range slices.Clone(ps) {
						deliver(toMsg(p))
					}
				}
			}
			deliver = func(m msg) {
				for _, key := range []string{"1", "2"} {
					if m.to != "*" && m.to != key {
						continue
					}
					var evs []int
					var acks []delivery.Ack
					switch {
					case m.to == "*":
						evs, acks = rs[key].Broadcast(m.head, m.id, now)
					default:
						evs, acks = rs[key].Event(m.head, m.id, now)
					}
					got[key] = append(got[key], evs...)
					answer(key, slices.Clone(acks))
				}
			}
			for i, k := range perm {
				if lost&(1<<i) == 0 {
					deliver(sent[k])
				}
			}
			for step := 0; step < 400 && (s.Broadcasts() > 0 || ls[0].Unacked() > 0); step++ {
				now = now.Add(delivery.TickEvery)
				for _, key := range []string{"1", "2"} {
					answer(key, slices.Clone(rs[key].Tick(now)))
				}
				for _, p := range slices.Clone(s.Tick(now)) {
					deliver(toMsg(p))
				}
			}
			name := fmt.Sprintf("arrival order %v, lost %05b", perm, lost)
			if want := []int{1, 2, 3, 4, 5}; !reflect.DeepEqual(got["1"], want) {
				t.Fatalf("%s: receiver 1 delivered %v, want %v", name, got["1"], want)
			}
			if want := []int{2, 4}; !reflect.DeepEqual(got["2"], want) {
				t.Fatalf("%s: receiver 2 delivered %v, want %v", name, got["2"], want)
			}
			if s.Broadcasts() > 0 || ls[0].Unacked() > 0 {
				t.Fatalf("%s: the sender still holds %d broadcasts, %d events after %s", name, s.Broadcasts(), ls[0].Unacked(), now.Sub(t0))
			}
		}
	}
	t.Logf("%d schedules", runs)
}

// A receiver holds at most MaxHeld events of a stream while the first
// waits; what comes beyond is dropped unacknowledged, and asked for again
// as soon as the held ones are delivered.
func TestOrderHoldsAtMostMaxHeld(t *testing.T) {
	r := delivery.NewReceiver[int]("1")
	r.Event(delivery.Head{Seq: 1, Floor: 1, All: true}, 0, t0) // its start: broadcast 1
	for seq := uint64(1); seq <= delivery.MaxHeld+5; seq++ {
		if evs, _ := r.Event(delivery.Head{Seq: seq, Floor: 1, After: 2}, int(seq), t0); len(evs) != 0 {
			t.Fatalf("link event %d, after broadcast 2, delivered %v before it", seq, evs)
		}
	}
	evs, acks := r.Broadcast(delivery.Head{Seq: 2, Floor: 1}, -2, at(1))
	if len(evs) != delivery.MaxHeld+1 || evs[0] != -2 || evs[len(evs)-1] != delivery.MaxHeld {
		t.Fatalf("broadcast 2 released %d events (%v...), want it and the %d held", len(evs), evs[:min(3, len(evs))], delivery.MaxHeld)
	}
	if !slices.Contains(acks, delivery.Ack{UpTo: delivery.MaxHeld, Gap: true}) {
		t.Errorf("acknowledged %+v; want the events dropped while the stream was full asked for again", acks)
	}
	if evs, _ := r.Event(delivery.Head{Seq: delivery.MaxHeld + 1, Floor: 1, After: 2}, 0, at(2)); len(evs) != 1 {
		t.Errorf("the first event dropped, sent again, delivered %v", evs)
	}
}
