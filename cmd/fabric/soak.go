package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/soak"
)

const soakLong = `Check that a NATS deployment carries the fabric without loss. The soak runs,
in this process, a master, slaves with instances, and a control of its own,
on the NATS servers in FABRIC_NATS_URL (with the credentials and TLS
settings of the usual FABRIC_NATS_* variables), under its own subject
prefix (--prefix, default lfsoak), so it never touches the subjects of the
cluster that runs there. For --duration they exchange a steady stream of
numbered events (instance -> master, master -> slave), broadcasts (from
the first instance of each slave to every other instance), instance output
(instance -> master -> the control, which follows every instance) and
requests (control -> master -> slave -> instance, instance -> master). Break things
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

With --failover the soak runs --masters master processes (default 2) of
its own instead of one master in this process: one is active, the others
stand by. The servers must run JetStream. The master-side traffic is then
off; the rest goes through the masters, the control follows the instances'
output and changes the master's state (creates instances, bans players)
twice a second. Every --fault-every it makes the next fault in turn:
SIGKILL the active master (and starts another), SIGSTOP it past its lease
and SIGCONT it, restart a standby; and it reports for each how soon a
control's request succeeded again and whether any change the master had
acknowledged was lost, and in the end whether a master answered after its
term had ended. Kill a NATS node meanwhile yourself. A broadcast in flight
at a master that crashed or froze may arrive twice (once per change of
master); anything else lost or doubled fails the soak.

Exit status: 0 if nothing was lost, duplicated or reordered, every request
ended once, no handler ran twice and the view is right; 1 otherwise; 2 on
bad usage or configuration.
`

// soakFlags are fabric soak's flags.
type soakFlags struct {
	duration                                              time.Duration
	slaves, instances, askConcurrency                     int
	upRate, downRate, allRate, askRate, tellRate, outRate float64
	prefix                                                string
	json                                                  bool
	failover                                              bool
	masters                                               int
	faultEvery                                            time.Duration
	serveMaster                                           bool // a master process of --failover's
}

func (a *app) soakCommand() *cobra.Command {
	var f soakFlags
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "Run numbered traffic through a NATS deployment and count what was lost, duplicated or reordered",
		Long:  soakLong,
		Args:  argsBetween(0, 0, ""),
		RunE: a.do(func(cmd *cobra.Command, _ []string) error {
			if f.serveMaster {
				return a.soakMaster(cmd.Context())
			}
			return a.soak(cmd.Context(), f)
		}),
	}
	fs := cmd.Flags()
	fs.DurationVar(&f.duration, "duration", 30*time.Second, "how long the traffic runs")
	fs.IntVar(&f.slaves, "slaves", 2, "slaves (ids 1 to N)")
	fs.IntVar(&f.instances, "instances", 2, "instances per slave (1 to 99)")
	fs.Float64Var(&f.upRate, "up-rate", 20, "soak:up events per second from each instance to the master (0: none)")
	fs.Float64Var(&f.downRate, "down-rate", 20, "soak:down events per second from the master to each slave (0: none)")
	fs.Float64Var(&f.allRate, "all-rate", 10, "soak:all broadcasts per second from the first instance of each slave to every other instance (0: none)")
	fs.Float64Var(&f.askRate, "ask-rate", 10, "soak:ask requests per second from the control to the instances (0: none)")
	fs.IntVar(&f.askConcurrency, "ask-concurrency", 4, "soak:ask requests in flight at most")
	fs.Float64Var(&f.tellRate, "tell-rate", 2, "soak:tell requests per second from each instance to the master (0: none)")
	fs.Float64Var(&f.outRate, "out-rate", 10, "lines of output per second from each instance, followed by the control (0: none)")
	fs.StringVar(&f.prefix, "prefix", soak.DefaultPrefix, "subject prefix of the soak's endpoints (one token)")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON")
	fs.BoolVar(&f.failover, "failover", false, "run master processes of its own, and fail them over (see above)")
	fs.IntVar(&f.masters, "masters", 2, "with --failover: master processes (2 to 9)")
	fs.DurationVar(&f.faultEvery, "fault-every", 10*time.Second, "with --failover: how often to make the next fault")
	fs.BoolVar(&f.serveMaster, "serve-master", false, "run as one of --failover's master processes")
	_ = fs.MarkHidden("serve-master")
	return cmd
}

