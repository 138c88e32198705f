package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

const ctlLong = `Control a running cluster: ask the master, which passes on to slaves and
instances what is theirs.

Which cluster, and as whom: each setting comes from, strongest first,
flag > environment > selected context > default. That is: the flags
--server and --context, the environment (FABRIC_NATS_URL,
FABRIC_CONTROL_USER, FABRIC_NATS_* credentials, FABRIC_CONTEXT), the
selected context (fabric context), and the defaults
(nats://127.0.0.1:4222, user admin).

Flags may come anywhere, except in instance command, where everything after
the instance id is the command.

Exit status: 0 on success, 1 when a request fails (its message and code go
to stderr, or with --json to stdout as {"error":{"code":...,"message":...}}),
2 on bad usage or configuration.`

// ctlRun is one invocation of a ctl command: its flags, its
// configuration, its connection.
type ctlRun struct {
	a       *app
	json    bool
	server  string
	context string
	cfg     fabric.ControlConfig
	ctl     *fabric.Control
}

func (a *app) ctlCommand() *cobra.Command {
	r := &ctlRun{a: a}
	cmd := group(&cobra.Command{
		Use:   "ctl",
		Short: "Control a running cluster: status, slaves, instances, players",
		Long:  ctlLong,
	})
	pf := cmd.PersistentFlags()
	pf.BoolVar(&r.json, "json", false, "print JSON instead of text, failures too")
	pf.StringVarP(&r.server, "server", "s", "", "NATS servers, comma-separated (stronger than FABRIC_NATS_URL and the context)")
	pf.StringVar(&r.context, "context", "", "use this context rather than the selected one (fabric context ls)")

	var since time.Duration
	slave := group(&cobra.Command{Use: "slave", Short: "The slaves: list"})
	slave.AddCommand(r.listLeaf("List the slaves the master knows",
		"List the slaves the master knows. With --watch, print the list, then each\nslave that changes as a line of the same columns, until Ctrl-C; with --json,\none JSON object a line per slave, then per change (slave_updates entries).",
		r.slaveList, r.watchSlaves))

	instance := group(&cobra.Command{Use: "instance", Short: "The instances: list, create, assign, delete, start, stop, command, output"})
	command := r.leaf("command ID TEXT...", "Run a command on an instance and print what it answered", argsBetween(2, -1, "ID TEXT..."), r.instanceCommand)
	command.Long = "Run a command on an instance and print what it answered. Everything after\nthe instance id is the command, flags included: fabric ctl instance command\n101 /say --help sends \"/say --help\". Flags of ctl go before the id."
	command.Flags().SetInterspersed(false)
	deleteCmd := r.leaf("delete ID", "Delete an instance for good (its slave stops it first)", argsBetween(1, 1, "ID"), r.instanceDelete)
	deleteCmd.Long = "Delete an instance for good: the slave that hosts it stops it if it runs and\nforgets it, then the master does. Its id is never given out again. An\ninstance whose slave is not connected is not deleted; one listed in a\nslave's FABRIC_SLAVE_INSTANCES comes back when that slave starts again."
	output := r.leaf("output ID...", "Follow the output of instances until Ctrl-C", argsBetween(1, -1, "ID..."), func(ctx context.Context, args []string) error {
		return r.instanceOutput(ctx, args, since)
	})
	output.Long = "Follow the output of instances until Ctrl-C. It follows on across a master's\nrestart or a failover to a standby, and is given the lines it missed\nmeanwhile (as many as the master keeps). With --since 5m, it first prints\nwhat the master still keeps of the last 5 minutes (its latest 1,000 lines\nof each instance)."
	output.Flags().DurationVar(&since, "since", 0, "first print the lines of this long ago on (such as 5m) that the master keeps")
	var create *cobra.Command
	var dir string
	create = r.leaf("create NAME [--dir DIR] [-- PROGRAM ARG...]", "Create an instance on the master, not yet assigned to a slave", argsBetween(1, -1, "NAME [-- PROGRAM ARG...]"), func(ctx context.Context, args []string) error {
		return r.instanceCreate(ctx, args, create.ArgsLenAtDash(), dir)
	})
	create.Long = createLong
	create.Flags().StringVar(&dir, "dir", "", "the program's working directory, an absolute path on the slave (default: the slave's)")
	instance.AddCommand(
		r.listLeaf("List the instances the master knows",
			"List the instances the master knows. With --watch, print the list, then each\ninstance that changes as a line of the same columns (status \"deleted\" when\ndeleted), until Ctrl-C; with --json, one JSON object a line per instance,\nthen per change (instance_updates entries).",
			r.instanceList, r.watchInstances),
		create,
		r.leaf("assign ID SLAVE", "Assign an instance to a slave", argsBetween(2, 2, "ID SLAVE"), r.instanceAssign),
		deleteCmd,
		r.leaf("start ID", "Start an instance", argsBetween(1, 1, "ID"), r.instanceStart),
		r.leaf("stop ID", "Stop an instance", argsBetween(1, 1, "ID"), r.instanceStop),
		command,
		output,
	)

	var reason string
	player := group(&cobra.Command{Use: "player", Short: "Players: ban, unban, bans"})
	ban := r.leaf("ban NAME", "Ban a player on every instance of the cluster (a broadcast)", argsBetween(1, 1, "NAME"), func(ctx context.Context, args []string) error {
		return r.playerBan(ctx, args, reason)
	})
	ban.Flags().StringVar(&reason, "reason", "", "why the player is banned")
	player.AddCommand(ban,
		r.leaf("unban NAME", "Lift a player's ban on every instance", argsBetween(1, 1, "NAME"), r.playerUnban),
		r.leaf("bans", "List the players banned on every instance", argsBetween(0, 0, ""), r.playerBans))

	cmd.AddCommand(
		r.leaf("ping", "Ask the master to answer and print the round trip", argsBetween(0, 0, ""), r.ping),
		r.leaf("status", "One screen on the cluster: masters, slaves, instances, what is wrong", argsBetween(0, 0, ""), r.status),
		slave, instance, player,
	)
	return cmd
}

