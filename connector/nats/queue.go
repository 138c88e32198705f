package nats

import (
	"sync"

	"github.com/linkfabric/linkfabric/link"
)

// queue holds the messages waiting for one link, in order. It never blocks
// the sender, holds at most limit messages, and allocates only while there
// is a backlog: an idle peer costs nothing.
type queue struct {
	mu    sync.Mutex
	items []*link.Message
	head  int
	limit int
	ready chan struct{} // signalled when a message arrives in an empty queue
}

func newQueue(limit int) *queue {
	return &queue{limit: limit, ready: make(chan struct{}, 1)}
}

// push adds m, unless limit messages are waiting already.
func (q *queue) push(m *link.Message) bool {
	q.mu.Lock()
	n := len(q.items) - q.head
	if n >= q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, m)
	q.mu.Unlock()
	if n == 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// pop takes the oldest message, or reports that there is none.
func (q *queue) pop() (*link.Message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return nil, false
	}
	m := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		// Empty: start again at the front, and give a large backlog's
		// memory back.
		if cap(q.items) > 1024 {
			q.items = nil
		} else {
			q.items = q.items[:0]
		}
		q.head = 0
	}
	return m, true
}
