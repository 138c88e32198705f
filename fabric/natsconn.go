package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// What the fabric needs of the transport that carries its links, as small
// interfaces: no fabric type holds the connector's own. connector/nats
// provides them, through the adapters below.

// transport is an endpoint's presence on the broker.
type transport interface {
	// Dial returns a new connector for a link to peer; see lfnats.Node.Dial.
	Dial(peer link.Address) (session, error)
	// Connected reports whether the broker is reachable now.
	Connected() bool
	// URL returns the URL of the broker it is connected to, redacted.
	URL() string
	// ConnectError says why the last attempt to reach the broker failed.
	ConnectError() error
	// Announce tells every endpoint of type to that this endpoint's
	// session is now the one of its address, so that a peer linked to an
	// earlier run of it (an older term of the master) dials again at
	// once; see lfnats.Node.Announce.
	Announce(ctx context.Context, to messages.Endpoint) error
	// Close lets what is in flight finish, within the drain timeout, and
	// closes every link; see lfnats.Node.Close.
	Close() error
}

// broadcaster is a transport that sends to every endpoint of a type, and
// keeps each broadcast until every receiver has it.
type broadcaster interface {
	link.Fanout
	// FlushBroadcasts waits, until ctx ends, until every receiver still
	// linked has every broadcast.
	FlushBroadcasts(ctx context.Context) error
}

// session is one link's connector, to one session of its peer.
type session interface {
	link.Connector
	// Peer returns the address of the endpoint at the other end.
	Peer() link.Address
	// Confirmed reports whether the peer has shown it is a live fabric
	// peer that hears this end; see lfnats.Conn.Confirmed.
	Confirmed() bool
	// Adopt takes this session for the peer's, in place of old, an
	// earlier session of the same peer that has ended, or of none (nil):
	// what old's peer never acknowledged comes first on this one, and
	// from now on it receives broadcasts. Call it before anything is sent
	// on the session; see lfnats.Conn.Adopt.
	Adopt(old session) error
}

// role is what the connector is told of an endpoint's place in the
// cluster.
type role struct {
	// accept takes the links peers open (the master's); nil: none.
	accept func(session) error
	// unique: no other live process holds the endpoint's address (the
	// master), so a message to an earlier session of it is answered
	// session_lost.
	unique bool
	// answerStale, if set, is unique for the peers it reports true of
	// (a slave's links from other slaves).
	answerStale func(peer link.Address) bool
	// singlePeer, if set, says which peers one live process at most
	// holds (a slave's other slaves: the master refuses a second process
	// of an id), whose newer sessions replace the idle older ones
	// (lfnats.WithSinglePeers).
	singlePeer func(peer link.Address) bool
	// broadcastsFrom, if set, says from which peers a broadcast is taken
	// (a slave: from the master, not from the slaves it links with).
	broadcastsFrom func(peer link.Address) bool
	// sessionTimeout: how long what a peer's ended session never
	// acknowledged waits for its next session; 0 for an endpoint that
	// never takes a session over (a control).
	sessionTimeout time.Duration
	// connectWait bounds the wait for the first connection; 0: the
	// connector's default.
	connectWait time.Duration
	// session is the endpoint's session on the fabric ("": a random
	// one): the master's says its term (see masterTerm).
	session string
	// epoch, if set, reads the epoch of a peer's session: a peer session
	// of an older epoch than one heard from is ignored, and a link to it
	// ends (slaves and controls fence masters of older terms).
	epoch func(peer link.Address, session string) uint64
	// gate, if set, is asked before anything is handled or sent: while it
	// reports false the endpoint neither hears nor says anything, the
	// connector's own acknowledgements and notices included (a master
	// whose lease may have lapsed). It must be cheap and must not block.
	gate func() bool
	// maxSessions bounds the sessions of one peer address it keeps links
	// to at once (lfnats.WithMaxPeerSessions); 0: the connector's default.
	maxSessions int
	// local, if not nil, is a broker running in this process: when the
	// endpoint connects to its URL, it connects in-process (see
	// WithLocalBroker).
	local *Broker
}

