package link

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/linkfabric/linkfabric/internal/codec"
	"github.com/linkfabric/linkfabric/messages"
)

// How inbound messages reach their handlers.
//
// A handler declared NonBlocking runs on the goroutine that delivers the
// message (the sender's own over connector/virtual, the routing goroutine
// over connector/nats): no hand-off, no goroutine. Other request handlers
// run on goroutines of the link's, at most opts.maxHandlers at once, each
// taking the next waiting request before it ends. Events are handled one
// at a time in arrival order: the event turn is taken by the delivering
// goroutine for a NonBlocking handler when no event is running or waiting,
// and otherwise by a goroutine of the link's that drains the queue.
//
// Every goroutine the link starts is counted (l.goroutines) until it ends,
// and every message from arrival until handled (l.inbound), so that
// CloseWait can wait for both.

// fifo is a queue, in order. It allocates only while it holds something.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) { q.items = append(q.items, v) }

func (q *fifo[T]) pop() (T, bool) {
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > 1024 {
			q.items = nil // give a large backlog's memory back
		}
	}
	return v, true
}

// drop empties the queue and returns how many it held.
func (q *fifo[T]) drop() int {
	n := q.len()
	q.items, q.head = nil, 0
	return n
}

// delivery is a request waiting for a handler, with the context it was
// delivered with: its requester waits for the handler, wherever it runs.
type delivery struct {
	m    *Envelope
	from context.Context
}

// receive takes one message from the connector.
func (l *Link) receive(ctx context.Context, m *Envelope) error {
	if !m.Local {
		l.stats.received.Add(1)
	}
	if m.Kind == messages.KindResponse {
		l.receiveResponse(m)
		return nil
	}
	if l.opts.observer != nil {
		l.opts.observer.Received(l.in, m)
	}
	switch m.Kind {
	case messages.KindRequest:
		return l.receiveRequest(ctx, m)
	case messages.KindEvent:
		return l.receiveEvent(ctx, m)
	}
	l.drop(m, fmt.Sprintf("unknown message kind %d", m.Kind))
	return nil
}

// receiveResponse hands a response to the request waiting for it.
func (l *Link) receiveResponse(m *Envelope) {
	var ended *asyncCall
	l.mu.Lock()
	c := l.pending[m.ID]
	if c != nil {
		if m.Type == "" {
			m.Type = c.typ // a connector need not carry it back
		}
		switch {
		case !c.deliverLocked(m):
			l.stats.invalid.Add(1) // a second response to one request: keep the first
		case c.async != nil && c.waiting:
			ended = c.async
			l.forgetLocked(m.ID)
		}
	}
	l.mu.Unlock()
	if l.opts.observer != nil && !m.Local {
		l.opts.observer.Received(l.in, m)
	}
	if c == nil {
		l.stats.late.Add(1)
		l.opts.logger.Debug("response to no pending request", "link", l.String(), "type", m.Type, "id", m.ID)
	}
	if ended != nil {
		ended.respond(m)
	}
}

// inline returns the handler of m's type, and whether m is handled on
// the delivering goroutine: its handler is NonBlocking, or it has none (it
// is refused or dropped at once); a message passing on to another
// endpoint is not (routing waits for the next hop). The inline path hands
// the handler on, so that a message costs one lookup of it.
func (l *Link) inline(m *Envelope) (*handler, bool) {
	if l.passing(m) {
		return nil, false // routing waits for the next hop
	}
	h := l.handlers[m.Type]
	return h, h == nil || h.nonBlocking // an asynchronous handler is NonBlocking
}

// takeIn counts a message in and returns with l.mu held, or reports false
// (l.mu released) if the link has closed: the message is dropped.
func (l *Link) takeIn() bool {
	l.mu.Lock()
	if l.state == stateClosed {
		l.mu.Unlock()
		return false
	}
	l.inbound++
	return true
}

