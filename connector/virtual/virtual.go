// Package virtual joins two links in one process with no network, as a
// slave and its instances are joined. It has the semantics of a network
// connector: messages arrive in the order they were sent, the receiver gets
// its own copy of every JSON payload, and closing either end closes the
// other. The Envelope itself is handed over, not copied: a link owns
// nothing it has sent (link.Connector), so the peer's link owns it, and a
// handler may keep it. A Go value (Envelope.Value) is shared as it is:
// links send only values that share no memory.
//
// It has no goroutines and no channels of its own: Send calls the peer's
// link on the sender's goroutine, with the sender's context. The link
// decides there whether the handler runs at once (a NonBlocking handler,
// whose response is then back before Send returns) or is handed to the
// link's own goroutines, and it keeps the order and the bounds.
//
//	a, b := virtual.Pair()
//	slaveSide, _ := link.New(a, slaveAddr, instanceAddr, catalog)
//	instanceSide, _ := link.New(b, instanceAddr, slaveAddr, catalog)
package virtual

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/linkfabric/linkfabric/link"
)

// Conn is one end of a virtual pair. It implements link.Connector.
type Conn struct {
	peer *Conn
	// closed is shared by both ends: the pair closes as one.
	closed *closeState

	// live is the receiver once this end has started and delivered its
	// backlog: Send reads it without a lock.
	live atomic.Pointer[link.Receiver]

	mu       sync.Mutex
	receiver link.Receiver
	started  bool
	backlog  []*link.Envelope // delivered to this end before it started
	told     bool             // receiver has been given StatusClosed
}

type closeState struct {
	once sync.Once
	done chan struct{}
}

// Pair returns two connected ends. What is sent on one is received by the
// link started on the other.
func Pair() (*Conn, *Conn) {
	cs := &closeState{done: make(chan struct{})}
	a, b := &Conn{closed: cs}, &Conn{closed: cs}
	a.peer, b.peer = b, a
	return a, b
}

// Start begins delivering to r. Messages sent to this end before Start are
// delivered first, in order.
func (c *Conn) Start(r link.Receiver) error {
	c.mu.Lock()
	c.receiver = r
	c.mu.Unlock()
	for {
		c.mu.Lock()
		backlog := c.backlog
		c.backlog = nil
		if len(backlog) == 0 {
			c.started = true
			c.live.Store(&r)
			// A pair closed before this end started: Close told no one.
			tell := c.isClosed() && !c.told
			c.told = c.told || tell
			c.mu.Unlock()
			if tell {
				r.Status(link.StatusClosed, nil)
			}
			return nil
		}
		c.mu.Unlock()
		for _, m := range backlog {
			_ = r.Receive(context.Background(), m) // it waits for room: nothing is lost
		}
	}
}

// Send delivers m to the peer's link, on the calling goroutine and with
// ctx, so messages sent one after another arrive in that order. m goes as
// it is, with its own copy of Data (the sender's bytes may be shared: a
// caller's buffer, a handler's constant) and of Error's code and text
// only; the caller must not use m once Send is called, as the connector
// contract says.
// It returns once the peer's link has taken the message, which may include
// handling it (link.NonBlocking); it waits only while the peer's link
// cannot take it (link.Receiver), until ctx ends. After either end has
// closed, Send fails with link.ErrSessionLost.
func (c *Conn) Send(ctx context.Context, m *link.Envelope) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.closed.done:
		return link.ErrSessionLost
	default:
	}
	if m.Data != nil {
		m.Data = slices.Clone(m.Data)
	}
	if m.Error != nil {
		// Only the code and the text cross a real wire.
		m.Error = &link.Error{Code: m.Error.Code, Message: m.Error.Message}
	}
	p := c.peer
	if r := p.live.Load(); r != nil {
		return (*r).Receive(ctx, m)
	}
	p.mu.Lock()
	if !p.started {
		p.backlog = append(p.backlog, m)
		p.mu.Unlock()
		return nil
	}
	r := p.receiver
	p.mu.Unlock()
	return r.Receive(ctx, m)
}

// CarriesValues reports true: a Envelope.Value reaches the peer's link as
// it is (link.ValueCarrier). Links send only values that share no memory.
func (c *Conn) CarriesValues() bool { return true }

// Flush returns at once: Send has delivered by the time it returns.
func (c *Conn) Flush(context.Context) error { return nil }

// Close closes both ends. The peer's link is told its session is over.
// Close is idempotent.
func (c *Conn) Close() error {
	first := false
	c.closed.once.Do(func() {
		close(c.closed.done)
		first = true
	})
	if !first {
		return nil
	}
	// Outside the Once: the peer's link answers by closing its own end.
	p := c.peer
	p.mu.Lock()
	tell := p.started && !p.told // otherwise the peer's Start tells it
	p.told = p.told || tell
	r := p.receiver
	p.mu.Unlock()
	if tell {
		r.Status(link.StatusClosed, nil)
	}
	return nil
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.closed.done:
		return true
	default:
		return false
	}
}
