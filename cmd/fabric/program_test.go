//go:build linux

package main_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/linkfabric/linkfabric/internal/testkit"
)

// loopScript is the program of TestProgramInstances: a shell loop that
// answers each line it reads.
const loopScript = `while read -r l; do
  case "$l" in
    exit\ *) exit "${l#exit }" ;;
    oops\ *) echo "${l#oops }" >&2 ;;
    env) echo "nats=${FABRIC_NATS_URL:-none}" ;;
    pwd) pwd ;;
    child) sleep 1000 & echo "child $!" ;;
    *) echo "you said: $l" ;;
  esac
done`

// A new user runs a shell loop as an instance on a slave, and drives it
// from fabric ctl: created with its command line and directory (kept
// across a restart of the master), refused by a slave that does not allow
// it, started, answering commands, its output followed, an exit nobody
// asked for shown as stopped, stopped, and stopped with its slave.
func TestProgramInstances(t *testing.T) {
	t.Parallel()
	masterEnv := append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_DATA_DIR=" + t.TempDir()}, fastTimings...)
	master := start(t, masterEnv, "master")
	c := newCtl(master.waitStdout(t, masterRunning)[1])
	dir := t.TempDir()

	failsWith(t, c.env, 2, []string{"not an absolute path"}, "ctl", "instance", "create", "loop", "--", "sh", "-c", loopScript)
	failsWith(t, c.env, 2, []string{"after --"}, "ctl", "instance", "create", "loop", "/bin/sh")
	if out := c.ok(t, "instance", "create", "loop", "--dir", dir, "--", "/bin/sh", "-c", loopScript); out != "created instance 1 (loop) to run /bin/sh\n" {
		t.Fatalf("create: %q", out)
	}
	if out := c.ok(t, "instance", "create", "cat", "--", "/bin/cat"); out != "created instance 2 (cat) to run /bin/cat\n" {
		t.Fatalf("create: %q", out)
	}

	// The master keeps the program across a restart.
	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("the master exited with status %d after SIGTERM: %s", code, master)
	}
	master = start(t, masterEnv, "master")
	c = newCtl(master.waitStdout(t, masterRunning)[1])
	slave := start(t, append(slices.Clone(c.env), "FABRIC_SLAVE_ID=3", "FABRIC_SLAVE_ALLOW_PROGRAMS=/bin/sh", "FABRIC_SLAVE_STOP_TIMEOUT=2s"), "slave")
	slave.waitStdout(t, regexp.MustCompile(`(?m)^slave 3 running`))
	testkit.Eventually(t, waitLong, "slave 3 connected", func() error {
		if got := c.slaves(t); len(got) != 1 || !got[0].Connected {
			return errors.New("not yet")
		}
		return nil
	})

	r := c.fails(t, "program_not_allowed", "instance", "assign", "2", "3")
	if !strings.Contains(r.stderr, "FABRIC_SLAVE_ALLOW_PROGRAMS") || !strings.Contains(r.stderr, "/bin/cat") {
		t.Errorf("the refusal does not say what to allow where: %s", r)
	}
	c.ok(t, "instance", "assign", "1", "3")
	follower := start(t, c.env, "ctl", "instance", "output", "1")
	follower.waitStderrMatch(t, regexp.MustCompile(`following the output of instance 1`))
	if out := c.ok(t, "instance", "start", "1"); out != "started instance 1\n" {
		t.Errorf("start: %q", out)
	}
	c.waitInstance(t, instanceJSON{ID: 1, Name: "loop", SlaveID: 3, Status: "running"})
	for cmd, want := range map[string]string{
		"hello there": "you said: hello there\n",
		"pwd":         dir + "\n",
		"env":         "nats=none\n", // the slave's FABRIC_* variables are not the program's
		"oops disk":   "disk\n",
	} {
		if out := c.ok(t, append([]string{"instance", "command", "1"}, strings.Fields(cmd)...)...); out != want {
			t.Errorf("command %s: %q, want %q", cmd, out, want)
		}
	}
	if out := c.ok(t, "instance", "command", "1", "exit", "3"); out != "\n" {
		t.Errorf("exit 3: %q", out)
	}
	c.waitInstance(t, instanceJSON{ID: 1, Name: "loop", SlaveID: 3, Status: "stopped"})
	for _, want := range []string{
		`[info] instance 1: started /bin/sh (pid `,
		"[info] instance 1: > hello there\n",
		"[info] instance 1: you said: hello there\n",
		"[warn] instance 1: disk\n",
		"[error] instance 1: /bin/sh exited unexpectedly (exit status 3)\n",
	} {
		testkit.Eventually(t, waitLong, "the follower shows "+want, func() error {
			if !strings.Contains(follower.stdout.String(), want) {
				return errors.New(follower.String())
			}
			return nil
		})
	}
	c.fails(t, "instance_not_running", "instance", "command", "1", "hello")

	c.ok(t, "instance", "start", "1")
	if out := c.ok(t, "instance", "stop", "1"); out != "stopped instance 1\n" {
		t.Errorf("stop: %q", out)
	}
	parseTable(t, c.ok(t, "instance", "list")).want(t, instanceHeader,
		[]string{"1", "loop", "3", "stopped"}, []string{"2", "cat", "-", "unassigned"})

	// A slave that stops stops its programs, and what they started.
	c.ok(t, "instance", "start", "1")
	child, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(c.ok(t, "instance", "command", "1", "child"), "child ")))
	testkit.NoErr(t, err, "the child's pid")
	if !testkit.ProcessAlive(t, child) {
		t.Fatalf("the program's child %d does not run", child)
	}
	if code := slave.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the slave exited with status %d after SIGTERM: %s", code, slave)
	}
	if testkit.ProcessAlive(t, child) {
		t.Errorf("the program's child %d runs after its slave stopped", child)
	}
}

// README's session of a program instance, byte for byte: its commands run
// in a shell, as a user types them, against a master and a slave started
// as it says.
func TestReadmeProgramSession(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	testkit.NoErr(t, err, "read README.md")
	_, session, ok := strings.Cut(string(readme), "a shell loop that answers each line it reads:\n\n```console\n")
	if !ok {
		t.Fatal("README.md has no session of a shell loop")
	}
	session, _, _ = strings.Cut(session, "```\n")

	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), "master")
	c := newCtl(master.waitStdout(t, masterRunning)[1])
	start(t, append(slices.Clone(c.env), "FABRIC_SLAVE_ALLOW_PROGRAMS=/bin/sh"), "slave")
	testkit.Eventually(t, waitLong, "slave 1 connected", func() error {
		if got := c.slaves(t); len(got) != 1 || !got[0].Connected {
			return errors.New("not yet")
		}
		return nil
	})
	// bin/fabric, as README's commands name it.
	home := t.TempDir()
	testkit.NoErr(t, os.Mkdir(filepath.Join(home, "bin"), 0o755), "mkdir bin")
	testkit.NoErr(t, os.Symlink(fabricBin, filepath.Join(home, "bin", "fabric")), "link bin/fabric")

	ran := 0
	for _, step := range readmeSession(t, session) {
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", step.line)
		cmd.Dir, cmd.Env = home, environ(c.env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out // as a terminal shows them
		err := cmd.Run()
		cancel()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s: %v", step.line, err)
		}
		if out.String() != step.want {
			t.Errorf("$ %s\nREADME shows:\n%sthe command prints:\n%s", step.line, step.want, out.String())
		}
		ran++
	}
	if ran < 5 {
		t.Errorf("only %d commands in README's session", ran)
	}
}
