package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

const ctlUsage = `Usage: fabric ctl [--json] <command> [arguments]

Control a running cluster, as user FABRIC_CONTROL_USER (default admin), via
the NATS servers in FABRIC_NATS_URL (default nats://127.0.0.1:4222).

Commands:
  ping                         ask the master to answer
  status                       which master is active, and which stand by
  slave list                   list the slaves
  instance list                list the instances
  instance create NAME         create an instance, not yet assigned
  instance assign ID SLAVE     assign an instance to a slave
  instance delete ID           delete an instance (its slave stops it first)
  instance start ID            start an instance
  instance stop ID             stop an instance
  instance command ID TEXT...  run a command on an instance, print its answer
  instance output ID...        follow instances' output until Ctrl-C
  player ban NAME [--reason R] ban a player on every instance (a broadcast)
  player unban NAME            lift a ban on every instance
  player bans                  list the bans

Exit status: 0 on success, 1 when a request fails (its message and code go
to stderr), 2 on bad usage or configuration.
`

// ctlCommand is one leaf of the ctl command tree.
type ctlCommand struct {
	path  string // "instance start"
	args  string // usage of the positional arguments
	about string
	min   int // positional arguments
	max   int // -1: any number more
	run   func(ctx context.Context, c *ctlRun) error
}

// ctlRun is one invocation: the parsed arguments, the connection, the output.
type ctlRun struct {
	a      *app
	args   []string
	json   bool
	reason string
	ctl    *fabric.Control
	cfg    fabric.ControlConfig
}

var ctlCommands = []*ctlCommand{
	{path: "ping", about: "Ask the master to answer and print the round trip.", run: ctlPing},
	{path: "status", about: "Say which master process is active, in which term, and which stand by.", run: ctlStatus},
	{path: "slave list", about: "List the slaves the master knows.", run: ctlSlaveList},
	{path: "instance list", about: "List the instances the master knows.", run: ctlInstanceList},
	{path: "instance create", args: "NAME", min: 1, max: 1, about: "Create an instance on the master, not yet assigned to a slave.", run: ctlInstanceCreate},
	{path: "instance assign", args: "ID SLAVE", min: 2, max: 2, about: "Assign an instance to a slave.", run: ctlInstanceAssign},
	{path: "instance delete", args: "ID", min: 1, max: 1, about: "Delete an instance for good: the slave that hosts it stops it if it runs and forgets it, then the master does. Its id is never given out again. An instance whose slave is not connected is not deleted; one listed in a slave's FABRIC_SLAVE_INSTANCES comes back when that slave starts again.", run: ctlInstanceDelete},
	{path: "instance start", args: "ID", min: 1, max: 1, about: "Start an instance.", run: ctlInstanceStart},
	{path: "instance stop", args: "ID", min: 1, max: 1, about: "Stop an instance.", run: ctlInstanceStop},
	{path: "instance command", args: "ID TEXT...", min: 2, max: -1, about: "Run a command on an instance and print what it answered.", run: ctlInstanceCommand},
	{path: "instance output", args: "ID...", min: 1, max: -1, about: "Follow the output of instances until Ctrl-C.", run: ctlInstanceOutput},
	{path: "player ban", args: "NAME [--reason TEXT]", min: 1, max: 1, about: "Ban a player on every instance of the cluster.", run: ctlPlayerBan},
	{path: "player unban", args: "NAME", min: 1, max: 1, about: "Lift a player's ban on every instance.", run: ctlPlayerUnban},
	{path: "player bans", about: "List the players banned on every instance.", run: ctlPlayerBans},
}

func (a *app) ctl(ctx context.Context, args []string) error {
	r := &ctlRun{a: a}
	fs := a.flags("ctl", ctlUsage)
	fs.BoolVar(&r.json, "json", false, "print JSON instead of tables")
	// Only flags before the command are ctl's; the command parses the rest.
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("ctl: %v (see fabric ctl --help)", err)
	}
	words := fs.Args()
	if len(words) == 0 {
		return usagef("ctl: a command is required (see fabric ctl --help)")
	}
	cmd, rest := findCtlCommand(words)
	if cmd == nil {
		return usagef("ctl: unknown command %q (see fabric ctl --help)", strings.Join(words, " "))
	}
	usage := fmt.Sprintf("Usage: fabric ctl %s %s\n\n%s\n", cmd.path, cmd.args, cmd.about)
	cfs := a.flags("ctl "+cmd.path, usage)
	cfs.BoolVar(&r.json, "json", r.json, "print JSON instead of tables")
	if cmd.path == "player ban" {
		cfs.StringVar(&r.reason, "reason", "", "why the player is banned")
	}
	if err := parse(cfs, rest); err != nil {
		return err
	}
	r.args = cfs.Args()
	if len(r.args) < cmd.min || (cmd.max >= 0 && len(r.args) > cmd.max) {
		if cmd.args == "" {
			return usagef("ctl %s takes no arguments", cmd.path)
		}
		return usagef("ctl %s: want arguments %s (see fabric ctl %s --help)", cmd.path, cmd.args, cmd.path)
	}
	cfg, err := fabric.LoadControlConfig(a.environ)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(a.environ, func(kv string) bool { return strings.HasPrefix(kv, "FABRIC_LOG_LEVEL=") }) {
		cfg.Log.Level = "error" // a command-line tool says nothing unless something is wrong: its errors go to stderr anyway
	}
	r.cfg = cfg
	return cmd.run(ctx, r)
}

