package link

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/linkfabric/linkfabric/internal/codec"
	"github.com/linkfabric/linkfabric/messages"
)

// Addressed messages (messages.Spec's Src and Dst) travel to an address
// rather than to a link's peer: an envelope names its end-to-end source
// (Origin) and destination (Dst) where they differ from the hop's ends.
// A link delivers to its handlers what is addressed to its own end (Dst
// is zero, its address, or a broadcast to its type) and hands the rest to
// its Router, after the checks every inbound message gets (catalog, link,
// schema, permission) and after the snoopers of the message's type.

// Router passes addressed messages on towards their destination: an
// endpoint that relays (the fabric's master and slaves) gives one to each
// of its links (WithRouter). Its methods are called from the link's
// handler goroutines, as handlers are, and must check whatever the
// message claims (its Origin) against from's peer before acting on it.
type Router interface {
	// RouteRequest passes req, which arrived on from and is addressed to
	// req.Dst, on, and returns the response. An error that says the
	// request could not be delivered (no such endpoint, not connected,
	// lacking the message's plugin) is wrapped with Undeliverable, so
	// that a fallback (HandleFallback) may answer instead.
	RouteRequest(ctx context.Context, from *Link, req *Envelope) ([]byte, error)
	// RouteEvent passes ev, which arrived on from, on to ev.Dst. Its
	// error is logged and counted, as an event handler's is.
	RouteEvent(ctx context.Context, from *Link, ev *Envelope) error
}

// WithBroadcastsUp makes the link hand its router every broadcast that
// arrives on it, those to this end's type included, and deliver none
// here: its router sends them on to where broadcasts start (a slave, what
// its instances broadcast, to the master), and they come back to this
// end, once, by that way.
func WithBroadcastsUp() Option {
	return func(o *options) error {
		o.broadcastsUp = true
		return nil
	}
}

// WithRouter makes the link hand r the addressed messages that arrive for
// another endpoint. Without a router they are refused (CodeInvalidMessage).
func WithRouter(r Router) Option {
	return func(o *options) error {
		o.router = r
		return nil
	}
}

type undeliverable struct{ error }

func (u undeliverable) Unwrap() error { return u.error }

// Undeliverable marks err, a router's, as saying that a request was not
// delivered at all: a fallback may answer it. It returns nil for nil.
func Undeliverable(err error) error {
	if err == nil {
		return nil
	}
	return undeliverable{err}
}

// IsUndeliverable reports whether err was marked with Undeliverable.
func IsUndeliverable(err error) bool {
	var u undeliverable
	return errors.As(err, &u)
}

// CheckAddress refuses, with CodeInvalidMessage, a message of def that an
// endpoint at from may not send to to: def is not addressed, or its Src
// and Dst do not allow the pair, to is from itself, or a request is
// addressed to a broadcast. A message defined with Links may be sent only
// to from's link peers, which CheckAddress does not know: it refuses it.
func CheckAddress(def *messages.Definition, from, to Address) error {
	if !to.IsBroadcast() {
		if err := to.Validate(); err != nil {
			return Errorf(CodeInvalidMessage, "%s: %v", def.Name(), err)
		}
	} else if !to.Type.Valid() || to.Type == messages.Master {
		// There is one master: master/* would be a broadcast to it and
		// to every slave (the master's router broadcasts what it passes on).
		return Errorf(CodeInvalidMessage, "%s: %s is not an address", def.Name(), to)
	}
	switch {
	case !def.Addressed():
		return Errorf(CodeInvalidMessage, "%s is not addressed (it has Links, not Src and Dst): it goes only to the peer of a link", def.Name())
	case !def.Allows(from.Type, to.Type):
		return Errorf(CodeInvalidMessage, "%s may not be sent from %s to %s: it goes from %v to %v", def.Name(), from.Type, to, def.Src(), def.Dst())
	case to == from:
		return Errorf(CodeInvalidMessage, "%s: %s may not send it to itself", def.Name(), from)
	case to.IsBroadcast() && def.Kind() == messages.KindRequest:
		return Errorf(CodeInvalidMessage, "%s is a request: it goes to one endpoint, not to every %s", def.Name(), to.Type)
	}
	return nil
}

// RequestTo sends req, a request of type m, from l's end to the endpoint
// at to, through l: l's peer routes it on unless it is to. The address is
// checked first (CheckAddress), then the payload, as Request does; the
// request then ends as Request's. The destination's handler sees l's end
// as its Source.
func RequestTo[Req, Resp any](ctx context.Context, l *Link, to Address, m *messages.Request[Req, Resp], req Req) (Resp, error) {
	var resp Resp
	if err := CheckAddress(m.Definition, l.self, to); err != nil {
		return resp, err
	}
	if to == l.peer {
		return Request(ctx, l, m, req)
	}
	if err := l.checkOutbound(m.Definition, messages.KindRequest); err != nil {
		return resp, err
	}
	payload, err := m.EncodeRequest(req)
	if err != nil {
		return resp, invalid(err)
	}
	data, err := l.requestData(ctx, m.Definition, payload, outbound{dst: to})
	if err != nil {
		return resp, err
	}
	if err := codec.Unmarshal(m.Definition, "response", data, &resp); err != nil {
		return resp, invalid(err)
	}
	return resp, nil
}

