package link

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkfabric/linkfabric/internal/codec"
	"github.com/linkfabric/linkfabric/messages"
)

// ErrSetup is matched (with errors.Is) by every error Start returns for a
// link that is wired wrongly.
var ErrSetup = errors.New("link: bad setup")

// RequestHandler answers a request. It receives the request as it arrived,
// already checked against the message's schema, and returns the response
// payload. It runs on a goroutine of the link's (at most WithMaxHandlers at
// once), or, declared NonBlocking, on the goroutine that delivered the
// request. ctx ends at the request's deadline, when the link closes, or
// when the handler returns; it carries none of the requester's values. It
// costs no timer unless the handler calls ctx.Done; ctx.Err reports
// context.DeadlineExceeded once the deadline has passed either way. req is
// the handler's: neither link nor the sender uses it again, so the handler
// may keep it, its Data included. The link does not keep the returned
// payload either.
type RequestHandler func(ctx context.Context, req *Envelope) ([]byte, error)

// AsyncRequestHandler answers a request now or later: it is given reply,
// which it must call exactly once, before or after it returns, from any
// goroutine. It runs on the goroutine that delivers the request, as a
// NonBlocking handler does, and must not block either; it starts what
// ends later (ForwardRequestAsync) and returns. Until reply is called the
// request holds its place: ctx (as a RequestHandler's) ends at the
// requester's deadline, when the link closes, or once reply is called;
// the link counts the request in flight (Disconnect, Drain and CloseWait
// wait for it); and it counts against WithMaxHandlers, as many such
// requests waiting for their replies as handlers may run: past that, a
// request is refused with CodeUnavailable. A handler that panics before
// it replies answers CodeInternal. One that never replies leaves its
// requester to time out and CloseWait to wait until its ctx ends. req is
// the handler's, as a RequestHandler's is.
type AsyncRequestHandler func(ctx context.Context, req *Envelope, reply Reply)

// Reply answers the request an AsyncRequestHandler was given: with data,
// the response payload, or with err, which reaches the requester as a
// RequestHandler's error does. data is checked against the schema
// (CodeInternal if it fails), unless it is, unmodified, a response
// ForwardRequestAsync gave with the handler's ctx: that was checked as it
// arrived. Reply sends the response and returns: it waits for nothing (it
// hands the response to the connector), so it may be called from a
// ForwardRequestAsync done. Only the first call counts; a second is
// logged and ignored. The link does not keep data.
type Reply func(data []byte, err error)

// EventHandler handles an event, already checked against the message's
// schema. Events of one link are handled one at a time, in the order they
// arrived. An error is logged and counted; the sender does not hear of it.
// ctx ends when the link closes. ev is the handler's, as a RequestHandler's
// req is.
type EventHandler func(ctx context.Context, ev *Envelope) error

type handler struct {
	request RequestHandler // for an asynchronous handler, asyncRequest's
	event   EventHandler
	// values: the handler takes Envelope.Value (typed handlers; a typed
	// request handler may answer with a Go value, see requestCtx.value);
	// others get Data. (No field more than needed: the master holds a
	// handler per message for every slave.)
	values bool
	// checked: the handler's responses are already validated (typed
	// handlers encode through the schema).
	checked     bool
	builtin     bool
	nonBlocking bool
	async       bool // an AsyncRequestHandler, in request (see asyncRequest)
}

// HandlerOption qualifies a handler as it is attached.
type HandlerOption func(*handler)

// NonBlocking declares that the handler returns promptly without waiting:
// it sends no request (Request, RequestJSON, ForwardRequest), does not
// close the link, and waits neither on ctx.Done nor on anything another
// message must release (a channel, a lock held across such a wait, I/O).
// The link then runs it on the goroutine that delivers the message, with
// no hand-off and no goroutine: the sender's own over connector/virtual
// (so that a request is answered before Send returns), the Node's routing
// goroutine over connector/nats (so that nothing else reaches the Node's
// links meanwhile). For a request with a permission, the link's authorizer
// runs there too.
//
// It may emit events (Emit, EmitJSON, ForwardEvent), with its ctx or one
// derived from it. An emit waits only while the peer is far behind (its
// event queue full; over NATS, all the unacknowledged events the connector
// allows outstanding), holding up the deliverer meanwhile. Events that
// reach, in the same process, a link whose event handler is running
// further up the same chain of calls are queued beyond WithEventQueue
// instead of waiting for it.
//
// An event handler declared NonBlocking still runs one at a time with the
// link's other events, in order: when an event is running or waiting, its
// event is queued behind them and handled on a goroutine of the link's.
func NonBlocking() HandlerOption { return func(h *handler) { h.nonBlocking = true } }

