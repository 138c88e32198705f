package fabric

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/linkfabric/linkfabric/link"
)

// A peer's messages make claims: an instance_id it speaks for, the origin
// of a broadcast, the instances it hosts. Each is checked against what the
// peer is and hosts before anything acts on it (docs/security.md). A
// refused claim is answered with permission_denied where there is a
// requester, or dropped where there is none; either way it is counted and
// logged (the endpoint's log is rate-limited, see limitLogs, so that a
// peer cannot flood it), and it disturbs no one else.

// claims counts and reports refused claims.
type claims struct {
	log     *slog.Logger // rate-limited (limitLogs)
	refused *prometheus.CounterVec
}

func newClaims(log *slog.Logger, m *metrics) *claims {
	c := &claims{
		log: log,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkfabric_claims_refused_total",
			Help: "Messages refused because the sender claimed something that is not true of it (an instance it does not host, another origin), by sender type and claim.",
		}, []string{"peer", "claim"}),
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
	c.log.Warn("refused a claim", "peer", peer.String(), "claim", claim, "error", e.Message)
	return e
}