// leaf makes a ctl command that loads the control's configuration, then
// runs run.
func (r *ctlRun) leaf(use, short string, args cobra.PositionalArgs, run func(ctx context.Context, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: r.a.do(func(cmd *cobra.Command, args []string) error {
			if err := r.configure(); err != nil {
				return err
			}
			return run(cmd.Context(), args)
		}),
	}
}

// listLeaf is a list command with --watch, which runs watch instead of
// list.
func (r *ctlRun) listLeaf(short, long string, list func(ctx context.Context, args []string) error, watch func(ctx context.Context) error) *cobra.Command {
	var watching bool
	c := r.leaf("list", short, argsBetween(0, 0, ""), func(ctx context.Context, args []string) error {
		if watching {
			return watch(ctx)
		}
		return list(ctx, args)
	})
	c.Long = long
	c.Flags().BoolVarP(&watching, "watch", "w", false, "print the list, then every change as it happens, until Ctrl-C")
	return c
}

// configure loads the control's configuration, by the precedence rule.
func (r *ctlRun) configure() error {
	environ, _, err := r.a.controlEnviron(r.context, r.server)
	if err != nil {
		return err
	}
	cfg, err := fabric.LoadControlConfig(environ)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(environ, func(kv string) bool { return strings.HasPrefix(kv, "FABRIC_LOG_LEVEL=") }) {
		cfg.Log.Level = "error" // a command-line tool says nothing unless something is wrong: its errors are reported anyway
	}
	r.cfg = cfg
	return nil
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
	resp, err := link.Request(ctx, r.ctl.Link(), m, req)
	return resp, r.noMaster(err)
}

// noMaster says in the operator's terms that nothing listens for the
// master: the transport's text names subjects. Other errors pass as they
// are.
func (r *ctlRun) noMaster(err error) error {
	var le *link.Error
	if !errors.As(err, &le) || le.Code != link.CodeNotConnected {
		return err
	}
	url := r.cfg.NATS.URL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	return link.Errorf(link.CodeNotConnected, "no master answers on the NATS servers at %s (subject prefix %s): is fabric master running there?", url, r.cfg.NATS.Prefix)
}

