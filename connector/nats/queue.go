package nats

import (
	"sync"

	"github.com/linkfabric/linkfabric/link"
)

// queue holds the messages waiting for one link, in order. While nothing
// waits, a message goes to the link directly, on the goroutine that routed
// it; once one has had to wait (the link could not take it), the
// following ones wait behind it until the connector's own goroutine has
// delivered them all. The queue never blocks the sender, holds at most
// limit messages, and allocates only while there is a backlog.
type queue struct {
	mu       sync.Mutex
	items    []*link.Envelope
	head     int
	limit    int
	draining bool          // a backlog is being delivered: newcomers wait behind it
	ready    chan struct{} // signalled when a backlog begins
	idle     chan struct{} // closed when a backlog is over; nil while no one waits for it
}

// newQueue returns a queue that holds messages until its consumer starts.
func newQueue(limit int) *queue {
	return &queue{limit: limit, draining: true, ready: make(chan struct{}, 1)}
}

// offer takes m. It reports direct if nothing waits, so the caller should
// deliver m itself, and ok false if m had to wait but the queue is full.
func (q *queue) offer(m *link.Envelope) (direct, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.draining && q.head == len(q.items) {
		return true, true
	}
	return false, q.pushLocked(m)
}

// handOver queues m, which could not be delivered directly, and wakes the
// consumer: what follows waits behind it.
func (q *queue) handOver(m *link.Envelope) bool {
	q.mu.Lock()
	ok := q.pushLocked(m)
	q.draining = true
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return ok
}

func (q *queue) pushLocked(m *link.Envelope) bool {
	if len(q.items)-q.head >= q.limit && m != closeNotice {
		return false
	}
	q.items = append(q.items, m)
	return true
}

// pop takes the oldest message. When there is none, the backlog is over:
// the consumer has handed the last one on, and newcomers go directly to
// the link again.
func (q *queue) pop() (*link.Envelope, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		q.draining = false
		if q.idle != nil {
			close(q.idle)
			q.idle = nil
		}
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

// room reports whether k more messages could be taken now.
func (q *queue) room(k int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return !q.draining || len(q.items)-q.head+k <= q.limit
}

// len returns how many messages wait.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// drained returns a channel closed once no backlog is left: the consumer
// has handed every message on. It returns nil if none is left now.
func (q *queue) drained() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.draining && q.head == len(q.items) {
		return nil
	}
	if q.idle == nil {
		q.idle = make(chan struct{})
	}
	return q.idle
}
