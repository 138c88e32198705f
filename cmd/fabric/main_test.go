//go:build unix

// The tests of the fabric command run the built binary as a user would:
// a dev cluster on free loopback ports, ctl commands against it, bad
// usage and configuration, and signals.
package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
)

// fabricBin is the fabric binary that TestMain builds.
var fabricBin string

// configHome is the XDG_CONFIG_HOME of the commands the tests run, unless
// a test gives its own: empty, so that no context is selected.
var configHome string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "fabric-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	fabricBin = filepath.Join(dir, "fabric")
	// No context of the user's may reach the tests: fabric ctl reads them
	// from the configuration directory.
	configHome = filepath.Join(dir, "config")
	// -buildvcs=auto: stamped with the commit in a git checkout, as a
	// user's build is, whatever GOFLAGS says.
	out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", fabricBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// Timings of the test clusters: fast heartbeats, and a peer timeout that a
// loaded machine does not reach by accident.
var fastTimings = []string{
	"FABRIC_HEARTBEAT_INTERVAL=250ms",
	"FABRIC_PEER_TIMEOUT=5s",
	"FABRIC_REQUEST_TIMEOUT=10s",
}

const (
	// runTimeout bounds a command that should end by itself.
	runTimeout = 30 * time.Second
	// waitLong bounds a wait for something that should happen promptly.
	waitLong = 10 * time.Second
	// stopTimeout bounds a graceful stop after a signal; the command's own
	// shutdown bound is 10s.
	stopTimeout = 15 * time.Second
)

// environ returns the test process's environment without any FABRIC_*
// variable, with XDG_CONFIG_HOME set to configHome, plus env.
func environ(env ...string) []string {
	out := []string{"XDG_CONFIG_HOME=" + configHome}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FABRIC_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// result is how a command ended.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit status %d after %s\nstdout:\n%s\nstderr:\n%s", r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// run runs fabric with args and env (besides the test's environment) and
// waits for it to end, within runTimeout.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, fabricBin, args...)
	cmd.Env = environ(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("fabric %s: still running after %s\n%s", strings.Join(args, " "), runTimeout, r)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("fabric %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ok runs fabric and fails the test unless it exits 0 and prints nothing
// on stderr; it returns the standard output.
func ok(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := run(t, env, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("fabric %s: want exit status 0 and nothing on stderr, got %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// failsWith runs fabric and fails the test unless it exits with code,
// prints nothing on stdout, and says each of want on stderr.
func failsWith(t *testing.T, env []string, code int, want []string, args ...string) result {
	t.Helper()
	r := run(t, env, args...)
	if r.code != code || r.stdout != "" {
		t.Fatalf("fabric %s: want exit status %d and nothing on stdout, got %s", strings.Join(args, " "), code, r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("fabric %s: stderr does not say %q:\n%s", strings.Join(args, " "), w, r.stderr)
		}
	}
	return r
}

// syncBuffer is a bytes.Buffer that a process writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a fabric process running in the background.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	code           int // once done
}

// start starts fabric with args in the background; the test's cleanup
// kills it if it is still running.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: "fabric " + strings.Join(args, " "), done: make(chan struct{})}
	p.cmd = exec.Command(fabricBin, args...)
	if len(args) > 0 && args[0] == "master" && !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "FABRIC_DATA_DIR=") }) {
		// Not the user's state directory: each test's master state is its own.
		env = append(slices.Clone(env), "FABRIC_DATA_DIR="+t.TempDir())
	}
	p.cmd.Env = environ(env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Logf("%s killed at the end of the test\nstdout:\n%s\nstderr:\n%s", p.name, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

func (p *proc) String() string {
	return fmt.Sprintf("%s\nstdout:\n%s\nstderr:\n%s", p.name, p.stdout.String(), p.stderr.String())
}

// waitStdout waits until the process's standard output matches re and
// returns the submatches.
func (p *proc) waitStdout(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	testkit.Eventually(t, waitLong, p.name+" prints "+re.String(), func() error {
		if m = re.FindStringSubmatch(p.stdout.String()); m != nil {
			return nil
		}
		select {
		case <-p.done:
			t.Fatalf("exited with status %d before printing %s: %s", p.code, re, p)
		default:
		}
		return fmt.Errorf("not yet: %s", p)
	})
	return m
}

// waitStderrMatch waits until the process's standard error matches re and
// returns the submatches.
func (p *proc) waitStderrMatch(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	testkit.Eventually(t, waitLong, p.name+" logs "+re.String(), func() error {
		if m = re.FindStringSubmatch(p.stderr.String()); m != nil {
			return nil
		}
		return fmt.Errorf("not yet: %s", p)
	})
	return m
}

// stop sends sig and waits, within stopTimeout, for the process to exit;
// it returns the exit status.
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	return p.stopWithin(t, sig, stopTimeout)
}

// stopWithin sends sig and waits, within timeout, for the process to exit;
// it returns the exit status.
func (p *proc) stopWithin(t *testing.T, sig syscall.Signal, timeout time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %s: %v", p.name, sig, err)
	}
	return p.wait(t, timeout)
}

// wait waits, within timeout, for the process to exit and returns the
// exit status.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		t.Fatalf("did not exit within %s: %s", timeout, p)
		return 0
	}
}

// table is a table printed by a ctl command.
type table struct {
	header []string
	rows   [][]string
}

var fieldStart = regexp.MustCompile(`\S+`)

// parseTable splits a table into its header and rows, and fails the test
// unless every cell starts in its header's column.
func parseTable(t *testing.T, out string) table {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var tb table
	var starts []int
	for _, loc := range fieldStart.FindAllStringIndex(lines[0], -1) {
		tb.header = append(tb.header, lines[0][loc[0]:loc[1]])
		starts = append(starts, loc[0])
	}
	for _, line := range lines[1:] {
		var row []string
		for i, s := range starts {
			end := len(line)
			if i+1 < len(starts) {
				end = min(starts[i+1], len(line))
			}
			if s >= end || line[s] == ' ' || (s > 0 && line[s-1] != ' ') {
				t.Fatalf("row %q: column %s is not aligned with the header:\n%s", line, tb.header[i], out)
			}
			row = append(row, strings.TrimRight(line[s:end], " "))
		}
		tb.rows = append(tb.rows, row)
	}
	return tb
}

