package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
)

// shutdownTimeout bounds a graceful shutdown after Ctrl-C or SIGTERM.
const shutdownTimeout = 10 * time.Second

const devUsage = `Usage: fabric dev

Run a whole cluster in one process: an embedded NATS server, a master, and
two slaves with two simulated instances each. It prints the NATS URL and
commands to try from another terminal, and runs until Ctrl-C or SIGTERM,
then shuts down gracefully.

Configured like the master (FABRIC_NATS_LISTEN, FABRIC_LOG_LEVEL, ...);
FABRIC_NATS_URL is ignored: dev always embeds its NATS server. Its state
(instances, bans) is kept in a new temporary directory and is gone when it
stops, unless FABRIC_DATA_DIR names a directory to keep it in.
`

func (a *app) dev(ctx context.Context, args []string) error {
	fs := a.flags("dev", devUsage)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("dev takes no arguments")
	}
	cfg, err := fabric.LoadMasterConfig(a.environ)
	if err != nil {
		return err
	}
	cfg.NATS.URL = ""
	if !hasEnv(a.environ, "FABRIC_DATA_DIR") {
		cfg.DataDir = "" // a temporary directory: a dev cluster starts afresh
	}
	log := cfg.Log.NewLogger()
	m, err := fabric.StartMaster(ctx, cfg, fabric.WithLogger(log))
	if err != nil {
		return err
	}
	url := m.NATSURL()
	var slaves []*fabric.Slave
	for i, instances := range []string{"101:alpha,102:beta", "201:gamma,202:delta"} {
		sc := fabric.SlaveConfig{NATS: cfg.NATS, ID: int64(i + 1), Instances: instances, Timing: cfg.Timing, Log: cfg.Log}
		sc.NATS.URL = url
		s, err := fabric.StartSlave(ctx, sc, fabric.WithLogger(log))
		if err != nil {
			a.shutdown(log, slaves, m)
			return err
		}
		slaves = append(slaves, s)
	}

	env := ""
	if url != "nats://127.0.0.1:4222" {
		env = "FABRIC_NATS_URL=" + url + " "
	}
	fmt.Fprintf(a.stdout, `Linkfabric dev cluster running.

  NATS:      %s (embedded)
  slaves:    1 with instances 101 alpha, 102 beta
             2 with instances 201 gamma, 202 delta

Try, from another terminal:

  %sgo run ./cmd/fabric ctl instance list
  %sgo run ./cmd/fabric ctl instance start 101
  %sgo run ./cmd/fabric ctl instance command 101 /join alice

Press Ctrl-C to stop.
`, url, env, env, env)
	<-ctx.Done()
	return a.shutdown(log, slaves, m)
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
		errs = append(errs, s.Close(ctx))
	}
	errs = append(errs, m.Close(ctx))
	return errors.Join(errs...)
}

const masterUsage = `Usage: fabric master

Run a master. With FABRIC_NATS_URL empty it embeds a NATS server on
FABRIC_NATS_LISTEN (loopback only), keeping the master's state in
FABRIC_DATA_DIR; otherwise it connects to those servers, which must run
JetStream, and keeps its state there.

One master of a cluster (the same servers and FABRIC_SUBJECT_PREFIX) is
active; any other stands by, says so, and takes over within
FABRIC_MASTER_LEASE of the active one stopping or failing. It runs until
Ctrl-C or SIGTERM, then tells every slave and control, hands the lease
over, and shuts down gracefully. See README.md for every FABRIC_* variable.
`

func (a *app) master(ctx context.Context, args []string) error {
	fs := a.flags("master", masterUsage)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("master takes no arguments")
	}
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

const slaveUsage = `Usage: fabric slave

Run a slave: it registers with the master as FABRIC_SLAVE_ID, hosts the
simulated instances listed in FABRIC_SLAVE_INSTANCES ("id:name,id:name")
and any the master assigns to it, and runs until Ctrl-C or SIGTERM.
See README.md for every FABRIC_* variable.
`

func (a *app) slave(ctx context.Context, args []string) error {
	fs := a.flags("slave", slaveUsage)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("slave takes no arguments")
	}
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
	return s.Close(sctx)
}