func (a *app) soak(ctx context.Context, f soakFlags) error {
	if err := f.check(); err != nil {
		return err
	}
	cfg, err := a.soakMasterConfig(f)
	if err != nil {
		return err
	}
	log := cfg.Log.NewLogger()
	where := cfg.NATS.URL
	if where == "" {
		// Here, not in a master: --failover's masters come and go.
		b, err := fabric.StartBroker("127.0.0.1:0", "")
		if err != nil {
			return err
		}
		defer b.Close()
		cfg.NATS.URL = b.ClientURL()
		where = cfg.NATS.URL + " (embedded)"
	}
	sc, err := a.soakConfig(f, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "soak: %d slaves with %d instances each on %s, prefix %s\n", f.slaves, f.instances, where, f.prefix)
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
	fmt.Fprintf(a.stderr, "soak: traffic for %s (Ctrl-C ends it early)\n", f.duration)
	var faults []soak.FaultResult
	var problems []string
	if f.failover {
		faults, problems = a.faults(ctx, s, f.duration, f.faultEvery)
	} else {
		select {
		case <-ctx.Done():
		case <-time.After(f.duration):
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(a.stderr, "soak: interrupted; stopping the traffic")
	}

	// The traffic stops; what is in flight has its bound, and so has the
	// master's view, once it is all quiet.
	fmt.Fprintln(a.stderr, "soak: stopping the traffic and waiting for what is in flight")
	if err := s.Quiesce(context.Background()); err != nil {
		problems = append(problems, err.Error())
	}
	viewCtx, cancel := context.WithTimeout(context.Background(), cfg.Timing.PeerTimeout+2*cfg.Timing.HeartbeatInterval+5*time.Second)
	_ = s.WaitView(viewCtx, nil)
	cancel()
	return a.soakReport(f, s, faults, problems)
}

// check refuses flags out of their ranges.
func (f soakFlags) check() error {
	switch {
	case f.duration <= 0:
		return usagef("soak: --duration must be positive")
	case f.slaves < 1 || f.slaves > 1000:
		return usagef("soak: --slaves must be 1 to 1000")
	case f.instances < 1 || f.instances > 99:
		return usagef("soak: --instances must be 1 to 99")
	case f.askConcurrency < 1:
		return usagef("soak: --ask-concurrency must be at least 1")
	case f.failover && (f.masters < 2 || f.masters > 9):
		return usagef("soak: --masters must be 2 to 9")
	case f.failover && f.faultEvery < time.Second:
		return usagef("soak: --fault-every must be at least 1s")
	case strings.Contains(f.prefix, "."):
		return usagef("soak: --prefix %q: want one subject token, such as lfsoak", f.prefix)
	}
	for name, r := range map[string]float64{"up-rate": f.upRate, "down-rate": f.downRate, "all-rate": f.allRate, "ask-rate": f.askRate, "tell-rate": f.tellRate, "out-rate": f.outRate} {
		if r < 0 || r > 1000 {
			return usagef("soak: --%s must be 0 to 1000", name)
		}
	}
	return nil
}

// soakMasterConfig is the environment's configuration, under the soak's
// own subject prefix, logging only errors unless FABRIC_LOG_LEVEL says
// otherwise.
func (a *app) soakMasterConfig(f soakFlags) (fabric.MasterConfig, error) {
	cfg, err := fabric.LoadMasterConfig(a.environ)
	if err != nil {
		return cfg, err
	}
	if !slices.ContainsFunc(a.environ, func(kv string) bool { return strings.HasPrefix(kv, "FABRIC_LOG_LEVEL=") }) {
		cfg.Log.Level = "error" // the report says what happened; the endpoints' warnings would drown it
	}
	cfg.NATS.Prefix = f.prefix
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%w (--prefix)", err)
	}
	return cfg, nil
}

