package nats

import (
	"testing"

	"github.com/linkfabric/linkfabric/link"
)

// A peer's queue holds messages until its consumer starts, keeps order,
// refuses past its limit without blocking, then lets messages go directly
// to the link while nothing waits, and makes them wait again behind one
// that could not be delivered; it gives back a backlog's memory once
// drained.
func TestQueue(t *testing.T) {
	q := newQueue(3000)
	msgs := make([]*link.Envelope, 3001)
	for i := range msgs {
		msgs[i] = &link.Envelope{ID: uint64(i)}
	}
	for i, m := range msgs[:3000] {
		if direct, ok := q.offer(m); direct || !ok {
			t.Fatalf("offer %d before the consumer started = direct %v, ok %v; want queued", i, direct, ok)
		}
	}
	if _, ok := q.offer(msgs[3000]); ok {
		t.Fatal("offer past the limit accepted")
	}
	for i := range 3000 {
		m, ok := q.pop()
		if !ok || m.ID != uint64(i) {
			t.Fatalf("pop %d = %v, %v", i, m, ok)
		}
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop from an empty queue")
	}
	if cap(q.items) != 0 {
		t.Errorf("a drained backlog keeps %d slots", cap(q.items))
	}
	if direct, ok := q.offer(msgs[0]); !direct || !ok {
		t.Fatalf("offer with nothing waiting = direct %v, ok %v; want direct", direct, ok)
	}
	select {
	case <-q.ready:
		t.Fatal("a signal without a backlog")
	default:
	}
	q.handOver(msgs[1])
	select {
	case <-q.ready:
	default:
		t.Fatal("no signal when a backlog began")
	}
	if direct, _ := q.offer(msgs[2]); direct {
		t.Fatal("a message went directly while another waited")
	}
	for _, want := range []uint64{1, 2} {
		if m, ok := q.pop(); !ok || m.ID != want {
			t.Fatalf("pop = %v, %v; want %d", m, ok, want)
		}
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop from an empty queue")
	}
	if direct, _ := q.offer(msgs[3]); !direct {
		t.Fatal("the backlog is over but messages still wait")
	}
}
