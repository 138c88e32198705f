//go:build linux

package fabric_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// shellLoop is the program of the tests: a shell that answers each line of
// its standard input.
const shellLoop = `echo ready
while read -r l; do
  case "$l" in
    exit\ *) exit "${l#exit }" ;;
    warn\ *) echo "${l#warn }" >&2 ;;
    long) head -c 20000 /dev/zero | tr '\0' x; echo; echo after ;;
    pwd) pwd ;;
    child) sleep 1000 & echo "child $!" ;;
    quiet) ;;
    *) echo "got $l" ;;
  esac
done`

// programCluster is a master, slave 1 (allowing allow, stopping programs
// after stopTimeout) and control alice, following instance 1 (created to
// run program, and assigned to slave 1 if the slave allows it).
type programCluster struct {
	url   string
	slave *fabric.Slave
	ctl   *fabric.Control
	out   *outputLog
}

func newProgramCluster(t *testing.T, stopTimeout time.Duration, allow ...string) *programCluster {
	t.Helper()
	b := startBroker(t)
	c := &programCluster{url: b.ClientURL()}
	startMaster(t, c.url, "*=*")
	cfg := slaveConfig(c.url, 1, "")
	cfg.AllowPrograms, cfg.StopTimeout = allow, stopTimeout
	s, err := fabric.StartSlave(testkit.Ctx(t, waitLong), cfg, fabric.WithLogger(testLogger()))
	testkit.NoErr(t, err, "start the slave")
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = s.Close(ctx)
	})
	c.slave = s
	c.ctl, c.out = dialControl(t, c.url, "alice")
	return c
}

// create creates an instance that runs program, and assigns it to slave 1.
func (c *programCluster) create(t *testing.T, program messages.Program) (int64, error) {
	t.Helper()
	ref := request(t, c.ctl.Link(), messages.CreateInstance, messages.NewInstance{Name: "loop", Program: &program})
	_, err := requestErr(t, c.ctl.Link(), messages.AssignInstanceCommand, messages.Assignment{InstanceID: ref.InstanceID, SlaveID: 1})
	if err == nil {
		testkit.NoErr(t, c.ctl.Follow(testkit.Ctx(t, waitLong), ref.InstanceID), "follow")
	}
	return ref.InstanceID, err
}

func (c *programCluster) command(t *testing.T, id int64, text string) string {
	t.Helper()
	return request(t, c.ctl.Link(), messages.SendCommand, messages.Command{InstanceID: id, Command: text}).Output
}

// line waits until instance id printed a line matching re at level, and
// returns it.
func (c *programCluster) line(t *testing.T, id int64, level string, re *regexp.Regexp) string {
	t.Helper()
	var found string
	testkit.Eventually(t, waitLong, fmt.Sprintf("instance %d prints %s at %s", id, re, level), func() error {
		c.out.mu.Lock()
		defer c.out.mu.Unlock()
		for _, l := range c.out.lines {
			if l.InstanceID == id && l.Level == level && re.MatchString(l.Message) {
				found = l.Message
				return nil
			}
		}
		return fmt.Errorf("lines %+v", c.out.lines)
	})
	return found
}

