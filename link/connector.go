package link

import (
	"context"
	"fmt"
	"time"

	"github.com/linkfabric/linkfabric/messages"
)

// Envelope is a message as it travels on a link: its kind, type, id and
// payload, with what the links at both ends need to pair a response with
// its request, bound a request's wait and trace a broadcast. Links and
// connectors exchange envelopes; what a message is (its name, schemas and
// links) is its definition, a messages.Message. A connector carries every
// field to the peer's link unchanged, except Reply, which is its own.
type Envelope struct {
	// Kind is messages.KindRequest, messages.KindResponse or messages.KindEvent.
	Kind messages.Kind
	// Type is the message type name; a response carries its request's.
	Type string
	// ID correlates a response with its request. The requesting link
	// chooses it; the responding link echoes it.
	ID uint64
	// Data is the JSON payload: the request, the response or the event.
	// A failed response has none, and neither has one whose payload is
	// in Value.
	Data []byte
	// Value, when not nil, is the payload as a Go value of the type the
	// message was defined with, in place of Data: what link.Request,
	// link.Emit and typed handlers send over a connector that carries
	// values (ValueCarrier) when the value can travel so (see
	// internal/codec.ValueOK). It is checked against the
	// schema on send and on receipt as Data is. Handlers attached with
	// HandleRequestJSON and HandleEventJSON, and authorizers, always get
	// Data; observers see the message as it travels.
	Value any
	// Error is set on a failed response.
	Error *Error
	// Deadline is when the requester stops waiting (requests only). A
	// connector that crosses machines sends the time remaining.
	Deadline time.Time
	// Origin is the endpoint a routed message started from (an addressed
	// message, a broadcast event), so that its receiver knows its sender
	// and a broadcast is never delivered back there; each hop checks it
	// against the peer it came from. Zero: it started at the link's peer.
	Origin Address
	// Dst is where an addressed message goes: one endpoint, or every
	// endpoint of a type (All). Zero: the link's peer, as for every
	// message that is not addressed.
	Dst Address
	// Reply is the connector's own return address for a request, copied
	// by the link into the response. Links do not interpret it.
	Reply string
	// Local marks a response the connector made itself, such as the
	// failure of a request it could not deliver: nothing came from the
	// peer, so the link does not count it as received (Stats.Received
	// is a sign of the peer's life).
	Local bool

	// spare is what the peer's link needs to serve this request, when the
	// requesting link allocated it with the request (serveState).
	spare *serveState
}

// ValueCarrier is a Connector that can carry Envelope.Value to its peer's
// link in the same process as it is, sharing it: connector/virtual. A
// link sends such a connector the Go values of typed messages whose type
// shares no memory, with no JSON.
type ValueCarrier interface {
	Connector
	// CarriesValues reports whether Send carries Envelope.Value.
	CarriesValues() bool
}

// Connector carries one link's messages to its peer. A link owns its
// connector: it calls Start once, Send from many goroutines, and Close.
type Connector interface {
	// Start begins delivering the peer's messages and connection changes
	// to r. Messages must be delivered in the order the peer sent them.
	Start(r Receiver) error
	// Send hands m to the transport, blocking at most until ctx is done.
	// The connector owns m afterwards: the link reads nothing of it once
	// Send is called (a connector in one process may hand m itself to the
	// peer's link), unless Send fails. An error means the message was not
	// sent; an *Error tells why in terms the requester understands
	// (CodeNotConnected, CodeTooLarge, CodeSessionLost). Where Send would
	// wait for room (the peer far behind), it must not for a ctx that
	// MayWait refuses: it fails with CodeUnavailable instead.
	Send(ctx context.Context, m *Envelope) error
	// Flush waits, at most until ctx ends, until the peer has everything
	// sent so far, as far as the connector can know: one that keeps
	// messages until the peer acknowledges them waits for the
	// acknowledgements; one that delivers at once returns at once. A
	// graceful disconnect flushes before it closes, so that nothing sent
	// is left behind.
	Flush(ctx context.Context) error
	// Close releases the transport. The peer's connector reports
	// StatusClosed to its link. Close is idempotent.
	Close() error
}

