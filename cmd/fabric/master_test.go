//go:build unix

package main_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkfabric/linkfabric/internal/testkit"
)

// The issue, as a new user met it: `fabric ctl instance create psi`,
// restart the master, and psi must still be there, with its id; a new
// instance gets a new id.
func TestMasterRestartKeepsState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0", "FABRIC_DATA_DIR=" + dir}, fastTimings...)
	master := start(t, env, "master")
	c := newCtl(master.waitStdout(t, masterRunning)[1])
	if out := c.ok(t, "instance", "create", "psi"); out != "created instance 1 (psi)\n" {
		t.Fatalf("create psi: %q", out)
	}
	c.ok(t, "player", "ban", "eve", "--reason", "griefing")
	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("the master exited with status %d after SIGTERM: %s", code, master)
	}

	again := start(t, env, "master")
	c = newCtl(again.waitStdout(t, masterRunning)[1])
	parseTable(t, c.ok(t, "instance", "list")).want(t, instanceHeader, []string{"1", "psi", "-", "unassigned"})
	parseTable(t, c.ok(t, "player", "bans")).want(t, []string{"PLAYER", "REASON"}, []string{"eve", "griefing"})
	if out := c.ok(t, "instance", "create", "omega"); out != "created instance 2 (omega)\n" {
		t.Errorf("create after the restart: %q", out)
	}
	c.ok(t, "instance", "delete", "2")
	parseTable(t, c.ok(t, "instance", "list")).want(t, instanceHeader, []string{"1", "psi", "-", "unassigned"})
}

// README's two masters: on one NATS server (here this test's), the
// second `fabric master` says it stands by, `fabric ctl status` lists
// both, and when the active one is killed the standby takes over and
// says so.
func TestTwoMasters(t *testing.T) {
	t.Parallel()
	url, env, first := brokerAndMaster(t)
	second := start(t, env, "master")
	second.waitStdout(t, regexp.MustCompile(`(?m)^master running, standing by: another master is active; NATS at `))
	c := newCtl(url)
	testkit.Eventually(t, waitLong, "ctl status lists the active master and the standby", func() error {
		out := c.ok(t, "status")
		if !strings.Contains(out, "\nstandbys   1 ready to take over\n") {
			return fmt.Errorf("status does not count one standby:\n%s", out)
		}
		rows := mastersTable(t, out)
		if len(rows.rows) != 2 || rows.rows[0][3] != "active" || rows.rows[1][3] != "standby" || rows.rows[0][4] != "1" || rows.rows[1][4] != "-" {
			return fmt.Errorf("status %v", rows.rows)
		}
		for _, r := range rows.rows {
			if since, err := time.ParseInLocation("2006-01-02T15:04:05", r[5], time.Local); err != nil || time.Since(since) > time.Hour {
				return fmt.Errorf("status %v: SINCE %q is not a moment ago", rows.rows, r[5])
			}
		}
		return nil
	})
	c.ok(t, "instance", "create", "psi")

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	second.waitStderrMatch(t, regexp.MustCompile(`msg="active master"`))
	testkit.Eventually(t, waitLong, "ctl status shows the standby active in term 2", func() error {
		r := run(t, c.env, "ctl", "status")
		if r.code != 0 {
			return fmt.Errorf("ctl status: %s", r)
		}
		rows := mastersTable(t, r.stdout)
		if len(rows.rows) != 1 || rows.rows[0][3] != "active" || rows.rows[0][4] != "2" {
			return fmt.Errorf("status %v", rows.rows)
		}
		return nil
	})
	if !strings.Contains(c.ok(t, "instance", "list"), "psi") {
		t.Error("the new active master does not know psi")
	}
	if code := second.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("the master exited with status %d after SIGTERM: %s", code, second)
	}
}

// mastersTable is the table of masters in the output of ctl status.
func mastersTable(t *testing.T, status string) table {
	t.Helper()
	i := strings.Index(status, "MASTER  ")
	if i < 0 {
		t.Fatalf("status shows no table of masters:\n%s", status)
	}
	return parseTable(t, strings.SplitN(status[i:], "\n\n", 2)[0]+"\n")
}

// A second `fabric master` with the default configuration, whose
// embedded server's port is taken, says what to do rather than start: a
// configuration error (exit status 2), as any taken port.
func TestSecondEmbeddedMaster(t *testing.T) {
	t.Parallel()
	master := start(t, append([]string{"FABRIC_NATS_LISTEN=127.0.0.1:0"}, fastTimings...), "master")
	url := master.waitStdout(t, masterRunning)[1]
	listen := strings.TrimPrefix(url, "nats://")
	failsWith(t, []string{"FABRIC_NATS_LISTEN=" + listen, "FABRIC_DATA_DIR=" + t.TempDir()}, 2,
		[]string{"in use", "FABRIC_NATS_URL=nats://" + listen, "standby"}, "master")
}

// A NATS server without JetStream is refused with exit status 2.
func TestMasterWithoutJetStream(t *testing.T) {
	t.Parallel()
	url := plainNATS(t)
	failsWith(t, []string{"FABRIC_NATS_URL=" + url}, 2, []string{"JetStream"}, "master")
}

// plainNATS starts a NATS server without JetStream for the test, and
// returns its URL.
func plainNATS(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

// TestFollowerOutlivesMasterRestart: `fabric ctl instance output` does not
// end when the master stops: it follows on with the next master (here a
// new process on the same NATS server and state) and prints what the
// instance says afterwards, until Ctrl-C.
func TestFollowerOutlivesMasterRestart(t *testing.T) {
	t.Parallel()
	url, env, master := brokerAndMaster(t)
	c := newCtl(url)
	slave := start(t, append(slices.Clone(env), "FABRIC_SLAVE_ID=8", "FABRIC_SLAVE_INSTANCES=801:east"), "slave")
	slave.waitStdout(t, regexp.MustCompile(`(?m)^slave 8 running`))
	c.waitInstance(t, instanceJSON{801, "east", 8, "stopped"})
	c.ok(t, "instance", "start", "801")
	f := c.follow(t, "801")

	if code := master.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("the master exited with status %d after SIGTERM: %s", code, master)
	}
	next := start(t, env, "master")
	next.waitStdout(t, masterRunning)
	testkit.Eventually(t, waitLong, "the follower prints what the instance says to the next master", func() error {
		select {
		case <-f.done:
			t.Fatalf("the follower exited when the master stopped: %s", f)
		default:
		}
		if r := run(t, c.env, "ctl", "instance", "command", "801", "/say", "after-restart"); r.code != 0 {
			return fmt.Errorf("/say: %s", r)
		}
		if !strings.Contains(f.stdout.String(), "instance 801: [server] after-restart\n") {
			return fmt.Errorf("not followed: %s", f)
		}
		return nil
	})
	if code := f.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("the follower exited with status %d after SIGINT, want 0: %s", code, f)
	}
}