// want fails the test unless the table has the header and rows.
func (tb table) want(t *testing.T, header []string, rows ...[]string) {
	t.Helper()
	if !slices.Equal(tb.header, header) {
		t.Errorf("header = %q, want %q", tb.header, header)
	}
	if !slices.EqualFunc(tb.rows, rows, slices.Equal) {
		t.Errorf("rows = %q, want %q", tb.rows, rows)
	}
}

// decode decodes a command's JSON output into v.
func decode(t *testing.T, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, out)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value:\n%s", out)
	}
}

// The JSON that ctl prints, as scripts see it.
type (
	slaveJSON struct {
		ID        int64  `json:"slave_id"`
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		Instances int    `json:"instances"`
	}
	instanceJSON struct {
		ID      int64  `json:"instance_id"`
		Name    string `json:"name"`
		SlaveID int64  `json:"slave_id"`
		Status  string `json:"status"`
	}
)

// ctl runs fabric ctl commands against one cluster.
type ctl struct {
	env []string
}

// newCtl returns a ctl for the cluster at url. Its heartbeats (which only
// a follower lives long enough to send) are slow enough that a loaded
// machine does not make it warn.
func newCtl(url string) ctl {
	return ctl{env: []string{"FABRIC_NATS_URL=" + url, "FABRIC_HEARTBEAT_INTERVAL=1s", "FABRIC_PEER_TIMEOUT=5s", "FABRIC_REQUEST_TIMEOUT=10s"}}
}

// ok runs ctl args and returns its standard output; it must succeed.
func (c ctl) ok(t *testing.T, args ...string) string {
	t.Helper()
	return ok(t, c.env, append([]string{"ctl"}, args...)...)
}

// fails runs ctl args, which must fail with exit status 1 and stderr
// "error: MESSAGE (CODE)" naming code.
func (c ctl) fails(t *testing.T, code string, args ...string) result {
	t.Helper()
	r := failsWith(t, c.env, 1, []string{"(" + code + ")"}, append([]string{"ctl"}, args...)...)
	if !regexp.MustCompile(`(?m)^error: .+ \(` + code + `\)$`).MatchString(r.stderr) {
		t.Fatalf("stderr is not \"error: MESSAGE (%s)\":\n%s", code, r.stderr)
	}
	return r
}

func (c ctl) instances(t *testing.T) []instanceJSON {
	t.Helper()
	var list struct {
		Instances []instanceJSON `json:"instances"`
	}
	decode(t, c.ok(t, "--json", "instance", "list"), &list)
	return list.Instances
}

func (c ctl) slaves(t *testing.T) []slaveJSON {
	t.Helper()
	var list struct {
		Slaves []slaveJSON `json:"slaves"`
	}
	decode(t, c.ok(t, "--json", "slave", "list"), &list)
	return list.Slaves
}

// waitInstance waits until the master lists the instance as want.
func (c ctl) waitInstance(t *testing.T, want instanceJSON) {
	t.Helper()
	testkit.Eventually(t, waitLong, fmt.Sprintf("instance %d listed as %+v", want.ID, want), func() error {
		list := c.instances(t)
		i := slices.IndexFunc(list, func(i instanceJSON) bool { return i.ID == want.ID })
		if i < 0 || list[i] != want {
			return fmt.Errorf("instances %+v", list)
		}
		return nil
	})
}

// follow starts ctl instance output ids in the background, and returns
// once it receives the output of instance ids[0], which must be running.
func (c ctl) follow(t *testing.T, ids ...string) *proc {
	t.Helper()
	f := start(t, c.env, append([]string{"ctl", "instance", "output"}, ids...)...)
	// Until its request to follow is answered, the follower misses output:
	// say something until it shows.
	n := 0
	testkit.Eventually(t, waitLong, "the follower receives output", func() error {
		n++
		marker := fmt.Sprintf("marker-%d", n)
		if out := c.ok(t, "instance", "command", ids[0], "/say", marker); out != "said\n" {
			t.Fatalf("/say: %q", out)
		}
		line := "instance " + ids[0] + ": [server] " + marker + "\n"
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if strings.Contains(f.stdout.String(), line) {
				return nil
			}
			select {
			case <-f.done:
				t.Fatalf("the follower exited with status %d: %s", f.code, f)
			case <-time.After(10 * time.Millisecond): // polling interval
			}
		}
		return fmt.Errorf("no %q: %s", line, f)
	})
	return f
}

// startDev starts fabric dev on a free loopback port and returns it and
// the NATS URL from its banner.
func startDev(t *testing.T) (*proc, string) {
	t.Helper()
	dev := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), "dev")
	dev.waitStdout(t, regexp.MustCompile(`(?m)^Press Ctrl-C to stop\.$`))
	url := dev.waitStdout(t, regexp.MustCompile(`(?m)^  NATS: +(nats://127\.0\.0\.1:\d+) \(embedded\)$`))[1]
	if !strings.Contains(dev.stdout.String(), "  "+fabricBin+" ctl -s "+url+" status\n") {
		t.Errorf("the banner does not show how to reach a dev cluster on a random port with this binary:\n%s", dev.stdout.String())
	}
	return dev, url
}

