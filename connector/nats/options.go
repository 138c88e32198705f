package nats

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
	"github.com/linkfabric/linkfabric/link"
)

// Option configures a Node.
type Option func(*options) error

type options struct {
	urls            []string
	natsOpts        []natsgo.Option
	prefix          string
	logger          *slog.Logger
	accept          AcceptFunc
	queue           int
	peerQueue       int
	maxUnacked      int
	noRespondersFor time.Duration
	drainTimeout    time.Duration
	connectWait     time.Duration
	name            string
	session         string
	epoch           EpochFunc
	gate            func() bool
	answerStale     func(peer link.Address) bool
	broadcastsFrom  func(peer link.Address) bool
	singlePeer      func(peer link.Address) bool
	sessionTimeout  time.Duration
	hint            func(error) string
	maxBudget       time.Duration
	maxSessions     int
}

func defaultOptions() options {
	return options{
		urls:            []string{natsgo.DefaultURL},
		prefix:          "lf",
		logger:          slog.Default(),
		queue:           65536,
		peerQueue:       65536,
		maxUnacked:      delivery.DefaultMaxUnacked,
		noRespondersFor: delivery.DefaultNoRespondersFor,
		drainTimeout:    5 * time.Second,
		connectWait:     5 * time.Second,
		maxBudget:       DefaultMaxRequestBudget,
		maxSessions:     DefaultMaxPeerSessions,
	}
}

// WithURLs sets the NATS servers to connect to; several for a cluster.
// Defaults to nats://127.0.0.1:4222.
func WithURLs(urls ...string) Option {
	return func(o *options) error {
		if len(urls) == 0 {
			return errors.New("nats: no server URL")
		}
		o.urls = urls
		return nil
	}
}

// WithNATSOptions adds nats.go options: credentials, TLS, ping interval.
// The Node sets its own reconnection policy and connection handlers after
// these, so options of those kinds are overridden. Defaults to none.
func WithNATSOptions(opts ...natsgo.Option) Option {
	return func(o *options) error {
		o.natsOpts = append(o.natsOpts, opts...)
		return nil
	}
}

// WithPrefix sets the first token of every subject, so that several
// clusters can share a broker. Defaults to "lf".
func WithPrefix(prefix string) Option {
	return func(o *options) error {
		if prefix == "" || strings.ContainsAny(prefix, " \t\r\n*>") || strings.HasPrefix(prefix, ".") || strings.HasSuffix(prefix, ".") {
			return errors.New("nats: subject prefix must be non-empty tokens without wildcards or spaces")
		}
		o.prefix = prefix
		return nil
	}
}

// WithLogger sets where the Node reports connection changes and dropped
// messages. Defaults to slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("nats: nil logger")
		}
		o.logger = l
		return nil
	}
}

// WithAccept sets what the Node does with the first message from a peer it
// has no connector for: accept is given a new connector and should start a
// link on it; an error refuses the peer (its requests are answered with
// the error). Without it, such messages are refused. Defaults to none.
func WithAccept(accept AcceptFunc) Option {
	return func(o *options) error {
		o.accept = accept
		return nil
	}
}

// WithNoRespondersRetry sets how long a request is retried while NATS
// answers that nothing subscribes to its subject, before it fails with
// link.ErrNotConnected. Right after a reconnect or a failover the peer may
// not have resubscribed yet. The request's deadline bounds it too.
// Defaults to 1s.
func WithNoRespondersRetry(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return errors.New("nats: negative no-responders retry")
		}
		o.noRespondersFor = d
		return nil
	}
}

// WithDrainTimeout bounds how long Close waits for in-flight messages.
// Defaults to 5s.
func WithDrainTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return errors.New("nats: drain timeout must be positive")
		}
		o.drainTimeout = d
		return nil
	}
}

// WithConnectWait bounds how long Connect waits for the first connection
// before it returns a Node that keeps trying in the background. An
// authorization failure ends the wait with an error. Defaults to 5s.
func WithConnectWait(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return errors.New("nats: negative connect wait")
		}
		o.connectWait = d
		return nil
	}
}