type state uint8

const (
	stateNew state = iota
	stateOpen
	stateClosing // Disconnect or the peer's prepare_disconnect: no new outbound requests
	stateClosed
)

// call is one outbound request waiting for its response. Calls are
// reused: resp and waiting are set, and wake signalled, only with l.mu held
// and the call in l.pending, so nothing reaches a call once it has left
// l.pending (endCall resets it there).
type call struct {
	typ string // the request's message type
	// resp is the response (or the link's end), once it came. A response
	// delivered during Send (a NonBlocking handler over a virtual pair) is
	// found here with no channel operation.
	resp    *Envelope
	waiting bool          // the requester waits on wake, or an asyncCall for its end
	wake    chan struct{} // one signal once resp is set, if waiting (nil for an asyncCall)
	async   *asyncCall    // the call's, when it is one (ForwardRequestAsync)
	// timer, once made, is the requester's clock while it waits for a
	// context of the link's own (see lazyDeadline.pending); reused with
	// the call, stopped when the call ends.
	timer *time.Timer
}

// until returns what ends the wait for a response within ctx: ctx's Done,
// or, for the timeout the request gave a ctx without deadline (a
// timeoutCtx, which nothing but the request ends) that has not made its
// timer, its parent's Done and the call's reusable timer set to its
// deadline, which spares a context and a timer per request. A handler's
// context is not one: it also ends when its handler returns or replies,
// which only its Done tells.
func (c *call) until(ctx context.Context) (done <-chan struct{}, expired <-chan time.Time) {
	lc, ok := ctx.(*timeoutCtx)
	if !ok {
		return ctx.Done(), nil
	}
	parentDone, deadline, ok := lc.pending()
	if !ok {
		return ctx.Done(), nil
	}
	if c.timer == nil {
		c.timer = time.NewTimer(time.Until(deadline))
	} else {
		c.timer.Reset(time.Until(deadline))
	}
	return parentDone, c.timer.C
}

