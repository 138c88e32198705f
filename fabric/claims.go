package fabric

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkfabric/linkfabric/link"
)

// A peer's messages make claims: an instance_id it speaks for, the origin
// of a broadcast, the instances it hosts. Each is checked against what the
// peer is and hosts before anything acts on it (docs/security.md). A
// refused claim is answered with permission_denied where there is a
// requester, or dropped where there is none; either way it is counted and
// logged at a bounded rate, so that a peer cannot flood the log, and it
// disturbs no one else.

// claims counts and reports refused claims.
type claims struct {
	log     *slog.Logger
	refused *prometheus.CounterVec
	limit   logLimiter
}

func newClaims(log *slog.Logger, m *metrics) *claims {
	c := &claims{
		log: log,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkfabric_claims_refused_total",
			Help: "Messages refused because the sender claimed something that is not true of it (an instance it does not host, another origin), by sender type and claim.",
		}, []string{"peer", "claim"}),
		limit: logLimiter{every: 10 * time.Second},
	}
	m.reg.MustRegister(c.refused)
	return c
}

// Claims the fabric checks, the claim label of the counter.
const (
	claimInstance = "instance" // an instance the peer speaks for
	claimOrigin   = "origin"   // where a broadcast started
	claimHosting  = "hosting"  // the instances a slave says it hosts
)

// refuse counts a refused claim and returns the error that says so.
func (c *claims) refuse(peer link.Address, claim string, e *link.Error) *link.Error {
	c.refused.WithLabelValues(peer.Type.String(), claim).Inc()
	if n, ok := c.limit.allow(peer.String() + " " + claim); ok {
		c.log.Warn("refused a claim", "peer", peer.String(), "claim", claim, "error", e.Message, "refused_since_last_logged", n)
	}
	return e
}

// logLimiter lets a line of each key through at most once per every,
// counting the ones it holds back.
type logLimiter struct {
	every time.Duration

	mu   sync.Mutex
	last map[string]*limited
}

type limited struct {
	at   time.Time
	held int
}

// maxLimiterKeys bounds what a logLimiter remembers; past it, it starts
// afresh (a burst of new keys may then each log once more).
const maxLimiterKeys = 4096

// allow reports whether a line of key may be logged now, and how many were
// held back since the last one that was.
func (l *logLimiter) allow(key string) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.last == nil || len(l.last) >= maxLimiterKeys {
		l.last = map[string]*limited{}
	}
	e := l.last[key]
	if e == nil {
		l.last[key] = &limited{at: now}
		return 0, true
	}
	if now.Sub(e.at) < l.every {
		e.held++
		return 0, false
	}
	held, e.at, e.held = e.held, now, 0
	return held, true
}