// findCtlCommand finds the longest command path that words start with.
func findCtlCommand(words []string) (*ctlCommand, []string) {
	for n := min(2, len(words)); n > 0; n-- {
		path := strings.Join(words[:n], " ")
		for _, c := range ctlCommands {
			if c.path == path {
				return c, words[n:]
			}
		}
	}
	return nil, nil
}

// dial connects to the master; output, if set, takes relayed output.
func (r *ctlRun) dial(ctx context.Context, output func(messages.OutputLine)) error {
	opts := []fabric.Option{fabric.WithLogger(r.cfg.Log.NewLogger())}
	if output != nil {
		opts = append(opts, fabric.WithOutputHandler(output))
	}
	ctl, err := fabric.DialControl(ctx, r.cfg, opts...)
	if err != nil {
		return err
	}
	r.ctl = ctl
	return nil
}

func (r *ctlRun) close() {
	if r.ctl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.ctl.Close(ctx)
	}
}

// call sends one request and closes the control.
func call[Req, Resp any](ctx context.Context, r *ctlRun, m *messages.Request[Req, Resp], req Req) (Resp, error) {
	var zero Resp
	if err := r.dial(ctx, nil); err != nil {
		return zero, err
	}
	defer r.close()
	return link.Request(ctx, r.ctl.Link(), m, req)
}

func (r *ctlRun) id(i int, what string) (int64, error) {
	id, err := strconv.ParseInt(r.args[i], 10, 64)
	if err != nil || id < 1 {
		return 0, usagef("%s %q is not a positive integer", what, r.args[i])
	}
	return id, nil
}

// printJSON writes v as indented JSON.
func (r *ctlRun) printJSON(v any) error {
	enc := json.NewEncoder(r.a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// done prints a one-line result, or {} for --json.
func (r *ctlRun) done(format string, args ...any) error {
	if r.json {
		return r.printJSON(struct{}{})
	}
	_, err := fmt.Fprintf(r.a.stdout, format+"\n", args...)
	return err
}

func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func ctlPing(ctx context.Context, r *ctlRun) error {
	if err := r.dial(ctx, nil); err != nil {
		return err
	}
	defer r.close()
	start := time.Now()
	if _, err := link.Request(ctx, r.ctl.Link(), messages.Ping, messages.Empty{}); err != nil {
		return err
	}
	rtt := time.Since(start)
	if r.json {
		return r.printJSON(map[string]float64{"rtt_ms": float64(rtt.Microseconds()) / 1000})
	}
	return r.done("pong from the master in %s", rtt.Round(10*time.Microsecond))
}

func ctlStatus(ctx context.Context, r *ctlRun) error {
	res, err := call(ctx, r, messages.GetMasterStatus, messages.Empty{})
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(res)
	}
	state := "active"
	if res.Starting {
		state = "active, waiting for its slaves"
	}
	rows := [][]string{{"master", res.Active.ID, res.Active.Name, state, strconv.FormatUint(res.Active.Term, 10), time.UnixMilli(res.Active.Since).Format("2006-01-02T15:04:05")}}
	for _, s := range res.Standbys {
		rows = append(rows, []string{"master", s.ID, s.Name, "standby", "-", time.UnixMilli(s.Since).Format("2006-01-02T15:04:05")})
	}
	return table(r.a.stdout, "ROLE\tID\tNAME\tSTATE\tTERM\tSINCE", rows)
}

func ctlSlaveList(ctx context.Context, r *ctlRun) error {
	res, err := call(ctx, r, messages.ListSlaves, messages.Empty{})
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(res)
	}
	var rows [][]string
	for _, s := range res.Slaves {
		rows = append(rows, []string{strconv.FormatInt(s.ID, 10), s.Name, strconv.FormatBool(s.Connected), strconv.Itoa(s.Instances)})
	}
	return table(r.a.stdout, "ID\tNAME\tCONNECTED\tINSTANCES", rows)
}