var (
	slaveHeader    = []string{"ID", "NAME", "CONNECTED", "INSTANCES"}
	instanceHeader = []string{"ID", "NAME", "SLAVE", "STATUS"}
	outputLine     = regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} \[(info|warn|error)\] instance \d+: .*$`)
)

// TestDev runs the README's tour against fabric dev, then stops it with
// SIGTERM.
func TestDev(t *testing.T) {
	t.Parallel()
	dev, url := startDev(t)
	c := newCtl(url)

	t.Run("ping", func(t *testing.T) {
		if out := c.ok(t, "ping"); !regexp.MustCompile(`^pong from the master in \S+\n$`).MatchString(out) {
			t.Errorf("ping: %q", out)
		}
		var rtt struct {
			RTT *float64 `json:"rtt_ms"`
		}
		decode(t, c.ok(t, "--json", "ping"), &rtt)
		if rtt.RTT == nil || *rtt.RTT <= 0 {
			t.Errorf("--json ping: rtt_ms = %v", rtt.RTT)
		}
	})

	t.Run("slave list", func(t *testing.T) {
		parseTable(t, c.ok(t, "slave", "list")).want(t, slaveHeader,
			[]string{"1", "slave-1", "true", "2"},
			[]string{"2", "slave-2", "true", "2"})
		want := []slaveJSON{{1, "slave-1", true, 2}, {2, "slave-2", true, 2}}
		if got := c.slaves(t); !slices.Equal(got, want) {
			t.Errorf("--json slave list = %+v, want %+v", got, want)
		}
		// --json after the command works too.
		var list struct {
			Slaves []slaveJSON `json:"slaves"`
		}
		decode(t, c.ok(t, "slave", "list", "--json"), &list)
		if !slices.Equal(list.Slaves, want) {
			t.Errorf("slave list --json = %+v, want %+v", list.Slaves, want)
		}
	})

	t.Run("instance list", func(t *testing.T) {
		parseTable(t, c.ok(t, "instance", "list")).want(t, instanceHeader,
			[]string{"101", "alpha", "1", "stopped"},
			[]string{"102", "beta", "1", "stopped"},
			[]string{"201", "gamma", "2", "stopped"},
			[]string{"202", "delta", "2", "stopped"})
		want := []instanceJSON{
			{101, "alpha", 1, "stopped"}, {102, "beta", 1, "stopped"},
			{201, "gamma", 2, "stopped"}, {202, "delta", 2, "stopped"},
		}
		if got := c.instances(t); !slices.Equal(got, want) {
			t.Errorf("--json instance list = %+v, want %+v", got, want)
		}
	})

	t.Run("start and command", func(t *testing.T) {
		if out := c.ok(t, "instance", "start", "101"); out != "started instance 101\n" {
			t.Errorf("start: %q", out)
		}
		c.waitInstance(t, instanceJSON{101, "alpha", 1, "running"})
		if out := c.ok(t, "instance", "command", "101", "/join", "alice"); out != "alice joined\n" {
			t.Errorf("/join alice: %q", out)
		}
		if out := c.ok(t, "instance", "command", "101", "/players"); out != "1 online: alice\n" {
			t.Errorf("/players: %q", out)
		}
		var res struct {
			Output string `json:"output"`
		}
		decode(t, c.ok(t, "--json", "instance", "command", "101", "/players"), &res)
		if res.Output != "1 online: alice" {
			t.Errorf("--json /players: %+v", res)
		}
	})

	t.Run("failed requests", func(t *testing.T) {
		r := c.fails(t, "instance_not_running", "instance", "command", "102", "/players")
		if r.stderr != "error: instance 102 (beta) is not running (instance_not_running)\n" {
			t.Errorf("stderr: %q", r.stderr)
		}
		c.fails(t, "instance_not_found", "instance", "command", "999", "/x")
		c.fails(t, "instance_not_found", "instance", "start", "999")
		c.fails(t, "instance_not_found", "instance", "assign", "999", "1")
		// An instance's own error code crosses every hop.
		c.fails(t, "invalid_player", "instance", "command", "101", "/join")
	})

	t.Run("create assign start", func(t *testing.T) {
		out := c.ok(t, "instance", "create", "omega")
		m := regexp.MustCompile(`^created instance (\d+) \(omega\)\n$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("create: %q", out)
		}
		id := m[1]
		var created struct {
			ID int64 `json:"instance_id"`
		}
		decode(t, c.ok(t, "--json", "instance", "create", "zeta"), &created)
		if fmt.Sprint(created.ID) == id || created.ID < 1 {
			t.Errorf("--json create zeta: id %d (omega is %s)", created.ID, id)
		}
		c.fails(t, "instance_not_assigned", "instance", "start", id)
		if out := c.ok(t, "instance", "assign", id, "1"); out != "assigned instance "+id+" to slave 1\n" {
			t.Errorf("assign: %q", out)
		}
		if out := c.ok(t, "instance", "start", id); out != "started instance "+id+"\n" {
			t.Errorf("start: %q", out)
		}
		var n int64
		fmt.Sscan(id, &n)
		c.waitInstance(t, instanceJSON{n, "omega", 1, "running"})
		c.waitInstance(t, instanceJSON{created.ID, "zeta", 0, "unassigned"})
		tb := parseTable(t, c.ok(t, "instance", "list"))
		if !slices.ContainsFunc(tb.rows, func(r []string) bool { return slices.Equal(r, []string{id, "omega", "1", "running"}) }) ||
			!slices.ContainsFunc(tb.rows, func(r []string) bool {
				return slices.Equal(r, []string{fmt.Sprint(created.ID), "zeta", "-", "unassigned"})
			}) {
			t.Errorf("instance list: %q", tb.rows)
		}
		if out := c.ok(t, "instance", "command", id, "/players"); out != "no players online\n" {
			t.Errorf("/players on %s: %q", id, out)
		}
	})

	t.Run("ban while following", func(t *testing.T) {
		f := c.follow(t, "101", "201")
		if out := c.ok(t, "player", "ban", "alice", "--reason", "spam"); out != "banned alice on every instance\n" {
			t.Errorf("ban: %q", out)
		}
		// The instance prints the ban once it holds it.
		testkit.Eventually(t, waitLong, "the follower shows the ban", func() error {
			if !strings.Contains(f.stdout.String(), "[warn] instance 101: alice is banned: spam\n") ||
				!strings.Contains(f.stdout.String(), "[info] instance 101: alice left the game\n") {
				return fmt.Errorf("not yet: %s", f)
			}
			return nil
		})
		if out := c.ok(t, "instance", "command", "101", "/players"); out != "no players online\n" {
			t.Errorf("/players after the ban: %q", out)
		}
		if out := c.ok(t, "instance", "command", "101", "/join", "alice"); out != "alice is banned: spam\n" {
			t.Errorf("/join alice after the ban: %q", out)
		}
		if out := c.ok(t, "instance", "command", "101", "/join", "carol"); out != "carol joined\n" {
			t.Errorf("/join carol: %q", out)
		}
		testkit.Eventually(t, waitLong, "the follower shows carol joining", func() error {
			out := f.stdout.String()
			if !strings.Contains(out, "[info] instance 101: > /join carol\n") || !strings.Contains(out, "[info] instance 101: carol joined the game\n") {
				return fmt.Errorf("not yet: %s", f)
			}
			return nil
		})
		for _, line := range strings.Split(strings.TrimSuffix(f.stdout.String(), "\n"), "\n") {
			if !outputLine.MatchString(line) {
				t.Errorf("output line %q is not TIME [LEVEL] instance ID: MESSAGE", line)
			}
		}
		if code := f.stop(t, syscall.SIGINT); code != 0 {
			t.Errorf("the follower exited with status %d after SIGINT, want 0: %s", code, f)
		}
		if out := c.ok(t, "--json", "player", "unban", "alice"); out != "{}\n" {
			t.Errorf("--json unban: %q", out)
		}
		testkit.Eventually(t, waitLong, "alice may join again", func() error {
			if out := c.ok(t, "instance", "command", "101", "/join", "alice"); out != "alice joined\n" {
				return fmt.Errorf("/join alice: %q", out)
			}
			return nil
		})
	})

	t.Run("follow json", func(t *testing.T) {
		f := start(t, c.env, "ctl", "--json", "instance", "output", "101")
		testkit.Eventually(t, waitLong, "the JSON follower receives output", func() error {
			c.ok(t, "instance", "command", "101", "/say", "hello json")
			if !strings.Contains(f.stdout.String(), `"message":"[server] hello json"`) {
				return fmt.Errorf("not yet: %s", f)
			}
			return nil
		})
		if code := f.stop(t, syscall.SIGINT); code != 0 {
			t.Fatalf("exit status %d after SIGINT: %s", code, f)
		}
		dec := json.NewDecoder(strings.NewReader(f.stdout.String()))
		dec.DisallowUnknownFields()
		for dec.More() {
			var l struct {
				InstanceID int64  `json:"instance_id"`
				Time       int64  `json:"time"`
				Level      string `json:"level"`
				Message    string `json:"message"`
			}
			if err := dec.Decode(&l); err != nil {
				t.Fatalf("decode output line: %v\n%s", err, f.stdout.String())
			}
			if l.InstanceID != 101 || l.Time <= 0 || l.Level == "" || l.Message == "" {
				t.Errorf("output line %+v", l)
			}
		}
	})

	t.Run("stop", func(t *testing.T) {
		if out := c.ok(t, "instance", "stop", "101"); out != "stopped instance 101\n" {
			t.Errorf("stop: %q", out)
		}
		c.waitInstance(t, instanceJSON{101, "alpha", 1, "stopped"})
		c.fails(t, "instance_not_running", "instance", "command", "101", "/players")
		if out := c.ok(t, "player", "unban", "alice"); out != "unbanned alice on every instance\n" {
			t.Errorf("unban: %q", out)
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		// A follower of a running instance outlives the master: it waits
		// for the next one (see TestFollowerOutlivesMasterRestart), until
		// Ctrl-C.
		list := c.instances(t)
		i := slices.IndexFunc(list, func(i instanceJSON) bool { return i.Name == "omega" })
		if i < 0 {
			t.Fatalf("no omega in %+v", list)
		}
		f := c.follow(t, fmt.Sprint(list[i].ID))

		if code := dev.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("fabric dev exited with status %d after SIGTERM, want 0: %s", code, dev)
		}
		for _, want := range []string{`msg="shutting down"`, `msg="slave stopped" endpoint=slave/1`, `msg="slave stopped" endpoint=slave/2`, `msg="master stopped"`} {
			if !strings.Contains(dev.stderr.String(), want) {
				t.Errorf("fabric dev's log does not say %s: %s", want, dev)
			}
		}
		select {
		case <-f.done:
			t.Errorf("the follower exited when the master stopped: %s", f)
		default:
		}
		if code := f.stop(t, syscall.SIGINT); code != 0 {
			t.Errorf("the follower exited with status %d after SIGINT, want 0: %s", code, f)
		}
	})
}

