package link

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkfabric/linkfabric/messages"
)

// ErrSetup is matched (with errors.Is) by every error Start returns for a
// link that is wired wrongly.
var ErrSetup = errors.New("link: bad setup")

// RequestHandler answers a request. It receives the request as it arrived,
// already checked against the message's schema, and returns the response
// payload. It runs in its own goroutine; ctx ends at the request's deadline
// or when the link closes.
type RequestHandler func(ctx context.Context, req *Message) ([]byte, error)

// EventHandler handles an event, already checked against the message's
// schema. Events of one link are handled one at a time, in the order they
// arrived. An error is logged and counted; the sender does not hear of it.
type EventHandler func(ctx context.Context, ev *Message) error

type handler struct {
	request RequestHandler
	event   EventHandler
	// checked: the handler's responses are already validated (typed
	// handlers encode through the schema).
	checked bool
	builtin bool
}

type state uint8

const (
	stateNew state = iota
	stateOpen
	stateClosing // Disconnect or the peer's prepare_disconnect: no new outbound requests
	stateClosed
)

// call is one outbound request waiting for its response.
type call struct {
	typ  string        // the request's message type
	done chan *Message // receives exactly one response
}

// Link is one side of a two-way channel between two endpoints. It checks
// every message it sends and receives against the catalog, dispatches
// received ones to handlers, and pairs requests with their responses.
//
// Attach handlers, then Start; after Start a Link is safe for concurrent use.
type Link struct {
	conn    Connector
	self    Address
	peer    Address
	in, out messages.Direction
	catalog *messages.Catalog
	opts    options

	handlers  map[string]*handler
	setupErrs []error

	ctx    context.Context // ends when the link closes; parent of handler contexts
	cancel context.CancelFunc
	events chan *Message
	done   chan struct{}

	mu       sync.Mutex
	state    state
	nextID   uint64
	pending  map[uint64]*call
	outbound int           // requests sent and not yet ended
	inbound  int           // requests and events received and not yet handled
	idle     chan struct{} // closed when outbound and inbound reach zero

	stats struct {
		sent, received, invalid, refused, late, handlerErrors atomic.Uint64
	}
}