// EmitTo sends ev, an event of type m, from l's end to to (one endpoint,
// or every endpoint of a type: All), through l, checked as RequestTo
// checks. It returns once the connector has taken the event.
func EmitTo[T any](ctx context.Context, l *Link, to Address, m *messages.Event[T], ev T) error {
	if err := CheckAddress(m.Definition, l.self, to); err != nil {
		return err
	}
	if to == l.peer {
		return Emit(ctx, l, m, ev)
	}
	if err := l.checkOutbound(m.Definition, messages.KindEvent); err != nil {
		return err
	}
	payload, err := m.Encode(ev)
	if err != nil {
		return invalid(err)
	}
	return l.emit(ctx, &Envelope{Kind: messages.KindEvent, Type: m.Name(), Data: payload, Dst: to})
}

// SnoopEvent attaches h to see each event of type m that arrives on l
// for another endpoint, as it passes through: before the router passes it
// on. h gets the decoded event; Source and Destination tell where it goes
// from and to. It cannot stop the event: its error is logged and counted
// (Stats.HandlerErrors), and a panic is recovered, and routing carries on
// either way. Several snoopers of one type run in the order attached. m
// must be addressed and able to arrive on l. Call it before Start;
// mistakes are reported by Start.
func SnoopEvent[T any](l *Link, m *messages.Event[T], h func(ctx context.Context, ev T) error) {
	def := m.Definition
	if !l.checkAttach(def, messages.KindEvent, "a snooper") {
		return
	}
	l.snoopers[def.Name()] = append(l.snoopers[def.Name()], func(ctx context.Context, msg *Envelope) error {
		var ev T
		if err := codec.Unmarshal(def, "event", msg.Data, &ev); err != nil {
			return err
		}
		return h(ctx, ev)
	})
}

// HandleFallback attaches h to answer requests of type m that arrive on l
// for another endpoint and that the router cannot deliver (its error is
// Undeliverable): h answers in the destination's place, and its response
// or error goes back to the requester. Destination tells where the request
// was going. m must be addressed and able to arrive on l; one fallback per
// type. Call it before Start; mistakes are reported by Start.
func HandleFallback[Req, Resp any](l *Link, m *messages.Request[Req, Resp], h func(ctx context.Context, req Req) (Resp, error)) {
	def := m.Definition
	if !l.checkAttach(def, messages.KindRequest, "a fallback") {
		return
	}
	if l.fallbacks[def.Name()] != nil {
		l.setupErrs = append(l.setupErrs, fmt.Errorf("%w: link %s: %s: already has a fallback", ErrSetup, l.in, def.Name()))
		return
	}
	l.fallbacks[def.Name()] = func(ctx context.Context, msg *Envelope) ([]byte, error) {
		var req Req
		if err := codec.Unmarshal(def, "request", msg.Data, &req); err != nil {
			return nil, invalid(err)
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, err
		}
		data, err := m.EncodeResponse(resp)
		if err != nil {
			return nil, &Error{Code: CodeInternal, Message: err.Error(), cause: err}
		}
		return data, nil
	}
}

// checkAttach reports whether a snooper or a fallback of def may be
// attached to l, and records the mistake for Start otherwise.
func (l *Link) checkAttach(def *messages.Definition, kind messages.Kind, what string) bool {
	if l.state != stateNew {
		panic(fmt.Sprintf("link %s: %s for %s attached after Start", l, what, def.Name()))
	}
	var why string
	switch {
	case !l.catalog.Contains(def):
		why = "not in the link's catalog"
	case def.Kind() != kind:
		why = fmt.Sprintf("is %s, not %s", withArticle(def.Kind().String()), withArticle(kind.String()))
	case !def.Addressed():
		why = "is not addressed (Src and Dst), so it is never routed"
	case !def.ValidOn(l.in):
		why = fmt.Sprintf("is not valid on %s, so it never arrives here", l.in)
	default:
		return true
	}
	l.setupErrs = append(l.setupErrs, fmt.Errorf("%w: link %s: %s for %s: %s", ErrSetup, l.in, what, def.Name(), why))
	return false
}

// Source returns the endpoint the message being handled with ctx (a
// handler's, a snooper's or a fallback's context, or one derived from it)
// started from: its end-to-end sender, or the link's peer when it came
// straight from there. It returns the zero Address for another context.
func Source(ctx context.Context) Address {
	switch c := ctx.Value(chainKey{}).(type) {
	case *requestCtx:
		return c.src
	case *eventCtx:
		return c.src
	}
	return Address{}
}