// masterRunning is what an active `fabric master` prints, with its NATS URL.
var masterRunning = regexp.MustCompile(`(?m)^master running, active \(term \d+\); NATS at (nats://127\.0\.0\.1:\d+)$`)

// TestMasterAndSlave runs the master and a slave as separate processes
// on the master's embedded NATS server.
func TestMasterAndSlave(t *testing.T) {
	t.Parallel()
	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), "master")
	url := master.waitStdout(t, masterRunning)[1]
	c := newCtl(url)
	slave := start(t, append(slices.Clone(c.env), "FABRIC_SLAVE_ID=7", "FABRIC_SLAVE_INSTANCES=701:north"), "slave")
	slave.waitStdout(t, regexp.MustCompile(`(?m)^slave 7 running; instances: 701 north$`))

	testkit.Eventually(t, waitLong, "slave 7 connected", func() error {
		if got, want := c.slaves(t), []slaveJSON{{7, "slave-7", true, 1}}; !slices.Equal(got, want) {
			return fmt.Errorf("slaves %+v, want %+v", got, want)
		}
		return nil
	})
	parseTable(t, c.ok(t, "slave", "list")).want(t, slaveHeader, []string{"7", "slave-7", "true", "1"})
	parseTable(t, c.ok(t, "instance", "list")).want(t, instanceHeader, []string{"701", "north", "7", "stopped"})
	c.ok(t, "instance", "start", "701")
	if out := c.ok(t, "instance", "command", "701", "/join", "bob"); out != "bob joined\n" {
		t.Errorf("/join bob: %q", out)
	}

	if code := slave.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the slave exited with status %d after SIGTERM, want 0: %s", code, slave)
	}
	if !strings.Contains(slave.stderr.String(), `msg="slave stopped"`) {
		t.Errorf("the slave's log does not say it stopped: %s", slave)
	}
	testkit.Eventually(t, waitLong, "slave 7 disconnected", func() error {
		if got, want := c.slaves(t), []slaveJSON{{7, "slave-7", false, 1}}; !slices.Equal(got, want) {
			return fmt.Errorf("slaves %+v, want %+v", got, want)
		}
		return nil
	})
	parseTable(t, c.ok(t, "instance", "list")).want(t, instanceHeader, []string{"701", "north", "7", "unknown"})

	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the master exited with status %d after SIGTERM, want 0: %s", code, master)
	}
	if !strings.Contains(master.stderr.String(), `msg="master stopped"`) {
		t.Errorf("the master's log does not say it stopped: %s", master)
	}
}