// New returns a link from self to peer carried by conn. Every message it
// sends or receives must be in catalog and valid on the link in that
// direction. The link does nothing until Start.
func New(conn Connector, self, peer Address, catalog *messages.Catalog, opts ...Option) (*Link, error) {
	if err := self.Validate(); err != nil {
		return nil, err
	}
	if err := peer.Validate(); err != nil {
		return nil, err
	}
	if self.Type == peer.Type {
		return nil, fmt.Errorf("link: %s and %s are the same endpoint type", self, peer)
	}
	if conn == nil || catalog == nil {
		return nil, errors.New("link: connector and catalog are required")
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{
		conn:     conn,
		self:     self,
		peer:     peer,
		in:       messages.Direction{Source: peer.Type, Target: self.Type},
		out:      messages.Direction{Source: self.Type, Target: peer.Type},
		catalog:  catalog,
		opts:     o,
		handlers: map[string]*handler{},
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
		pending:  map[uint64]*call{},
	}
	l.attachBuiltins()
	return l, nil
}

// Self returns the address of this side of the link.
func (l *Link) Self() Address { return l.self }

// Peer returns the address of the other side.
func (l *Link) Peer() Address { return l.peer }

// String returns the link's direction of travel for outbound messages and
// the peer, e.g. "master-slave (slave/3)".
func (l *Link) String() string { return l.out.String() + " (" + l.peer.String() + ")" }

// Done is closed when the link has closed.
func (l *Link) Done() <-chan struct{} { return l.done }

// attachBuiltins answers the link-level requests every link of the right
// kind must answer. An application handler attached later replaces them.
func (l *Link) attachBuiltins() {
	if messages.Ping.ValidOn(l.in) {
		l.handlers[messages.Ping.Name()] = &handler{builtin: true, request: func(context.Context, *Message) ([]byte, error) {
			return []byte("{}"), nil
		}}
	}
	if messages.PrepareDisconnect.ValidOn(l.in) {
		l.handlers[messages.PrepareDisconnect.Name()] = &handler{builtin: true, request: l.prepareDisconnect}
	}
}

// HandleRequestJSON attaches h to answer requests of type m on this link.
// Mistakes (m not in the catalog, not a request, not valid towards this
// side, already handled) are reported by Start. Call it before Start.
func (l *Link) HandleRequestJSON(m messages.Message, h RequestHandler) {
	l.attach(m, messages.KindRequest, &handler{request: h})
}

// HandleEventJSON attaches h to handle events of type m on this link.
// Mistakes are reported by Start. Call it before Start.
func (l *Link) HandleEventJSON(m messages.Message, h EventHandler) {
	l.attach(m, messages.KindEvent, &handler{event: h})
}

func (l *Link) attach(m messages.Message, kind messages.Kind, h *handler) {
	def := m.Def()
	if l.state != stateNew {
		panic(fmt.Sprintf("link %s: handler for %s attached after Start", l, def.Name()))
	}
	fail := func(format string, args ...any) {
		l.setupErrs = append(l.setupErrs, fmt.Errorf("%w: link %s: %s: %s", ErrSetup, l.in, def.Name(), fmt.Sprintf(format, args...)))
	}
	switch {
	case !l.catalog.Contains(def):
		fail("not in the link's catalog")
	case def.Kind() != kind:
		fail("is %s, not %s", withArticle(def.Kind().String()), withArticle(kind.String()))
	case !def.ValidOn(l.in):
		fail("is not valid on %s, so it never arrives here", l.in)
	case l.handlers[def.Name()] != nil && !l.handlers[def.Name()].builtin:
		fail("already has a handler")
	default:
		l.handlers[def.Name()] = h
	}
}

// Handles reports whether m has a handler on this link, the link's own
// built-in ones (ping, prepare_disconnect) included.
func (l *Link) Handles(m messages.Message) bool { return l.handlers[m.Def().Name()] != nil }

// Start checks that every message that can arrive on the link has a
// handler, then begins receiving. A link that is the target of a message it
// cannot handle is an error now, not when the message arrives: every such
// message is named in the error, which matches ErrSetup.
func (l *Link) Start() error {
	if l.state != stateNew {
		return fmt.Errorf("%w: link %s: started twice", ErrSetup, l)
	}
	var missing []string
	hasEvents := false
	for _, def := range l.catalog.On(l.in) {
		if l.handlers[def.Name()] == nil {
			missing = append(missing, def.Name())
		}
		hasEvents = hasEvents || def.Kind() == messages.KindEvent
	}
	errs := slices.Clone(l.setupErrs)
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("%w: link %s: no handler for %s", ErrSetup, l.in, strings.Join(missing, ", ")))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if hasEvents {
		l.events = make(chan *Message, l.opts.eventQueue)
		go l.handleEvents()
	}
	l.mu.Lock()
	l.state = stateOpen
	l.mu.Unlock()
	if err := l.conn.Start(receiver{l}); err != nil {
		l.closeWith(ErrSessionLost)
		return fmt.Errorf("link %s: start connector: %w", l, err)
	}
	return nil
}

// RequestJSON sends a request of type m with a JSON payload and waits for
// its response payload. The payload is checked against the schema before
// anything is sent. It returns when the response arrives, the handler's
// error comes back (as an *Error), ctx ends (ErrTimeout at its deadline),
// or the link closes (ErrSessionLost). A ctx without deadline gets the
// link's request timeout.
func (l *Link) RequestJSON(ctx context.Context, m messages.Message, payload []byte) ([]byte, error) {
	def := m.Def()
	if err := l.checkOutbound(def, messages.KindRequest); err != nil {
		return nil, err
	}
	if err := def.ValidatePayload(payload); err != nil {
		return nil, invalid(err)
	}
	return l.request(ctx, def, payload, false)
}

// ForwardRequest sends a request that arrived on another link on to this
// link's peer, keeping its type and payload, and returns the response. The
// payload was validated on arrival and is not checked again; ctx should be
// the handler's, so the original deadline carries over.
func (l *Link) ForwardRequest(ctx context.Context, req *Message) ([]byte, error) {
	def, ok := l.catalog.Lookup(req.Type)
	if !ok {
		return nil, Errorf(CodeInvalidMessage, "%s is not in the catalog of link %s", req.Type, l)
	}
	if err := l.checkOutbound(def, messages.KindRequest); err != nil {
		return nil, err
	}
	return l.request(ctx, def, req.Data, false)
}