// id parses a positional argument as a positive id.
func id(arg, what string) (int64, error) {
	n, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || n < 1 {
		return 0, usagef("%s %q is not a positive integer", what, arg)
	}
	return n, nil
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// done prints a one-line result, or {} for --json.
func (r *ctlRun) done(format string, args ...any) error {
	if r.json {
		return printJSON(r.a.stdout, struct{}{})
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

func (r *ctlRun) ping(ctx context.Context, _ []string) error {
	if err := r.dial(ctx, nil); err != nil {
		return err
	}
	defer r.close()
	start := time.Now()
	if _, err := link.Request(ctx, r.ctl.Link(), messages.Ping, messages.Empty{}); err != nil {
		return r.noMaster(err)
	}
	rtt := time.Since(start)
	if r.json {
		return printJSON(r.a.stdout, map[string]float64{"rtt_ms": float64(rtt.Microseconds()) / 1000})
	}
	return r.done("pong from the master in %s", rtt.Round(10*time.Microsecond))
}

func (r *ctlRun) slaveList(ctx context.Context, _ []string) error {
	res, err := call(ctx, r, messages.ListSlaves, messages.Empty{})
	if err != nil {
		return err
	}
	if r.json {
		return printJSON(r.a.stdout, res)
	}
	var rows [][]string
	for _, s := range res.Slaves {
		rows = append(rows, []string{strconv.FormatInt(s.ID, 10), s.Name, strconv.FormatBool(s.Connected), strconv.Itoa(s.Instances)})
	}
	return table(r.a.stdout, "ID\tNAME\tCONNECTED\tINSTANCES", rows)
}

func (r *ctlRun) instanceList(ctx context.Context, _ []string) error {
	res, err := call(ctx, r, messages.ListInstances, messages.Empty{})
	if err != nil {
		return err
	}
	if r.json {
		return printJSON(r.a.stdout, res)
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

const createLong = `Create an instance on the master, not yet assigned to a slave.

Without a program it is a simulated instance. With one, after --, the
instance runs that program on the slave it is assigned to: PROGRAM is its
absolute path, which the slave's FABRIC_SLAVE_ALLOW_PROGRAMS must name, and
the words after it are its arguments, passed as they are (no shell reads
them). instance start runs it, instance stop sends it SIGTERM (SIGKILL after
the slave's FABRIC_SLAVE_STOP_TIMEOUT), each line it prints is output, and
instance command writes a line to its standard input and prints what the
program printed until it was quiet for 250ms (waiting up to 2s for the
first line). For example:

  fabric ctl instance create ticker --dir /tmp -- /bin/sh -c 'while read l; do echo "got $l"; done'`

// instanceCreate creates instance args[0]; the program, if any, is what
// comes after -- (at dash).
func (r *ctlRun) instanceCreate(ctx context.Context, args []string, dash int, dir string) error {
	req := messages.NewInstance{Name: args[0]}
	switch {
	case dash < 0 && len(args) > 1:
		return usagef("instance create: the program comes after --, as in: instance create %s -- %s", args[0], strings.Join(args[1:], " "))
	case dash > 1:
		return usagef("instance create: want one NAME before --, got %q", args[:dash])
	case dash == 1 && len(args) == 1:
		return usagef("instance create: want the program's absolute path after --")
	case dash == 1:
		req.Program = &messages.Program{Command: args[1], Args: args[2:], Dir: dir}
		if !filepath.IsAbs(args[1]) {
			return usagef("instance create: the program %q is not an absolute path: want one such as /bin/sh, as the slave's FABRIC_SLAVE_ALLOW_PROGRAMS names it", args[1])
		}
		if dir != "" && !filepath.IsAbs(dir) {
			return usagef("instance create: --dir %q is not an absolute path", dir)
		}
	case dir != "":
		return usagef("instance create: --dir is the working directory of a program: give the program after --")
	}
	res, err := call(ctx, r, messages.CreateInstance, req)
	if err != nil {
		return err
	}
	if r.json {
		return printJSON(r.a.stdout, res)
	}
	if req.Program != nil {
		return r.done("created instance %d (%s) to run %s", res.InstanceID, args[0], req.Program.Command)
	}
	return r.done("created instance %d (%s)", res.InstanceID, args[0])
}

func (r *ctlRun) instanceAssign(ctx context.Context, args []string) error {
	instance, err := id(args[0], "instance id")
	if err != nil {
		return err
	}
	slave, err := id(args[1], "slave id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.AssignInstanceCommand, messages.Assignment{InstanceID: instance, SlaveID: slave}); err != nil {
		return err
	}
	return r.done("assigned instance %d to slave %d", instance, slave)
}

func (r *ctlRun) instanceDelete(ctx context.Context, args []string) error {
	instance, err := id(args[0], "instance id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.DeleteInstance, messages.InstanceRef{InstanceID: instance}); err != nil {
		return err
	}
	return r.done("deleted instance %d", instance)
}

func (r *ctlRun) instanceStart(ctx context.Context, args []string) error {
	instance, err := id(args[0], "instance id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.StartInstance, messages.InstanceRef{InstanceID: instance}); err != nil {
		return err
	}
	return r.done("started instance %d", instance)
}

func (r *ctlRun) instanceStop(ctx context.Context, args []string) error {
	instance, err := id(args[0], "instance id")
	if err != nil {
		return err
	}
	if _, err := call(ctx, r, messages.StopInstance, messages.InstanceRef{InstanceID: instance}); err != nil {
		return err
	}
	return r.done("stopped instance %d", instance)
}

func (r *ctlRun) instanceCommand(ctx context.Context, args []string) error {
	instance, err := id(args[0], "instance id")
	if err != nil {
		return err
	}
	res, err := call(ctx, r, messages.SendCommand, messages.Command{InstanceID: instance, Command: strings.Join(args[1:], " ")})
	if err != nil {
		return err
	}
	if r.json {
		return printJSON(r.a.stdout, res)
	}
	_, err = fmt.Fprintln(r.a.stdout, res.Output)
	return err
}

func (r *ctlRun) instanceOutput(ctx context.Context, args []string, since time.Duration) error {
	if since < 0 {
		return usagef("--since %s: want a positive duration, such as 5m", since)
	}
	var ids []int64
	for _, arg := range args {
		n, err := id(arg, "instance id")
		if err != nil {
			return err
		}
		ids = append(ids, n)
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
	var from time.Time
	if since > 0 {
		from = time.Now().Add(-since)
	}
	if err := r.ctl.FollowSince(ctx, from, ids...); err != nil {
		return r.noMaster(err)
	}
	// Said on stderr, so that stdout holds the output lines alone.
	fmt.Fprintf(r.a.stderr, "following the output of instance %s (Ctrl-C to stop)\n", strings.Join(args, ", "))
	// The control follows on across master restarts and failovers, and
	// is given the lines it missed meanwhile.
	<-ctx.Done() // Ctrl-C: a normal end
	return nil
}

func (r *ctlRun) playerBan(ctx context.Context, args []string, reason string) error {
	if _, err := call(ctx, r, messages.SetPlayerBanned, messages.Ban{Name: args[0], Banned: true, Reason: reason}); err != nil {
		return err
	}
	return r.done("banned %s on every instance", args[0])
}

func (r *ctlRun) playerBans(ctx context.Context, _ []string) error {
	res, err := call(ctx, r, messages.ListBannedPlayers, messages.Empty{})
	if err != nil {
		return err
	}
	if r.json {
		return printJSON(r.a.stdout, res)
	}
	var rows [][]string
	for _, b := range res.Bans {
		reason := b.Reason
		if reason == "" {
			reason = "-"
		}
		rows = append(rows, []string{b.Name, reason})
	}
	return table(r.a.stdout, "PLAYER\tREASON", rows)
}

func (r *ctlRun) playerUnban(ctx context.Context, args []string) error {
	if _, err := call(ctx, r, messages.SetPlayerBanned, messages.Ban{Name: args[0], Banned: false}); err != nil {
		return err
	}
	return r.done("unbanned %s on every instance", args[0])
}
