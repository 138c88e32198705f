package nats

import (
	"testing"

	"github.com/linkfabric/linkfabric/link"
)

// A peer's queue keeps order, refuses past its limit without blocking,
// signals a consumer when a message arrives in an empty queue, and gives
// back a backlog's memory once drained.
func TestQueue(t *testing.T) {
	q := newQueue(3000)
	msgs := make([]*link.Message, 3001)
	for i := range msgs {
		msgs[i] = &link.Message{ID: uint64(i)}
	}
	for i, m := range msgs[:3000] {
		if !q.push(m) {
			t.Fatalf("push %d refused below the limit", i)
		}
	}
	if q.push(msgs[3000]) {
		t.Fatal("push past the limit accepted")
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("no signal for the first message")
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
	if !q.push(msgs[0]) {
		t.Fatal("push after draining refused")
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("no signal after the queue emptied and filled again")
	}
}
