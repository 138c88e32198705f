package delivery_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

// A request is sent again after RequestRTO of silence, then after twice
// as long each time, with what is left of its budget, until its deadline;
// then it ends, once, with ErrTimeout.
func TestRequestsRetransmitUntilTheDeadline(t *testing.T) {
	tab := delivery.NewRequests[string](0)
	a, err := tab.Send("q", at(10000), t0)
	if err != nil || a.Wire != 1 || a.Budget != 10*time.Second || a.Low != 1 || a.Req != "q" {
		t.Fatalf("Send = %+v, %v", a, err)
	}
	var sentAt []int
	var ended []delivery.Ended[string]
	for ms := 0; ms <= 11000; ms += 50 {
		asks, e := tab.Tick(at(ms))
		for _, a := range asks {
			if a.Budget != time.Duration(10000-ms)*time.Millisecond {
				t.Errorf("sent again at %d ms with a budget of %s", ms, a.Budget)
			}
			sentAt = append(sentAt, ms)
		}
		for _, x := range e {
			x.Wire = uint64(ms) // when, for the message
			ended = append(ended, x)
		}
	}
	if want := []int{1000, 3000, 7000}; !reflect.DeepEqual(sentAt, want) {
		t.Errorf("sent again at %v ms, want %v", sentAt, want)
	}
	if len(ended) != 1 || !errors.Is(ended[0].Err, delivery.ErrTimeout) || ended[0].Wire != 10050 || ended[0].Req != "q" {
		t.Errorf("ended as %+v, want once, with ErrTimeout, at the first tick past the deadline", ended)
	}
	if _, ok := tab.End(1); ok {
		t.Error("a response after the request ended was taken")
	}
	if _, err := tab.Send("late", t0, t0); !errors.Is(err, delivery.ErrTimeout) {
		t.Errorf("Send with its deadline passed: %v, want ErrTimeout", err)
	}
}

// A request ends once: with its response, which a copy of the response
// does not repeat.
func TestRequestsEndOnce(t *testing.T) {
	tab := delivery.NewRequests[string](0)
	tab.Send("q", at(5000), t0)
	if req, ok := tab.End(1); !ok || req != "q" {
		t.Fatalf("End = %q, %v", req, ok)
	}
	if _, ok := tab.End(1); ok {
		t.Error("a copy of the response ended the request again")
	}
	if asks, ended := tab.Tick(at(6000)); len(asks)+len(ended) != 0 {
		t.Errorf("an answered request was sent again (%v) or ended again (%v)", asks, ended)
	}
}

// While nothing subscribes to a request's subject, the request is sent
// again after NoRespondersFirst, doubling to NoRespondersMax, for the
// table's noRespondersFor; then it ends with ErrNoResponders (it
// certainly did not run). A deadline that comes first ends the retries.
func TestRequestsNoResponders(t *testing.T) {
	tab := delivery.NewRequests[string](time.Second)
	tab.Send("q", at(60000), t0)
	var waits []time.Duration
	now := t0
	for {
		e, ended := tab.NoResponders(1, now)
		if ended {
			if !errors.Is(e.Err, delivery.ErrNoResponders) || e.Req != "q" {
				t.Fatalf("ended as %+v, want ErrNoResponders", e)
			}
			break
		}
		next, ok := tab.NextRetry()
		if !ok {
			t.Fatal("no retry planned")
		}
		if asks, _ := tab.Tick(next.Add(-time.Millisecond)); len(asks) != 0 {
			t.Fatalf("sent again before its retry was due")
		}
		asks, _ := tab.Tick(next)
		if len(asks) != 1 {
			t.Fatalf("not sent again when its retry was due: %v", asks)
		}
		waits = append(waits, next.Sub(now))
		now = next
	}
	ms := time.Millisecond
	if want := []time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 250 * ms, 250 * ms, 250 * ms}; !reflect.DeepEqual(waits, want) || now.Sub(t0) != 1050*ms {
		t.Errorf("waited %v, ending %s after the first send; want %v, ending at the first word past a second (1.05s)", waits, now.Sub(t0), want)
	}

	short := delivery.NewRequests[string](time.Second)
	short.Send("q", at(30), t0)
	if e, ended := short.NoResponders(1, at(15)); !ended || !errors.Is(e.Err, delivery.ErrNoResponders) {
		t.Errorf("a retry past the deadline was planned: %+v, %v", e, ended)
	}
}

