package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/soak"
)

const soakUsage = `Usage: fabric soak [--duration 30s] [--slaves N] [--instances N] [--json] [...]

Check that a NATS deployment carries the fabric without loss. The soak runs,
in this process, a master, slaves with instances, and a control of its own,
on the NATS servers in FABRIC_NATS_URL (with the credentials and TLS
settings of the usual FABRIC_NATS_* variables), under its own subject
prefix (--prefix, default lfsoak), so it never touches the subjects of the
cluster that runs there. For --duration they exchange a steady stream of
numbered events (instance -> master, master -> slave), broadcasts (from
the first instance of each slave to every other instance) and requests
(control -> master -> slave -> instance, instance -> master). Break things
meanwhile (restart a NATS node, cut a network link) and see what the fabric
makes of it.

Then it stops the traffic, waits for what is in flight (at most
FABRIC_REQUEST_TIMEOUT plus 10s), and prints, per link, the events sent,
received, lost, duplicated and out of order; per request type, how many
started, ended with a response or an error (by code), never ended, or had
their handler run twice; and whether the master's view of the cluster is
right. Timings come from FABRIC_REQUEST_TIMEOUT, FABRIC_HEARTBEAT_INTERVAL,
FABRIC_PEER_TIMEOUT, FABRIC_SESSION_TIMEOUT and FABRIC_NATS_PING_INTERVAL.
Without FABRIC_NATS_URL it runs on an embedded NATS server on loopback.

The credentials must allow publishing and subscribing to <prefix>.>.
Ctrl-C ends the traffic early; the report follows.

Exit status: 0 if nothing was lost, duplicated or reordered, every request
ended once, no handler ran twice and the view is right; 1 otherwise; 2 on
bad usage or configuration.
`

func (a *app) soak(ctx context.Context, args []string) error {
	fs := a.flags("soak", soakUsage)
	duration := fs.Duration("duration", 30*time.Second, "how long the traffic runs")
	slaves := fs.Int("slaves", 2, "slaves (ids 1 to N)")
	instances := fs.Int("instances", 2, "instances per slave (1 to 99)")
	upRate := fs.Float64("up-rate", 20, "soak:up events per second from each instance to the master (0: none)")
	downRate := fs.Float64("down-rate", 20, "soak:down events per second from the master to each slave (0: none)")
	allRate := fs.Float64("all-rate", 10, "soak:all broadcasts per second from the first instance of each slave to every other instance (0: none)")
	askRate := fs.Float64("ask-rate", 10, "soak:ask requests per second from the control to the instances (0: none)")
	askConcurrency := fs.Int("ask-concurrency", 4, "soak:ask requests in flight at most")
	tellRate := fs.Float64("tell-rate", 2, "soak:tell requests per second from each instance to the master (0: none)")
	prefix := fs.String("prefix", soak.DefaultPrefix, "subject prefix of the soak's endpoints")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("soak takes no arguments")
	}
	switch {
	case *duration <= 0:
		return usagef("soak: --duration must be positive")
	case *slaves < 1 || *slaves > 1000:
		return usagef("soak: --slaves must be 1 to 1000")
	case *instances < 1 || *instances > 99:
		return usagef("soak: --instances must be 1 to 99")
	case *askConcurrency < 1:
		return usagef("soak: --ask-concurrency must be at least 1")
	}
	for name, r := range map[string]float64{"up-rate": *upRate, "down-rate": *downRate, "all-rate": *allRate, "ask-rate": *askRate, "tell-rate": *tellRate} {
		if r < 0 || r > 1000 {
			return usagef("soak: --%s must be 0 to 1000", name)
		}
	}
	cfg, err := fabric.LoadMasterConfig(a.environ)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(a.environ, func(kv string) bool { return strings.HasPrefix(kv, "FABRIC_LOG_LEVEL=") }) {
		cfg.Log.Level = "error" // the report says what happened; the endpoints' warnings would drown it
	}
	cfg.NATS.Prefix = *prefix
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w (--prefix)", err)
	}
	log := cfg.Log.NewLogger()
	where := cfg.NATS.URL
	if where == "" {
		b, err := fabric.StartBroker("127.0.0.1:0", "")
		if err != nil {
			return err
		}
		defer b.Close()
		cfg.NATS.URL = b.ClientURL()
		where = cfg.NATS.URL + " (embedded)"
	}
	rate := func(r float64) float64 {
		if r == 0 {
			return -1 // none
		}
		return r
	}
	sc := soak.Config{
		NATS:           cfg.NATS,
		Timing:         cfg.Timing,
		KVReplicas:     cfg.KVReplicas,
		Lease:          cfg.Lease,
		Slaves:         *slaves,
		Instances:      *instances,
		UpRate:         rate(*upRate),
		DownRate:       rate(*downRate),
		AllRate:        rate(*allRate),
		AskRate:        rate(*askRate),
		AskConcurrency: *askConcurrency,
		TellRate:       rate(*tellRate),
		Logger:         log,
	}
	fmt.Fprintf(a.stderr, "soak: %d slaves with %d instances each on %s, prefix %s\n", *slaves, *instances, where, *prefix)
	startCtx, cancel := context.WithTimeout(ctx, cfg.Timing.RequestTimeout+cfg.Timing.PeerTimeout+10*time.Second)
	s, err := soak.Start(startCtx, sc)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := s.Close(cctx); err != nil {
			log.Warn("soak: shutdown", "error", err)
		}
	}()
	fmt.Fprintf(a.stderr, "soak: traffic for %s (Ctrl-C ends it early)\n", *duration)
	select {
	case <-ctx.Done():
		fmt.Fprintln(a.stderr, "soak: interrupted; stopping the traffic")
	case <-time.After(*duration):
	}

	// The traffic stops; what is in flight has its bound, and so has the
	// master's view, once it is all quiet.
	fmt.Fprintln(a.stderr, "soak: stopping the traffic and waiting for what is in flight")
	var problems []string
	if err := s.Quiesce(context.Background()); err != nil {
		problems = append(problems, err.Error())
	}
	viewCtx, cancel := context.WithTimeout(context.Background(), cfg.Timing.PeerTimeout+2*cfg.Timing.HeartbeatInterval+5*time.Second)
	_ = s.WaitView(viewCtx, nil)
	cancel()
	r := s.Report()
	if *asJSON {
		err = r.WriteJSON(a.stdout)
	} else {
		err = r.WriteText(a.stdout)
	}
	if err != nil {
		return err
	}
	if !r.OK {
		return errSoakFailed
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// errSoakFailed is returned when the report found problems: the report
// says which, so the command adds only its exit status.
var errSoakFailed = errors.New("the soak found problems")