// connect connects an endpoint to NATS as configured.
func connect(ctx context.Context, self link.Address, c NATSConfig, url string, log *slog.Logger, r role) (*natsTransport, error) {
	natsOpts, err := c.Options()
	if err != nil {
		return nil, err
	}
	if r.local != nil && url == r.local.ClientURL() {
		// Through a pipe into the server, not through the kernel's
		// loopback: what the endpoint sends and receives costs no system
		// call. The server still listens on loopback for other processes.
		natsOpts = append(natsOpts, natsgo.InProcessServer(r.local.s))
	}
	opts := []lfnats.Option{
		lfnats.WithURLs(splitURLs(url)...),
		lfnats.WithPrefix(c.Prefix),
		lfnats.WithLogger(log),
		lfnats.WithNATSOptions(natsOpts...),
		lfnats.WithHint(hint),
		lfnats.WithSessionTimeout(r.sessionTimeout),
	}
	if r.accept != nil {
		opts = append(opts, lfnats.WithAccept(func(c *lfnats.Conn) error { return r.accept(natsSession{c}) }))
	}
	if r.unique {
		opts = append(opts, lfnats.WithAnswerStale())
	} else if r.answerStale != nil {
		opts = append(opts, lfnats.WithAnswerStaleFrom(r.answerStale))
	}
	if r.singlePeer != nil {
		opts = append(opts, lfnats.WithSinglePeers(r.singlePeer))
	}
	if r.broadcastsFrom != nil {
		opts = append(opts, lfnats.WithBroadcastsFrom(r.broadcastsFrom))
	}
	if r.maxSessions > 0 {
		opts = append(opts, lfnats.WithMaxPeerSessions(r.maxSessions))
	}
	if r.connectWait > 0 {
		opts = append(opts, lfnats.WithConnectWait(r.connectWait))
	}
	if r.session != "" {
		opts = append(opts, lfnats.WithSession(r.session))
	}
	if r.epoch != nil {
		opts = append(opts, lfnats.WithEpoch(r.epoch))
	}
	if r.gate != nil {
		opts = append(opts, lfnats.WithGate(r.gate))
	}
	n, err := lfnats.Connect(ctx, self, opts...)
	if err != nil {
		return nil, err
	}
	return &natsTransport{n}, nil
}

// splitURLs splits a comma-separated list of NATS URLs.
func splitURLs(url string) []string {
	var urls []string
	for _, u := range strings.Split(url, ",") {
		urls = append(urls, strings.TrimSpace(u))
	}
	return urls
}

