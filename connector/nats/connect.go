package nats

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/link"
)

// Mistakes of an endpoint's configuration that Connect reports; the errors
// it returns match them with errors.Is, and carry the advice of WithHint.
var (
	// ErrCredentials: the server refused the endpoint's credentials.
	ErrCredentials = errors.New("nats: the server refused the credentials")
	// ErrNotAllowed: the server took the credentials, but does not let
	// them receive what is addressed to the endpoint (credentials of
	// another endpoint, say).
	ErrNotAllowed = errors.New("nats: the server does not let these credentials receive what is addressed to this endpoint")
	// ErrTLSUntrusted: the endpoint does not trust the server's certificate.
	ErrTLSUntrusted = errors.New("nats: TLS: the server's certificate is not trusted")
	// ErrTLSMismatch: one side wants TLS and the other does not.
	ErrTLSMismatch = errors.New("nats: TLS: the server and this endpoint disagree on TLS")
	// ErrTLSRefused: the server refused the endpoint's TLS handshake (its
	// client certificate, say).
	ErrTLSRefused = errors.New("nats: TLS: the server refused the connection")
)

// Connect connects self to NATS and subscribes to everything addressed to
// it. It waits (see WithConnectWait) for the first connection; a refused
// credential is an error, an unreachable server is not: the Node keeps
// trying in the background, for ever, and buffers what is sent meanwhile.
func Connect(ctx context.Context, self link.Address, opts ...Option) (*Node, error) {
	if err := self.Validate(); err != nil {
		return nil, err
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	n := newNode(self, o)
	n.starting.Store(true)
	defer n.starting.Store(false)
	start := newStartup()
	nc, err := natsgo.Connect(strings.Join(o.urls, ","), n.natsOptions(start)...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", self, err)
	}
	n.nc = nc
	if err := o.authError(nc.LastError()); err != nil {
		nc.Close()
		return nil, err
	}
	if err := n.subscribe(); err != nil {
		return nil, err
	}
	if err := n.awaitConnection(ctx, start); err != nil {
		return nil, err
	}
	return n, nil
}

// newNode makes a Node that has no connection yet.
func newNode(self link.Address, o options) *Node {
	n := &Node{
		self:      self,
		session:   cmp.Or(o.session, newSession()),
		opts:      o,
		prefixDot: o.prefix + ".",
		done:      make(chan struct{}),
		connected: make(chan struct{}),
		noWait:    doneContext(),
		byID:      map[uint64]*Conn{},
		bySess:    map[peerKey]*Conn{},
		dialed:    map[link.Address]*Conn{},
		accepted:  map[link.Address][]*Conn{},
		epochs:    map[link.Address]uint64{},
	}
	n.st = newStreams(o.maxUnacked)
	return n
}

// startup is what Connect learns from the connection's handlers while it
// waits for the first connection.
type startup struct {
	connected chan struct{} // closed at the first connection
	closed    chan struct{} // closed when the connection has closed for good
	refused   chan error    // why the server will never take this endpoint
	once      sync.Once
}

func newStartup() *startup {
	return &startup{connected: make(chan struct{}), closed: make(chan struct{}), refused: make(chan error, 1)}
}

// natsOptions are the caller's nats.go options, then the Node's own
// reconnection policy and connection handlers.
func (n *Node) natsOptions(start *startup) []natsgo.Option {
	o, self := n.opts, n.self
	name := cmp.Or(o.name, "linkfabric "+self.String())
	firstConnection := func() {
		start.once.Do(func() {
			close(start.connected)
			close(n.connected)
		})
	}
	return append(append([]natsgo.Option{}, o.natsOpts...),
		natsgo.Name(name),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250*time.Millisecond),
		natsgo.ReconnectJitter(250*time.Millisecond, time.Second),
		natsgo.RetryOnFailedConnect(true),
		natsgo.DrainTimeout(o.drainTimeout),
		// Replies to our own requests come back on our own subjects; nats.go
		// inboxes, if ever used, stay inside what we may subscribe to.
		natsgo.CustomInboxPrefix(InboxPrefix(o.prefix, self)),
		natsgo.ConnectHandler(func(*natsgo.Conn) {
			firstConnection()
			o.logger.Info("connected to NATS", "node", self.String())
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			firstConnection()
			o.logger.Info("reconnected to NATS", "node", self.String(), "server", nc.ConnectedUrlRedacted())
			n.status(link.StatusResumed, nil)
		}),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if n.isClosed() {
				return
			}
			o.logger.Warn("disconnected from NATS", "node", self.String(), "error", err)
			n.status(link.StatusDropped, err)
		}),
		natsgo.ClosedHandler(func(nc *natsgo.Conn) {
			close(start.closed)
			n.status(link.StatusClosed, nc.LastError())
		}),
		natsgo.ReconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err == nil {
				return
			}
			n.connectErr.Store(&err)
			if fatal := o.startError(err); fatal != nil && n.starting.Load() {
				select {
				case start.refused <- fatal:
				default:
				}
			}
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			o.logger.Warn("NATS error", "node", self.String(), "error", err)
		}),
	)
}