type noWaitKey struct{}

// WithoutWaiting returns ctx marked for a caller that runs where messages
// are delivered (an asynchronous handler, a connector's own goroutine):
// waiting there for the peer to make room could hold up the very
// messages that make it (over connector/nats, the responses and
// acknowledgements the Node's routing goroutine delivers). A Send or
// Receive given such a ctx never waits for room: where it would, the
// message is not sent, and it fails with CodeUnavailable.
func WithoutWaiting(ctx context.Context) context.Context { return &noWaitCtx{ctx} }

// noWaitCtx is WithoutWaiting's context: a type of its own, so that an
// asynchronous forward carries it in its asyncCall, with no allocation.
type noWaitCtx struct{ context.Context }

func (c *noWaitCtx) Value(key any) any {
	if key == (noWaitKey{}) {
		return true
	}
	return c.Context.Value(key)
}

// MayWait reports whether a Send or Receive given ctx may wait for room
// (see WithoutWaiting).
func MayWait(ctx context.Context) bool { return ctx.Value(noWaitKey{}) == nil }

// errNoRoom is what a Send or Receive that may not wait says when it
// would have.
func errNoRoom(what string) *Error {
	return Errorf(CodeUnavailable, "%s: not sent: the peer's queue is full", what)
}

// Stopper is a Connector that can stop delivering before it closes. A
// graceful Disconnect stops it once the link has drained, lets the link's
// handlers finish what it delivered, and only then closes: a connector
// that tells its peer what arrived (connector/nats acknowledges events)
// has then told it exactly what the link took, and the link has run all
// of that.
type Stopper interface {
	// Stop ends delivery: when it returns, the connector has handed the
	// link everything it took from the peer, and delivers nothing more but
	// the responses to the link's own requests. It waits at most until ctx
	// ends. Send still works.
	Stop(ctx context.Context) error
}

// Receiver takes what a connector delivers. Its methods are safe for
// concurrent use; messages delivered one after another from one goroutine
// are taken in that order.
type Receiver interface {
	// Receive takes one inbound message. A message whose handler is
	// declared NonBlocking may be handled, and a request answered, on the
	// calling goroutine before Receive returns; otherwise Receive hands the
	// message on and returns. It waits only when the link cannot take the
	// message yet (an event while the link's event queue is full; a
	// request while WithMaxHandlers handlers run and as many requests wait):
	// then until ctx ends, and it returns ctx's error if the message was
	// not taken. A ctx that has ended already means the caller must not
	// wait: Receive returns its error at once instead, and the connector
	// delivers the message again later, in order. The link traces messages
	// sent from inside its handlers by ctx (see NonBlocking): a connector
	// that delivers on the sender's goroutine passes the sender's ctx.
	// Once m is taken the link owns it (its handler may keep it): the
	// connector, and whoever sent m, must not use it again.
	Receive(ctx context.Context, m *Envelope) error
	// Status reports a change of the connection beneath the link.
	Status(s Status, err error)
}

// Status is a change in the connection that carries a link.
type Status uint8

// Connection changes.
const (
	// StatusDropped: the transport lost its connection; the session is
	// kept and messages wait until it resumes.
	StatusDropped Status = iota + 1
	// StatusResumed: the connection is back and the session continues.
	StatusResumed
	// StatusClosed: the session is over (the peer closed it, or it expired).
	// The link closes and its pending requests fail with ErrSessionLost.
	StatusClosed
)

// String returns "dropped", "resumed" or "closed".
func (s Status) String() string {
	switch s {
	case StatusDropped:
		return "dropped"
	case StatusResumed:
		return "resumed"
	case StatusClosed:
		return "closed"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}