// An operator's program, as a new user drives it: started, answering
// commands, its output (standard error marked warn, long lines cut) and
// working directory, an exit nobody asked for reported with its status,
// started again, stopped; its goroutines end with it.
func TestProgramInstance(t *testing.T) {
	t.Parallel()
	c := newProgramCluster(t, 5*time.Second, "/bin/sh")
	dir := t.TempDir()
	id, err := c.create(t, messages.Program{Command: "/bin/sh", Args: []string{"-c", shellLoop}, Dir: dir})
	testkit.NoErr(t, err, "assign")
	l := c.ctl.Link()

	_, err = requestErr(t, l, messages.SendCommand, messages.Command{InstanceID: id, Command: "hello"})
	testkit.WantCode(t, err, fabric.CodeInstanceNotRunning)
	request(t, l, messages.StartInstance, messages.InstanceRef{InstanceID: id})
	waitStatus(t, l, id, messages.StatusRunning)
	c.line(t, id, "info", regexp.MustCompile(`^started /bin/sh \(pid \d+\)$`))
	c.line(t, id, "info", regexp.MustCompile(`^ready$`))
	_, err = requestErr(t, l, messages.StartInstance, messages.InstanceRef{InstanceID: id})
	testkit.WantCode(t, err, fabric.CodeConflict)
	if n := c.slave.ProgramGoroutines(); n != 3 {
		t.Errorf("a running program has %d goroutines, want 3 (its waiter and two readers)", n)
	}

	if got := c.command(t, id, "hello"); got != "got hello" {
		t.Errorf("hello answered %q, want %q", got, "got hello")
	}
	c.line(t, id, "info", regexp.MustCompile(`^> hello$`))
	c.line(t, id, "info", regexp.MustCompile(`^got hello$`))
	if got := c.command(t, id, "warn disk low"); got != "disk low" {
		t.Errorf("a line on standard error answered %q", got)
	}
	c.line(t, id, "warn", regexp.MustCompile(`^disk low$`))
	if got := c.command(t, id, "pwd"); got != dir {
		t.Errorf("the program runs in %q, want %q", got, dir)
	}
	if got := c.command(t, id, "quiet"); got != "" {
		t.Errorf("a command that prints nothing answered %q", got)
	}
	long := c.command(t, id, "long")
	first, after, _ := strings.Cut(long, "\n")
	if len(first) > 8192 || !strings.HasSuffix(first, "[line cut at 8192 bytes]") || strings.Trim(strings.TrimSuffix(first, " [line cut at 8192 bytes]"), "x") != "" || after != "after" {
		t.Errorf("a line of 20000 bytes, then after, answered %d bytes: %.60q ... %q", len(long), long, long[max(0, len(long)-60):])
	}
	_, err = requestErr(t, l, messages.SendCommand, messages.Command{InstanceID: id, Command: "two\nlines"})
	testkit.WantCode(t, err, fabric.CodeInvalidCommand)

	// It exits by itself: the status says so, and the output why.
	if got := c.command(t, id, "exit 3"); got != "" {
		t.Errorf("exit 3 answered %q", got)
	}
	waitStatus(t, l, id, messages.StatusStopped)
	c.line(t, id, "error", regexp.MustCompile(`^/bin/sh exited unexpectedly \(exit status 3\)$`))
	testkit.WaitFor(t, waitLong, "the program's goroutines end", func() bool { return c.slave.ProgramGoroutines() == 0 })
	_, err = requestErr(t, l, messages.StopInstance, messages.InstanceRef{InstanceID: id})
	testkit.WantCode(t, err, fabric.CodeInstanceNotRunning)

	c.out.mu.Lock()
	c.out.lines = nil
	c.out.mu.Unlock()
	request(t, l, messages.StartInstance, messages.InstanceRef{InstanceID: id})
	waitStatus(t, l, id, messages.StatusRunning)
	c.line(t, id, "info", regexp.MustCompile(`^ready$`)) // before the command: it would be in the answer
	if got := c.command(t, id, "again"); got != "got again" {
		t.Errorf("after a restart, again answered %q", got)
	}
	request(t, l, messages.StopInstance, messages.InstanceRef{InstanceID: id})
	waitStatus(t, l, id, messages.StatusStopped)
	c.line(t, id, "info", regexp.MustCompile(`^/bin/sh exited \(signal: terminated\)$`))
	if n := c.slave.ProgramGoroutines(); n != 0 {
		t.Errorf("a stopped program has %d goroutines", n)
	}
}

