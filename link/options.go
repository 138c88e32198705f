package link

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/linkfabric/linkfabric/messages"
)

// Option configures a Link.
type Option func(*options) error

type options struct {
	observer       Observer
	logger         *slog.Logger
	requestTimeout time.Duration
	authorize      Authorizer
	onStatus       func(Status)
	eventQueue     int
	maxHandlers    int
	router         Router
	broadcastsUp   bool
}

func defaultOptions() options {
	return options{
		logger:         slog.Default(),
		requestTimeout: 30 * time.Second,
		eventQueue:     256,
		maxHandlers:    256,
	}
}

// WithLogger sets where the link reports dropped messages and handler
// failures. Defaults to slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("link: nil logger")
		}
		o.logger = l
		return nil
	}
}

// WithRequestTimeout sets how long a request waits when its context has no
// deadline, and how long a handler may run when the request arrived with
// none. Defaults to 30s.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return errors.New("link: request timeout must be positive")
		}
		o.requestTimeout = d
		return nil
	}
}

// An Authorizer decides whether the link's peer may have a message
// handled. It is asked about every inbound request and event that
// declares a permission other than messages.Unrestricted (the messages
// valid on control-master), after the message has been checked against
// its schema and before its handler runs: def is its definition (whose
// Permission names what is needed) and m the message as it arrived, so an
// authorizer can decide on the type, the payload (an instance_id, say)
// and the permission alike. It must not keep m or change it. A nil error
// allows the message; anything else refuses it: a request's requester
// gets the error as CodePermissionDenied unless it is an *Error with a
// code of its own, and a refused event is dropped and counted (its
// sender never hears of events' fate).
type Authorizer func(ctx context.Context, def *messages.Definition, m *Envelope) error

// WithAuthorizer makes the link ask authorize before it handles any
// inbound message that declares a permission (see Authorizer). Without an
// authorizer every message is allowed. Defaults to none.
func WithAuthorizer(authorize Authorizer) Option {
	return func(o *options) error {
		o.authorize = authorize
		return nil
	}
}

// WithStatusHandler calls f, from the connector's goroutine, when the
// connection beneath the link drops, resumes or closes. Defaults to none.
func WithStatusHandler(f func(Status)) Option {
	return func(o *options) error {
		o.onStatus = f
		return nil
	}
}

// Observer is told what a link sends and receives and how its requests
// end, for metrics. Its methods are called on the link's hot paths, from
// many goroutines: they must be quick and safe for concurrent use.
type Observer interface {
	// Sent is called for each message the connector took, with the
	// direction it travels (this side to the peer).
	Sent(dir messages.Direction, m *Envelope)
	// Received is called for each message the connector delivered, valid
	// or not, with the direction it travelled (the peer to this side).
	Received(dir messages.Direction, m *Envelope)
	// RequestEnded is called when a request this side sent ends: err is
	// what the request returned (nil for a response).
	RequestEnded(msgType string, err error, took time.Duration)
}

// HandlerObserver is an Observer that is also told how each handler this
// side ran for a received request or event ended, for the receiving
// side's latency and errors. A link calls it if its Observer implements
// it, from the goroutine that ran the handler.
type HandlerObserver interface {
	Observer
	// HandlerEnded is called when the handler of a received message of
	// type msgType (only types in the catalog) has returned: err is what it
	// returned (nil for success), took how long it ran. Messages refused
	// before a handler runs (invalid, no handler, no permission) are not
	// reported.
	HandlerEnded(kind messages.Kind, msgType string, err error, took time.Duration)
}

// WithObserver reports the link's traffic to o. Defaults to none.
func WithObserver(o Observer) Option {
	return func(opts *options) error {
		opts.observer = o
		return nil
	}
}

// WithEventQueue sets how many received events may wait for their handler.
// When the queue is full the connector waits, which slows the sender
// rather than dropping events (see NonBlocking for the one exception).
// Defaults to 256.
func WithEventQueue(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return errors.New("link: event queue must hold at least one event")
		}
		o.eventQueue = n
		return nil
	}
}

// WithMaxHandlers bounds the request handlers of the link that run at once
// to n, each on a goroutine of the link's. A request that arrives while n
// run waits for one of them to end, in arrival order, with up to n others;
// beyond that, the connector waits to deliver it, which slows the sender
// (Receiver.Receive). Handlers declared NonBlocking run on the delivering
// goroutine and do not count. Requests given to asynchronous handlers
// (HandleRequestAsync) are bounded apart: at most n wait for their
// replies at once, and the next is refused with CodeUnavailable. A request
// sent from inside one of the link's own handlers (known by the ctx it was
// sent with) is let past the bound, since the places it would wait for may
// be held by the handlers waiting for it. Defaults to 256.
func WithMaxHandlers(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return errors.New("link: at least one request handler must be allowed to run")
		}
		o.maxHandlers = n
		return nil
	}
}
