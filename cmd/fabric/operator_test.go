//go:build unix

// Tests of what an operator relies on beyond the tour: status, contexts,
// JSON failures, start-up errors, health endpoints, completion.
package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/internal/testkit"
)

// errJSON is what a failed command prints with --json.
type errJSON struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// failsJSON runs fabric, which must exit with status, print nothing on
// stderr, and print on stdout a JSON error with code; it returns the
// message.
func failsJSON(t *testing.T, env []string, status int, code string, args ...string) string {
	t.Helper()
	r := run(t, env, args...)
	if r.code != status || r.stderr != "" {
		t.Fatalf("fabric %s: want exit status %d and nothing on stderr, got %s", strings.Join(args, " "), status, r)
	}
	var e errJSON
	decode(t, r.stdout, &e)
	if e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("fabric %s: error %+v, want code %s and a message", strings.Join(args, " "), e.Error, code)
	}
	return e.Error.Message
}

// noInternals fails the test if text shows a NATS subject or a session id:
// an operator acts on neither.
func noInternals(t *testing.T, text string) {
	t.Helper()
	if regexp.MustCompile(`\blf\.[a-z_]+\.|[0-9a-f]{16}`).MatchString(text) {
		t.Errorf("the operator is shown subjects or session ids:\n%s", text)
	}
}

// statusJSON is what ctl status --json prints.
type statusJSON struct {
	Master struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Since    int64  `json:"since"`
		Term     uint64 `json:"term"`
		Starting bool   `json:"starting"`
		Version  string `json:"version"`
		Commit   string `json:"commit"`
		Started  int64  `json:"started"`
		UptimeMS int64  `json:"uptime_ms"`
	} `json:"master"`
	Standbys []struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Version string `json:"version"`
		Since   int64  `json:"since"`
	} `json:"standbys"`
	Slaves []struct {
		ID        int64  `json:"slave_id"`
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		Instances int    `json:"instances"`
		Version   string `json:"version"`
		LastSeen  int64  `json:"last_seen"`
		SilentMS  int64  `json:"silent_ms"`
	} `json:"slaves"`
	Instances []instanceJSON `json:"instances"`
	Problems  []string       `json:"problems"`
}