// soakConfig is the soak's configuration: its endpoints', the rates of
// its traffic and, with --failover, how it runs its masters.
func (a *app) soakConfig(f soakFlags, cfg fabric.MasterConfig, log *slog.Logger) (soak.Config, error) {
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
		Slaves:         f.slaves,
		Instances:      f.instances,
		UpRate:         rate(f.upRate),
		DownRate:       rate(f.downRate),
		AllRate:        rate(f.allRate),
		AskRate:        rate(f.askRate),
		AskConcurrency: f.askConcurrency,
		TellRate:       rate(f.tellRate),
		OutRate:        rate(f.outRate),
		Logger:         log,
	}
	if f.failover {
		self, err := os.Executable()
		if err != nil {
			return sc, err
		}
		sc.Masters = f.masters
		sc.MasterCommand = func(env []string) *exec.Cmd {
			cmd := exec.Command(self, "soak", "--serve-master")
			cmd.Env = append(slices.Clone(a.environ), env...)
			return cmd
		}
	}
	return sc, nil
}

// soakReport prints the soak's report (with --failover, and the faults'),
// and returns errSoakFailed if it found something lost, duplicated or
// reordered, or an error that lists the other problems.
func (a *app) soakReport(f soakFlags, s *soak.Soak, faults []soak.FaultResult, problems []string) error {
	r := s.Report()
	type report interface {
		WriteJSON(io.Writer) error
		WriteText(io.Writer) error
	}
	var out report = r
	ok := r.OK
	if f.failover {
		fr := soak.NewFailoverReport(r, faults, s)
		problems = append(problems, fr.Problems...)
		out, ok = fr, fr.OK
	}
	write := out.WriteText
	if f.json {
		write = out.WriteJSON
	}
	if err := write(a.stdout); err != nil {
		return err
	}
	if !ok {
		return errSoakFailed
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// faults makes the failover faults in turn, one every faultEvery, until
// duration has passed or ctx ends, and returns how each went and what
// went wrong.
func (a *app) faults(ctx context.Context, s *soak.Soak, duration, faultEvery time.Duration) ([]soak.FaultResult, []string) {
	end := time.After(duration)
	var out []soak.FaultResult
	var problems []string
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return out, problems
		case <-end:
			return out, problems
		case <-time.After(faultEvery):
		}
		name := soak.Faults[n%len(soak.Faults)]
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		r, err := s.MakeFault(fctx, name)
		cancel()
		if err != nil {
			problems = append(problems, err.Error())
			fmt.Fprintf(a.stderr, "soak: %s: %v\n", name, err)
			return out, problems
		}
		out = append(out, r)
		fmt.Fprintf(a.stderr, "soak: %s: a request succeeded again %s after it; term %d -> %d; %d acknowledged changes lost\n",
			name, r.Recovery.Round(time.Millisecond), r.TermBefore, r.TermAfter, len(r.Missing))
	}
}

// soakMaster is one master process of `fabric soak --failover`: it runs
// until its standard input closes or it is told to stop.
func (a *app) soakMaster(ctx context.Context) error {
	cfg, err := fabric.LoadMasterConfig(a.environ)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = os.Stdin.Read(make([]byte, 1)) // EOF when the soak closes it, or dies
		cancel()
	}()
	return soak.ServeMaster(ctx, cfg, cfg.Log.NewLogger())
}

// errSoakFailed is returned when the report found problems: the report
// says which, so the command adds only its exit status.
var errSoakFailed = errors.New("the soak found problems")