// Options returns the nats.go options the fabric connects to c's servers
// with: credentials, TLS and pings. Tools that speak to the same servers
// beside an endpoint (a wiretap, a test client) use them too.
func (c NATSConfig) Options() ([]natsgo.Option, error) {
	opts := []natsgo.Option{
		natsgo.PingInterval(c.PingInterval),
		natsgo.MaxPingsOutstanding(2),
	}
	switch {
	case c.User != "":
		opts = append(opts, natsgo.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, natsgo.Token(c.Token))
	case c.NKeySeedFile != "":
		opt, err := natsgo.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: FABRIC_NATS_NKEY_SEED_FILE=%q: %v", ErrConfig, c.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	case c.CredsFile != "":
		opts = append(opts, natsgo.UserCredentials(c.CredsFile))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, natsgo.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, natsgo.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return opts, nil
}

// hint names the settings behind a mistake the connector reports at
// start-up.
func hint(kind error) string {
	switch {
	case errors.Is(kind, lfnats.ErrCredentials):
		return "FABRIC_NATS_USER and FABRIC_NATS_PASSWORD, FABRIC_NATS_TOKEN, FABRIC_NATS_NKEY_SEED_FILE or FABRIC_NATS_CREDS_FILE"
	case errors.Is(kind, lfnats.ErrNotAllowed):
		return "do FABRIC_SLAVE_ID or FABRIC_CONTROL_USER match the credentials?"
	case errors.Is(kind, lfnats.ErrTLSUntrusted):
		return "FABRIC_NATS_TLS_CA_FILE must name the CA that signs it"
	case errors.Is(kind, lfnats.ErrTLSMismatch):
		return "FABRIC_NATS_TLS_*, tls:// URLs"
	case errors.Is(kind, lfnats.ErrTLSRefused):
		return "check the client certificate (FABRIC_NATS_TLS_CERT_FILE, FABRIC_NATS_TLS_KEY_FILE) and the CA (FABRIC_NATS_TLS_CA_FILE)"
	}
	return ""
}

// natsTransport is a transport and a broadcaster over connector/nats.
type natsTransport struct{ n *lfnats.Node }

func (t *natsTransport) Dial(peer link.Address) (session, error) {
	c, err := t.n.Dial(peer)
	if err != nil {
		return nil, err
	}
	return natsSession{c}, nil
}

func (t *natsTransport) Connected() bool     { return t.n.NATS().IsConnected() }
func (t *natsTransport) URL() string         { return t.n.NATS().ConnectedUrlRedacted() }
func (t *natsTransport) ConnectError() error { return t.n.ConnectError() }
func (t *natsTransport) Close() error        { return t.n.Close() }

func (t *natsTransport) Announce(ctx context.Context, to messages.Endpoint) error {
	return t.n.Announce(ctx, to)
}

func (t *natsTransport) Broadcast(ctx context.Context, to messages.Endpoint, m *link.Envelope) error {
	return t.n.Broadcast(ctx, link.Address{Type: to, ID: lfnats.BroadcastID}, m)
}

func (t *natsTransport) FlushBroadcasts(ctx context.Context) error { return t.n.FlushBroadcasts(ctx) }

// natsSession is a session over connector/nats. It is a link.Stopper (a
// graceful Disconnect loses nothing the peer was told arrived).
type natsSession struct{ *lfnats.Conn }

func (s natsSession) Adopt(old session) error {
	var prev *lfnats.Conn
	if o, ok := old.(natsSession); ok {
		prev = o.Conn
	}
	return s.Conn.Adopt(prev)
}

// connectJetStream makes the master's connection for JetStream (its state
// and its lease): the master's credentials, and its inbox prefix, since
// JetStream answers on the requester's inbox. It waits for the first
// connection as long as ctx allows, and reconnects for ever afterwards.
func connectJetStream(ctx context.Context, c NATSConfig, url string, log *slog.Logger) (*natsgo.Conn, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	connected := make(chan struct{})
	refused := make(chan error, 1)
	var once sync.Once
	opts = append(opts,
		natsgo.Name("linkfabric master/0 state"),
		natsgo.CustomInboxPrefix(lfnats.InboxPrefix(c.Prefix, link.MasterAddress)),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(250*time.Millisecond),
		natsgo.ReconnectJitter(250*time.Millisecond, time.Second),
		natsgo.RetryOnFailedConnect(true),
		natsgo.ConnectHandler(func(*natsgo.Conn) { once.Do(func() { close(connected) }) }),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil {
				log.Warn("state connection to NATS lost", "error", err)
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			log.Info("state connection to NATS back", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.ReconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if isAuthError(err) {
				select {
				case refused <- err:
				default:
				}
			}
		}),
	)
	nc, err := natsgo.Connect(strings.Join(splitURLs(url), ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("fabric: connect to NATS: %w", err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	select {
	case <-connected:
		return nc, nil
	case err = <-refused:
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	if err == nil {
		err = nc.LastError()
	}
	nc.Close()
	if isAuthError(err) {
		return nil, fmt.Errorf("%w (%s): %w", lfnats.ErrCredentials, hint(lfnats.ErrCredentials), err)
	}
	return nil, fmt.Errorf("fabric: NATS at %s is not reachable: %v", url, err)
}

// isAuthError reports whether err is the server refusing the credentials.
func isAuthError(err error) bool {
	return err != nil && (errors.Is(err, natsgo.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation"))
}