// WithQueues sets how many inbound messages may wait to be routed (in
// nats.go, per subscription), and how many may wait for each peer's link.
// Past those, messages are dropped and counted. A peer's queue takes memory
// only while messages wait in it. Defaults to 65536 and 65536.
func WithQueues(node, perPeer int) Option {
	return func(o *options) error {
		if node < 1 || perPeer < 1 {
			return errors.New("nats: queues must hold at least one message")
		}
		o.queue, o.peerQueue = node, perPeer
		return nil
	}
}

// WithMaxUnacked sets how many events each link keeps for want of its
// peer's acknowledgement, and how many broadcasts each endpoint type's
// stream keeps for want of every receiver's. Past that, sending an event
// waits (until its context ends) for acknowledgements to make room, and a
// broadcast fails with link.ErrUnavailable. Defaults to 65536.
func WithMaxUnacked(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return errors.New("nats: at least one event must be allowed unacknowledged")
		}
		o.maxUnacked = n
		return nil
	}
}

// DefaultMaxRequestBudget is the longest a fabric requester may have a
// request of its handled (WithMaxRequestBudget).
const DefaultMaxRequestBudget = 10 * time.Minute

// WithMaxRequestBudget sets the longest a peer's request is given: a
// fabric requester's budget beyond it is clipped, so the request's handler
// gets at most d and its response is kept for its copies at most d and
// delivery.ServedOverdue. Defaults to DefaultMaxRequestBudget.
func WithMaxRequestBudget(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 || d > maxBudget {
			return fmt.Errorf("nats: a request budget is between 1 ms and %s", maxBudget)
		}
		o.maxBudget = d
		return nil
	}
}

// DefaultMaxPeerSessions is how many sessions of one peer address a Node
// keeps links for at once (WithMaxPeerSessions).
const DefaultMaxPeerSessions = 16

// WithMaxPeerSessions bounds the links a Node accepts from the sessions of
// one peer address at once, so that one identity naming a fresh session
// in each message cannot make it keep a link for each. A new session
// beyond n replaces the oldest one that has not shown it is a live fabric
// peer (Conn.Confirmed) and has no request in flight; if every one has,
// the new session is refused with link.CodeUnavailable, and its client
// tries again. Defaults to DefaultMaxPeerSessions.
func WithMaxPeerSessions(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return errors.New("nats: at least one session per peer must be allowed")
		}
		o.maxSessions = n
		return nil
	}
}

// WithSinglePeers names the peer addresses that one live process at most
// holds (a slave's: the master refuses a second process of its id). A new
// session of such a peer beyond WithMaxPeerSessions replaces the oldest of
// its links with no request in flight, confirmed or not: that a newer run
// speaks says the older ones went away, killed without a close notice,
// and were it still there, its next message is answered session_lost (if
// WithAnswerStaleFrom says so) and it dials again.
func WithSinglePeers(single func(peer link.Address) bool) Option {
	return func(o *options) error {
		o.singlePeer = single
		return nil
	}
}

// WithSession sets the Node's session: that of the links it accepts, which
// its peers see in everything it sends them. It must be 1 to 32 letters
// and digits, and new for each run of the endpoint (a peer tells a
// restarted endpoint from the one before by it); see WithEpoch for a
// session that says which run is newer. Defaults to 16 random hex digits.
func WithSession(session string) Option {
	return func(o *options) error {
		if !validSession(session) {
			return errors.New("nats: a session is 1 to 32 letters and digits")
		}
		o.session = session
		return nil
	}
}

// An EpochFunc reads the epoch of a session of peer: a number that grows
// with each new run of an endpoint that must be unique (a master elected
// for a new term, say), or 0 for a session that says none.
type EpochFunc func(peer link.Address, session string) uint64

