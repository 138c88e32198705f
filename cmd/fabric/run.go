package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// shutdownTimeout bounds a graceful shutdown after Ctrl-C or SIGTERM.
const shutdownTimeout = 10 * time.Second

const devLong = `Run a whole cluster in one process: an embedded NATS server, a master, and
two slaves with two simulated instances each. It prints the NATS URL and
commands to try from another terminal, and runs until Ctrl-C or SIGTERM,
then shuts down gracefully.

It serves the web console too, and prints its URL: FABRIC_CONSOLE_ADDR
defaults to port 4280 on the host of FABRIC_NATS_LISTEN (a free port if
that port is 0); set it empty for no console. The page logs in as control
user FABRIC_CONTROL_USER (admin).

Configured like the master (FABRIC_NATS_LISTEN, FABRIC_LOG_LEVEL, ...);
FABRIC_NATS_URL is ignored: dev always embeds its NATS server. Its state
(instances, bans) is kept in a new temporary directory and is gone when it
stops, unless FABRIC_DATA_DIR names a directory to keep it in.
`

func (a *app) devCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Run a whole cluster in one process: embedded NATS, a master, two slaves",
		Long:  devLong,
		Args:  argsBetween(0, 0, ""),
		RunE:  a.do(func(cmd *cobra.Command, _ []string) error { return a.dev(cmd.Context()) }),
	}
}

func (a *app) dev(ctx context.Context) error {
	cfg, err := fabric.LoadMasterConfig(a.environ)
	if err != nil {
		return err
	}
	cfg.NATS.URL = ""
	cfg.Console.NATSURL = "" // the embedded server's
	if !hasEnv(a.environ, "FABRIC_DATA_DIR") {
		cfg.DataDir = "" // a temporary directory: a dev cluster starts afresh
	}
	if !hasEnv(a.environ, "FABRIC_CONSOLE_ADDR") {
		cfg.Console.Addr = devConsoleAddr(cfg.Listen)
	}
	log := cfg.Log.NewLogger()
	m, err := fabric.StartMaster(ctx, cfg, fabric.WithLogger(log))
	if err != nil {
		return err
	}
	url := m.NATSURL()
	var slaves []*fabric.Slave
	for i, instances := range [][]messages.HostedInstance{
		{{ID: 101, Name: "alpha"}, {ID: 102, Name: "beta"}},
		{{ID: 201, Name: "gamma"}, {ID: 202, Name: "delta"}},
	} {
		sc := fabric.SlaveConfig{NATS: cfg.NATS, ID: int64(i + 1), Instances: instances, Timing: cfg.Timing, Log: cfg.Log}
		sc.NATS.URL = url
		// In the broker's process: in-process connections, no loopback TCP.
		s, err := fabric.StartSlave(ctx, sc, fabric.WithLogger(log), fabric.WithLocalBroker(m.Broker()))
		if err != nil {
			a.shutdown(log, slaves, m)
			return err
		}
		slaves = append(slaves, s)
	}

	ctl := a.ctlInvocation()
	if url != "nats://127.0.0.1:4222" {
		ctl += " -s " + url
	}
	consoleLine := ""
	if u := m.ConsoleURL(); u != "" {
		consoleLine = fmt.Sprintf("  console:   %s#user=%s\n", u, envOr(a.environ, "FABRIC_CONTROL_USER", "admin"))
	}
	fmt.Fprintf(a.stdout, `Linkfabric dev cluster running.

  NATS:      %s (embedded)
%s  slaves:    1 with instances 101 alpha, 102 beta
             2 with instances 201 gamma, 202 delta

Try, from another terminal:

  %s status
  %s instance start 101
  %s instance command 101 /join alice

Press Ctrl-C to stop.
`, url, consoleLine, ctl, ctl, ctl)
	<-ctx.Done()
	return a.shutdown(log, slaves, m)
}

// devConsoleAddr is where fabric dev serves the console unless told:
// port 4280 on the NATS server's host, or a free port if NATS has one.
func devConsoleAddr(natsListen string) string {
	host, port, err := net.SplitHostPort(natsListen)
	if err != nil {
		return "" // refused by the master's checks, naming FABRIC_NATS_LISTEN
	}
	if port == "0" {
		return net.JoinHostPort(host, "0")
	}
	return net.JoinHostPort(host, "4280")
}

