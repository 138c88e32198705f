package delivery_test

import (
	"testing"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

// The responder's memory: a request is handled once; a copy while its
// handler runs is ignored, a copy after is answered with the response
// kept; a request below the requester's low mark is forgotten, and its
// copies ignored.
func TestServed(t *testing.T) {
	alice := delivery.Requester{Session: "a1", Conn: 1}
	bob := delivery.Requester{Session: "b1", Conn: 1}
	served := map[delivery.Requester]*delivery.Served[string]{alice: delivery.NewServed[string](), bob: delivery.NewServed[string]()}
	deadline := at(5000)
	for _, step := range []struct {
		name    string
		from    delivery.Requester
		id, low uint64
		answer  string // Answered with it before the step, if set
		want    delivery.Verdict
		resp    string
	}{
		{"a new request is handled", alice, 1, 1, "", delivery.Handle, ""},
		{"a copy while its handler runs is ignored", alice, 1, 1, "", delivery.Ignore, ""},
		{"another requester's request of the same id is its own (on its own link)", bob, 1, 1, "", delivery.Handle, ""},
		{"a copy once answered gets the response again", alice, 1, 1, "one", delivery.Answer, "one"},
		{"the next request", alice, 2, 1, "", delivery.Handle, ""},
		{"a request whose low mark passes 1", alice, 3, 2, "", delivery.Handle, ""},
		{"a copy of 1, after the requester said it has the response", alice, 1, 1, "", delivery.Ignore, ""},
	} {
		s := served[step.from]
		if step.answer != "" {
			s.Answered(step.from, step.id, step.answer)
		}
		v, resp := s.Take(step.from, step.id, step.low, deadline)
		if v != step.want || resp != step.resp {
			t.Errorf("%s: Take = %v, %q; want %v, %q", step.name, v, resp, step.want, step.resp)
		}
	}
	if a, _ := served[alice].Len(); a != 2 { // 2, 3
		t.Errorf("%d requests of alice's remembered, want 2", a)
	}
}

// A requester that went quiet never says it has its responses: they are
// dropped ServedOverdue after the deadline, on the sweep, but the
// requests are still known, so that a copy held up for longer (on a
// frozen broker node) is ignored, not run again. Nor does the memory
// forget a requester's low mark.
func TestServedAfterTheDeadline(t *testing.T) {
	alice := delivery.Requester{Session: "a1", Conn: 1}
	s := delivery.NewServed[string]()
	s.Take(alice, 1, 1, at(1000))
	s.Answered(alice, 1, "one")
	s.Take(alice, 2, 2, at(1000)) // the low mark passes 1
	s.Answered(alice, 2, "two")
	s.Sweep(at(1999)) // within ServedOverdue of the deadline: kept
	if v, resp := s.Take(alice, 2, 2, at(1000)); v != delivery.Answer || resp != "two" {
		t.Errorf("a copy within ServedOverdue of the deadline: %v, %q; want the response again", v, resp)
	}
	s.Sweep(at(2001)) // too soon after the last sweep
	if _, responses := s.Len(); responses != 1 {
		t.Errorf("a sweep within ServedSweep of the last dropped a response")
	}
	s.Sweep(at(3000))
	if n, responses := s.Len(); n != 1 || responses != 0 {
		t.Errorf("after the sweep: %d requests, %d responses kept; want 1, 0", n, responses)
	}
	for _, id := range []uint64{1, 2} {
		if v, _ := s.Take(alice, id, 1, at(60000)); v != delivery.Ignore {
			t.Errorf("a copy of request %d long after its deadline: %v, want Ignore (its handler ran)", id, v)
		}
	}
	if v, _ := s.Take(alice, 3, 3, at(60000)); v != delivery.Handle {
		t.Errorf("a new request after all that: %v, want Handle", v)
	}
	if n, _ := s.Len(); n != 1 {
		t.Errorf("%d requests remembered after the low mark passed 2, want 1", n)
	}
}

// What a peer may make a responder keep is bounded whatever it claims:
// a request RequestWindow or more past its requester's low mark is
// refused, and so is a requester beyond MaxRequesters; a refused request
// leaves nothing behind, and the requesters taken carry on.
func TestServedBounded(t *testing.T) {
	s := delivery.NewServed[string]()
	var from []delivery.Requester
	for i := range delivery.MaxRequesters {
		r := delivery.Requester{Session: "s1", Conn: uint64(i + 1)}
		from = append(from, r)
		if v, _ := s.Take(r, 1, 1, at(5000)); v != delivery.Handle {
			t.Fatalf("requester %d: %v, want Handle", i+1, v)
		}
	}
	other := delivery.Requester{Session: "evil", Conn: 1}
	if v, _ := s.Take(other, 1, 1, at(5000)); v != delivery.OtherRequester {
		t.Errorf("requester %d: %v, want OtherRequester", delivery.MaxRequesters+1, v)
	}
	alice := from[0]
	for _, step := range []struct {
		name    string
		id, low uint64
		want    delivery.Verdict
	}{
		{"the last id of the window", delivery.RequestWindow, 1, delivery.Handle},
		{"the first id past it", delivery.RequestWindow + 1, 1, delivery.TooFarAhead},
		{"far past it, with the low mark that would make it fit", 1 << 40, 1<<40 - 10, delivery.Handle},
		{"below the low mark that request raised: not run again", 2, 2, delivery.Ignore},
		{"a low mark of 0 from then on", 1<<40 + delivery.RequestWindow, 0, delivery.TooFarAhead},
		{"within the window of the low mark kept", 1<<40 + 1, 0, delivery.Handle},
	} {
		if v, _ := s.Take(alice, step.id, step.low, at(5000)); v != step.want {
			t.Errorf("%s (id %d, low %d): %v, want %v", step.name, step.id, step.low, v, step.want)
		}
	}
	if n, _ := s.Len(); n != delivery.MaxRequesters+1 { // one per other requester, alice's two past 1<<40-10
		t.Errorf("%d requests remembered, want %d: a refused one was kept", n, delivery.MaxRequesters+1)
	}
	// However many a requester sends with its low mark held down, at most
	// RequestWindow are kept.
	b := delivery.NewServed[string]()
	for id := uint64(1); id <= 3*delivery.RequestWindow; id++ {
		b.Take(alice, id, 1, at(5000))
		b.Answered(alice, id, "r")
	}
	if n, responses := b.Len(); n != delivery.RequestWindow || responses != delivery.RequestWindow {
		t.Errorf("%d requests, %d responses kept, want %d each", n, responses, delivery.RequestWindow)
	}
}