// subscribe subscribes to everything addressed to the Node, and starts its
// routing and ticking goroutines.
func (n *Node) subscribe() error {
	// Both subscriptions feed one channel, which nats.go fills from its
	// read loop in the order the server wrote the messages, and one
	// goroutine routes them: what one publisher sends this endpoint, on its
	// link or to every endpoint of the type, is routed in the order sent.
	// (Two asynchronous subscriptions would each route on a goroutine of
	// its own, and a link's event and a broadcast sent after it could
	// overtake each other.) A full channel drops, as a subscription's
	// pending limit would; the streams send again what was dropped.
	inbox := make(chan *natsgo.Msg, n.opts.queue)
	for _, s := range Subscriptions(n.opts.prefix, n.self) {
		if _, err := n.nc.ChanSubscribe(s, inbox); err != nil {
			n.nc.Close()
			return fmt.Errorf("nats: subscribe %s: %w", s, err)
		}
	}
	n.wg.Add(2)
	go n.routeAll(inbox)
	go n.ticker()
	if !n.nc.IsConnected() {
		return nil
	}
	// Make sure the server has the subscriptions before anyone is told
	// this endpoint is up, and has not refused them.
	_ = n.nc.FlushTimeout(n.opts.connectWait)
	if err := n.nc.LastError(); errors.Is(err, natsgo.ErrPermissionViolation) && strings.Contains(err.Error(), "Subscription") {
		n.shutdown()
		return n.opts.mistake(ErrNotAllowed, n.self.String(), err)
	}
	return nil
}

// awaitConnection waits, at most the connect wait, for the first
// connection; past that the Node keeps trying in the background.
func (n *Node) awaitConnection(ctx context.Context, start *startup) error {
	wait := time.NewTimer(n.opts.connectWait)
	defer wait.Stop()
	var err error
	select {
	case <-start.connected:
		return nil
	case <-start.closed:
		last := n.nc.LastError()
		err = fmt.Errorf("nats: connect %s: %w", n.self, cmpErr(n.opts.authError(last), last))
	case refused := <-start.refused:
		err = fmt.Errorf("nats: connect %s: %w", n.self, refused)
	case <-ctx.Done():
		err = fmt.Errorf("nats: connect %s: %w", n.self, ctx.Err())
	case <-wait.C:
		if err = n.opts.authError(n.nc.LastError()); err == nil {
			n.opts.logger.Warn("NATS not reachable yet; retrying in the background", "node", n.self.String(), "servers", strings.Join(n.opts.urls, ","), "error", n.ConnectError())
			return nil
		}
	}
	n.shutdown()
	return err
}

// mistake is err, a mistake of the endpoint's configuration of the kind
// kind, about what (if not ""), with the hint's advice.
func (o *options) mistake(kind error, what string, err error) error {
	if what != "" {
		what = ", " + what
	}
	if o.hint != nil {
		if h := o.hint(kind); h != "" {
			return fmt.Errorf("%w%s (%s): %w", kind, what, h, err)
		}
	}
	return fmt.Errorf("%w%s: %w", kind, what, err)
}

// authError returns a clear error if err is the broker refusing our
// credentials, and nil otherwise.
func (o *options) authError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, natsgo.ErrAuthorization) || errors.Is(err, natsgo.ErrAuthExpired) ||
		errors.Is(err, natsgo.ErrAuthRevoked) || errors.Is(err, natsgo.ErrAccountAuthExpired) ||
		strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		return o.mistake(ErrCredentials, "", err)
	}
	return nil
}

// startError returns a clear error if err is the server refusing this
// endpoint for good (its credentials or its certificate), which retrying
// will not mend, and nil otherwise.
func (o *options) startError(err error) error {
	if e := o.authError(err); e != nil {
		return e
	}
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var op *net.OpError
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return o.mistake(ErrTLSUntrusted, "", err)
	case errors.Is(err, natsgo.ErrSecureConnRequired), errors.Is(err, natsgo.ErrSecureConnWanted):
		return o.mistake(ErrTLSMismatch, "", err)
	case errors.Is(err, natsgo.ErrTLS), errors.As(err, &op) && op.Op == "remote error":
		return o.mistake(ErrTLSRefused, "", err)
	}
	return nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	if b != nil {
		return b
	}
	return ErrClosed
}

func doneContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func newSession() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// noRespondersWindow is how long a request table sends a request again
// while NATS says nothing subscribes: the option's, where 0 means not at
// all (the table's 0 means its default).
func (o *options) noRespondersWindow() time.Duration {
	if o.noRespondersFor == 0 {
		return time.Nanosecond
	}
	return o.noRespondersFor
}
