package soak

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
)

// DefaultPrefix is the subject prefix of a soak's endpoints unless
// Config.NATS.Prefix says otherwise: not the fabric's "lf", so that a soak
// never touches a production cluster's subjects.
const DefaultPrefix = "lfsoak"

// ControlUser is the user of the soak's control.
const ControlUser = "soak"

// Config says what a soak runs, where, and how fast. Zero fields take the
// defaults given.
type Config struct {
	// NATS is how every endpoint reaches NATS: the servers (URL, required),
	// credentials, TLS, ping interval (default 5s). Prefix defaults to
	// DefaultPrefix, not the fabric's.
	NATS fabric.NATSConfig
	// NATSFor, if set, returns the NATS configuration of one endpoint
	// (link.MasterAddress, slave/<id>, control/soak) given NATS, so that
	// endpoints can be given different servers or ping intervals.
	NATSFor func(endpoint link.Address, cfg fabric.NATSConfig) fabric.NATSConfig
	// Timing is every endpoint's. Defaults to FastTiming().
	Timing fabric.TimingConfig
	// KVReplicas is how many copies of the master's state the NATS servers
	// keep (fabric.MasterConfig.KVReplicas): 3 on a three-node cluster, so
	// that the master survives the loss of a node. Defaults to 1.
	KVReplicas int
	// Lease is the masters' lease (fabric.MasterConfig.Lease). Defaults
	// to fabric.DefaultLease.
	Lease time.Duration
	// Slaves is how many slaves run, with ids 1 to Slaves. Defaults to 2.
	Slaves int
	// Instances is how many instances each slave hosts, 1 to 99; slave N's
	// are N01, N02, ... Defaults to 2.
	Instances int
	// UpRate is how many soak:up events each instance sends the master per
	// second. Defaults to 20; negative sends none.
	UpRate float64
	// DownRate is how many soak:down events the master sends on each of
	// its slave links per second. Defaults to 20; negative sends none.
	DownRate float64
	// AllRate is how many soak:all broadcasts the first instance of each
	// slave (N01) sends every other instance per second. Defaults to 10;
	// negative sends none.
	AllRate float64
	// AskRate is how many soak:ask requests the control sends per second,
	// to the instances in turn. Defaults to 10; negative sends none.
	AskRate float64
	// AskConcurrency bounds the soak:ask requests in flight. Defaults to 4.
	AskConcurrency int
	// TellRate is how many soak:tell requests each instance sends the
	// master per second, one at a time. Defaults to 2; negative sends none.
	TellRate float64
	// OutRate is how many lines of output each instance prints per
	// second; the control follows every instance, through the master.
	// Defaults to 10; negative prints none.
	OutRate float64
	// StateRate is how many changes of the master's state the control
	// makes per second: it creates an instance, then bans a player, in
	// turn, and remembers what the master acknowledged (CheckState).
	// Defaults to none (0), or to 2 with Masters.
	StateRate float64
	// Masters, if not 0, is how many master processes the soak runs,
	// with MasterCommand, instead of one master in this process: one is
	// active, the others stand by (see KillMaster, PauseMaster). The
	// master-side traffic (soak:up, soak:down, soak:tell) is then off, as
	// what it counts happens in the masters' processes.
	Masters int
	// MasterCommand returns the command that runs one master process of
	// the soak (ServeMaster), given the FABRIC_* environment it must run
	// with (to add to its own). Required with Masters.
	MasterCommand func(env []string) *exec.Cmd
	// QuiesceTimeout bounds how long Quiesce waits for what is in flight.
	// Defaults to the request timeout plus 10s.
	QuiesceTimeout time.Duration
	// Logger gets the endpoints' logs. Defaults to discarding them.
	Logger *slog.Logger
}

// FastTiming is the default timing of a soak: short, so that faults are
// noticed and healed within seconds. The session timeout stays long
// enough for a NATS node to be restarted within it.
func FastTiming() fabric.TimingConfig {
	return fabric.TimingConfig{
		RequestTimeout:    5 * time.Second,
		HeartbeatInterval: 200 * time.Millisecond,
		PeerTimeout:       2 * time.Second,
		SessionTimeout:    30 * time.Second,
	}
}

