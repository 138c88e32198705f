package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/internal/bench"
)

const benchLong = `Measure what the fabric costs on top of NATS. Each scenario runs first as
raw nats.go (or a direct Go call) on the same payloads, then through the
fabric with validation on, in one process against an embedded NATS server
on loopback. It prints each figure, the baseline, their ratio and the
target. docs/benchmarks.md says how long a run takes, and what the
figures mean.
Benchmarks report; they do not fail on a slow machine.
`

// benchFlags are fabric bench's flags.
type benchFlags struct {
	quick, json       bool
	serveRaw          bool
	slaves, instances int
	cpuProfile, only  string
}

func (a *app) benchCommand() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the fabric against raw NATS",
		Long:  benchLong,
		Args:  argsBetween(0, 0, ""),
		RunE:  a.do(func(cmd *cobra.Command, _ []string) error { return a.bench(cmd.Context(), f) }),
	}
	fs := cmd.Flags()
	fs.BoolVar(&f.quick, "quick", false, "a short run, for CI and a first look")
	fs.BoolVar(&f.json, "json", false, "print JSON results")
	fs.IntVar(&f.slaves, "slaves", 0, "slaves in the broadcast scenario (default 100, quick 10)")
	fs.IntVar(&f.instances, "instances", 0, "instances per slave in the broadcast scenario (default 10)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	fs.StringVar(&f.only, "only", "", "run only the scenarios whose name contains this text")
	// The raw child process of the two-process scenario.
	fs.BoolVar(&f.serveRaw, "serve-raw", false, "serve raw NATS requests, as the two-process scenario's baseline")
	_ = fs.MarkHidden("serve-raw")
	return cmd
}

func (a *app) bench(ctx context.Context, f benchFlags) error {
	if f.serveRaw {
		return bench.ServeRaw(ctx, os.Stdin, a.stdout)
	}
	cfg := bench.Defaults()
	if f.quick {
		cfg = bench.Quick()
	}
	if f.slaves < 0 || f.instances < 0 {
		return usagef("bench: --slaves and --instances must be positive")
	}
	if f.slaves > 0 {
		cfg.Slaves = f.slaves
	}
	cfg.Only = f.only
	cfg.Child = a.benchChild
	if f.instances > 0 {
		cfg.Instances = f.instances
	}
	if f.cpuProfile != "" {
		f, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	progress := func(s string) { fmt.Fprintf(a.stderr, "bench: %s\n", s) }
	results, err := bench.Run(ctx, cfg, progress)
	if f.json {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(map[string]any{
			"machine": map[string]any{"cpus": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH},
			"results": results,
		}); jerr != nil {
			return jerr
		}
		return err
	}
	if terr := a.printBench(results); terr != nil {
		return terr
	}
	return err
}

// printBench prints the bench's results as a table, and their notes.
func (a *app) printBench(results []bench.Result) error {
	fmt.Fprintf(a.stdout, "%d CPUs, %s\n\n", runtime.NumCPU(), runtime.Version())
	var rows [][]string
	for _, r := range results {
		baseline, ratio := "-", "-"
		if r.Baseline > 0 {
			baseline = num(r.Baseline)
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		met := "-"
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		target := r.Target
		if target == "" {
			target = "-"
		}
		rows = append(rows, []string{r.Scenario, r.Metric + " (" + r.Unit + ")", baseline, num(r.Fabric), ratio, target, met})
	}
	if err := table(a.stdout, "SCENARIO\tMETRIC\tBASELINE\tFABRIC\tRATIO\tTARGET\tMET", rows); err != nil {
		return err
	}
	for _, r := range results {
		if r.Note != "" {
			fmt.Fprintf(a.stdout, "\n%s, %s: %s", r.Scenario, r.Metric, r.Note)
		}
	}
	_, err := fmt.Fprintln(a.stdout)
	return err
}

// num prints a figure with three significant digits, or as an integer.
func num(f float64) string {
	if f >= 1000 {
		return strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strconv.FormatFloat(f, 'g', 3, 64)
}

// benchChild makes the command of a child process of the two-process
// scenario: this program, as a master with an embedded NATS server on a
// free loopback port, or as the raw baseline's responder. Neither sees the
// FABRIC_* settings of this process.
func (a *app) benchChild(ctx context.Context, kind bench.ChildKind) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	var env []string
	for _, kv := range a.environ {
		if !strings.HasPrefix(kv, "FABRIC_") {
			env = append(env, kv)
		}
	}
	var cmd *exec.Cmd
	switch kind {
	case bench.ChildMaster:
		cmd = exec.CommandContext(ctx, exe, "master")
		env = append(env, "FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_LOG_LEVEL=error", "FABRIC_CONTROL_PERMISSIONS=*=*")
	default:
		cmd = exec.CommandContext(ctx, exe, "bench", "--serve-raw")
	}
	cmd.Env = env
	dieWithParent(cmd)
	return cmd
}
