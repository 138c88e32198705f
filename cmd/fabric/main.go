// Command fabric runs a Linkfabric cluster and talks to it.
//
//	fabric dev                  a whole cluster in one process, on an embedded NATS server
//	fabric master               the master (embedded NATS unless FABRIC_NATS_URL is set)
//	fabric slave                a slave and its instances
//	fabric ctl COMMAND          the control client: status, list, start, stop, command, follow output
//	fabric context COMMAND      named clusters for fabric ctl
//	fabric messages             the message catalog
//	fabric soak                 check a NATS deployment: numbered traffic, counted
//	fabric version              the version
//
// Endpoints are configured by FABRIC_* environment variables; see README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // a request failed, or the cluster could not be reached
	exitUsage  = 2 // bad usage or configuration
)

// usageError is bad usage: the command line is wrong.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// app holds what commands share: where they write, the environment, and
// what the run has come to.
type app struct {
	stdout, stderr io.Writer
	environ        []string
	// ran is set once a command's own code runs: an error before that is
	// the command line's (cobra's parsing), so a usage error.
	ran bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ()}
	os.Exit(a.run(ctx, os.Args[1:]))
}

const rootLong = `fabric runs a Linkfabric cluster and talks to it.

Endpoints (dev, master, slave, soak) are configured by FABRIC_* environment
variables (see README.md). fabric ctl takes each setting from, strongest
first: flag > environment > selected context > default. That is: its flags
(--server, --context), the environment (FABRIC_*), the context that
fabric context select chose, and the defaults (nats://127.0.0.1:4222, user
admin).

Exit status: 0 on success, 1 when a request fails or the cluster cannot be
reached, 2 on bad usage or configuration.`

// run runs the command line args and returns the exit status.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	cmd, err := root.ExecuteContextC(ctx)
	return a.exit(cmd, err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "fabric",
		Short:         "Run a Linkfabric cluster and talk to it",
		Long:          rootLong,
		Version:       fabric.Version + " (commit " + fabric.Commit() + ")",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q (see fabric --help)", args[0])
			}
			cmd.SetOut(a.stderr)
			_ = cmd.Usage()
			return usagef("a command is required")
		},
	}
	root.SetVersionTemplate("fabric {{.Version}}\n")
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		a.devCommand(), a.masterCommand(), a.slaveCommand(),
		a.ctlCommand(), a.contextCommand(),
		a.messagesCommand(), a.natsConfigCommand(), a.benchCommand(), a.soakCommand(),
		a.versionCommand(),
	)
	// cobra's own: fabric completion bash|zsh|fish|powershell. Made now,
	// rather than when it runs, so that a shell it lacks is a usage error.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			group(c)
		}
	}
	return root
}

// flagError makes a bad flag a usage error that points at the help.
func flagError(cmd *cobra.Command, err error) error {
	return usagef("%s: %v (see %s --help)", strings.TrimPrefix(cmd.CommandPath(), "fabric "), err, cmd.CommandPath())
}

// do wraps a command's code: from there on, an error is the command's, not
// the command line's.
func (a *app) do(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		return f(cmd, args)
	}
}

// group makes cmd a command that only holds others: run alone, or with
// words that name none of them, it is a usage error.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path := strings.TrimPrefix(cmd.CommandPath(), "fabric ")
		if len(args) == 0 {
			return usagef("%s: a command is required (see %s --help)", path, cmd.CommandPath())
		}
		msg := fmt.Sprintf("%s: unknown command %q (see %s --help)", path, args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usageError{msg}
	}
	return cmd
}

// argsBetween accepts min to max positional arguments (max < 0: any
// number), described by what for the error.
func argsBetween(min, max int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= min && (max < 0 || len(args) <= max) {
			return nil
		}
		path := strings.TrimPrefix(cmd.CommandPath(), "fabric ")
		if what == "" {
			return usagef("%s takes no arguments", path)
		}
		return usagef("%s: want arguments %s (see %s --help)", path, what, cmd.CommandPath())
	}
}

// errorJSON is what a command run with --json prints when it fails.
type errorJSON struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// exit reports err and picks the exit status for it: on stderr, or as
// JSON on stdout if the command was asked for --json.
func (a *app) exit(cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	var le *link.Error
	status, code, msg := exitFailed, "error", err.Error()
	switch {
	case errors.As(err, &ue):
		status, code, msg = exitUsage, "usage", ue.msg
	case !a.ran:
		status, code = exitUsage, "usage"
	case errors.Is(err, fabric.ErrConfig):
		status, code = exitUsage, "config"
	case errors.As(err, &le):
		code, msg = string(le.Code), le.Message
	}
	if cmd != nil && wantsJSON(cmd) {
		var out errorJSON
		out.Error.Code, out.Error.Message = code, msg
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return status
	}
	switch {
	case code == "usage":
		fmt.Fprintf(a.stderr, "fabric: %s\n", msg)
	case code == "config":
		fmt.Fprintln(a.stderr, msg)
	case le != nil:
		fmt.Fprintf(a.stderr, "error: %s (%s)\n", le.Message, le.Code)
	default:
		fmt.Fprintf(a.stderr, "error: %v\n", err)
	}
	return status
}

// wantsJSON reports whether cmd has a --json flag that is on.
func wantsJSON(cmd *cobra.Command) bool {
	f := cmd.Flags().Lookup("json")
	return f != nil && f.Value.String() == "true"
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the commit it was built from",
		Long:  "Print the version and the commit it was built from (unknown under go run). fabric --version says the same.",
		Args:  argsBetween(0, 0, ""),
		RunE: a.do(func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(a.stdout, "fabric %s\n", cmd.Root().Version)
			return err
		}),
	}
}