// TestOperator runs what an operator does besides the tour against fabric
// dev: status, failures as JSON, command text that looks like flags,
// following what does not exist, assigning to a slave that does not.
func TestOperator(t *testing.T) {
	t.Parallel()
	dev, url := startDev(t)
	c := newCtl(url)

	t.Run("banner commands work from elsewhere", func(t *testing.T) {
		var lines []string
		for _, l := range strings.Split(dev.stdout.String(), "\n") {
			if strings.HasPrefix(l, "  "+fabricBin+" ctl ") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		if len(lines) != 3 {
			t.Fatalf("the banner shows %d commands, want 3:\n%s", len(lines), dev.stdout.String())
		}
		sh := exec.Command("sh", "-c", lines[0])
		sh.Dir = t.TempDir()
		sh.Env = environ()
		if out, err := sh.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "master ") {
			t.Errorf("%s, from another directory: %v\n%s", lines[0], err, out)
		}
	})

	t.Run("status", func(t *testing.T) {
		out := c.ok(t, "status")
		for _, re := range []string{
			`(?m)^master     \d+\.\d+\.\d+\S*(, commit [0-9a-f]+\S*)?, up \S+, active in term 1$`,
			`(?m)^standbys   none$`,
			`(?m)^slaves     2 of 2 connected$`,
			`(?m)^instances  4: 4 stopped$`,
			`(?m)^problems: none$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("status does not match %s:\n%s", re, out)
			}
		}
		i := strings.Index(out, "MASTER  ")
		if i < 0 {
			t.Fatalf("status shows no table of masters:\n%s", out)
		}
		masters := parseTable(t, strings.SplitN(out[i:], "\n\n", 2)[0]+"\n")
		if want := []string{"MASTER", "NAME", "VERSION", "STATE", "TERM", "SINCE"}; !slices.Equal(masters.header, want) {
			t.Errorf("masters header %q, want %q", masters.header, want)
		}
		if len(masters.rows) != 1 || masters.rows[0][3] != "active" || masters.rows[0][4] != "1" {
			t.Errorf("masters %q, want the one active master in term 1", masters.rows)
		}
		i = strings.Index(out, "ID  ")
		if i < 0 {
			t.Fatalf("status shows no table of slaves:\n%s", out)
		}
		tb := parseTable(t, strings.SplitN(out[i:], "\n\n", 2)[0]+"\n")
		if want := []string{"ID", "NAME", "VERSION", "CONNECTED", "LAST", "SEEN", "INSTANCES"}; !slices.Equal(tb.header, want) {
			t.Errorf("header %q, want %q", tb.header, want)
		}
		for _, r := range tb.rows {
			if len(r) != 7 || r[3] != "true" || r[1] == "" || !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(r[2]) {
				t.Errorf("slave row %q", r)
			}
		}

		var st statusJSON
		decode(t, c.ok(t, "status", "--json"), &st)
		if st.Master.Version == "" || st.Master.Started <= 0 || st.Master.Term != 1 || st.Master.ID == "" || st.Master.Starting ||
			len(st.Standbys) != 0 || len(st.Slaves) != 2 || len(st.Instances) != 4 || len(st.Problems) != 0 {
			t.Errorf("status --json: %+v", st)
		}
		for _, s := range st.Slaves {
			// A live slave pings every 250ms; the master notices within a tick.
			if !s.Connected || s.Version != st.Master.Version || s.LastSeen <= 0 || s.SilentMS > 5000 {
				t.Errorf("slave %+v", s)
			}
		}
	})

	t.Run("failures as JSON", func(t *testing.T) {
		msg := failsJSON(t, c.env, 1, "instance_not_found", "ctl", "--json", "instance", "command", "999", "/players")
		if msg != "instance 999 does not exist" {
			t.Errorf("message %q", msg)
		}
		failsJSON(t, c.env, 1, "instance_not_running", "ctl", "instance", "command", "--json", "102", "/players")
		failsJSON(t, c.env, 2, "usage", "ctl", "instance", "start", "abc", "--json")
		failsJSON(t, c.env, 2, "usage", "ctl", "--json", "instance", "start")
		failsJSON(t, append(slices.Clone(c.env), "FABRIC_REQUEST_TIMEOUT=abc"), 2, "config", "ctl", "status", "--json")
	})

	t.Run("command text after the id", func(t *testing.T) {
		c.ok(t, "instance", "start", "202")
		c.waitInstance(t, instanceJSON{202, "delta", 2, "running"})
		// Everything after the id is the command, flags and all.
		if out := c.ok(t, "instance", "command", "202", "/join", "--help"); out != "--help joined\n" {
			t.Errorf("/join --help: %q", out)
		}
		if out := c.ok(t, "instance", "command", "202", "/join", "--json"); out != "--json joined\n" {
			t.Errorf("/join --json: %q", out)
		}
		if out := c.ok(t, "instance", "command", "202", "/say", "-s", "x", "--server"); out != "said\n" {
			t.Errorf("/say -s x --server: %q", out)
		}
		if out := c.ok(t, "instance", "command", "202", "/players"); out != "2 online: --help, --json\n" {
			t.Errorf("/players: %q", out)
		}
		// Flags before the id are ctl's; after a positional argument
		// elsewhere they parse too.
		var res struct {
			Output string `json:"output"`
		}
		decode(t, c.ok(t, "instance", "command", "--json", "202", "/players"), &res)
		if res.Output != "2 online: --help, --json" {
			t.Errorf("--json before the id: %+v", res)
		}
		var list struct {
			Instances []instanceJSON `json:"instances"`
		}
		decode(t, ok(t, nil, "ctl", "instance", "list", "-s", url, "--json"), &list)
		if len(list.Instances) != 4 {
			t.Errorf("instance list -s URL --json: %+v", list)
		}
		c.ok(t, "instance", "stop", "202")
	})

	t.Run("follow what does not exist", func(t *testing.T) {
		r := c.fails(t, "instance_not_found", "instance", "output", "101", "999")
		if r.stderr != "error: instance 999 does not exist (instance_not_found)\n" {
			t.Errorf("stderr %q", r.stderr)
		}
	})

	t.Run("assign to a slave that does not exist", func(t *testing.T) {
		out := c.ok(t, "instance", "create", "kappa")
		id := regexp.MustCompile(`\d+`).FindString(out)
		r := c.fails(t, "slave_not_found", "instance", "assign", id, "99")
		if r.stderr != "error: slave 99 does not exist: no slave with that id has registered with the master (slave_not_found)\n" {
			t.Errorf("stderr %q", r.stderr)
		}
		// The unassigned instance is a problem status names.
		var st statusJSON
		decode(t, c.ok(t, "--json", "status"), &st)
		if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], id+" (kappa): not assigned to a slave") {
			t.Errorf("problems %q", st.Problems)
		}
		if out := c.ok(t, "status"); !strings.Contains(out, "problems:\n  instance "+id+" (kappa): not assigned to a slave") {
			t.Errorf("status:\n%s", out)
		}
	})
}

// TestKilledPeers: a slave killed with SIGKILL; a command for its instance
// fails at once with slave_not_connected in the operator's words, status
// shows the slave as the problem once the master has noticed, and the
// master still stops with exit status 0 on SIGTERM, as it does after a
// follower was killed.
func TestKilledPeers(t *testing.T) {
	t.Parallel()
	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), "master")
	url := master.waitStdout(t, masterRunning)[1]
	c := newCtl(url)
	slave := start(t, append(slices.Clone(c.env), "FABRIC_SLAVE_ID=7", "FABRIC_SLAVE_INSTANCES=701:north,702:south"), "slave")
	slave.waitStdout(t, regexp.MustCompile(`(?m)^slave 7 running`))
	testkit.Eventually(t, waitLong, "slave 7 connected", func() error {
		if got := c.slaves(t); len(got) != 1 || !got[0].Connected {
			return fmt.Errorf("slaves %+v", got)
		}
		return nil
	})
	c.ok(t, "instance", "start", "701")
	f := c.follow(t, "701")
	if !strings.Contains(f.stderr.String(), "following the output of instance 701 (Ctrl-C to stop)\n") {
		t.Errorf("the follower does not say what it follows: %s", f)
	}

	if err := f.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	f.wait(t, waitLong)
	if err := slave.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	slave.wait(t, waitLong)

	// At once: nothing listens for the slave any more.
	r := c.fails(t, "slave_not_connected", "instance", "command", "701", "/players")
	if r.stderr != "error: slave 7, which hosts instance 701 (north), is not connected (slave_not_connected)\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	noInternals(t, r.stderr)

	testkit.Eventually(t, waitLong, "status shows slave 7 lost", func() error {
		var st statusJSON
		decode(t, c.ok(t, "--json", "status"), &st)
		if len(st.Problems) != 1 {
			return fmt.Errorf("problems %q", st.Problems)
		}
		if !regexp.MustCompile(`^slave 7 \(slave-7\) is not connected; last seen \S+ ago; the state of its instance 701, 702 is unknown$`).MatchString(st.Problems[0]) {
			t.Fatalf("problem %q", st.Problems[0])
		}
		return nil
	})
	out := c.ok(t, "status")
	for _, want := range []string{"slaves     0 of 1 connected\n", "instances  2: 2 unknown\n", "problems:\n  slave 7 (slave-7) is not connected"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}

	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the master exited with status %d after SIGTERM, want 0 whatever its peers did: %s", code, master)
	}
}

// TestContexts: contexts name clusters for ctl, and each setting comes
// from flag > environment > selected context > default.
func TestContexts(t *testing.T) {
	t.Parallel()
	_, url := startDev(t)
	// No NATS answers at dead.
	dead := deadURL(t)
	home := t.TempDir()
	env := []string{"XDG_CONFIG_HOME=" + home, "FABRIC_REQUEST_TIMEOUT=2s"}
	withEnv := func(more ...string) []string { return append(slices.Clone(env), more...) }

	if out := ok(t, env, "context", "ls"); !strings.Contains(out, "no contexts") {
		t.Errorf("ls with none: %q", out)
	}
	ok(t, env, "context", "add", "dev", "--server", url, "--user", "alice", "--description", "the test cluster")
	ok(t, env, "context", "add", "gone", "--server", dead, "--nats-user", "bob", "--nats-password", "hunter2")
	failsWith(t, env, 2, []string{"FABRIC_NATS_URL=\"not-a-url\""}, "context", "add", "bad", "--server", "not-a-url")
	failsWith(t, env, 2, []string{`there is no context "nope"`}, "context", "select", "nope")

	// Selected: ctl uses it.
	if out := ok(t, env, "context", "select", "dev"); out != "context dev selected\n" {
		t.Errorf("select: %q", out)
	}
	if out := ok(t, env, "context", "select"); out != "dev\n" {
		t.Errorf("select without a name: %q", out)
	}
	tb := parseTable(t, ok(t, env, "context", "ls"))
	tb.want(t, []string{"NAME", "SERVER", "USER", "DESCRIPTION"}, []string{"dev *", url, "alice", "the test cluster"}, []string{"gone", dead, "-", "-"})
	if out := ok(t, env, "ctl", "slave", "list"); !strings.Contains(out, "slave-1") {
		t.Errorf("slave list with the selected context: %q", out)
	}

	// The environment beats the context; a flag beats the environment.
	failsWith(t, withEnv("FABRIC_NATS_URL="+dead), 1, []string{"cannot reach NATS at " + dead}, "ctl", "ping")
	if out := ok(t, withEnv("FABRIC_NATS_URL="+dead), "ctl", "ping", "--server", url); !strings.HasPrefix(out, "pong") {
		t.Errorf("--server over the environment: %q", out)
	}
	// --context and FABRIC_CONTEXT pick another context than the selected.
	failsWith(t, env, 1, []string{"cannot reach NATS at " + dead}, "ctl", "--context", "gone", "ping")
	failsWith(t, withEnv("FABRIC_CONTEXT=gone"), 1, []string{"cannot reach NATS at " + dead}, "ctl", "ping")
	failsWith(t, env, 2, []string{`there is no context "nope"`}, "ctl", "--context", "nope", "ping")

	// Secrets are masked; the file is the user's alone.
	show := ok(t, env, "context", "show", "gone")
	if !strings.Contains(show, "FABRIC_NATS_USER=bob\n") || !strings.Contains(show, "FABRIC_NATS_PASSWORD=********\n") || strings.Contains(show, "hunter2") {
		t.Errorf("show gone:\n%s", show)
	}
	file := filepath.Join(home, "linkfabric", "contexts", "gone.json")
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, %v; want mode 0600", file, fi, err)
	}

	// Removing the selected context leaves none selected: the defaults.
	if out := ok(t, env, "context", "rm", "dev"); out != "context dev removed\n" {
		t.Errorf("rm: %q", out)
	}
	if out := ok(t, env, "context", "select"); out != "none\n" {
		t.Errorf("select after rm: %q", out)
	}
	failsWith(t, env, 2, []string{"context show: no context is selected"}, "context", "show")
}

// TestTakenPorts: an address another process holds stops the endpoint at
// once with exit status 2, saying so.
func TestTakenPorts(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() }) // after the parallel subtests
	taken := ln.Addr().String()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"master's NATS", []string{"FABRIC_NATS_LISTEN=" + taken}, []string{"master"}, `FABRIC_NATS_LISTEN="` + taken + `": address already in use`},
		{"dev's NATS", []string{"FABRIC_NATS_LISTEN=" + taken}, []string{"dev"}, `FABRIC_NATS_LISTEN="` + taken + `": address already in use`},
		{"master's metrics", []string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_METRICS_ADDR=" + taken}, []string{"master"}, `FABRIC_METRICS_ADDR="` + taken + `": address already in use`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := failsWith(t, tc.env, 2, []string{tc.want}, tc.args...)
			// Well under the 10s the embedded server would wait for.
			if r.took > 5*time.Second {
				t.Errorf("took %s to fail", r.took)
			}
		})
	}
}

// get fetches url and returns the status code and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestHealthAndBoundedNames: the master serves /healthz and /readyz beside
// /metrics; a client that sends 500 made-up message names adds one series
// (type "unknown"), not 500, and a few warnings, not 500.
func TestHealthAndBoundedNames(t *testing.T) {
	t.Parallel()
	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_METRICS_ADDR=127.0.0.1:0"}, fastTimings...), "master")
	url := master.waitStdout(t, masterRunning)[1]
	base := strings.TrimSuffix(master.waitStderrMatch(t, regexp.MustCompile(`msg="serving metrics" .*url=(http://127\.0\.0\.1:\d+)/metrics`))[1], "/")
	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}

	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const n = 500
	for i := range n {
		msg, err := nc.Request(fmt.Sprintf("lf.control.mallory.master.0.made_up_%d", i), []byte("{}"), waitLong)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if msg.Header.Get("Lf-Error") != "invalid_message" {
			t.Fatalf("request %d: answered %q %q", i, msg.Header.Get("Lf-Error"), msg.Data)
		}
	}
	_, metrics := get(t, base+"/metrics")
	// What the master knows of the whole cluster has names of its own; a
	// slave's linkfabric_instances are its own.
	for _, want := range []string{"\nlinkfabric_cluster_instances 0\n", "\nlinkfabric_cluster_instances_running 0\n", "\nlinkfabric_slaves_connected 0\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("the master's metrics lack %q", want)
		}
	}
	if strings.Contains(metrics, "\nlinkfabric_instances ") {
		t.Errorf("the master reports linkfabric_instances, a slave's name")
	}
	var unknown, madeUp int
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "linkfabric_") && strings.Contains(line, `type="unknown"`) {
			unknown++
		}
		if strings.Contains(line, "made_up_") {
			madeUp++
		}
	}
	if madeUp != 0 || unknown == 0 || unknown > 4 {
		t.Errorf("%d series name a made-up type, %d say unknown; want none and a few", madeUp, unknown)
	}
	if warns := strings.Count(master.stderr.String(), "level=WARN"); warns > 20 {
		t.Errorf("%d warnings for %d bad requests, want a few", warns, n)
	}
	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the master exited with status %d: %s", code, master)
	}
	t.Logf("master's log:\n%s", master.stderr.String())
}

