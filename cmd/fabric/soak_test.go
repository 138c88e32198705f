//go:build unix

package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/natscluster"
)

// soakReport is the part of `fabric soak --json` that scripts read.
type soakReport struct {
	OK    bool `json:"ok"`
	Links []struct {
		Link     string `json:"link"`
		Sent     uint64 `json:"sent"`
		Received uint64 `json:"received"`
		Missing  uint64 `json:"missing"`
	} `json:"links"`
	Requests []struct {
		Message string `json:"message"`
		Started uint64 `json:"started"`
		Ended   uint64 `json:"ended"`
		OK      uint64 `json:"ok"`
	} `json:"requests"`
	View struct {
		OK bool `json:"ok"`
	} `json:"view"`
	Problems []string `json:"problems"`
}

// checkSoak fails the test unless the report is clean and shows traffic
// of every kind.
func checkSoak(t *testing.T, out string) {
	t.Helper()
	var r soakReport
	if err := jsonDecodeLoose(out, &r); err != nil {
		t.Fatalf("decode the report: %v\n%s", err, out)
	}
	if !r.OK || !r.View.OK || len(r.Problems) > 0 {
		t.Errorf("the soak found problems: %q\n%s", r.Problems, out)
	}
	// 2 slaves of 2 instances: 4 instance -> master, 2 master -> slave,
	// the broadcasts of instances 101 and 201 to the 3 others each, and
	// the output of the 4 instances to the control.
	if len(r.Links) != 16 || len(r.Requests) != 2 {
		t.Errorf("%d links and %d request types, want 16 and 2:\n%s", len(r.Links), len(r.Requests), out)
	}
	for _, l := range r.Links {
		if l.Sent == 0 || l.Received != l.Sent || l.Missing != 0 {
			t.Errorf("%s: %d sent, %d received, %d missing", l.Link, l.Sent, l.Received, l.Missing)
		}
	}
	for _, q := range r.Requests {
		if q.Started == 0 || q.Ended != q.Started || q.OK == 0 {
			t.Errorf("%s: %d started, %d ended, %d ok", q.Message, q.Started, q.Ended, q.OK)
		}
	}
}

// jsonDecodeLoose decodes the parts of out that v names.
func jsonDecodeLoose(out string, v any) error {
	return json.NewDecoder(strings.NewReader(out)).Decode(v)
}

// TestSoak runs `fabric soak` briefly on its embedded server: a clean
// report, exit status 0, in about the time asked for.
func TestSoak(t *testing.T) {
	t.Parallel()
	r := run(t, nil, "soak", "--duration", "2s", "--json")
	if r.code != 0 {
		t.Fatalf("fabric soak: %s", r)
	}
	checkSoak(t, r.stdout)
	if r.took > 20*time.Second {
		t.Errorf("a 2s soak took %s", r.took.Round(time.Millisecond))
	}
	text := run(t, nil, "soak", "--duration", "1s", "--slaves", "1", "--instances", "1", "--ask-rate", "0", "--tell-rate", "0")
	if text.code != 0 || !strings.Contains(text.stdout, "OK: nothing lost") || !strings.Contains(text.stdout, "instance 101 -> master") ||
		strings.Contains(text.stdout, "soak:ask") {
		t.Errorf("fabric soak with one slave and no requests: %s", text)
	}
}

// TestSoakFailover runs `fabric soak --failover` briefly on its embedded
// server: two master processes of its own, a SIGKILL of the active one
// and a pause of the next; nothing lost, no acknowledged change lost, no
// message from an ended term, exit status 0.
func TestSoakFailover(t *testing.T) {
	t.Parallel()
	r := run(t, nil, "soak", "--failover", "--duration", "9s", "--fault-every", "3s", "--json")
	if r.code != 0 {
		t.Fatalf("fabric soak --failover: %s", r)
	}
	var fr struct {
		OK     bool `json:"ok"`
		Faults []struct {
			Fault      string `json:"fault"`
			TermBefore uint64 `json:"term_before"`
			TermAfter  uint64 `json:"term_after"`
		} `json:"faults"`
		State struct {
			Acknowledged int `json:"acknowledged"`
		} `json:"state"`
		LateMessages int `json:"late_messages"`
	}
	if err := jsonDecodeLoose(r.stdout, &fr); err != nil {
		t.Fatalf("decode the report: %v\n%s", err, r.stdout)
	}
	if !fr.OK || len(fr.Faults) == 0 || fr.State.Acknowledged == 0 || fr.LateMessages != 0 {
		t.Errorf("fabric soak --failover: %+v\n%s", fr, r)
	}
	if len(fr.Faults) > 0 && (fr.Faults[0].Fault != "SIGKILL the active master" || fr.Faults[0].TermAfter <= fr.Faults[0].TermBefore) {
		t.Errorf("the first fault %+v: want a SIGKILL and a new term", fr.Faults[0])
	}
}

// TestSoakBadUsage: bad flags exit 2 before anything runs.
func TestSoakBadUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"soak", "--duration", "0s"}, "--duration must be positive"},
		{[]string{"soak", "--instances", "100"}, "--instances must be 1 to 99"},
		{[]string{"soak", "--up-rate", "-1"}, "--up-rate must be 0 to 1000"},
		{[]string{"soak", "--prefix", "a b"}, "FABRIC_SUBJECT_PREFIX"},
		{[]string{"soak", "--prefix", "lf.soak"}, "--prefix \"lf.soak\": want one subject token"},
		{[]string{"soak", "now"}, "soak takes no arguments"},
		{[]string{"soak", "--failover", "--masters", "1"}, "--masters must be 2 to 9"},
	} {
		failsWith(t, nil, 2, []string{tc.want}, tc.args...)
	}
	out := ok(t, []string{"FABRIC_NATS_URL=nats://127.0.0.1:1"}, "soak", "--help")
	if !strings.Contains(out, "Usage:\n  fabric soak [flags]") || !strings.Contains(out, "--duration") {
		t.Errorf("soak --help:\n%s", out)
	}
}

// TestSoakClusterNodeRestart is what an operator does: `fabric soak`
// against the three-node cluster with every node in FABRIC_NATS_URL,
// while a node is killed and restarted. Nothing is lost.
func TestSoakClusterNodeRestart(t *testing.T) {
	c := natscluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, fabricBin, "soak", "--duration", "6s", "--json")
	cmd.Env = environ("FABRIC_NATS_URL="+c.URLList(), "FABRIC_NATS_PING_INTERVAL=500ms", "FABRIC_KV_REPLICAS=3",
		"FABRIC_HEARTBEAT_INTERVAL=100ms", "FABRIC_PEER_TIMEOUT=1s", "FABRIC_REQUEST_TIMEOUT=5s")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stderr)
	var said []string
	for lines.Scan() && !strings.HasPrefix(lines.Text(), "soak: traffic for") {
		said = append(said, lines.Text())
	}
	if lines.Err() != nil || ctx.Err() != nil {
		t.Fatalf("the soak did not start: %v\n%s", lines.Err(), strings.Join(said, "\n"))
	}
	c.Kill(2)
	c.Restart(2)
	for lines.Scan() {
		said = append(said, lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fabric soak: %v\nstderr:\n%s\nstdout:\n%s", err, strings.Join(said, "\n"), stdout.String())
	}
	checkSoak(t, stdout.String())
}