func ctlInstanceList(ctx context.Context, r *ctlRun) error {
	res, err := call(ctx, r, messages.ListInstances, messages.Empty{})
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(res)
	}
	var rows [][]string
	for _, i := range res.Instances {
		slave := "-"
		if i.SlaveID != 0 {
			slave = strconv.FormatInt(i.SlaveID, 10)
		}
		rows = append(rows, []string{strconv.FormatInt(i.ID, 10), i.Name, slave, i.Status})
	}
	return table(r.a.stdout, "ID\tNAME\tSLAVE\tSTATUS", rows)
}

func ctlInstanceCreate(ctx context.Context, r *ctlRun) error {
	res, err := call(ctx, r, messages.CreateInstance, messages.NewInstance{Name: r.args[0]})
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(res)
	}
	return r.done("created instance %d (%s)", res.InstanceID, r.args[0])
}

func ctlInstanceAssign(ctx context.Context, r *ctlRun) error {
	id, err := r.id(0, "instance id")
	if err != nil {
		return err
	}
	slave, err := r.id(1, "slave id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.AssignInstanceCommand, messages.Assignment{InstanceID: id, SlaveID: slave}); err != nil {
		return err
	}
	return r.done("assigned instance %d to slave %d", id, slave)
}

func ctlInstanceDelete(ctx context.Context, r *ctlRun) error {
	id, err := r.id(0, "instance id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.DeleteInstance, messages.InstanceRef{InstanceID: id}); err != nil {
		return err
	}
	return r.done("deleted instance %d", id)
}

func ctlInstanceStart(ctx context.Context, r *ctlRun) error {
	id, err := r.id(0, "instance id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.StartInstance, messages.InstanceRef{InstanceID: id}); err != nil {
		return err
	}
	return r.done("started instance %d", id)
}

func ctlInstanceStop(ctx context.Context, r *ctlRun) error {
	id, err := r.id(0, "instance id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.StopInstance, messages.InstanceRef{InstanceID: id}); err != nil {
		return err
	}
	return r.done("stopped instance %d", id)
}

func ctlInstanceCommand(ctx context.Context, r *ctlRun) error {
	id, err := r.id(0, "instance id")
	if err != nil {
		return err
	}
	res, err := call(ctx, r, messages.SendCommand, messages.Command{InstanceID: id, Command: strings.Join(r.args[1:], " ")})
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(res)
	}
	_, err = fmt.Fprintln(r.a.stdout, res.Output)
	return err
}

func ctlInstanceOutput(ctx context.Context, r *ctlRun) error {
	var ids []int64
	for i := range r.args {
		id, err := r.id(i, "instance id")
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	var mu sync.Mutex // lines arrive from the link's goroutine
	print := func(l messages.OutputLine) {
		mu.Lock()
		defer mu.Unlock()
		if r.json {
			_ = json.NewEncoder(r.a.stdout).Encode(l)
			return
		}
		at := time.UnixMilli(l.Time).Format("15:04:05.000")
		fmt.Fprintf(r.a.stdout, "%s [%s] instance %d: %s\n", at, l.Level, l.InstanceID, l.Message)
	}
	if err := r.dial(ctx, print); err != nil {
		return err
	}
	defer r.close()
	if err := r.ctl.Follow(ctx, ids...); err != nil {
		return err
	}
	// The control follows on across master restarts and failovers, and
	// is given the lines it missed meanwhile.
	<-ctx.Done() // Ctrl-C: a normal end
	return nil
}

func ctlPlayerBan(ctx context.Context, r *ctlRun) error {
	if _, err := call(ctx, r, messages.SetPlayerBanned, messages.Ban{Name: r.args[0], Banned: true, Reason: r.reason}); err != nil {
		return err
	}
	return r.done("banned %s on every instance", r.args[0])
}

func ctlPlayerBans(ctx context.Context, r *ctlRun) error {
	res, err := call(ctx, r, messages.ListBannedPlayers, messages.Empty{})
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(res)
	}
	var rows [][]string
	for _, b := range res.Bans {
		rows = append(rows, []string{b.Name, b.Reason})
	}
	return table(r.a.stdout, "PLAYER\tREASON", rows)
}

func ctlPlayerUnban(ctx context.Context, r *ctlRun) error {
	if _, err := call(ctx, r, messages.SetPlayerBanned, messages.Ban{Name: r.args[0], Banned: false}); err != nil {
		return err
	}
	return r.done("unbanned %s on every instance", r.args[0])
}