// TestCompletion: fabric completion writes a script for each shell, and
// the completion it drives knows the commands.
func TestCompletion(t *testing.T) {
	t.Parallel()
	for shell, want := range map[string]string{
		"bash": "__start_fabric",
		"zsh":  "#compdef fabric",
		"fish": "complete -c fabric",
	} {
		if out := ok(t, nil, "completion", shell); !strings.Contains(out, want) {
			t.Errorf("completion %s does not contain %q:\n%.300s", shell, want, out)
		}
	}
	// What the scripts run to complete a word.
	if r := run(t, nil, "__complete", "ctl", "inst"); r.code != 0 || !strings.HasPrefix(r.stdout, "instance\t") {
		t.Errorf("completing fabric ctl inst: %s", r)
	}
}

// TestBadStartupSettings: settings that would break the cluster later are
// refused at start, naming the variable.
func TestBadStartupSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"unknown permission", []string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_CONTROL_PERMISSIONS=alice=core.instance.start;bob=core.instanse.*"}, []string{"master"},
			[]string{`FABRIC_CONTROL_PERMISSIONS=`, "core.instanse.* grants nothing"}},
		{"ping interval too short", []string{"FABRIC_NATS_PING_INTERVAL=100ms"}, []string{"ctl", "ping"}, []string{"FABRIC_NATS_PING_INTERVAL=100ms: want at least 500ms"}},
		{"prefix of two tokens", []string{"FABRIC_SUBJECT_PREFIX=acme.lf"}, []string{"slave"}, []string{`FABRIC_SUBJECT_PREFIX="acme.lf": want one subject token`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failsWith(t, tc.env, 2, tc.want, tc.args...)
		})
	}
}