// EmitJSON sends an event of type m with a JSON payload, checked against
// the schema first. It returns once the connector has taken the event.
func (l *Link) EmitJSON(ctx context.Context, m messages.Message, payload []byte) error {
	def := m.Def()
	if err := l.checkOutbound(def, messages.KindEvent); err != nil {
		return err
	}
	if err := def.ValidatePayload(payload); err != nil {
		return invalid(err)
	}
	return l.emit(ctx, &Message{Kind: KindEvent, Type: def.Name(), Data: payload})
}

// ForwardEvent sends an event that arrived on another link on to this
// link's peer, keeping its type, payload and origin. The payload was
// validated on arrival and is not checked again.
func (l *Link) ForwardEvent(ctx context.Context, ev *Message) error {
	def, ok := l.catalog.Lookup(ev.Type)
	if !ok {
		return Errorf(CodeInvalidMessage, "%s is not in the catalog of link %s", ev.Type, l)
	}
	if err := l.checkOutbound(def, messages.KindEvent); err != nil {
		return err
	}
	return l.emit(ctx, &Message{Kind: KindEvent, Type: ev.Type, Data: ev.Data, Origin: ev.Origin})
}

func (l *Link) emit(ctx context.Context, m *Message) error {
	l.mu.Lock()
	st := l.state
	l.mu.Unlock()
	switch st {
	case stateNew:
		return Errorf(CodeUnavailable, "link %s is not started", l)
	case stateClosed:
		return Errorf(CodeSessionLost, "link %s is closed", l)
	}
	if err := l.conn.Send(ctx, m); err != nil {
		return sendError(m.Type, err)
	}
	l.sent(m)
	return nil
}

// sent counts a message the connector took.
func (l *Link) sent(m *Message) {
	l.stats.sent.Add(1)
	if l.opts.observer != nil {
		l.opts.observer.Sent(l.out, m)
	}
}

// checkOutbound refuses, before anything is sent, a message that the peer
// would refuse.
func (l *Link) checkOutbound(def *messages.Definition, kind messages.Kind) error {
	if !l.catalog.Contains(def) {
		return Errorf(CodeInvalidMessage, "%s is not in the catalog of link %s", def.Name(), l)
	}
	return checkKind(def, kind, l.out)
}

// checkKind refuses a message of def that is not of kind or not valid on
// out, the way it would travel.
func checkKind(def *messages.Definition, kind messages.Kind, out messages.Direction) error {
	switch {
	case def.Kind() != kind:
		return Errorf(CodeInvalidMessage, "%s is %s, not %s", def.Name(), withArticle(def.Kind().String()), withArticle(kind.String()))
	case !def.ValidOn(out):
		return Errorf(CodeInvalidMessage, "%s is not valid on %s", def.Name(), out)
	}
	return nil
}

// withArticle returns "a request", "an event".
func withArticle(noun string) string {
	if strings.IndexByte("aeiou", noun[0]) >= 0 {
		return "an " + noun
	}
	return "a " + noun
}

func invalid(err error) *Error {
	return &Error{Code: CodeInvalidMessage, Message: err.Error(), cause: err}
}