// deliverLocked gives c its response, the first one only, and reports
// whether it was the first. l.mu must be held and c be in l.pending.
func (c *call) deliverLocked(m *Envelope) bool {
	if c.resp != nil {
		return false
	}
	c.resp = m
	if c.waiting && c.async == nil {
		c.wake <- struct{}{} // buffered, and signalled at most once: never blocks
	}
	return true
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
	snoopers  map[string][]EventHandler // addressed events passing through, by type
	fallbacks map[string]RequestHandler // addressed requests the router cannot deliver, by type
	setupErrs []error

	ctx       context.Context // ends when the link closes; parent of handler contexts
	eventCtx  eventCtx        // the event handlers' context, when it need not trace a sender (eventCtxFrom)
	cancel    context.CancelFunc
	values    bool // conn carries Envelope.Value (ValueCarrier)
	hasEvents bool // some event can arrive on the link
	done      chan struct{}

	calls sync.Pool // of *call

	mu         sync.Mutex
	state      state
	nextID     uint64
	pending    map[uint64]*call
	outbound   int           // requests sent and not yet ended
	inbound    int           // requests and events received and not yet handled
	goroutines int           // goroutines the link started that have not ended
	idle       chan struct{} // closed when outbound, inbound or goroutines reach zero

	// Inbound requests and events on their way to handlers (dispatch.go).
	// int32: at most WithMaxHandlers each, and a Link one word smaller
	// stays in its allocation size class (the master keeps one per slave).
	workers   int32          // request handlers running on the link's goroutines
	replies   int32          // requests given to asynchronous handlers, waiting for their replies
	waiting   fifo[delivery] // requests waiting for one of them
	eventBusy bool           // an event is being handled, or a goroutine is on its way to the queue
	// endAfterEvents: the peer closed the link while events were queued;
	// the holder of the event turn ends the link when they are handled.
	endAfterEvents bool
	events         fifo[*Envelope] // events waiting for the one being handled
	room           chan struct{}   // closed when waiting or events may have room

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
	if self.Type == peer.Type && (self.Type != messages.Slave || self == peer) {
		// Two slaves may link (messages.SlaveToSlave); no other type links
		// to its own.
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
		conn:      conn,
		self:      self,
		peer:      peer,
		in:        messages.Direction{Source: peer.Type, Target: self.Type},
		out:       messages.Direction{Source: self.Type, Target: peer.Type},
		catalog:   catalog,
		opts:      o,
		handlers:  map[string]*handler{},
		snoopers:  map[string][]EventHandler{},
		fallbacks: map[string]RequestHandler{},
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		pending:   map[uint64]*call{},
	}
	l.eventCtx = eventCtx{l: l, src: peer, dst: self} // the ends of an event with no Origin or Dst (ends)
	if vc, ok := conn.(ValueCarrier); ok {
		l.values = vc.CarriesValues()
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
		l.handlers[messages.Ping.Name()] = &handler{builtin: true, nonBlocking: true, request: func(context.Context, *Envelope) ([]byte, error) {
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
func (l *Link) HandleRequestJSON(m messages.Message, h RequestHandler, opts ...HandlerOption) {
	l.attach(m, messages.KindRequest, &handler{request: h}, opts)
}

// HandleRequestAsync attaches h to answer requests of type m on this
// link, now or later (see AsyncRequestHandler): it runs on the
// delivering goroutine, as a NonBlocking handler does, and its answer
// needs no goroutine of the link's. Mistakes are reported by Start, as
// HandleRequestJSON's are. Call it before Start.
func (l *Link) HandleRequestAsync(m messages.Message, h AsyncRequestHandler) {
	l.attach(m, messages.KindRequest, &handler{request: asyncRequest(h), async: true, nonBlocking: true}, nil)
}

// asyncRequest carries h in a handler's request field, as a handler has no
// room for a field of its own (see handler): runAsync calls it with the
// request's Reply in its context, and ignores what it returns.
func asyncRequest(h AsyncRequestHandler) RequestHandler {
	return func(ctx context.Context, req *Envelope) ([]byte, error) {
		h(ctx, req, ctx.(*requestCtx).reply)
		return nil, nil
	}
}

// HandleEventJSON attaches h to handle events of type m on this link.
// Mistakes are reported by Start. Call it before Start.
func (l *Link) HandleEventJSON(m messages.Message, h EventHandler, opts ...HandlerOption) {
	l.attach(m, messages.KindEvent, &handler{event: h}, opts)
}

func (l *Link) attach(m messages.Message, kind messages.Kind, h *handler, opts []HandlerOption) {
	for _, opt := range opts {
		opt(h)
	}
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
		// An addressed message only passes through an endpoint of a type
		// it is not sent to (the router's).
		passesOnly := def.Addressed() && !slices.Contains(def.Dst(), l.self.Type)
		if l.handlers[def.Name()] == nil && !passesOnly {
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
	l.hasEvents = hasEvents
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
	return l.requestData(ctx, def, payload, outbound{})
}

// ForwardRequest sends a request that arrived on another link on to this
// link's peer, keeping its type, payload, origin and destination (unless
// that is the peer), and waits for the response: it ends as
// ForwardRequestAsync does, except that sending may wait for room within
// ctx. The payload was validated on arrival and is not checked again; the
// response is checked as it arrives here. ctx should be the handler's (or derived from it), so that
// the original deadline carries over, and so that the handler returning
// this response as it is, unmodified, to a request of the same type does
// not check it a second time on the way back.
func (l *Link) ForwardRequest(ctx context.Context, req *Envelope) ([]byte, error) {
	def, err := l.forwardable(req)
	if err != nil {
		return nil, err
	}
	data, err := l.requestData(ctx, def, req.Data, l.onward(req))
	if err == nil {
		markChecked(ctx, def, data)
	}
	return data, err
}

// ForwardRequestAsync is ForwardRequest without the wait, for a handler
// that answers later (HandleRequestAsync): it sends req on to this link's
// peer and returns, and calls done exactly once with the response
// payload, or the error ForwardRequest would return: the peer's, the
// connector's refusal, ErrTimeout when ctx reaches its deadline (a ctx
// without one gets the link's request timeout), ctx's error when it is
// cancelled, ErrSessionLost when this link closes. The response is checked
// as it arrives, and, ctx being the handler's, not again when the handler
// answers with it unmodified (see ForwardRequest).
//
// done is called on the goroutine that ends the request: the caller's,
// before ForwardRequestAsync returns, when the request is refused or
// answered during Send (a NonBlocking or asynchronous handler over a
// virtual pair); the connector's, which delivers the response (over
// connector/nats the Node's routing goroutine); the one that closes the
// link; or, when ctx ends first, a goroutine of the context package's. It
// must not block: over NATS it holds up everything else the Node
// delivers. Handing the response to a Reply does not block.
//
// req is read before ForwardRequestAsync returns and not kept, but its
// Data travels on as it is: it must not change until done is called.
// It never waits: where sending would wait for room (the peer far behind:
// over NATS, delivery.RequestWindow requests to it unanswered; over a
// virtual pair, its link's queue full), the request is not sent and done
// gets CodeUnavailable (see WithoutWaiting).
func (l *Link) ForwardRequestAsync(ctx context.Context, req *Envelope, done func(data []byte, err error)) {
	def, err := l.forwardable(req)
	if err != nil {
		done(nil, err)
		return
	}
	a := &asyncCall{l: l, def: def, done: done, start: time.Now()}
	a.call.async = a
	a.call.typ = def.Name()
	out, ctx := l.newRequest(ctx, def, req.Data, nil, a.start)
	if out.tc.parent != nil {
		a.tc = &out.tc
	}
	a.ctx = ctx
	id, err := l.open(def, l.onward(req), &a.call, &out.m)
	if err != nil {
		a.finish(nil, err)
		return
	}
	a.id = id
	a.send.Context = ctx // WithoutWaiting
	if err := l.transmit(&a.send, &out.m); err != nil {
		l.mu.Lock()
		l.forgetLocked(id)
		l.mu.Unlock()
		a.finish(nil, sendError(def.Name(), err))
		return
	}
	l.mu.Lock()
	if resp := a.resp; resp != nil {
		// Answered during Send, or the link closed meanwhile.
		l.forgetLocked(id)
		l.mu.Unlock()
		a.respond(resp)
		return
	}
	a.waiting = true
	// Registered with l.mu held, so that whoever ends the call finds its
	// stop. On a ctx that ends with an inner context (the link's handler
	// contexts, once Done is called) it costs no goroutine until it runs.
	a.stop = context.AfterFunc(ctx, a.expire)
	l.mu.Unlock()
}

// forwardable returns the definition of req, which arrived on another
// link, or refuses it if it may not go on over this one.
func (l *Link) forwardable(req *Envelope) (*messages.Definition, error) {
	def, ok := l.catalog.Lookup(req.Type)
	if !ok {
		return nil, Errorf(CodeInvalidMessage, "%s is not in the catalog of link %s", req.Type, l)
	}
	if err := l.checkOutbound(def, messages.KindRequest); err != nil {
		return nil, err
	}
	return def, nil
}

// markChecked records data, a response of def checked as it arrived, in
// the context of the handler ctx belongs to, if any (requestCtx.markChecked).
func markChecked(ctx context.Context, def *messages.Definition, data []byte) {
	if hc, ok := ctx.Value(chainKey{}).(*requestCtx); ok {
		hc.markChecked(def, data)
	}
}

// asyncCall is a request sent by ForwardRequestAsync: a call ended by
// whoever takes it out of l.pending while it is waiting (receiveResponse,
// endWith, expire), or, before, by ForwardRequestAsync itself.
type asyncCall struct {
	call
	l     *Link
	id    uint64
	ctx   context.Context
	send  noWaitCtx   // ctx, never to wait for room: what it is sent with
	tc    *timeoutCtx // ctx, when the link gave it its deadline
	def   *messages.Definition
	start time.Time
	done  func([]byte, error)
	stop  func() bool // ends the watch on ctx; set with l.mu held once waiting
}

// forgetLocked takes request id, which was counted out (open), out of
// the link's pending requests. l.mu must be held.
func (l *Link) forgetLocked(id uint64) {
	delete(l.pending, id)
	l.outbound--
	l.checkIdle()
}

// expire ends the request when its ctx ends first.
func (a *asyncCall) expire() {
	l := a.l
	l.mu.Lock()
	if l.pending[a.id] != &a.call {
		l.mu.Unlock() // ended already
		return
	}
	l.forgetLocked(a.id)
	l.mu.Unlock()
	a.finish(nil, l.ended(a.ctx, a.def, a.start))
}

// respond ends the request with resp, taken out of l.pending already by
// the caller.
func (a *asyncCall) respond(resp *Envelope) {
	if a.stop != nil {
		a.stop()
	}
	data, value, err := result(a.def, resp)
	data, err = asJSON(a.def, data, value, err)
	a.finish(data, err)
}

func (a *asyncCall) finish(data []byte, err error) {
	if err == nil {
		markChecked(a.ctx, a.def, data)
	}
	if o := a.l.opts.observer; o != nil {
		o.RequestEnded(a.def.Name(), err, time.Since(a.start))
	}
	if a.tc != nil {
		a.tc.finish()
	}
	a.done(data, err)
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
	return l.emit(ctx, &Envelope{Kind: messages.KindEvent, Type: def.Name(), Data: payload})
}

// ForwardEvent sends an event that arrived on another link on to this
// link's peer, keeping its type, payload, origin and destination (unless
// that is the peer). The payload was
// validated on arrival and is not checked again.
func (l *Link) ForwardEvent(ctx context.Context, ev *Envelope) error {
	def, ok := l.catalog.Lookup(ev.Type)
	if !ok {
		return Errorf(CodeInvalidMessage, "%s is not in the catalog of link %s", ev.Type, l)
	}
	if err := l.checkOutbound(def, messages.KindEvent); err != nil {
		return err
	}
	o := l.onward(ev)
	return l.emit(ctx, &Envelope{Kind: messages.KindEvent, Type: ev.Type, Data: ev.Data, Origin: o.origin, Dst: o.dst})
}

// onward returns the ends a message that arrived on another link keeps as
// it goes on over this one: its origin, and its destination unless that
// is this link's peer.
func (l *Link) onward(m *Envelope) outbound {
	o := outbound{origin: m.Origin, dst: m.Dst}
	if o.dst == l.peer {
		o.dst = Address{}
	}
	return o
}

func (l *Link) emit(ctx context.Context, m *Envelope) error {
	l.mu.Lock()
	st := l.state
	l.mu.Unlock()
	switch st {
	case stateNew:
		return Errorf(CodeUnavailable, "link %s is not started", l)
	case stateClosed:
		return Errorf(CodeSessionLost, "link %s is closed", l)
	}
	typ := m.Type
	if err := l.transmit(ctx, m); err != nil {
		return sendError(typ, err)
	}
	return nil
}

// transmit hands m to the connector and counts it if the connector took
// it. The connector owns m from then on (connector/virtual hands m itself
// to the peer's link, whose handler may already run on it), so the link
// reads nothing of m once Send is called: an observer is shown a copy
// taken before, which costs an allocation only when there is an observer.
func (l *Link) transmit(ctx context.Context, m *Envelope) error {
	var seen *Envelope
	if l.opts.observer != nil {
		seen = new(Envelope)
		*seen = *m
	}
	if err := l.conn.Send(ctx, m); err != nil {
		return err
	}
	l.stats.sent.Add(1)
	if seen != nil {
		l.opts.observer.Sent(l.out, seen)
	}
	return nil
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

// requestData is request with a JSON payload, for a JSON response.
func (l *Link) requestData(ctx context.Context, def *messages.Definition, payload []byte, o outbound) ([]byte, error) {
	data, value, err := l.request(ctx, def, payload, nil, o)
	return asJSON(def, data, value, err)
}

// asJSON is a request's end (request, result) with a response that came
// as a Go value encoded as JSON.
func asJSON(def *messages.Definition, data []byte, value any, err error) ([]byte, error) {
	if err != nil || value == nil {
		return data, err
	}
	if data, err = codec.Marshal(def, true, value); err != nil {
		return nil, invalid(err)
	}
	return data, nil
}

// request sends a checked request, its payload as JSON or, when value is
// not nil, as that Go value, and waits for its end. The response is JSON,
// or a Go value that has passed its check. Internal requests
// (prepare_disconnect) are allowed while the link is closing.
func (l *Link) request(ctx context.Context, def *messages.Definition, payload []byte, value any, o outbound) (data []byte, respValue any, err error) {
	start := time.Now()
	if o := l.opts.observer; o != nil {
		defer func() { o.RequestEnded(def.Name(), err, time.Since(start)) }()
	}
	out, ctx := l.newRequest(ctx, def, payload, value, start)
	if out.tc.parent != nil {
		defer out.tc.finish()
	}
	c, _ := l.calls.Get().(*call)
	if c == nil {
		c = &call{wake: make(chan struct{}, 1)}
	}
	c.typ = def.Name()
	id, err := l.open(def, o, c, &out.m)
	if err != nil {
		l.calls.Put(c)
		return nil, nil, err
	}
	defer l.endCall(id, c)

	if err := l.transmit(ctx, &out.m); err != nil {
		return nil, nil, sendError(def.Name(), err)
	}
	l.mu.Lock()
	resp := c.resp // answered during Send: a NonBlocking handler over a virtual pair
	c.waiting = resp == nil
	l.mu.Unlock()
	if resp == nil {
		done, expired := c.until(ctx)
		select {
		case <-c.wake:
			resp = c.resp // set before the signal
		case <-done:
			return nil, nil, l.ended(ctx, def, start)
		case <-expired:
			return nil, nil, l.ended(ctx, def, start)
		}
	}
	return result(def, resp)
}

// newRequest allocates a request of def sent at now within ctx, and
// returns it with the ctx it ends with: ctx, or, for a ctx without
// deadline, out.tc, which ends at the link's timeout and which the caller
// finishes (its parent is set). Over a connector in this process the
// peer's serveState comes in the same allocation. None is reused: the
// connector (and over a virtual pair the peer's handler) owns the
// envelope once it is sent, and a peer's handler context may refer to the
// ctx it was delivered with.
func (l *Link) newRequest(ctx context.Context, def *messages.Definition, payload []byte, value any, now time.Time) (*requestAlloc, context.Context) {
	var out *requestAlloc
	if l.values {
		ol := new(requestLocalAlloc)
		ol.m.spare = &ol.sv
		out = &ol.requestAlloc
	} else {
		out = new(requestAlloc)
	}
	out.m.Kind, out.m.Type, out.m.Data, out.m.Value = messages.KindRequest, def.Name(), payload, value
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = now.Add(l.opts.requestTimeout)
		out.tc = timeoutCtx{lazyDeadline{parent: ctx, deadline: deadline}}
		ctx = &out.tc
	}
	out.m.Deadline = deadline
	return out, ctx
}

// open puts c, a request of def about to be sent as m, among the link's
// pending requests, gives m its id and ends (o), and returns the id, or
// refuses a request the link cannot send now.
func (l *Link) open(def *messages.Definition, o outbound, c *call, m *Envelope) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.state == stateNew:
		return 0, Errorf(CodeUnavailable, "link %s is not started", l)
	case l.state == stateClosed:
		return 0, Errorf(CodeSessionLost, "%s: link %s is closed", def.Name(), l)
	case l.state == stateClosing && !o.internal:
		return 0, Errorf(CodeUnavailable, "%s: link %s is disconnecting", def.Name(), l)
	}
	l.nextID++
	l.pending[l.nextID] = c
	l.outbound++
	m.ID, m.Origin, m.Dst = l.nextID, o.origin, o.dst
	return l.nextID, nil
}

// result is what a request of def that ended with resp returns: the
// response as JSON, or as a Go value that passes its check, or its error.
func result(def *messages.Definition, resp *Envelope) ([]byte, any, error) {
	if resp.Error != nil {
		return nil, nil, resp.Error
	}
	if resp.Value != nil {
		if codec.ValueOK(def, true, resp.Value) {
			return nil, resp.Value, nil
		}
		// Not one the check can pass: as JSON, whose check says why.
		data, err := codec.Marshal(def, true, resp.Value)
		if err != nil {
			return nil, nil, invalid(err)
		}
		return data, nil, nil
	}
	if err := def.ValidateResponse(resp.Data); err != nil {
		return nil, nil, invalid(err)
	}
	return resp.Data, nil, nil
}

// requestAlloc is a request as its link allocates it (see request).
type requestAlloc struct {
	m  Envelope
	tc timeoutCtx
}

// requestLocalAlloc is a requestAlloc with the serveState of the peer's
// link in the same process.
type requestLocalAlloc struct {
	requestAlloc
	sv serveState
}

// ended explains a request whose ctx ended before its response came.
func (l *Link) ended(ctx context.Context, def *messages.Definition, start time.Time) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{Code: CodeTimeout, cause: context.DeadlineExceeded,
			Message: fmt.Sprintf("%s: no response from %s within %s", def.Name(), l.peer, time.Since(start).Round(time.Millisecond))}
	}
	return fmt.Errorf("link: %s: %w", def.Name(), ctx.Err())
}

func (l *Link) endCall(id uint64, c *call) {
	l.mu.Lock()
	delete(l.pending, id)
	l.outbound--
	l.checkIdle()
	if c.waiting {
		select {
		case <-c.wake: // a response that came after ctx ended
		default:
		}
	}
	c.resp, c.waiting = nil, false
	l.mu.Unlock()
	if c.timer != nil && !c.timer.Stop() {
		// With Go 1.23's timers nothing is left to read after Stop; a
		// program whose go.mod is older (asynctimerchan=1) may find the
		// fire of a timer the response beat, which would end the call's
		// next request at once.
		select {
		case <-c.timer.C:
		default:
		}
	}
	l.calls.Put(c)
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

func (r receiver) Receive(ctx context.Context, m *Envelope) error { return r.l.receive(ctx, m) }

func (r receiver) Status(s Status, err error) {
	l := r.l
	if s == StatusClosed {
		reason := Errorf(CodeSessionLost, "link %s closed by its peer", l)
		if err != nil {
			reason = Errorf(CodeSessionLost, "link %s closed: %v", l, err)
		}
		l.endWith(reason, true)
		_ = l.conn.Close()
	}
	if l.opts.onStatus != nil {
		l.opts.onStatus(s)
	}
}

// checkIdle wakes the waiters of wait when any count reaches zero
// (waitOutbound needs only outbound; each waiter checks its own condition
// again). l.mu must be held.
func (l *Link) checkIdle() {
	if l.idle != nil && (l.outbound == 0 || l.inbound == 0 || l.goroutines == 0) {
		close(l.idle)
		l.idle = nil
	}
}

// prepareDisconnect is the built-in handler of prepare_disconnect: stop
// sending new requests, let the ones in flight end, then answer. The peer
// closes the link once it has the answer.
func (l *Link) prepareDisconnect(ctx context.Context, _ *Envelope) ([]byte, error) {
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
	return l.wait(ctx, true, func() bool { return l.inbound == 0 })
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
		if _, err := l.requestData(ctx, messages.PrepareDisconnect.Definition, []byte("{}"), outbound{internal: true}); err != nil {
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
	return l.wait(ctx, true, func() bool { return l.outbound == 0 })
}

// waitIdle waits until nothing is in flight either way.
func (l *Link) waitIdle(ctx context.Context) error {
	return l.wait(ctx, true, func() bool { return l.outbound == 0 && l.inbound == 0 })
}

// wait waits until done, which is called with l.mu held, reports true, or
// ctx ends, or, with untilClosed, the link closes.
func (l *Link) wait(ctx context.Context, untilClosed bool, done func() bool) error {
	closed := l.done
	if !untilClosed {
		closed = nil
	}
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
		out, in, running := l.outbound, l.inbound, l.goroutines
		l.mu.Unlock()
		select {
		case <-idle:
		case <-closed:
			return nil
		case <-ctx.Done():
			if !untilClosed {
				return fmt.Errorf("%d messages received still being handled, %d of the link's goroutines running: %w", in, running, ctx.Err())
			}
			return fmt.Errorf("%d requests sent and %d messages received still in flight: %w", out, in, ctx.Err())
		}
	}
}

// Close closes the link at once. Pending requests fail with ErrSessionLost,
// running handlers see their context end, requests and events still
// waiting for a handler are dropped, and the peer's link closes too. It
// does not wait for running handlers (CloseWait does). Close is idempotent.
func (l *Link) Close() error {
	// The connector first: it stops delivering before the link stops
	// taking messages, so that it tells the peer of nothing the link
	// never took (connector/nats acknowledges events as it delivers them).
	err := l.conn.Close()
	l.closeWith(Errorf(CodeSessionLost, "link %s closed", l))
	return err
}

// CloseWait closes the link as Close does, then waits until every handler
// of the link has returned and every goroutine the link started has ended,
// or until ctx ends: then it returns ctx's error, saying how many are still
// running. Handlers see their context end when the link closes; CloseWait
// waits for those that take their time to notice. Called from one of the
// link's own handlers, it waits for that handler too, so until ctx ends.
func (l *Link) CloseWait(ctx context.Context) error {
	err := l.Close()
	if werr := l.wait(ctx, false, func() bool { return l.inbound == 0 && l.goroutines == 0 }); werr != nil {
		return errors.Join(err, fmt.Errorf("link %s: close: %w", l, werr))
	}
	return err
}

func (l *Link) closeWith(reason *Error) { l.endWith(reason, false) }

// endWith closes the link. With keepEvents (the peer closed it), the events
// already taken are handled before the link is done: the connector
// acknowledged them to the peer as it delivered them, and a peer that
// closed gracefully counts them as arrived. Requests waiting for a handler
// are dropped either way: their responses could not be sent.
func (l *Link) endWith(reason *Error, keepEvents bool) {
	l.mu.Lock()
	if l.state == stateClosed {
		if !l.endAfterEvents || keepEvents {
			l.mu.Unlock()
			return
		}
		// Close while the events a peer's close left run: drop the rest.
		l.endAfterEvents = false
		l.inbound -= l.events.drop()
		l.finishLocked()
		return
	}
	l.state = stateClosed
	var ended []*asyncCall
	for _, c := range l.pending {
		c.deliverLocked(&Envelope{Kind: messages.KindResponse, Error: reason})
		if c.async != nil && c.waiting {
			// Ended here; one still being sent is ended by its sender.
			ended = append(ended, c.async)
			l.outbound--
		}
	}
	clear(l.pending)
	l.checkIdle()
	l.inbound -= l.waiting.drop()
	if keepEvents && l.eventBusy {
		l.endAfterEvents = true // the event turn's holder finishes
		l.roomLocked()
		l.mu.Unlock()
	} else {
		l.inbound -= l.events.drop()
		l.finishLocked()
	}
	for _, a := range ended {
		a.respond(a.resp)
	}
}

// finishLocked ends the link's context and wakes whoever waits on it. It
// is called with l.mu held, and releases it.
func (l *Link) finishLocked() {
	l.roomLocked()
	if l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
	l.mu.Unlock()
	close(l.done)
	l.cancel()
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
	Handling      int    // inbound requests and events being handled or waiting for a handler now
	Goroutines    int    // goroutines the link started that are running now (CloseWait waits for them)
}

// Stats returns the link's counters. It is safe to call at any time.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	pending, handling, goroutines := len(l.pending), l.inbound, l.goroutines
	l.mu.Unlock()
	return Stats{
		Handling:      handling,
		Goroutines:    goroutines,
		Sent:          l.stats.sent.Load(),
		Received:      l.stats.received.Load(),
		Invalid:       l.stats.invalid.Load(),
		Refused:       l.stats.refused.Load(),
		Late:          l.stats.late.Load(),
		HandlerErrors: l.stats.handlerErrors.Load(),
		Pending:       pending,
	}
}