// TestNoMaster: NATS answers but no master listens (here: one of another
// subject prefix); ctl says so in the operator's terms.
func TestNoMaster(t *testing.T) {
	t.Parallel()
	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_SUBJECT_PREFIX=other"}, fastTimings...), "master")
	url := master.waitStdout(t, masterRunning)[1]
	c := newCtl(url)
	want := "error: no master answers on the NATS servers at " + url + " (subject prefix lf): is fabric master running there? (not_connected)\n"
	for _, args := range [][]string{{"status"}, {"ping"}, {"instance", "output", "101"}} {
		if r := c.fails(t, "not_connected", args...); r.stderr != want {
			t.Errorf("ctl %s: stderr %q, want %q", strings.Join(args, " "), r.stderr, want)
		}
	}
	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the master exited with status %d: %s", code, master)
	}
}

// TestSlaveStopsAfterMasterKilled: a slave whose master was killed, with
// the NATS server it embedded, still stops with exit status 0: the master
// that cannot say goodbye is logged, not the slave's failure.
func TestSlaveStopsAfterMasterKilled(t *testing.T) {
	t.Parallel()
	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), "master")
	url := master.waitStdout(t, masterRunning)[1]
	c := newCtl(url)
	slave := start(t, append(slices.Clone(c.env), "FABRIC_SLAVE_ID=5"), "slave")
	slave.waitStdout(t, regexp.MustCompile(`(?m)^slave 5 running`))
	testkit.Eventually(t, waitLong, "slave 5 connected", func() error {
		if got := c.slaves(t); len(got) != 1 || !got[0].Connected {
			return fmt.Errorf("slaves %+v", got)
		}
		return nil
	})
	if err := master.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	master.wait(t, waitLong)
	if code := slave.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the slave exited with status %d after SIGTERM, want 0: %s", code, slave)
	}
	if !strings.Contains(slave.stderr.String(), `msg="stopped without the master's word"`) {
		t.Errorf("the slave does not log what it could not do: %s", slave)
	}
}

// TestJSONLogs: with FABRIC_LOG_FORMAT=json every line on stderr is a JSON
// object whose keys are single words, as log pipelines expect.
func TestJSONLogs(t *testing.T) {
	t.Parallel()
	dev := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_LOG_FORMAT=json"}, fastTimings...), "dev")
	url := dev.waitStdout(t, regexp.MustCompile(`(?m)^  NATS: +(nats://127\.0\.0\.1:\d+) \(embedded\)$`))[1]
	c := newCtl(url)
	c.ok(t, "instance", "start", "101")
	c.ok(t, "instance", "command", "101", "/join", "alice")
	c.fails(t, "instance_not_found", "instance", "start", "999")
	if code := dev.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("fabric dev exited with status %d: %s", code, dev)
	}
	lines := strings.Split(strings.TrimSuffix(dev.stderr.String(), "\n"), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d log lines: %s", len(lines), dev)
	}
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %v: %q", err, line)
			continue
		}
		for k := range rec {
			if strings.ContainsAny(k, " \t") {
				t.Errorf("log key %q has a space: %s", k, line)
			}
		}
	}
}