// TestSlaveOutlivesMaster stops a slave whose master has gone away while
// it tries to register again: it stops promptly rather than wait out the
// attempt, which lasts the peer timeout.
func TestSlaveOutlivesMaster(t *testing.T) {
	t.Parallel()
	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), "master")
	url := master.waitStdout(t, masterRunning)[1]
	c := newCtl(url)
	slave := start(t, []string{"FABRIC_NATS_URL=" + url, "FABRIC_SLAVE_ID=3", "FABRIC_METRICS_ADDR=127.0.0.1:0",
		"FABRIC_HEARTBEAT_INTERVAL=250ms", "FABRIC_PEER_TIMEOUT=30s"}, "slave")
	slave.waitStdout(t, regexp.MustCompile(`(?m)^slave 3 running`))
	metrics := slave.waitStderrMatch(t, regexp.MustCompile(`msg="serving metrics" .*url=(http://127\.0\.0\.1:\d+/metrics)`))[1]
	testkit.Eventually(t, waitLong, "slave 3 connected", func() error {
		if got, want := c.slaves(t), []slaveJSON{{3, "slave-3", true, 0}}; !slices.Equal(got, want) {
			return fmt.Errorf("slaves %+v, want %+v", got, want)
		}
		return nil
	})
	readyz := strings.TrimSuffix(metrics, "/metrics") + "/readyz"
	if code, body := get(t, readyz); code != http.StatusOK || body != "ready\n" {
		t.Errorf("the slave's /readyz while registered: %d %q", code, body)
	}
	if _, body := get(t, metrics); !strings.Contains(body, "\nlinkfabric_instances 0\n") || strings.Contains(body, "linkfabric_cluster_instances") {
		t.Errorf("the slave's metrics do not name its own instances apart from the cluster's:\n%s", body)
	}
	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the master exited with status %d after SIGTERM, want 0: %s", code, master)
	}
	testkit.Eventually(t, waitLong, "the slave's /readyz says it is not ready", func() error {
		if code, body := get(t, readyz); code != http.StatusServiceUnavailable || body != "not ready: not registered with the master\n" {
			return fmt.Errorf("/readyz: %d %q", code, body)
		}
		return nil
	})
	// The slave's second register_slave waits for an answer for
	// FABRIC_PEER_TIMEOUT (30s); the stop must not wait for it.
	testkit.Eventually(t, waitLong, "the slave registers again", func() error {
		n, err := sentRegistrations(metrics)
		if err == nil && n < 2 {
			err = fmt.Errorf("%v register_slave sent", n)
		}
		return err
	})
	if code := slave.stopWithin(t, syscall.SIGTERM, 5*time.Second); code != 0 {
		t.Errorf("the slave exited with status %d after SIGTERM, want 0: %s", code, slave)
	}
	if !strings.Contains(slave.stderr.String(), `msg="slave stopped"`) {
		t.Errorf("the slave's log does not say it stopped: %s", slave)
	}
}

// sentRegistrations returns how many register_slave requests the slave
// whose metrics are at url has sent.
func sentRegistrations(url string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "linkfabric_messages_total{") && strings.Contains(line, `direction="sent"`) &&
			strings.Contains(line, `link="slave-master"`) && strings.Contains(line, `type="register_slave"`) {
			var n float64
			_, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &n)
			return n, err
		}
	}
	return 0, nil
}

// TestCtlNoBroker runs ctl against a NATS URL where nothing listens.
func TestCtlNoBroker(t *testing.T) {
	t.Parallel()
	url := deadURL(t)
	env := []string{"FABRIC_NATS_URL=" + url, "FABRIC_REQUEST_TIMEOUT=1s", "FABRIC_HEARTBEAT_INTERVAL=250ms", "FABRIC_PEER_TIMEOUT=1s"}
	r := failsWith(t, env, 1, []string{"error: "}, "ctl", "ping")
	// ctl waits 5s for NATS, then for its request (FABRIC_REQUEST_TIMEOUT).
	if r.took > 15*time.Second {
		t.Errorf("took %s to give up", r.took)
	}
	t.Logf("against %s: %s", url, r)
}