// withDefaults returns c with its zero fields set, or an error naming the
// field that is wrong.
func (c Config) withDefaults() (Config, error) {
	if c.NATS.URL == "" {
		return c, errors.New("soak: no NATS URL")
	}
	if c.NATS.Prefix == "" {
		c.NATS.Prefix = DefaultPrefix
	}
	if c.NATS.PingInterval == 0 {
		c.NATS.PingInterval = 5 * time.Second
	}
	if c.Timing == (fabric.TimingConfig{}) {
		c.Timing = FastTiming()
	}
	if c.Slaves == 0 {
		c.Slaves = 2
	}
	if c.Instances == 0 {
		c.Instances = 2
	}
	if c.UpRate == 0 {
		c.UpRate = 20
	}
	if c.DownRate == 0 {
		c.DownRate = 20
	}
	if c.AllRate == 0 {
		c.AllRate = 10
	}
	if c.AskRate == 0 {
		c.AskRate = 10
	}
	if c.AskConcurrency == 0 {
		c.AskConcurrency = 4
	}
	if c.TellRate == 0 {
		c.TellRate = 2
	}
	if c.OutRate == 0 {
		c.OutRate = 10
	}
	if c.Masters > 0 {
		// What the master handles is counted in this process; with masters
		// of their own processes, only what passes through them is.
		c.UpRate, c.DownRate, c.TellRate = -1, -1, -1
		if c.StateRate == 0 {
			c.StateRate = 2
		}
	}
	if c.QuiesceTimeout == 0 {
		c.QuiesceTimeout = c.Timing.RequestTimeout + 10*time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Slaves < 1 || c.Slaves > 1000:
		return c, fmt.Errorf("soak: %d slaves: want 1 to 1000", c.Slaves)
	case c.Instances < 1 || c.Instances > 99:
		return c, fmt.Errorf("soak: %d instances per slave: want 1 to 99", c.Instances)
	case c.AskConcurrency < 1:
		return c, fmt.Errorf("soak: ask concurrency %d: want at least 1", c.AskConcurrency)
	case c.QuiesceTimeout < 0:
		return c, fmt.Errorf("soak: negative quiesce timeout %s", c.QuiesceTimeout)
	case c.Masters < 0 || c.Masters > 9:
		return c, fmt.Errorf("soak: %d masters: want 0 (one in this process) to 9", c.Masters)
	case c.Masters > 0 && c.MasterCommand == nil:
		return c, errors.New("soak: masters of their own processes need a MasterCommand")
	case c.Masters > 0 && strings.Contains(c.natsFor(link.MasterAddress).Prefix, "."):
		// The master processes read it from FABRIC_SUBJECT_PREFIX, which
		// is one token.
		return c, fmt.Errorf("soak: prefix %q: masters of their own processes need a prefix of one token, without dots", c.natsFor(link.MasterAddress).Prefix)
	}
	for name, r := range map[string]float64{"up": c.UpRate, "down": c.DownRate, "all": c.AllRate, "ask": c.AskRate, "tell": c.TellRate, "out": c.OutRate, "state": c.StateRate} {
		if r > 1000 {
			return c, fmt.Errorf("soak: %s rate %g per second: want at most 1000", name, r)
		}
	}
	return c, nil
}

// natsFor returns the NATS configuration of endpoint.
func (c Config) natsFor(endpoint link.Address) fabric.NATSConfig {
	if c.NATSFor == nil {
		return c.NATS
	}
	n := c.NATSFor(endpoint, c.NATS)
	if n.Prefix == "" {
		n.Prefix = c.NATS.Prefix
	}
	if n.PingInterval == 0 {
		n.PingInterval = c.NATS.PingInterval
	}
	return n
}

// every returns the interval of a rate per second, or 0 for none.
func every(rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return max(time.Duration(float64(time.Second)/rate), time.Millisecond)
}