// A program that ignores SIGTERM is killed after the stop timeout, and the
// processes it started with it; and a slave that stops stops its programs.
func TestProgramStopKillsGroup(t *testing.T) {
	t.Parallel()
	c := newProgramCluster(t, 300*time.Millisecond, "/bin/sh")
	stubborn := `trap '' TERM; ` + shellLoop
	id, err := c.create(t, messages.Program{Command: "/bin/sh", Args: []string{"-c", stubborn}})
	testkit.NoErr(t, err, "assign")
	l := c.ctl.Link()
	request(t, l, messages.StartInstance, messages.InstanceRef{InstanceID: id})
	c.line(t, id, "info", regexp.MustCompile(`^ready$`)) // before the command: it would be in the answer
	child, err := strconv.Atoi(strings.TrimPrefix(c.command(t, id, "child"), "child "))
	testkit.NoErr(t, err, "the child's pid")
	if !testkit.ProcessAlive(t, child) {
		t.Fatalf("the program's child %d does not run", child)
	}
	request(t, l, messages.StopInstance, messages.InstanceRef{InstanceID: id})
	c.line(t, id, "warn", regexp.MustCompile(`^/bin/sh did not exit within 300ms of SIGTERM: killing it$`))
	c.line(t, id, "info", regexp.MustCompile(`^/bin/sh exited \(signal: killed\)$`))
	testkit.WaitFor(t, waitLong, "the program's child is killed", func() bool { return !testkit.ProcessAlive(t, child) })

	// Running again, with a child, when the slave stops.
	c.out.mu.Lock()
	c.out.lines = nil
	c.out.mu.Unlock()
	request(t, l, messages.StartInstance, messages.InstanceRef{InstanceID: id})
	c.line(t, id, "info", regexp.MustCompile(`^ready$`))
	child, err = strconv.Atoi(strings.TrimPrefix(c.command(t, id, "child"), "child "))
	testkit.NoErr(t, err, "the child's pid")
	ctx, cancel := closeCtx()
	defer cancel()
	testkit.NoErr(t, c.slave.Close(ctx), "close the slave")
	if testkit.ProcessAlive(t, child) {
		t.Errorf("the program's child %d runs after its slave stopped", child)
	}
	if n := c.slave.Goroutines() + c.slave.ProgramGoroutines(); n != 0 {
		t.Errorf("%d goroutines after the slave stopped", n)
	}
}

// A slave runs no program its allow-list does not name, and says how to
// allow it.
func TestProgramNotAllowed(t *testing.T) {
	t.Parallel()
	c := newProgramCluster(t, time.Second, "/bin/echo")
	id, err := c.create(t, messages.Program{Command: "/bin/sh", Args: []string{"-c", "echo hi"}})
	le := testkit.WantCode(t, err, fabric.CodeProgramNotAllowed)
	for _, want := range []string{"/bin/sh", "FABRIC_SLAVE_ALLOW_PROGRAMS"} {
		if !strings.Contains(le.Message, want) {
			t.Errorf("the refusal does not name %s: %q", want, le.Message)
		}
	}
	info, err := instanceStatus(t, c.ctl.Link(), id)
	testkit.NoErr(t, err, "list")
	if info.Status != messages.StatusUnassigned {
		t.Errorf("a refused instance is %s, want unassigned", info.Status)
	}
	// The master takes only absolute paths.
	for _, p := range []messages.Program{{Command: "sh"}, {Command: "/bin/sh", Dir: "tmp"}} {
		_, err := requestErr(t, c.ctl.Link(), messages.CreateInstance, messages.NewInstance{Name: "relative", Program: &p})
		if le := testkit.WantCode(t, err, link.CodeInvalidMessage); !strings.Contains(le.Message, "absolute paths") {
			t.Errorf("a relative path: %q", le.Message)
		}
	}
	// A program that cannot start says why.
	id, err = c.create(t, messages.Program{Command: "/bin/echo", Dir: "/nonexistent"})
	testkit.NoErr(t, err, "assign")
	_, err = requestErr(t, c.ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: id})
	if le := testkit.WantCode(t, err, fabric.CodeProgramFailed); !strings.Contains(le.Message, "/nonexistent") {
		t.Errorf("a program that cannot start: %q", le.Message)
	}
}