// request sends a checked request and waits for its end. internal requests
// (prepare_disconnect) are allowed while the link is closing.
func (l *Link) request(ctx context.Context, def *messages.Definition, payload []byte, internal bool) (data []byte, err error) {
	if o := l.opts.observer; o != nil {
		start := time.Now()
		defer func() { o.RequestEnded(def.Name(), err, time.Since(start)) }()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opts.requestTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	c := &call{typ: def.Name(), done: make(chan *Message, 1)}

	l.mu.Lock()
	switch {
	case l.state == stateNew:
		l.mu.Unlock()
		return nil, Errorf(CodeUnavailable, "link %s is not started", l)
	case l.state == stateClosed:
		l.mu.Unlock()
		return nil, Errorf(CodeSessionLost, "%s: link %s is closed", def.Name(), l)
	case l.state == stateClosing && !internal:
		l.mu.Unlock()
		return nil, Errorf(CodeUnavailable, "%s: link %s is disconnecting", def.Name(), l)
	}
	l.nextID++
	id := l.nextID
	l.pending[id] = c
	l.outbound++
	l.mu.Unlock()
	defer l.endCall(id)

	start := time.Now()
	m := &Message{Kind: KindRequest, Type: def.Name(), ID: id, Data: payload, Deadline: deadline}
	if err := l.conn.Send(ctx, m); err != nil {
		return nil, sendError(def.Name(), err)
	}
	l.sent(m)
	select {
	case resp := <-c.done:
		if resp.Error != nil {
			return nil, resp.Error
		}
		if err := def.ValidateResponse(resp.Data); err != nil {
			return nil, invalid(err)
		}
		return resp.Data, nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &Error{Code: CodeTimeout, cause: context.DeadlineExceeded,
				Message: fmt.Sprintf("%s: no response from %s within %s", def.Name(), l.peer, time.Since(start).Round(time.Millisecond))}
		}
		return nil, fmt.Errorf("link: %s: %w", def.Name(), ctx.Err())
	}
}

func (l *Link) endCall(id uint64) {
	l.mu.Lock()
	delete(l.pending, id)
	l.outbound--
	l.checkIdle()
	l.mu.Unlock()
}

// sendError explains a connector's refusal in the link's terms.
func sendError(name string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeTimeout, Message: name + ": could not be sent before the deadline", cause: err}
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("link: %s: %w", name, err)
	}
	return &Error{Code: CodeUnavailable, Message: name + ": " + err.Error(), cause: err}
}

// receiver is the Link's side of its connector; it keeps Receive and
// Status out of the Link's public API.
type receiver struct{ l *Link }

func (r receiver) Receive(ctx context.Context, m *Message) error { return r.l.receive(ctx, m) }

func (r receiver) Status(s Status, err error) {
	l := r.l
	if s == StatusClosed {
		reason := Errorf(CodeSessionLost, "link %s closed by its peer", l)
		if err != nil {
			reason = Errorf(CodeSessionLost, "link %s closed: %v", l, err)
		}
		l.closeWith(reason)
		_ = l.conn.Close()
	}
	if l.opts.onStatus != nil {
		l.opts.onStatus(s)
	}
}

func (l *Link) receive(ctx context.Context, m *Message) error {
	if !m.Local { // a response the connector made itself came from no one
		l.stats.received.Add(1)
	}
	var c *call
	if m.Kind == KindResponse {
		l.mu.Lock()
		c = l.pending[m.ID]
		l.mu.Unlock()
		if c != nil && m.Type == "" {
			m.Type = c.typ // a connector need not carry it back
		}
	}
	if l.opts.observer != nil {
		l.opts.observer.Received(l.in, m)
	}
	switch m.Kind {
	case KindResponse:
		if c == nil {
			l.stats.late.Add(1)
			l.opts.logger.Debug("response to no pending request", "link", l.String(), "type", m.Type, "id", m.ID)
			return nil
		}
		select {
		case c.done <- m:
		default: // a second response to one request: keep the first
			l.stats.invalid.Add(1)
		}
	case KindRequest:
		if !l.begin() {
			return nil
		}
		go l.serve(m)
	case KindEvent:
		if l.events == nil {
			l.drop(m, "no event is valid on "+l.in.String())
			return nil
		}
		if !l.begin() {
			return nil
		}
		select {
		case l.events <- m:
			return nil
		default:
		}
		if err := ctx.Err(); err != nil { // the caller cannot wait
			l.end()
			return err
		}
		select {
		case l.events <- m:
		case <-l.done:
			l.end()
		case <-ctx.Done():
			l.end()
			return ctx.Err()
		}
	default:
		l.drop(m, fmt.Sprintf("unknown message kind %d", m.Kind))
	}
	return nil
}

// begin counts an inbound message in, unless the link has closed.
func (l *Link) begin() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == stateClosed {
		return false
	}
	l.inbound++
	return true
}

func (l *Link) end() {
	l.mu.Lock()
	l.inbound--
	l.checkIdle()
	l.mu.Unlock()
}

