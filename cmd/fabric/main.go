// Command fabric runs a Linkfabric cluster and talks to it.
//
//	fabric dev                  a whole cluster in one process, on an embedded NATS server
//	fabric master               the master (embedded NATS unless FABRIC_NATS_URL is set)
//	fabric slave                a slave and its instances
//	fabric ctl COMMAND          the control client: list, start, stop, command, follow output
//	fabric messages             the message catalog
//	fabric soak                 check a NATS deployment: numbered traffic, counted
//	fabric version              the version
//
// Endpoints are configured by FABRIC_* environment variables; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

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

// app holds what commands share: where they write, and the environment.
type app struct {
	stdout, stderr io.Writer
	environ        []string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ()}
	os.Exit(a.run(ctx, os.Args[1:]))
}

const mainUsage = `fabric runs a Linkfabric cluster and talks to it.

Usage:
  fabric <command> [arguments]

Commands:
  dev        run a whole cluster in one process: embedded NATS, a master,
             two slaves with two simulated instances each
  master     run the master
  slave      run a slave
  ctl        control a running cluster (fabric ctl --help)
  messages   list the message catalog
  nats-config
             print nats-server users and permissions, one per endpoint
  bench      measure the fabric against raw NATS
  soak       run numbered traffic through a NATS deployment for a while
             and count what was lost, duplicated or reordered
  version    print the version

Every command takes --help. Endpoints are configured by FABRIC_* environment
variables (see README.md).
`

// run runs the command line args and returns the exit status.
func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, mainUsage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "--help", "help":
		fmt.Fprint(a.stdout, mainUsage)
		return exitOK
	case "dev":
		err = a.dev(ctx, rest)
	case "master":
		err = a.master(ctx, rest)
	case "slave":
		err = a.slave(ctx, rest)
	case "ctl":
		err = a.ctl(ctx, rest)
	case "messages":
		err = a.messages(rest)
	case "nats-config":
		err = a.natsConfig(rest)
	case "bench":
		err = a.bench(ctx, rest)
	case "soak":
		err = a.soak(ctx, rest)
	case "version":
		err = a.version(rest)
	default:
		fmt.Fprintf(a.stderr, "fabric: unknown command %q\n\n%s", cmd, mainUsage)
		return exitUsage
	}
	return a.exit(err)
}

// exit reports err on stderr and picks the exit status for it.
func (a *app) exit(err error) int {
	var ue usageError
	var le *link.Error
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "fabric: %s\n", ue.msg)
		return exitUsage
	case errors.Is(err, fabric.ErrConfig):
		fmt.Fprintln(a.stderr, err)
		return exitUsage
	case errors.As(err, &le):
		fmt.Fprintf(a.stderr, "error: %s (%s)\n", le.Message, le.Code)
		return exitFailed
	}
	fmt.Fprintf(a.stderr, "error: %v\n", err)
	return exitFailed
}

// flags returns a FlagSet that prints usage to the app's stdout on --help
// and reports its errors as usage errors.
func (a *app) flags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(a.stdout, usage)
		if hasFlags(fs) {
			fmt.Fprintln(a.stdout, "\nFlags:")
			fs.SetOutput(a.stdout)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses args, turning bad flags into usage errors. Flags may come
// before, between or after the positional arguments, which fs.Args() then
// returns in order; "--" ends the flags.
func parse(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := parseFlags(fs, args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return flag.ErrHelp // the FlagSet has printed the usage
			}
			return usagef("%s: %v (see fabric %s --help)", fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 || (len(args) > len(rest) && args[len(args)-len(rest)-1] == "--") {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Leave the positional arguments where fs.Args() finds them.
	return fs.Parse(append([]string{"--"}, positional...))
}

// parseFlags is fs.Parse, except that the usage is printed for --help
// only: the flag package also calls fs.Usage on every bad flag, which
// would put the usage on stdout; a bad flag is reported on stderr instead,
// in one line, by whoever gets the error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		usage()
	}
	return err
}

func (a *app) version(args []string) error {
	fs := a.flags("version", "Usage: fabric version\n\nPrint the version.\n")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintf(a.stdout, "fabric %s\n", fabric.Version)
	return nil
}