func (l *Link) receiveRequest(ctx context.Context, m *Envelope) error {
	h, inline := l.inline(m)
	if !l.takeIn() {
		return nil
	}
	if inline {
		l.mu.Unlock()
		l.serve(ctx, m, h)
		return nil
	}
	if int(l.workers) < l.opts.maxHandlers {
		l.startWorkerLocked(m, ctx)
		l.mu.Unlock()
		return nil
	}
	// Every place is taken. A request sent from inside one of this link's
	// request handlers must not wait for a place (in the queue or for
	// room in it): the handler holding it may be the one waiting for its
	// response. It goes past the limit instead.
	l.mu.Unlock()
	nested := nestedIn(ctx, l, false)
	l.mu.Lock()
	for {
		switch {
		case l.state == stateClosed:
			l.endLocked()
			l.mu.Unlock()
			return nil
		case int(l.workers) < l.opts.maxHandlers || nested:
			l.startWorkerLocked(m, ctx)
			l.mu.Unlock()
			return nil
		case l.waiting.len() < l.opts.maxHandlers:
			l.waiting.push(delivery{m, ctx})
			l.mu.Unlock()
			return nil
		}
		if err := l.waitRoom(ctx); err != nil {
			return err
		}
	}
}

// startWorkerLocked serves m on a new goroutine of the link's, which then
// serves the requests waiting. l.mu must be held.
func (l *Link) startWorkerLocked(m *Envelope, from context.Context) {
	l.workers++
	l.goLocked(func() { l.work(delivery{m, from}) })
}