// checkIdle wakes the waiters of wait when either count reaches zero
// (waitOutbound needs only outbound; each waiter checks its own condition
// again). l.mu must be held.
func (l *Link) checkIdle() {
	if l.idle != nil && (l.outbound == 0 || l.inbound == 0) {
		close(l.idle)
		l.idle = nil
	}
}

func (l *Link) drop(m *Message, reason string) {
	l.stats.invalid.Add(1)
	l.opts.logger.Warn("dropped invalid message", "link", l.String(), "kind", m.Kind.String(), "type", m.Type, "reason", reason)
}

// serve runs a request's handler and sends the response.
func (l *Link) serve(m *Message) {
	defer l.end()
	deadline := m.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(l.opts.requestTimeout)
	}
	ctx, cancel := context.WithDeadline(l.ctx, deadline)
	data, err := l.dispatch(ctx, m)
	cancel()

	resp := &Message{Kind: KindResponse, Type: m.Type, ID: m.ID, Reply: m.Reply}
	if err != nil {
		resp.Error = asError(err)
		if resp.Error.Code == CodeInvalidMessage {
			l.stats.invalid.Add(1)
			l.opts.logger.Warn("refused invalid request", "link", l.String(), "type", m.Type, "error", resp.Error.Message)
		}
	} else {
		resp.Data = data
	}
	// The response goes out even if the requester's deadline has passed:
	// it is cheap, and a requester with a longer clock may still want it.
	// Sending a response does not wait on the peer, so the link's own
	// context bounds it.
	if err := l.conn.Send(l.ctx, resp); err != nil {
		if resp.Error == nil && errors.Is(err, ErrTooLarge) {
			// Tell the requester why instead of letting it time out.
			resp.Data, resp.Error = nil, Errorf(CodeTooLarge, "%s: response too large: %v", m.Type, err)
			err = l.conn.Send(l.ctx, resp)
		}
		if err != nil {
			l.opts.logger.Warn("could not send response", "link", l.String(), "type", m.Type, "error", err)
			return
		}
	}
	l.sent(resp)
}

// dispatch checks an inbound request and runs its handler. A panicking
// handler yields CodeInternal; the process goes on.
func (l *Link) dispatch(ctx context.Context, m *Message) (data []byte, err error) {
	def, h, err := l.lookup(m, messages.KindRequest)
	if err != nil {
		return nil, err
	}
	if err := l.authorized(ctx, def, m); err != nil {
		return nil, err
	}
	if o, ok := l.opts.observer.(HandlerObserver); ok {
		start := time.Now()
		defer func() { o.HandlerEnded(KindRequest, def.Name(), err, time.Since(start)) }()
	}
	defer func() {
		if p := recover(); p != nil {
			l.opts.logger.Error("request handler panicked", "link", l.String(), "type", m.Type, "panic", p, "stack", string(debug.Stack()))
			data, err = nil, Errorf(CodeInternal, "%s: handler failed unexpectedly", def.Name())
		}
	}()
	data, err = h.request(ctx, m)
	if err != nil {
		return nil, err
	}
	if !h.checked {
		if verr := def.ValidateResponse(data); verr != nil {
			l.opts.logger.Error("handler returned an invalid response", "link", l.String(), "type", m.Type, "error", verr)
			return nil, &Error{Code: CodeInternal, Message: verr.Error(), cause: verr}
		}
	}
	return data, nil
}