// Destination returns the address the message being handled with ctx was
// sent to: this end's, a broadcast to its type, or, for a snooper or a
// fallback, the endpoint it was going to. Zero for another context.
func Destination(ctx context.Context) Address {
	switch c := ctx.Value(chainKey{}).(type) {
	case *requestCtx:
		return c.dst
	case *eventCtx:
		return c.dst
	}
	return Address{}
}

// outbound is how a request is sent: what it says of its ends beyond the
// link it travels (where it started, zero: this end; where it goes, zero:
// the peer), and whether it is the link's own (prepare_disconnect, sent
// while the link is closing).
type outbound struct {
	origin, dst Address
	internal    bool
}

// ends returns the end-to-end source and destination of m, arrived here.
func (l *Link) ends(m *Envelope) (src, dst Address) {
	src, dst = m.Origin, m.Dst
	if src.IsZero() {
		src = l.peer
	}
	if dst.IsZero() {
		dst = l.self
	}
	return src, dst
}

// passing reports whether m, arrived here, is for another endpoint (or,
// on a link WithBroadcastsUp, a broadcast, which comes back).
func (l *Link) passing(m *Envelope) bool {
	return !m.Dst.IsZero() && (!m.Dst.Includes(l.self) || l.opts.broadcastsUp && m.Dst.IsBroadcast())
}

// routeRequest hands a request for another endpoint to the router, or to
// the fallback of its type when the router cannot deliver it.
func (l *Link) routeRequest(ctx *requestCtx, m *Envelope) ([]byte, error) {
	def, err := l.check(m, messages.KindRequest)
	if err != nil {
		return nil, err
	}
	ctx.def = def
	if err := l.authorized(ctx, def, m); err != nil {
		return nil, err
	}
	if l.opts.router == nil {
		return nil, Errorf(CodeInvalidMessage, "%s is addressed to %s, and %s passes nothing on", def.Name(), m.Dst, l.self)
	}
	data, err := safely(l, def, func() ([]byte, error) { return l.opts.router.RouteRequest(ctx, l, m) })
	if fb := l.fallbacks[def.Name()]; err != nil && fb != nil && IsUndeliverable(err) {
		l.opts.logger.Debug("request answered by its fallback", "link", l.String(), "type", m.Type, "to", m.Dst.String(), "error", err)
		return safely(l, def, func() ([]byte, error) { return fb(ctx, m) })
	}
	if err != nil {
		return nil, err
	}
	if !ctx.wasChecked(data) {
		if verr := def.ValidateResponse(data); verr != nil {
			return nil, &Error{Code: CodeInternal, Message: verr.Error(), cause: verr}
		}
	}
	return data, nil
}

// safely runs f, turning a panic into CodeInternal.
func safely(l *Link, def *messages.Definition, f func() ([]byte, error)) (data []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			l.opts.logger.Error("router or fallback panicked", "link", l.String(), "type", def.Name(), "panic", p, "stack", string(debug.Stack()))
			data, err = nil, Errorf(CodeInternal, "%s: routing failed unexpectedly", def.Name())
		}
	}()
	return f()
}

// routeEvent shows an event for another endpoint to the snoopers of its
// type, each on its own, then hands it to the router. An event that was
// also for this end (a broadcast to its type) was checked, and handled,
// here already: passing is false.
func (l *Link) routeEvent(ctx *eventCtx, m *Envelope, passing bool) {
	def, ok := l.catalog.Lookup(m.Type)
	if passing {
		var err error
		if def, err = l.check(m, messages.KindEvent); err != nil {
			l.drop(m, err.Error())
			return
		}
		if err := l.authorized(ctx, def, m); err != nil {
			l.stats.refused.Add(1)
			l.opts.logger.Debug("refused event", "link", l.String(), "type", m.Type, "error", err.Message)
			return
		}
	} else if !ok || def.Kind() != messages.KindEvent || !def.ValidOn(l.in) || l.handlers[def.Name()] == nil {
		return // refused, and said so, as it was handled
	}
	for _, snoop := range l.snoopers[def.Name()] {
		if _, err := safely(l, def, func() ([]byte, error) { return nil, snoop(ctx, m) }); err != nil {
			l.stats.handlerErrors.Add(1)
			l.opts.logger.Warn("event snooper failed", "link", l.String(), "type", m.Type, "error", err)
		}
	}
	if l.opts.router == nil {
		l.drop(m, fmt.Sprintf("addressed to %s, and %s passes nothing on", m.Dst, l.self))
		return
	}
	if _, err := safely(l, def, func() ([]byte, error) { return nil, l.opts.router.RouteEvent(ctx, l, m) }); err != nil {
		l.stats.handlerErrors.Add(1)
		l.opts.logger.Warn("event not passed on", "link", l.String(), "type", m.Type, "to", m.Dst.String(), "error", err)
	}
}
