package delivery

import (
	"errors"
	"time"
)

// The protocol's numbers (docs/reliability.md). The connector's ticker
// calls the Tick methods every TickEvery; the rest are the state
// machines' own.
const (
	// TickEvery is how often acknowledgements and resends are due.
	TickEvery = 50 * time.Millisecond
	// AckEvery: a receiver acknowledges at least this often, in events,
	// and otherwise on the tick.
	AckEvery = 64
	// ResendFirst is the silence after which unacknowledged events are
	// sent again; it doubles to ResendMax.
	ResendFirst = 500 * time.Millisecond
	ResendMax   = 5 * time.Second
	// GapResend: at most one go-back-N per link (or per broadcast
	// receiver) in this time, however many gaps are reported; and at
	// most one gap report per stream from a receiver.
	GapResend = 20 * time.Millisecond
	// ProbeWindow bounds what the resend timer sends a silent peer at a
	// time: a peer that is not there costs the broker no more than this
	// per round; one that is acknowledges the window and is sent the
	// next at once.
	ProbeWindow = 1024
	// DefaultMaxUnacked is how many events a link (or a broadcast
	// stream) holds unacknowledged before Send refuses with ErrFull.
	DefaultMaxUnacked = 65536
	// MaxFence bounds the receivers a broadcast's fence lists.
	MaxFence = 32
	// MaxHeld bounds the events a receiver holds, per stream, while the
	// first of them waits for the other stream.
	MaxHeld = 64

	// RequestRTO is the silence after which a request is sent again;
	// it doubles.
	RequestRTO = time.Second
	// NoRespondersFirst is the first wait before a request NATS found no
	// subscriber for is sent again; it doubles to NoRespondersMax.
	NoRespondersFirst = 20 * time.Millisecond
	NoRespondersMax   = 250 * time.Millisecond
	// DefaultNoRespondersFor is how long after it was first sent a
	// request is sent again when nothing subscribes to its subject.
	DefaultNoRespondersFor = time.Second
	// ServedSweep is how often a responder forgets what requesters that
	// went quiet never acknowledged, and ServedOverdue how long past its
	// deadline a request is remembered.
	ServedSweep   = time.Second
	ServedOverdue = time.Second
	// RequestWindow bounds how far past its low mark (its oldest request
	// still waiting) a requester names a request: Requests.Send refuses
	// with ErrWindow beyond it, and Served refuses such a request
	// (TooFarAhead), so that a responder remembers at most this many
	// requests of a requester, whatever a peer claims.
	RequestWindow = 4096
	// MaxRequesters bounds the requesters a Served remembers: a link's
	// peer has one (its connector); a request from another is refused
	// (OtherRequester).
	MaxRequesters = 1
)

// Errors the state machines return. The connector maps them to the
// link's codes (see the package doc).
var (
	// ErrClosed: the stream, link or table has been closed (or handed
	// over by Adopt) and takes nothing more.
	ErrClosed = errors.New("delivery: closed")
	// ErrFull: the peer has not acknowledged the most events a stream
	// holds; the caller waits for an acknowledgement (Room) and tries
	// again, or gives up.
	ErrFull = errors.New("delivery: too many events unacknowledged")
	// ErrWindow: RequestWindow requests have been sent since the oldest
	// still waiting; the caller waits for a request to end (then Room)
	// and tries again, or gives up.
	ErrWindow = errors.New("delivery: too many requests sent since the oldest still waiting")
	// ErrTimeout: a request's deadline passed before its response came.
	ErrTimeout = errors.New("delivery: deadline passed")
	// ErrNoResponders: nothing subscribed to a request's subject for as
	// long as the table waits for one; the request certainly did not run.
	ErrNoResponders = errors.New("delivery: nothing subscribes to the request's subject")
	// ErrSessionLost: the link closed before the request's response came.
	ErrSessionLost = errors.New("delivery: session lost")
)
