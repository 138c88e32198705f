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
	authorize      func(ctx context.Context, permission string) error
	onStatus       func(Status)
	eventQueue     int
	maxHandlers    int
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

// WithAuthorizer makes the link ask authorize before it runs the handler of
// any inbound request that declares a permission other than
// messages.Unrestricted. An error refuses the request: the requester gets it
// as CodePermissionDenied unless it is an *Error with a code of its own.
// Without an authorizer every request is allowed. Defaults to none.
func WithAuthorizer(authorize func(ctx context.Context, permission string) error) Option {
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
	Sent(dir messages.Direction, m *Message)
	// Received is called for each message the connector delivered, valid
	// or not, with the direction it travelled (the peer to this side).
	Received(dir messages.Direction, m *Message)
	// RequestEnded is called when a request this side sent ends: err is
	// what the request returned (nil for a response).
	RequestEnded(msgType string, err error, took time.Duration)
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
// goroutine and do not count. A request sent from inside one of the link's
// own handlers (known by the ctx it was sent with) is let past the bound,
// since the places it would wait for may be held by the handlers waiting
// for it. Defaults to 256.
func WithMaxHandlers(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return errors.New("link: at least one request handler must be allowed to run")
		}
		o.maxHandlers = n
		return nil
	}
}