// TestBadUsage: bad command lines exit 2, say what is wrong on stderr and
// print nothing on stdout. None of them reaches for NATS.
func TestBadUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no command", nil, []string{"Usage:\n  fabric [flags]\n  fabric [command]", "fabric: a command is required\n"}},
		{"unknown command", []string{"launch"}, []string{`fabric: unknown command "launch" (see fabric --help)`}},
		{"unknown ctl command", []string{"ctl", "reboot"}, []string{`fabric: ctl: unknown command "reboot" (see fabric ctl --help)`}},
		{"misspelt ctl command", []string{"ctl", "statsu"}, []string{`fabric: ctl: unknown command "statsu" (see fabric ctl --help); did you mean status?`}},
		{"ctl alone", []string{"ctl"}, []string{"fabric: ctl: a command is required (see fabric ctl --help)"}},
		{"unknown ctl subcommand", []string{"ctl", "instance", "frobnicate", "101"}, []string{`fabric: ctl instance: unknown command "frobnicate" (see fabric ctl instance --help)`}},
		{"missing argument", []string{"ctl", "instance", "start"}, []string{"fabric: ctl instance start: want arguments ID (see fabric ctl instance start --help)"}},
		{"missing arguments", []string{"ctl", "instance", "assign", "101"}, []string{"ctl instance assign: want arguments ID SLAVE"}},
		{"missing command text", []string{"ctl", "instance", "command", "101"}, []string{"ctl instance command: want arguments ID TEXT..."}},
		{"nothing to follow", []string{"ctl", "instance", "output"}, []string{"ctl instance output: want arguments ID..."}},
		{"extra argument", []string{"ctl", "instance", "start", "101", "102"}, []string{"ctl instance start: want arguments ID"}},
		{"argument to ping", []string{"ctl", "ping", "now"}, []string{"fabric: ctl ping takes no arguments\n"}},
		{"argument to status", []string{"ctl", "status", "now"}, []string{"fabric: ctl status takes no arguments\n"}},
		{"argument to slave list", []string{"ctl", "slave", "list", "all"}, []string{"fabric: ctl slave list takes no arguments\n"}},
		{"argument to dev", []string{"dev", "now"}, []string{"fabric: dev takes no arguments"}},
		{"argument to master", []string{"master", "now"}, []string{"fabric: master takes no arguments"}},
		{"argument to slave", []string{"slave", "now"}, []string{"fabric: slave takes no arguments"}},
		{"argument to messages", []string{"messages", "ping"}, []string{"fabric: messages takes no arguments"}},
		{"argument to version", []string{"version", "2"}, []string{"fabric: version takes no arguments"}},
		{"non-numeric instance id", []string{"ctl", "instance", "start", "abc"}, []string{`fabric: instance id "abc" is not a positive integer`}},
		{"zero instance id", []string{"ctl", "instance", "command", "0", "/players"}, []string{`instance id "0" is not a positive integer`}},
		{"non-numeric slave id", []string{"ctl", "instance", "assign", "101", "one"}, []string{`slave id "one" is not a positive integer`}},
		{"non-numeric id to follow", []string{"ctl", "instance", "output", "101", "x"}, []string{`instance id "x" is not a positive integer`}},
		{"unknown ctl flag", []string{"ctl", "--yaml", "ping"}, []string{"fabric: ctl: unknown flag: --yaml (see fabric ctl --help)"}},
		{"unknown command flag", []string{"ctl", "instance", "start", "101", "--force"}, []string{"fabric: ctl instance start: unknown flag: --force (see fabric ctl instance start --help)"}},
		{"reason without ban", []string{"ctl", "player", "unban", "alice", "--reason", "x"}, []string{"unknown flag: --reason"}},
		{"reason without value", []string{"ctl", "player", "ban", "alice", "--reason"}, []string{"flag needs an argument: --reason"}},
		{"server without value", []string{"ctl", "ping", "-s"}, []string{"flag needs an argument: 's' in -s"}},
		{"completion for no shell", []string{"completion", "tcsh"}, []string{`fabric: completion: unknown command "tcsh"`}},
		{"unknown messages flag", []string{"messages", "--yaml"}, []string{"fabric: messages: unknown flag: --yaml (see fabric messages --help)"}},
		{"unknown dev flag", []string{"dev", "--port", "4222"}, []string{"fabric: dev: unknown flag: --port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failsWith(t, nil, 2, tc.want, tc.args...)
		})
	}
}