// ctlInvocation is how to run fabric ctl from wherever this process was
// started: go run ./cmd/fabric from the repository's root under go run
// (whose binary is gone when it ends), else this binary's path.
func (a *app) ctlInvocation() string {
	exe, err := os.Executable()
	if err != nil {
		return "fabric ctl"
	}
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		if _, err := os.Stat(filepath.Join("cmd", "fabric", "main.go")); err == nil {
			return "go run ./cmd/fabric ctl"
		}
	}
	return shellQuote(exe) + " ctl"
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// hasEnv reports whether environ sets name.
func hasEnv(environ []string, name string) bool {
	for _, kv := range environ {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// shutdown stops slaves, then the master, gracefully.
func (a *app) shutdown(log *slog.Logger, slaves []*fabric.Slave, m *fabric.Master) error {
	log.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range slaves {
		errs = append(errs, peersFailed(log, s.Close(ctx)))
	}
	errs = append(errs, m.Close(ctx))
	return errors.Join(errs...)
}

// peersFailed logs, rather than returns, what a slave's Close reports of
// its peers: a master that did not answer the goodbye (killed, or gone with
// its broker), a link already lost. A peer that died is not the stopping
// process's failure, and a routine stop must not look failed to systemd.
// Any other error is returned.
func peersFailed(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	for _, peer := range []error{link.ErrTimeout, link.ErrSessionLost, link.ErrNotConnected, link.ErrUnavailable, context.DeadlineExceeded} {
		if errors.Is(err, peer) {
			log.Warn("stopped without the master's word", "error", err)
			return nil
		}
	}
	return err
}

const masterLong = `Run a master. With FABRIC_NATS_URL empty it embeds a NATS server on
FABRIC_NATS_LISTEN (loopback only), keeping the master's state in
FABRIC_DATA_DIR; otherwise it connects to those servers, which must run
JetStream, and keeps its state there.

One master of a cluster (the same servers and FABRIC_SUBJECT_PREFIX) is
active; any other stands by, says so, and takes over within
FABRIC_MASTER_LEASE of the active one stopping or failing. It runs until
Ctrl-C or SIGTERM, then tells every slave and control, hands the lease
over, and shuts down gracefully. See README.md for every FABRIC_* variable.
`

func (a *app) masterCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "master",
		Short: "Run a master: the active one, or a standby",
		Long:  masterLong,
		Args:  argsBetween(0, 0, ""),
		RunE:  a.do(func(cmd *cobra.Command, _ []string) error { return a.master(cmd.Context()) }),
	}
}

func (a *app) master(ctx context.Context) error {
	cfg, err := fabric.LoadMasterConfig(a.environ)
	if err != nil {
		return err
	}
	log := cfg.Log.NewLogger()
	m, err := fabric.StartMaster(ctx, cfg, fabric.WithLogger(log))
	if err != nil {
		return err
	}
	if m.Active() {
		fmt.Fprintf(a.stdout, "master running, active (term %d); NATS at %s\n", m.Term(), m.NATSURL())
	} else {
		fmt.Fprintf(a.stdout, "master running, standing by: another master is active; NATS at %s\n", m.NATSURL())
	}
	<-ctx.Done()
	return a.shutdown(log, nil, m)
}

const slaveLong = `Run a slave: it registers with the master as FABRIC_SLAVE_ID, hosts the
simulated instances listed in FABRIC_SLAVE_INSTANCES ("id:name,id:name")
and any the master assigns to it, and runs until Ctrl-C or SIGTERM.

An instance made to run a program (fabric ctl instance create NAME --
PROGRAM ARG...) runs here only if FABRIC_SLAVE_ALLOW_PROGRAMS names
PROGRAM (absolute paths, comma-separated; none by default). Stopping the
slave stops its programs: SIGTERM, then SIGKILL after
FABRIC_SLAVE_STOP_TIMEOUT (5s). See README.md for every FABRIC_* variable.
`

func (a *app) slaveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "slave",
		Short: "Run a slave and its instances",
		Long:  slaveLong,
		Args:  argsBetween(0, 0, ""),
		RunE:  a.do(func(cmd *cobra.Command, _ []string) error { return a.slave(cmd.Context()) }),
	}
}

func (a *app) slave(ctx context.Context) error {
	cfg, err := fabric.LoadSlaveConfig(a.environ)
	if err != nil {
		return err
	}
	log := cfg.Log.NewLogger()
	s, err := fabric.StartSlave(ctx, cfg, fabric.WithLogger(log))
	if err != nil {
		return err
	}
	var ids []string
	for _, h := range s.Instances() {
		ids = append(ids, strconv.FormatInt(h.ID, 10)+" "+h.Name)
	}
	list := strings.Join(ids, ", ")
	if list == "" {
		list = "none yet (the master may assign some)"
	}
	fmt.Fprintf(a.stdout, "slave %d running; instances: %s\n", s.ID(), list)
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return peersFailed(log, s.Close(sctx))
}
