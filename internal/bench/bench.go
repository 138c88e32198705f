// Package bench measures what the fabric costs on top of NATS: each
// scenario runs first as raw nats.go (or a direct Go call) on the same
// payloads, then through the fabric with validation on, in the same
// process and the same run, so that the ratio means something on a shared,
// noisy machine. The fabric command's "bench" subcommand prints the
// results; docs/benchmarks.md explains them.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"
)

// Config sizes a run. Zero fields take the defaults of Defaults or Quick.
type Config struct {
	Requests         int    // sequential requests
	Parallel         int    // requests in flight at once
	ParallelRequests int    // requests in all, in the parallel scenario
	Events           int    // one-way events
	Forwarded        int    // forwarded requests
	Slaves           int    // slaves in the broadcast scenario
	Instances        int    // instances per slave in the broadcast scenario
	Broadcasts       int    // broadcasts timed
	Virtual          int    // requests and events over a virtual link
	MemorySlaves     int    // idle slaves whose memory is measured
	MemoryInstances  int    // running instances whose memory is measured
	PayloadBytes     int    // the size of the string every payload carries
	Only             string // if set, run only the scenarios whose name contains it
	Log              *slog.Logger
	// Child starts the child processes of the two-process scenario,
	// which is left out when it is nil.
	Child Child
}

// Defaults is the full run: a minute or two on a 2-core machine.
func Defaults() Config {
	return Config{
		Requests: 5000, Parallel: 64, ParallelRequests: 64 * 300, Events: 200000,
		Forwarded: 2000, Slaves: 100, Instances: 10, Broadcasts: 20,
		Virtual: 20000, MemorySlaves: 1000, MemoryInstances: 200, PayloadBytes: 100,
	}
}

// Quick is a run of a few seconds, for CI and a first look.
func Quick() Config {
	return Config{
		Requests: 500, Parallel: 64, ParallelRequests: 64 * 30, Events: 20000,
		Forwarded: 300, Slaves: 10, Instances: 10, Broadcasts: 5,
		Virtual: 2000, MemorySlaves: 100, MemoryInstances: 20, PayloadBytes: 100,
	}
}

// Result is one measurement: the baseline, the fabric, and their ratio.
type Result struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Unit     string  `json:"unit"`
	Baseline float64 `json:"baseline"` // 0 when there is no baseline
	Fabric   float64 `json:"fabric"`
	Ratio    float64 `json:"ratio,omitempty"` // Fabric / Baseline
	Target   string  `json:"target,omitempty"`
	Met      *bool   `json:"met,omitempty"`
	Note     string  `json:"note,omitempty"`
}

// Run runs every scenario. progress, if not nil, hears what starts.
func Run(ctx context.Context, cfg Config, progress func(string)) ([]Result, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if progress == nil {
		progress = func(string) {}
	}
	var out []Result
	for _, s := range []struct {
		name string
		run  func(context.Context, Config) ([]Result, error)
	}{
		{"request/reply, control -> master", runRequests},
		{"events, control -> master", runEvents},
		{"forwarded request, control -> master -> slave -> instance", runForwarded},
		{"two processes: control -> master, request/reply", runTwoProcesses},
		{"broadcast to every instance", runBroadcast},
		{"virtual link", runVirtual},
		{"memory", runMemory},
	} {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if cfg.Only != "" && !strings.Contains(s.name, cfg.Only) {
			continue
		}
		progress(s.name)
		rs, err := s.run(ctx, cfg)
		out = append(out, rs...)
		if err != nil {
			return out, fmt.Errorf("bench: %s: %w", s.name, err)
		}
	}
	return out, nil
}

// latencies summarises round trips.
type latencies []time.Duration

func (l latencies) percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// compare builds a Result; lowerIsBetter says which way the target points.
func compare(scenario, metric, unit string, baseline, fabric float64, target float64, lowerIsBetter bool) Result {
	r := Result{Scenario: scenario, Metric: metric, Unit: unit, Baseline: baseline, Fabric: fabric}
	if baseline > 0 {
		r.Ratio = fabric / baseline
	}
	if target > 0 && baseline > 0 {
		met := r.Ratio >= target
		r.Target = fmt.Sprintf(">= %.2fx", target)
		if lowerIsBetter {
			met = r.Ratio <= target
			r.Target = fmt.Sprintf("<= %.2fx", target)
		}
		r.Met = &met
	}
	return r
}

// payload returns a string of n printable bytes.
func payload(n int) string { return strings.Repeat("x", n) }