// TestBadEnvironment: a bad FABRIC_* value exits 2 at start, naming the
// variable and the form it takes.
func TestBadEnvironment(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"request timeout", []string{"FABRIC_REQUEST_TIMEOUT=abc"}, []string{"ctl", "ping"},
			[]string{`FABRIC_REQUEST_TIMEOUT="abc": want a duration such as 500ms, 10s or 1m30s`}},
		{"request timeout of the master", []string{"FABRIC_REQUEST_TIMEOUT=abc"}, []string{"master"},
			[]string{`FABRIC_REQUEST_TIMEOUT="abc"`}},
		{"log level", []string{"FABRIC_LOG_LEVEL=loud"}, []string{"ctl", "ping"},
			[]string{`FABRIC_LOG_LEVEL="loud": want debug, info, warn or error`}},
		{"log level of dev", []string{"FABRIC_LOG_LEVEL=loud"}, []string{"dev"}, []string{`FABRIC_LOG_LEVEL="loud"`}},
		{"listen on every interface, dev", []string{"FABRIC_NATS_LISTEN=0.0.0.0:4222"}, []string{"dev"},
			[]string{`FABRIC_NATS_LISTEN="0.0.0.0:4222"`, "loopback only"}},
		{"listen on every interface, master", []string{"FABRIC_NATS_LISTEN=0.0.0.0:4222"}, []string{"master"},
			[]string{`FABRIC_NATS_LISTEN="0.0.0.0:4222"`, "loopback only"}},
		{"negative slave id", []string{"FABRIC_SLAVE_ID=-1", "FABRIC_NATS_URL=nats://127.0.0.1:1"}, []string{"slave"},
			[]string{"FABRIC_SLAVE_ID=-1: want a positive integer"}},
		{"non-numeric slave id", []string{"FABRIC_SLAVE_ID=seven", "FABRIC_NATS_URL=nats://127.0.0.1:1"}, []string{"slave"},
			[]string{`FABRIC_SLAVE_ID="seven": want an integer`}},
		{"bad slave instances", []string{"FABRIC_SLAVE_INSTANCES=north", "FABRIC_NATS_URL=nats://127.0.0.1:1"}, []string{"slave"},
			[]string{`FABRIC_SLAVE_INSTANCES="north"`}},
		{"not a URL, ctl", []string{"FABRIC_NATS_URL=not-a-url"}, []string{"ctl", "ping"},
			[]string{`FABRIC_NATS_URL="not-a-url": want comma-separated URLs such as nats://127.0.0.1:4222`}},
		{"not a URL, slave", []string{"FABRIC_NATS_URL=not-a-url"}, []string{"slave"}, []string{`FABRIC_NATS_URL="not-a-url"`}},
		{"peer timeout under two heartbeats", []string{"FABRIC_HEARTBEAT_INTERVAL=1s", "FABRIC_PEER_TIMEOUT=1s"}, []string{"ctl", "ping"},
			[]string{"FABRIC_PEER_TIMEOUT=1s: want at least twice FABRIC_HEARTBEAT_INTERVAL"}},
		{"bad control user", []string{"FABRIC_CONTROL_USER=no one"}, []string{"ctl", "ping"}, []string{`FABRIC_CONTROL_USER="no one"`}},
		{"bad permissions", []string{"FABRIC_CONTROL_PERMISSIONS=admin"}, []string{"master"}, []string{`FABRIC_CONTROL_PERMISSIONS="admin"`}},
		{"every unparsable value at once", []string{"FABRIC_REQUEST_TIMEOUT=abc", "FABRIC_PEER_TIMEOUT=soon"}, []string{"ctl", "ping"},
			[]string{`FABRIC_REQUEST_TIMEOUT="abc"`, `FABRIC_PEER_TIMEOUT="soon"`}},
		{"every invalid value at once", []string{"FABRIC_LOG_LEVEL=loud", "FABRIC_NATS_URL=not-a-url"}, []string{"ctl", "ping"},
			[]string{`FABRIC_LOG_LEVEL="loud"`, `FABRIC_NATS_URL="not-a-url"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failsWith(t, tc.env, 2, tc.want, tc.args...)
		})
	}
}

// TestHelp: --help prints the usage on stdout and exits 0, without
// reaching for NATS.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:\n  fabric [flags]\n  fabric [command]", "  ctl ", "  dev ", "  context ", "  completion ", "flag > environment", "-v, --version"}},
		{[]string{"help"}, []string{"Usage:\n  fabric [flags]"}},
		{[]string{"-h"}, []string{"Usage:\n  fabric [flags]"}},
		{[]string{"dev", "--help"}, []string{"Usage:\n  fabric dev [flags]\n"}},
		{[]string{"master", "--help"}, []string{"Usage:\n  fabric master [flags]\n"}},
		{[]string{"slave", "-h"}, []string{"Usage:\n  fabric slave [flags]\n"}},
		{[]string{"ctl", "--help"}, []string{"Usage:\n  fabric ctl [flags]\n  fabric ctl [command]", "  status ", "  instance ", "Exit status:", "--json", "-s, --server string", "--context string", "strongest first"}},
		{[]string{"help", "ctl"}, []string{"Usage:\n  fabric ctl [flags]\n  fabric ctl [command]", "  status "}},
		{[]string{"help", "ctl", "instance", "command"}, []string{"Usage:\n  fabric ctl instance command ID TEXT... [flags]"}},
		{[]string{"ctl", "instance", "--help"}, []string{"Usage:\n  fabric ctl instance [flags]\n  fabric ctl instance [command]", "  command ", "  output "}},
		{[]string{"ctl", "instance", "command", "--help"}, []string{"Usage:\n  fabric ctl instance command ID TEXT... [flags]\n", "Everything after\nthe instance id is the command"}},
		{[]string{"ctl", "instance", "start", "101", "--help"}, []string{"Usage:\n  fabric ctl instance start ID [flags]\n"}},
		{[]string{"ctl", "--json", "instance", "start", "--help"}, []string{"Usage:\n  fabric ctl instance start ID [flags]\n"}},
		{[]string{"ctl", "player", "ban", "--help"}, []string{"Usage:\n  fabric ctl player ban NAME [flags]", "--reason string"}},
		{[]string{"context", "--help"}, []string{"  add ", "  ls ", "  select ", "  rm ", "  show ", "strongest first"}},
		{[]string{"messages", "--help"}, []string{"Usage:\n  fabric messages [flags]", "--json"}},
		{[]string{"version", "--help"}, []string{"Usage:\n  fabric version [flags]\n"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			// Nothing listens here: help must not try to connect.
			out := ok(t, []string{"FABRIC_NATS_URL=nats://127.0.0.1:1"}, tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout does not say %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestVersion: fabric version, --version and -v name the version and the
// commit the binary was built from, as the Go toolchain stamped it (in a
// git checkout), or "unknown" where it stamped none (go run).
func TestVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "version", "-m", fabricBin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	commit := "unknown"
	if m := regexp.MustCompile(`(?m)^\s*build\s+vcs\.revision=([0-9a-f]+)$`).FindStringSubmatch(string(out)); m != nil {
		commit = m[1]
		if strings.Contains(string(out), "vcs.modified=true") {
			commit += "+modified"
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		got := ok(t, nil, args...)
		if !regexp.MustCompile(`^fabric \d+\.\d+\.\d+\S* \(commit ` + regexp.QuoteMeta(commit) + `\)\n$`).MatchString(got) {
			t.Errorf("fabric %s: %q, want the version and commit %s", args[0], got, commit)
		}
	}
	t.Logf("commit %s", commit)
}

// TestMessages lists the catalog as a table and as JSON, and checks that
// both list the same messages and that the JSON carries the schemas.
func TestMessages(t *testing.T) {
	t.Parallel()
	tb := parseTable(t, ok(t, nil, "messages"))
	if want := []string{"NAME", "KIND", "LINKS", "ROUTING", "PERMISSION"}; !slices.Equal(tb.header, want) {
		t.Errorf("header %q, want %q", tb.header, want)
	}
	for _, want := range [][]string{
		{"send_command", "request", "control-master,master-slave,slave-instance", "forward instance", "core.instance.send_command"},
		{"banlist_update", "event", "master-slave,slave-instance", "broadcast instance", "-"},
		{"instance_output", "event", "instance-slave,slave-master,master-control", "forward master", "-"},
	} {
		if !slices.ContainsFunc(tb.rows, func(r []string) bool { return slices.Equal(r, want) }) {
			t.Errorf("no row %q in\n%q", want, tb.rows)
		}
	}

	var entries []struct {
		Name           string          `json:"name"`
		Kind           string          `json:"kind"`
		Description    string          `json:"description"`
		Links          []string        `json:"links"`
		ForwardTo      string          `json:"forward_to"`
		BroadcastTo    string          `json:"broadcast_to"`
		Permission     string          `json:"permission"`
		Schema         json.RawMessage `json:"schema"`
		ResponseSchema json.RawMessage `json:"response_schema"`
	}
	decode(t, ok(t, nil, "messages", "--json"), &entries)
	var names []string
	for _, r := range tb.rows {
		names = append(names, r[0])
	}
	var jsonNames []string
	for _, e := range entries {
		jsonNames = append(jsonNames, e.Name)
		var schema map[string]any
		if err := json.Unmarshal(e.Schema, &schema); err != nil || schema["type"] != "object" {
			t.Errorf("%s: schema is not a JSON object of type object: %s", e.Name, e.Schema)
		}
		if len(e.Links) == 0 || e.Description == "" {
			t.Errorf("%s: links %q, description %q", e.Name, e.Links, e.Description)
		}
		switch e.Kind {
		case "request":
			var resp map[string]any
			if err := json.Unmarshal(e.ResponseSchema, &resp); err != nil || resp["type"] != "object" {
				t.Errorf("request %s: response_schema is not a JSON object of type object: %s", e.Name, e.ResponseSchema)
			}
		case "event":
			if e.ResponseSchema != nil {
				t.Errorf("event %s has a response_schema", e.Name)
			}
		default:
			t.Errorf("%s: kind %q", e.Name, e.Kind)
		}
		if e.Name == "start_instance" {
			if e.Kind != "request" || e.ForwardTo != "instance" || e.Permission != "core.instance.start" || !slices.Contains(e.Links, "control-master") {
				t.Errorf("start_instance: %+v", e)
			}
			var schema struct {
				Required []string `json:"required"`
			}
			if err := json.Unmarshal(e.Schema, &schema); err != nil || !slices.Equal(schema.Required, []string{"instance_id"}) {
				t.Errorf("start_instance schema: %s", e.Schema)
			}
		}
		if e.Name == "banlist_update" && (e.BroadcastTo != "instance" || e.Kind != "event") {
			t.Errorf("banlist_update: %+v", e)
		}
	}
	if !slices.Equal(names, jsonNames) {
		t.Errorf("the table lists %q, the JSON %q", names, jsonNames)
	}
	if !slices.Contains(jsonNames, "start_instance") || !slices.Contains(jsonNames, "banlist_update") {
		t.Errorf("messages --json lacks core messages: %q", jsonNames)
	}
}

// TestBenchQuick runs the benchmark as CI does: every scenario reports a
// baseline and a fabric figure, ratios are what they say, and the counts
// that do not depend on the machine's speed hold. Times are reported,
// never asserted.
func TestBenchQuick(t *testing.T) {
	r := run(t, nil, "bench", "--quick", "--json")
	if r.code != 0 {
		t.Fatalf("fabric bench --quick --json: %s", r)
	}
	var out struct {
		Machine struct {
			CPUs int    `json:"cpus"`
			Go   string `json:"go"`
			OS   string `json:"os"`
			Arch string `json:"arch"`
		} `json:"machine"`
		Results []struct {
			Scenario string  `json:"scenario"`
			Metric   string  `json:"metric"`
			Unit     string  `json:"unit"`
			Baseline float64 `json:"baseline"`
			Fabric   float64 `json:"fabric"`
			Ratio    float64 `json:"ratio"`
			Target   string  `json:"target"`
			Met      *bool   `json:"met"`
			Note     string  `json:"note"`
		} `json:"results"`
	}
	decode(t, r.stdout, &out)
	if out.Machine.CPUs < 1 || out.Machine.Go == "" {
		t.Errorf("machine %+v", out.Machine)
	}
	scenarios := []string{"request/reply, sequential", "request/reply, 64 in flight", "events, one link", "forwarded request", "broadcast to", "virtual link request", "virtual link event", "memory, "}
	seen := map[string]bool{}
	for _, res := range out.Results {
		name := res.Scenario + ", " + res.Metric
		t.Logf("%s: baseline %g, fabric %g %s, ratio %.2f", name, res.Baseline, res.Fabric, res.Unit, res.Ratio)
		// Only resends may be none.
		if res.Fabric < 0 || res.Fabric == 0 && !strings.Contains(res.Metric, "sent again") || res.Unit == "" {
			t.Errorf("%s: fabric figure %g %q", name, res.Fabric, res.Unit)
		}
		if res.Baseline > 0 && math.Abs(res.Ratio-res.Fabric/res.Baseline) > 0.01*res.Ratio {
			t.Errorf("%s: ratio %g, but %g / %g", name, res.Ratio, res.Fabric, res.Baseline)
		}
		if res.Target != "" && res.Met == nil {
			t.Errorf("%s: target %q without a verdict", name, res.Target)
		}
		for _, s := range scenarios {
			if strings.HasPrefix(res.Scenario, s) {
				seen[s] = true
				if s != "memory, " && !strings.Contains(res.Metric, "messages") && res.Baseline <= 0 {
					t.Errorf("%s: no baseline", name)
				}
			}
		}
		// A broadcast costs one NATS message per slave, however fast the
		// machine.
		if res.Metric == "NATS messages delivered per slave per broadcast" && res.Fabric != 1 {
			t.Errorf("%s: %g, want 1 (%s)", name, res.Fabric, res.Note)
		}
	}
	for _, s := range scenarios {
		if !seen[s] {
			t.Errorf("no scenario %q", s)
		}
	}
}

// deadURL returns the URL of a loopback port that is held until the test
// ends but speaks no NATS: freeing a port instead would let a parallel
// test's broker take it.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return "nats://" + ln.Addr().String()
}