// work serves d, then the requests that wait, until there are none (or
// more handlers run than the limit: a handler's own request was let past
// it).
func (l *Link) work(d delivery) {
	for {
		l.serve(d.from, d.m, nil)
		l.mu.Lock()
		var ok bool
		if int(l.workers) <= l.opts.maxHandlers {
			d, ok = l.waiting.pop()
		}
		l.roomLocked()
		if !ok {
			l.workers--
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

func (l *Link) receiveEvent(ctx context.Context, m *Envelope) error {
	if !l.hasEvents {
		l.drop(m, "no event is valid on "+l.in.String())
		return nil
	}
	h, inline := l.inline(m)
	if !l.takeIn() {
		return nil
	}
	nested, traced := false, false
	for {
		switch {
		case l.state == stateClosed:
			l.endLocked()
			l.mu.Unlock()
			return nil
		case !l.eventBusy && inline:
			l.eventBusy = true
			l.mu.Unlock()
			l.handleEvent(l.eventCtxFrom(ctx, m), m, h)
			l.mu.Lock()
			l.endLocked()
			switch {
			case l.events.len() > 0:
				// What arrived meanwhile goes to a goroutine of the
				// link's: the sender has waited for its own event only.
				l.goLocked(l.drainEvents)
			case l.endAfterEvents:
				l.eventBusy, l.endAfterEvents = false, false
				l.finishLocked()
				return nil
			default:
				l.eventBusy = false
				l.roomLocked()
			}
			l.mu.Unlock()
			return nil
		case !l.eventBusy:
			l.eventBusy = true
			l.events.push(m)
			l.goLocked(l.drainEvents)
			l.mu.Unlock()
			return nil
		case l.events.len() < l.opts.eventQueue || nested:
			l.events.push(m)
			l.mu.Unlock()
			return nil
		}
		if !traced {
			// Sent from inside this link's running event handler, waiting
			// for room would wait for itself: the queue goes over its
			// bound instead, by what that handler's sends bring back.
			traced = true
			l.mu.Unlock()
			nested = nestedIn(ctx, l, true)
			l.mu.Lock()
			continue
		}
		if err := l.waitRoom(ctx); err != nil {
			return err
		}
	}
}

// eventCtxFrom returns the context of m, an event handled on the
// goroutine that delivered it with from. An event between the link's two
// ends (no Origin or Dst), from a sender outside any handler's chain
// (nestedIn: the trace ends at this handler either way), gets the link's
// one eventCtx, which never changes, with no allocation; any other a
// context of its own.
func (l *Link) eventCtxFrom(from context.Context, m *Envelope) *eventCtx {
	if m.Origin.IsZero() && m.Dst.IsZero() && from.Value(chainKey{}) == nil {
		return &l.eventCtx
	}
	return &eventCtx{l: l, from: from}
}

// drainEvents handles the queued events in order, on a goroutine of the
// link's, and gives up the event turn when there are none.
func (l *Link) drainEvents() {
	l.mu.Lock()
	for {
		m, ok := l.events.pop()
		l.roomLocked()
		if !ok {
			l.eventBusy = false
			if l.endAfterEvents {
				l.endAfterEvents = false
				l.finishLocked()
				return
			}
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		ctx := &l.eventCtx
		if !m.Origin.IsZero() || !m.Dst.IsZero() {
			// Its own: its ends are the event's, and a handler may keep
			// its context past the next event.
			ctx = &eventCtx{l: l}
		}
		l.handleEvent(ctx, m, nil)
		l.mu.Lock()
		l.endLocked()
	}
}

// waitRoom waits, for a message counted in but not taken, until the
// queue it waits for may have room. It is called and returns with l.mu
// held, unless it fails: then the message is counted out, l.mu is
// released, and the error is Receive's (nil when the link closed). A ctx
// that has ended already means the caller cannot wait: it fails at once.
func (l *Link) waitRoom(ctx context.Context) error {
	if l.room == nil {
		l.room = make(chan struct{})
	}
	room := l.room
	l.mu.Unlock()
	err := ctx.Err()
	if err == nil && !MayWait(ctx) {
		err = errNoRoom(l.String())
	}
	if err == nil {
		select {
		case <-room:
			l.mu.Lock()
			return nil
		case <-l.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	l.end()
	return err
}

// roomLocked wakes those waiting for room in a queue. l.mu must be held.
func (l *Link) roomLocked() {
	if l.room != nil {
		close(l.room)
		l.room = nil
	}
}

// goLocked runs f on a goroutine of the link's, counted until f returns
// (as nats-server's startGoRoutine does), so that CloseWait can wait for
// it. l.mu must be held.
func (l *Link) goLocked(f func()) {
	l.goroutines++
	go func() {
		defer func() {
			l.mu.Lock()
			l.goroutines--
			l.checkIdle()
			l.mu.Unlock()
		}()
		f()
	}()
}

// end counts a received message out: handled, or never to be.
func (l *Link) end() {
	l.mu.Lock()
	l.endLocked()
	l.mu.Unlock()
}

// endLocked is end with l.mu held.
func (l *Link) endLocked() {
	l.inbound--
	l.checkIdle()
}

func (l *Link) drop(m *Envelope, reason string) {
	l.stats.invalid.Add(1)
	l.opts.logger.Warn("dropped invalid message", "link", l.String(), "kind", m.Kind.String(), "type", m.Type, "reason", reason)
}

// serveState is what serving a request needs beyond the request: the
// handler's context and the response. A link that sends a request over a
// connector in this process (ValueCarrier) allocates it with the request
// (Envelope.spare), so that a request costs the two links one allocation
// between them; the peer's link claims it, once (a connector that
// delivered copies of one request would otherwise share it). Nothing of
// it is reused: the handler may keep its context, and the response goes
// to the requester.
type serveState struct {
	claimed atomic.Bool
	ctx     requestCtx
	resp    Envelope
	async   *asyncServe // an asynchronous handler's request's (runAsync)
}

// asyncServe is what a request given to an asynchronous handler
// (AsyncRequestHandler) needs besides its serveState: made apart, as
// most requests are not, and a serveState one word larger would cost
// every request of a virtual pair a larger allocation.
type asyncServe struct {
	replied atomic.Bool // the handler has replied, or panicked before
	start   time.Time   // when the handler started, for a HandlerObserver
}

// serve runs a request's handler and sends the response, or, for an
// asynchronous handler, leaves the response to its Reply. from is the
// context the request was delivered with; h is the handler of m.Type if
// the caller has it already (nil: look it up).
func (l *Link) serve(from context.Context, m *Envelope, h *handler) {
	deadline := m.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(l.opts.requestTimeout)
	}
	// The handler's context and the response: allocated with the request
	// by a requester in this process, else here, in one allocation.
	sv := m.spare
	if sv == nil || !sv.claimed.CompareAndSwap(false, true) {
		sv = new(serveState)
	}
	m.spare = nil
	sv.ctx = requestCtx{lazyDeadline: lazyDeadline{parent: l.ctx, deadline: deadline}, l: l, from: from}
	sv.resp = Envelope{Kind: messages.KindResponse, Type: m.Type, ID: m.ID, Reply: m.Reply}
	ctx := &sv.ctx
	ctx.src, ctx.dst = l.ends(m)
	var data []byte
	var value any
	var err error
	if l.passing(m) {
		data, err = l.routeRequest(ctx, m)
	} else {
		var later bool
		if data, value, later, err = l.dispatch(ctx, m, h, sv); later {
			return // the handler replies
		}
	}
	l.respond(sv, data, value, err)
}

// respond ends serving a request: it ends the handler's context, sends
// the response, and counts the request out.
func (l *Link) respond(sv *serveState, data []byte, value any, err error) {
	defer l.end()
	sv.ctx.finish()
	resp := &sv.resp
	if err != nil {
		resp.Error = asError(err)
		if resp.Error.Code == CodeInvalidMessage {
			l.stats.invalid.Add(1)
			l.opts.logger.Warn("refused invalid request", "link", l.String(), "type", resp.Type, "error", resp.Error.Message)
		}
	} else {
		resp.Data, resp.Value = data, value
	}
	// The response goes out even if the requester's deadline has passed:
	// it is cheap, and a requester with a longer clock may still want it.
	// Sending a response does not wait on the peer, so the link's own
	// context bounds it.
	typ := resp.Type // the connector owns resp once it is sent
	if err := l.transmit(l.ctx, resp); err != nil {
		if resp.Error == nil && errors.Is(err, ErrTooLarge) {
			// Tell the requester why instead of letting it time out. (A
			// connector that refused the response did not take it.)
			resp.Data, resp.Value, resp.Error = nil, nil, Errorf(CodeTooLarge, "%s: response too large: %v", typ, err)
			err = l.transmit(l.ctx, resp)
		}
		if err != nil {
			l.opts.logger.Warn("could not send response", "link", l.String(), "type", typ, "error", err)
		}
	}
}

// dispatch checks an inbound request and runs its handler. A panicking
// handler yields CodeInternal; the process goes on. later reports that
// the handler is an asynchronous one that has taken the request: it
// answers with sv.reply, maybe after dispatch returns.
func (l *Link) dispatch(ctx *requestCtx, m *Envelope, h *handler, sv *serveState) (data []byte, value any, later bool, err error) {
	def, h, err := l.lookup(m, messages.KindRequest, h)
	if err != nil {
		return nil, nil, false, err
	}
	ctx.def = def
	if err := l.authorized(ctx, def, m); err != nil {
		return nil, nil, false, err
	}
	if h.async {
		if err := l.startAsync(def); err != nil {
			return nil, nil, false, err
		}
		l.runAsync(ctx, m, h, sv)
		return nil, nil, true, nil
	}
	if o, ok := l.opts.observer.(HandlerObserver); ok {
		start := time.Now()
		defer func() { o.HandlerEnded(messages.KindRequest, def.Name(), err, time.Since(start)) }()
	}
	defer func() {
		if p := recover(); p != nil {
			l.opts.logger.Error("request handler panicked", "link", l.String(), "type", m.Type, "panic", p, "stack", string(debug.Stack()))
			data, value, err = nil, nil, Errorf(CodeInternal, "%s: handler failed unexpectedly", def.Name())
		}
	}()
	data, err = h.request(ctx, m)
	if err != nil {
		return nil, nil, false, err
	}
	if ctx.value != nil {
		return nil, ctx.value, false, nil // a typed handler's, checked
	}
	// A typed handler's response was checked as it was encoded, and a
	// forwarded one where it arrived.
	if !h.checked {
		if err := l.checkResponse(ctx, data); err != nil {
			return nil, nil, false, err
		}
	}
	return data, nil, false, nil
}

// checkResponse checks data, a handler's response to the request of
// ctx, unless it was checked where it arrived.
func (l *Link) checkResponse(ctx *requestCtx, data []byte) error {
	if ctx.wasChecked(data) {
		return nil
	}
	if verr := ctx.def.ValidateResponse(data); verr != nil {
		l.opts.logger.Error("handler returned an invalid response", "link", l.String(), "type", ctx.def.Name(), "error", verr)
		return &Error{Code: CodeInternal, Message: verr.Error(), cause: verr}
	}
	return nil
}

// startAsync counts in a request given to an asynchronous handler, or
// refuses it when as many wait for their replies as handlers may run.
func (l *Link) startAsync(def *messages.Definition) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(l.replies) >= l.opts.maxHandlers {
		return Errorf(CodeUnavailable, "%s: %s has %d requests waiting for their answers already: send it again once fewer are", def.Name(), l.self, l.replies)
	}
	l.replies++
	return nil
}

// runAsync runs an asynchronous handler. A panic before it replied
// answers CodeInternal.
func (l *Link) runAsync(ctx *requestCtx, m *Envelope, h *handler, sv *serveState) {
	sv.async = new(asyncServe)
	if _, ok := l.opts.observer.(HandlerObserver); ok {
		sv.async.start = time.Now()
	}
	defer func() {
		if p := recover(); p != nil {
			l.opts.logger.Error("request handler panicked", "link", l.String(), "type", m.Type, "panic", p, "stack", string(debug.Stack()))
			if sv.async.replied.CompareAndSwap(false, true) {
				sv.answer(nil, Errorf(CodeInternal, "%s: handler failed unexpectedly", ctx.def.Name()))
			}
		}
	}()
	ctx.reply = sv.reply
	_, _ = h.request(ctx, m)
}

// reply is an asynchronous handler's Reply.
func (sv *serveState) reply(data []byte, err error) {
	if !sv.async.replied.CompareAndSwap(false, true) {
		l := sv.ctx.l
		l.opts.logger.Error("request answered twice; the second answer is dropped", "link", l.String(), "type", sv.ctx.def.Name())
		return
	}
	sv.answer(data, err)
}

// answer sends an asynchronous handler's answer, once.
func (sv *serveState) answer(data []byte, err error) {
	ctx := &sv.ctx
	l := ctx.l
	if err == nil {
		err = l.checkResponse(ctx, data)
		if err != nil {
			data = nil
		}
	}
	if o, ok := l.opts.observer.(HandlerObserver); ok {
		o.HandlerEnded(messages.KindRequest, ctx.def.Name(), err, time.Since(sv.async.start))
	}
	l.mu.Lock()
	l.replies--
	l.mu.Unlock()
	l.respond(sv, data, nil, err)
}

// authorized asks the link's authorizer, if any, whether m, which
// declares a permission, may be handled.
func (l *Link) authorized(ctx context.Context, def *messages.Definition, m *Envelope) *Error {
	perm := def.Permission()
	if perm == "" || perm == messages.Unrestricted || l.opts.authorize == nil {
		return nil
	}
	err := l.opts.authorize(ctx, def, m)
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodePermissionDenied, Message: fmt.Sprintf("%s needs permission %s: %v", def.Name(), perm, err), cause: err}
}

// known checks that an inbound message is known, of the right kind, and
// valid on this link towards this side.
func (l *Link) known(m *Envelope, kind messages.Kind) (*messages.Definition, error) {
	def, ok := l.catalog.Lookup(m.Type)
	switch {
	case !ok:
		return nil, Errorf(CodeInvalidMessage, "unknown message type %q", m.Type)
	case def.Kind() != kind:
		return nil, Errorf(CodeInvalidMessage, "%s is %s, not %s", def.Name(), withArticle(def.Kind().String()), withArticle(kind.String()))
	case !def.ValidOn(l.in):
		return nil, Errorf(CodeInvalidMessage, "%s is not valid on %s", def.Name(), l.in)
	}
	return def, nil
}

// check is known, and checks the payload against its schema, as JSON (a
// message passed on travels as JSON).
func (l *Link) check(m *Envelope, kind messages.Kind) (*messages.Definition, error) {
	def, err := l.known(m, kind)
	if err != nil {
		return nil, err
	}
	if err := asData(def, m); err != nil {
		return nil, err
	}
	return def, nil
}

// asData makes m's payload JSON checked against def's schema: a Go value
// encoded (which checks it), or Data validated.
func asData(def *messages.Definition, m *Envelope) error {
	if m.Value != nil {
		data, err := codec.Marshal(def, false, m.Value)
		if err != nil {
			return invalid(err)
		}
		m.Data, m.Value = data, nil
	} else if err := def.ValidatePayload(m.Data); err != nil {
		return invalid(err)
	}
	return nil
}

// lookup is known, checks the payload against its schema, and finds the
// message's handler. h is the handler of m.Type, if the caller has it
// already (nil: look it up).
func (l *Link) lookup(m *Envelope, kind messages.Kind, h *handler) (*messages.Definition, *handler, error) {
	def, err := l.known(m, kind)
	if err != nil {
		return nil, nil, err
	}
	if h == nil {
		h = l.handlers[def.Name()]
	}
	if m.Value != nil {
		// The peer's link checked the value; this one checks it again,
		// as it would the JSON. Whoever does not take values, or could
		// read the payload before the handler (an authorizer), gets it
		// as JSON.
		switch {
		case !codec.ValueOK(def, false, m.Value):
		case h == nil || !h.values:
		case l.opts.authorize != nil && def.Permission() != "" && def.Permission() != messages.Unrestricted:
		default:
			return def, h, nil
		}
	}
	if err := asData(def, m); err != nil {
		return nil, nil, err
	}
	if h == nil {
		return nil, nil, Errorf(CodeNoHandler, "%s has no handler on %s", def.Name(), l.in)
	}
	return def, h, nil
}

func (l *Link) handleEvent(ctx *eventCtx, m *Envelope, h *handler) {
	if ctx != &l.eventCtx {
		ctx.src, ctx.dst = l.ends(m) // the link's own has its ends already (eventCtxFrom)
	}
	switch {
	case m.Dst.IsBroadcast() && m.Origin == l.self:
		return // its own broadcast, back: never delivered to its sender
	case l.passing(m):
		l.routeEvent(ctx, m, true)
		return
	}
	def, h, err := l.lookup(m, messages.KindEvent, h)
	if err != nil {
		l.drop(m, err.Error())
		return
	}
	if err := l.authorized(ctx, def, m); err != nil {
		l.stats.refused.Add(1)
		l.opts.logger.Debug("refused event", "link", l.String(), "type", m.Type, "error", err.Message)
		return
	}
	if m.Dst.IsBroadcast() && l.opts.router != nil {
		// For every endpoint of this one's type: this one, and the
		// others the router reaches (none, if it came from a router).
		// Only once it was taken here: a refused event goes nowhere.
		defer l.routeEvent(ctx, m, false)
	}
	if o, ok := l.opts.observer.(HandlerObserver); ok {
		start := time.Now()
		defer func() { o.HandlerEnded(messages.KindEvent, def.Name(), err, time.Since(start)) }()
	}
	defer func() {
		if p := recover(); p != nil {
			l.stats.handlerErrors.Add(1)
			l.opts.logger.Error("event handler panicked", "link", l.String(), "type", m.Type, "panic", p, "stack", string(debug.Stack()))
			err = Errorf(CodeInternal, "%s: handler failed unexpectedly", def.Name())
		}
	}()
	if err = h.event(ctx, m); err != nil {
		l.stats.handlerErrors.Add(1)
		l.opts.logger.Warn("event handler failed", "link", l.String(), "type", m.Type, "error", err)
	}
}
