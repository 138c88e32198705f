package link

import (
	"context"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/messages"
)

// The contexts handlers run with. A request handler's context ends at the
// requester's deadline, yet costs no timer unless the handler waits on it:
// most handlers never call Done, and a timer per request (with its entry
// among the link context's children) was a measurable part of a virtual
// request. Both kinds also tell the link which handler a message sent from
// inside it comes from (see nestedIn).

// chainKey is the context key under which a handler's context finds itself,
// through any context derived from it.
type chainKey struct{}

// handlerContext is a context the link gave to a handler.
type handlerContext interface {
	context.Context
	// handler returns the link whose handler runs with the context,
	// whether it is an event handler (which holds the link's event turn),
	// and the context the message was delivered with when its sender
	// waits for the handler: a request's, and an event's handled on the
	// delivering goroutine (nil otherwise).
	handler() (l *Link, event bool, from context.Context)
}

// nestedIn reports whether a message delivered with ctx comes from inside
// a handler of l (with event, an event handler of l) that waits for it to
// be taken: running further up this goroutine's stack, or waiting for the
// response to a request whose handler sends it. Such a message must not
// wait for that handler to end: it would wait for itself. A handler's
// sends are traced through the context they are given, so a handler that
// sends with a context not derived from its own is not recognised; over a
// connector that crosses processes the trace ends.
func nestedIn(ctx context.Context, l *Link, event bool) bool {
	for ctx != nil {
		hc, ok := ctx.Value(chainKey{}).(handlerContext)
		if !ok {
			return false
		}
		hl, ev, from := hc.handler()
		if hl == l && (ev || !event) {
			return true
		}
		ctx = from
	}
	return false
}

// eventCtx is an event handler's context: it ends when the link closes.
type eventCtx struct {
	l        *Link
	from     context.Context
	src, dst Address // the event's ends (Source, Destination)
}

func (c *eventCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *eventCtx) Done() <-chan struct{}       { return c.l.ctx.Done() }
func (c *eventCtx) Err() error                  { return c.l.ctx.Err() }

// Value answers the link context's own keys, so that contexts derived from
// this one hang directly off the link's and context.Cause agrees with Err.
func (c *eventCtx) Value(key any) any {
	if key == (chainKey{}) {
		return c
	}
	return c.l.ctx.Value(key)
}

func (c *eventCtx) handler() (*Link, bool, context.Context) { return c.l, true, c.from }

func (c *eventCtx) String() string { return "link.eventContext(" + c.l.String() + ")" }

// lazyDeadline is what context.WithDeadline(parent, deadline) would be,
// cancelled by finish, without the timer until Done is first called:
//
//   - Deadline is deadline.
//   - Err is nil until parent ends, the deadline passes, or finish is
//     called; then parent's error, context.DeadlineExceeded or
//     context.Canceled. It reads the clock, so it is right without Done
//     having been called, and once it has reported an error it never
//     changes.
//   - Done is closed when Err becomes non-nil (at the deadline by a timer
//     made on the first call to Done).
//   - Once Done has been called, contexts derived from it (WithCancel,
//     AfterFunc, ...) hang directly off the context Done made.
type lazyDeadline struct {
	parent   context.Context
	deadline time.Time

	mu    sync.Mutex
	inner context.Context    // made by the first Done
	stop  context.CancelFunc // inner's
	err   error              // the error Err reported before inner was made
}

func (c *lazyDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *lazyDeadline) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		// The inner context must report what Err has reported already.
		switch c.err {
		case nil:
			c.inner, c.stop = context.WithDeadline(c.parent, c.deadline)
		case context.DeadlineExceeded:
			// Past already: done at once, and no timer.
			c.inner, c.stop = context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
		default:
			c.inner, c.stop = context.WithCancel(context.WithoutCancel(c.parent))
			c.stop()
		}
	}
	return c.inner.Done()
}

func (c *lazyDeadline) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner != nil {
		return c.inner.Err()
	}
	if c.err == nil {
		if err := c.parent.Err(); err != nil {
			c.err = err
		} else if !time.Now().Before(c.deadline) {
			c.err = context.DeadlineExceeded
		}
	}
	return c.err
}

// pending returns, while c has neither made its timer nor ended, what
// ends it but the deadline (its parent's Done) and the deadline, so that a
// goroutine can wait for c with a timer of its own that it reuses (see
// call.until), rather than have Done make one per context. Only for a c
// that nothing but that goroutine finishes: finish closes no channel
// until Done has made one. ok is false otherwise: then wait on Done.
func (c *lazyDeadline) pending() (parentDone <-chan struct{}, deadline time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner != nil || c.err != nil {
		return nil, time.Time{}, false
	}
	return c.parent.Done(), c.deadline, true
}

// innerValue answers key from the context Done made, if it has.
func (c *lazyDeadline) innerValue(key any) (any, bool) {
	c.mu.Lock()
	inner := c.inner
	c.mu.Unlock()
	if inner == nil {
		return nil, false
	}
	return inner.Value(key), true
}

// finish ends the context.
func (c *lazyDeadline) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner != nil {
		c.stop()
		return
	}
	if c.err == nil {
		c.err = context.Canceled
	}
}

// timeoutCtx is the context of a request sent with a ctx that has no
// deadline: ctx's values, and the link's request timeout, costing no timer
// when the response is back before anything waits (a NonBlocking handler
// over a virtual pair).
type timeoutCtx struct{ lazyDeadline }

func (c *timeoutCtx) Value(key any) any {
	if v, ok := c.innerValue(key); ok {
		return v
	}
	return c.parent.Value(key)
}

// requestCtx is a request handler's context: lazyDeadline of the link's
// context and the requester's deadline (or the link's request timeout
// from arrival, for a request that came without one), finished when the
// handler returns. It has none of the requester's values: they do not
// cross a link. context.Cause is Err.
type requestCtx struct {
	lazyDeadline
	l    *Link
	from context.Context
	def  *messages.Definition

	src, dst Address // the request's ends (Source, Destination)

	checked []byte // guarded by mu: a response of def already checked where it arrived
	value   any    // a typed handler's response as a Go value, checked; set on the handler's goroutine before it returns
	reply   Reply  // an asynchronous handler's (see asyncRequest)
}

// Value answers, once Done has made the inner context, its keys: contexts
// derived from this one then hang directly off it.
func (c *requestCtx) Value(key any) any {
	if key == (chainKey{}) {
		return c
	}
	v, _ := c.innerValue(key)
	return v
}

func (c *requestCtx) handler() (*Link, bool, context.Context) { return c.l, false, c.from }

func (c *requestCtx) String() string {
	return "link.requestContext(" + c.l.String() + ", deadline " + c.deadline.String() + ")"
}

// markChecked records a response of def that was checked where it arrived,
// so that the handler returning these very bytes does not check them
// again.
func (c *requestCtx) markChecked(def *messages.Definition, data []byte) {
	if def != c.def || len(data) == 0 {
		return
	}
	c.mu.Lock()
	c.checked = data
	c.mu.Unlock()
}

// wasChecked reports whether data is the response markChecked recorded:
// the same bytes, not merely equal ones.
func (c *requestCtx) wasChecked(data []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(data) > 0 && len(data) == len(c.checked) && &data[0] == &c.checked[0]
}
