package soak_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/soak"
	"github.com/linkfabric/linkfabric/internal/testkit"
)

// logger discards the endpoints' logs unless LF_TEST_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("LF_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startSoak starts a soak and closes it when the test ends.
func startSoak(t *testing.T, cfg soak.Config) *soak.Soak {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = logger()
	}
	s, err := soak.Start(testkit.Ctx(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatalf("soak.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Logf("soak Close: %v", err)
		}
	})
	return s
}

// finish quiesces the soak, waits for the master's view to be right, and
// fails the test unless the report is clean.
func finish(t *testing.T, s *soak.Soak, viewBound time.Duration) soak.Report {
	t.Helper()
	if err := s.Quiesce(testkit.Ctx(t, 30*time.Second)); err != nil {
		t.Errorf("Quiesce: %v", err)
	}
	if err := s.WaitView(testkit.Ctx(t, viewBound), nil); err != nil {
		t.Errorf("WaitView: %v", err)
	}
	r := s.Report()
	t.Logf("report:\n%s", r)
	if !r.OK {
		t.Errorf("the soak found problems: %q", r.Problems)
	}
	for _, q := range r.Requests {
		if q.Started == 0 || q.OK == 0 {
			t.Errorf("%s: %d started, %d ok: no traffic", q.Message, q.Started, q.OK)
		}
	}
	if tot := r.Totals(); tot.Sent == 0 {
		t.Error("no events sent")
	}
	broadcasts := 0
	for _, l := range r.Links {
		if strings.Contains(l.Link, " => ") && l.Received > 0 {
			broadcasts++
		}
	}
	if broadcasts == 0 {
		t.Error("no broadcast received")
	}
	return r
}

// On one NATS server, a soak with a master restart and a slave restart in
// it loses nothing, duplicates nothing, and ends every request once.
func TestSoakRestarts(t *testing.T) {
	b, err := fabric.StartBroker("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	s := startSoak(t, soak.Config{NATS: fabric.NATSConfig{URL: b.ClientURL(), PingInterval: time.Second}})
	if err := s.WaitTraffic(testkit.Ctx(t, 10*time.Second), 100); err != nil {
		t.Fatal(err)
	}
	if err := s.RestartMaster(testkit.Ctx(t, 15*time.Second)); err != nil {
		t.Fatalf("RestartMaster: %v", err)
	}
	if err := s.WaitView(testkit.Ctx(t, 10*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitTraffic(testkit.Ctx(t, 10*time.Second), 100); err != nil {
		t.Fatal(err)
	}
	if err := s.RestartSlave(testkit.Ctx(t, 15*time.Second), 1); err != nil {
		t.Fatalf("RestartSlave: %v", err)
	}
	if err := s.WaitTraffic(testkit.Ctx(t, 10*time.Second), 100); err != nil {
		t.Fatal(err)
	}
	r := finish(t, s, 10*time.Second)
	incs := map[string]int64{}
	for _, l := range r.Links {
		incs[l.Link] = max(incs[l.Link], l.Incarnation)
	}
	if incs["master -> slave 1"] != 2 || incs["instance 101 -> master"] != 2 || incs["instance 201 -> master"] != 1 {
		t.Errorf("incarnations %v: want 2 masters, 2 of slave 1's instances, 1 of slave 2's", incs)
	}
}