// A request whose first copy NATS did not refuse may have reached the
// peer before it went: when its later copies find nothing subscribed, it
// ends with ErrSessionLost (it may have run), not ErrNoResponders.
func TestRequestsNoRespondersAfterACopyMayHaveArrived(t *testing.T) {
	tab := delivery.NewRequests[string](time.Second)
	tab.Send("q", at(60000), t0) // delivered, say; then the peer is killed
	now := t0.Add(delivery.RequestRTO)
	if asks, _ := tab.Tick(now); len(asks) != 1 {
		t.Fatalf("a silent request was not sent again: %v", asks)
	}
	for {
		e, ended := tab.NoResponders(1, now) // the copies sent again find nothing
		if ended {
			if !errors.Is(e.Err, delivery.ErrSessionLost) {
				t.Fatalf("ended with %v, want ErrSessionLost: its first copy may have run", e.Err)
			}
			return
		}
		next, ok := tab.NextRetry()
		if !ok {
			t.Fatal("no retry planned")
		}
		now = next
		if asks, _ := tab.Tick(now); len(asks) != 1 {
			t.Fatalf("not sent again when its retry was due: %v", asks)
		}
	}
}

// The low mark is the oldest request still waiting: every one below it
// has ended, so a responder may forget them.
func TestRequestsLowMark(t *testing.T) {
	tab := delivery.NewRequests[int](0)
	if tab.Low() != 1 {
		t.Fatalf("an empty table's low mark is %d, want 1", tab.Low())
	}
	for i := 1; i <= 3; i++ {
		tab.Send(i, at(5000), t0)
	}
	for _, step := range []struct {
		answer uint64
		low    uint64
	}{{1, 2}, {3, 2}, {2, 4}} {
		tab.End(step.answer)
		if tab.Low() != step.low {
			t.Errorf("after %d answered, the low mark is %d, want %d", step.answer, tab.Low(), step.low)
		}
	}
	if a, _ := tab.Send(4, at(5000), t0); a.Low != 4 || a.Wire != 4 {
		t.Errorf("the next request says %+v, want wire 4, low 4", a)
	}
}

// A requester sends no request RequestWindow or more past its oldest
// still waiting (a responder would refuse it): Send says ErrWindow until
// the oldest ends, and the one it then gives is within the window.
func TestRequestsWindow(t *testing.T) {
	tab := delivery.NewRequests[int](0)
	for i := 1; i <= delivery.RequestWindow; i++ {
		a, err := tab.Send(i, at(5000), t0)
		if err != nil {
			t.Fatalf("request %d of the first %d: %v", i, delivery.RequestWindow, err)
		}
		tab.End(a.Wire) // answered at once: the window moves with it
	}
	slow, _ := tab.Send(0, at(5000), t0) // stays waiting
	for i := 1; i < delivery.RequestWindow; i++ {
		a, err := tab.Send(i, at(5000), t0)
		if err != nil {
			t.Fatalf("request %d behind the slow one: %v", i, err)
		}
		tab.End(a.Wire)
	}
	if tab.Room() {
		t.Errorf("Room with %d requests sent since the oldest waiting", delivery.RequestWindow-1)
	}
	if _, err := tab.Send(-1, at(5000), t0); !errors.Is(err, delivery.ErrWindow) {
		t.Fatalf("a request %d past the oldest waiting: %v, want ErrWindow", delivery.RequestWindow, err)
	}
	tab.End(slow.Wire)
	a, err := tab.Send(-1, at(5000), t0)
	if err != nil || a.Wire-a.Low >= delivery.RequestWindow {
		t.Errorf("once the oldest ended: %+v, %v; want a request within the window", a, err)
	}
}

// When the connection comes back every request waiting is sent again;
// when the link closes every one ends with ErrSessionLost, and the table
// takes no more.
func TestRequestsResumeAndClose(t *testing.T) {
	tab := delivery.NewRequests[int](0)
	tab.Send(1, at(5000), t0)
	tab.Send(2, at(5000), t0)
	tab.End(1)
	if asks := tab.Resumed(at(100)); len(asks) != 1 || asks[0].Wire != 2 || asks[0].Low != 2 {
		t.Errorf("Resumed = %+v, want request 2 again, low 2", asks)
	}
	if asks, _ := tab.Tick(at(1000)); len(asks) != 0 {
		t.Errorf("sent again %v within RequestRTO of resuming", asks)
	}
	ended := tab.Close()
	if len(ended) != 1 || ended[0].Wire != 2 || !errors.Is(ended[0].Err, delivery.ErrSessionLost) {
		t.Errorf("Close ended %+v, want request 2 with ErrSessionLost", ended)
	}
	if _, err := tab.Send(3, at(5000), t0); !errors.Is(err, delivery.ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
}