// authorized asks the link's authorizer, if any, whether m, which
// declares a permission, may be handled.
func (l *Link) authorized(ctx context.Context, def *messages.Definition, m *Message) *Error {
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

// lookup checks that an inbound message is known, of the right kind, valid
// on this link towards this side, and matches its schema.
func (l *Link) lookup(m *Message, kind messages.Kind) (*messages.Definition, *handler, error) {
	def, ok := l.catalog.Lookup(m.Type)
	switch {
	case !ok:
		return nil, nil, Errorf(CodeInvalidMessage, "unknown message type %q", m.Type)
	case def.Kind() != kind:
		return nil, nil, Errorf(CodeInvalidMessage, "%s is %s, not %s", def.Name(), withArticle(def.Kind().String()), withArticle(kind.String()))
	case !def.ValidOn(l.in):
		return nil, nil, Errorf(CodeInvalidMessage, "%s is not valid on %s", def.Name(), l.in)
	}
	if err := def.ValidatePayload(m.Data); err != nil {
		return nil, nil, invalid(err)
	}
	h := l.handlers[def.Name()]
	if h == nil {
		return nil, nil, Errorf(CodeNoHandler, "%s has no handler on %s", def.Name(), l.in)
	}
	return def, h, nil
}

// handleEvents runs event handlers one at a time, in arrival order.
func (l *Link) handleEvents() {
	for {
		select {
		case m := <-l.events:
			l.handleEvent(m)
			l.end()
		case <-l.done:
			return
		}
	}
}

func (l *Link) handleEvent(m *Message) {
	def, h, err := l.lookup(m, messages.KindEvent)
	if err != nil {
		l.drop(m, err.Error())
		return
	}
	if err := l.authorized(l.ctx, def, m); err != nil {
		l.stats.refused.Add(1)
		l.opts.logger.Debug("refused event", "link", l.String(), "type", m.Type, "error", err.Message)
		return
	}
	if o, ok := l.opts.observer.(HandlerObserver); ok {
		start := time.Now()
		defer func() { o.HandlerEnded(KindEvent, def.Name(), err, time.Since(start)) }()
	}
	defer func() {
		if p := recover(); p != nil {
			l.stats.handlerErrors.Add(1)
			l.opts.logger.Error("event handler panicked", "link", l.String(), "type", m.Type, "panic", p, "stack", string(debug.Stack()))
			err = Errorf(CodeInternal, "%s: handler failed unexpectedly", def.Name())
		}
	}()
	if err = h.event(l.ctx, m); err != nil {
		l.stats.handlerErrors.Add(1)
		l.opts.logger.Warn("event handler failed", "link", l.String(), "type", m.Type, "error", err)
	}
}

// prepareDisconnect is the built-in handler of prepare_disconnect: stop
// sending new requests, let the ones in flight end, then answer. The peer
// closes the link once it has the answer.
func (l *Link) prepareDisconnect(ctx context.Context, _ *Message) ([]byte, error) {
	l.mu.Lock()
	if l.state == stateOpen {
		l.state = stateClosing
	}
	l.mu.Unlock()
	if err := l.waitOutbound(ctx); err != nil {
		return nil, Errorf(CodeTimeout, "requests still in flight: %v", err)
	}
	return []byte("{}"), nil
}

// Disconnect closes the link gracefully: it refuses new outbound requests,
// tells the peer (prepare_disconnect, where the link has it) so that the
// peer stops sending requests too, waits until the requests and events in
// flight both ways have ended and the connector has the peer's word for
// everything sent (Connector.Flush), stops the connector if it can
// (Stopper) and lets the handlers of what it delivered finish, then
// closes. ctx bounds the wait; when it ends first the link closes anyway
// and the error says so.
func (l *Link) Disconnect(ctx context.Context) error {
	l.mu.Lock()
	if l.state != stateOpen {
		st := l.state
		l.mu.Unlock()
		if st == stateNew {
			return l.Close()
		}
		// Closing already (the peer's prepare_disconnect, or another
		// Disconnect): wait for that, as long as ctx allows.
		select {
		case <-l.done:
			return nil
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("link %s: disconnect: %w", l, ctx.Err()), l.Close())
		}
	}
	l.state = stateClosing
	l.mu.Unlock()
	if err := errors.Join(l.drain(ctx), l.stop(ctx), l.Close()); err != nil {
		return fmt.Errorf("link %s: disconnect: %w", l, err)
	}
	return nil
}

// stop ends the connector's delivery, if it can (Stopper), and waits, as
// long as ctx allows, for the handlers of what it delivered to finish:
// what arrives between the drain and the close is neither dropped by the
// link nor told to the peer as arrived. (Close alone drops what waits for
// a handler.)
func (l *Link) stop(ctx context.Context) error {
	s, ok := l.conn.(Stopper)
	if !ok {
		return nil
	}
	if err := s.Stop(ctx); err != nil {
		return err
	}
	return l.wait(ctx, func() bool { return l.inbound == 0 })
}