// WithEpoch makes the Node fence its peers' runs by epoch (see
// EpochFunc): once it has heard from a session of a peer address with
// epoch e, it drops whatever a session of that address with a lower epoch
// sends (a paused process that woke up after it was replaced, say), and
// ends a link it dialed to that address whose peer session has a lower
// epoch, failing its pending requests with link.ErrSessionLost so that its
// endpoint dials again. Sessions of epoch 0 are not fenced. Defaults to
// none.
func WithEpoch(f EpochFunc) Option {
	return func(o *options) error {
		o.epoch = f
		return nil
	}
}

// WithGate makes the Node ask open before it handles anything it receives
// and before it sends anything: while open reports false, what arrives is
// dropped (and counted), what is sent fails with link.ErrUnavailable, and
// the Node's own messages (acknowledgements, close notices, refusals,
// responses sent again) are not sent.
// An endpoint that may act only while it holds a lease (a master) closes
// the gate the moment the lease may have lapsed, before it knows who took
// over. open is called on every message, so it must be cheap and must not
// block. Defaults to always open.
func WithGate(open func() bool) Option {
	return func(o *options) error {
		o.gate = open
		return nil
	}
}

// WithName sets the connection name the broker shows for this Node.
// Defaults to the Node's address.
func WithName(name string) Option {
	return func(o *options) error {
		o.name = name
		return nil
	}
}

// WithAnswerStale makes the Node answer a request addressed to an ended
// session of its own address, or sent by a peer session whose link has
// ended, with link.ErrSessionLost, so that the requester learns at once
// that this end restarted or let the link go. Only an endpoint whose
// address no other live process holds should (a cluster's one master):
// elsewhere the session may be another live process's that uses the same
// address (an operator's mistake, or a restarted process's predecessor not
// yet gone), and the answer would end that process's link. Defaults to
// silence: such messages are dropped and counted.
func WithAnswerStale() Option {
	return WithAnswerStaleFrom(func(link.Address) bool { return true })
}

// WithAnswerStaleFrom is WithAnswerStale for the peers answer reports
// true of only: a slave answers other slaves, whose links to it are its
// own (see fabric's direct links), and stays silent to the master, whose
// link may be another live process's. answer must be cheap, must not
// block, and is called from the Node's routing goroutine.
func WithAnswerStaleFrom(answer func(peer link.Address) bool) Option {
	return func(o *options) error {
		o.answerStale = answer
		return nil
	}
}

// WithBroadcastsFrom makes the Node take a message on a broadcast subject
// (to every endpoint of its type) only from the peers from reports true
// of, and drop the others' (a request is answered invalid_message): a
// slave that links with other slaves takes broadcasts from the master
// alone. from must be cheap, must not block, and is called from the
// Node's routing goroutine. Defaults to taking them from every peer.
func WithBroadcastsFrom(from func(peer link.Address) bool) Option {
	return func(o *options) error {
		o.broadcastsFrom = from
		return nil
	}
}

// WithSessionTimeout sets how long what a link's peer never acknowledged
// outlives the link, once it has closed (either end closed it, or the
// peer went away), for the peer's next session to take over (Conn.Adopt):
// its unacknowledged events, and the broadcasts it is owed, which are kept
// for it meanwhile and sent to no one on its behalf. Past that they are
// given up. Defaults to 0: given up when the link closes.
func WithSessionTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return errors.New("nats: negative session timeout")
		}
		o.sessionTimeout = d
		return nil
	}
}

// WithHint sets where Connect finds advice for the errors it returns for a
// mistake of the endpoint's configuration: hint is given one of
// ErrCredentials, ErrNotAllowed, ErrTLSUntrusted, ErrTLSMismatch and
// ErrTLSRefused, and returns what the user can change (the names of the
// settings, say), or "" for nothing; the error then carries the advice in
// parentheses. Defaults to none.
func WithHint(hint func(error) string) Option {
	return func(o *options) error {
		o.hint = hint
		return nil
	}
}