// Drain does what Disconnect does before it closes, and leaves the link
// open: it refuses new outbound requests, tells the peer, and waits until
// what is in flight both ways has ended and the peer has everything sent.
// The link still handles what arrives and may still send events, so that
// an endpoint closing many links can drain them all before it closes any
// (Close follows). On a link that is not open, or is closing already, it
// does nothing.
func (l *Link) Drain(ctx context.Context) error {
	l.mu.Lock()
	if l.state != stateOpen {
		l.mu.Unlock()
		return nil
	}
	l.state = stateClosing
	l.mu.Unlock()
	if err := l.drain(ctx); err != nil {
		return fmt.Errorf("link %s: drain: %w", l, err)
	}
	return nil
}

// drain tells the peer and waits for what is in flight; the caller has set
// the state to closing.
func (l *Link) drain(ctx context.Context) error {
	var errs []error
	if messages.PrepareDisconnect.ValidOn(l.out) {
		if _, err := l.request(ctx, messages.PrepareDisconnect.Definition, []byte("{}"), true); err != nil {
			errs = append(errs, fmt.Errorf("prepare_disconnect: %w", err))
		}
	}
	if err := l.waitIdle(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := l.conn.Flush(ctx); err != nil {
		errs = append(errs, fmt.Errorf("events not acknowledged: %w", err))
	}
	return errors.Join(errs...)
}

// waitOutbound waits until no outbound request is in flight.
func (l *Link) waitOutbound(ctx context.Context) error {
	return l.wait(ctx, func() bool { return l.outbound == 0 })
}

// waitIdle waits until nothing is in flight either way.
func (l *Link) waitIdle(ctx context.Context) error {
	return l.wait(ctx, func() bool { return l.outbound == 0 && l.inbound == 0 })
}

func (l *Link) wait(ctx context.Context, done func() bool) error {
	for {
		l.mu.Lock()
		if done() {
			l.mu.Unlock()
			return nil
		}
		if l.idle == nil {
			l.idle = make(chan struct{})
		}
		idle := l.idle
		out, in := l.outbound, l.inbound
		l.mu.Unlock()
		select {
		case <-idle:
		case <-l.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%d requests sent and %d messages received still in flight: %w", out, in, ctx.Err())
		}
	}
}

// Close closes the link at once. Pending requests fail with ErrSessionLost,
// running handlers see their context end, what waits for a handler is
// dropped, and the peer's link closes too. Close is idempotent.
func (l *Link) Close() error {
	// The connector first: it stops delivering before the link stops
	// taking messages, so that it tells the peer of nothing the link
	// never took (connector/nats acknowledges events as it delivers them).
	err := l.conn.Close()
	l.closeWith(Errorf(CodeSessionLost, "link %s closed", l))
	return err
}

func (l *Link) closeWith(reason *Error) {
	l.mu.Lock()
	if l.state == stateClosed {
		l.mu.Unlock()
		return
	}
	l.state = stateClosed
	pending := l.pending
	l.pending = map[uint64]*call{}
	if l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
	l.mu.Unlock()

	close(l.done)
	l.cancel()
	for _, c := range pending {
		select {
		case c.done <- &Message{Kind: KindResponse, Error: reason}:
		default:
		}
	}
}

// Stats counts what a link has done since it was created.
type Stats struct {
	Sent          uint64 // messages handed to the connector
	Received      uint64 // messages the connector delivered
	Invalid       uint64 // received messages refused or dropped as invalid
	Refused       uint64 // received events the authorizer refused (requests are answered instead)
	Late          uint64 // responses that arrived after their request ended
	HandlerErrors uint64 // event handlers that failed or panicked
	Pending       int    // outbound requests waiting for a response now
}

// Stats returns the link's counters. It is safe to call at any time.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	pending := len(l.pending)
	l.mu.Unlock()
	return Stats{
		Sent:          l.stats.sent.Load(),
		Received:      l.stats.received.Load(),
		Invalid:       l.stats.invalid.Load(),
		Refused:       l.stats.refused.Load(),
		Late:          l.stats.late.Load(),
		HandlerErrors: l.stats.handlerErrors.Load(),
		Pending:       pending,
	}
}
