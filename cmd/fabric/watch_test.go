//go:build unix

package main_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/linkfabric/linkfabric/internal/testkit"
)

// TestWatch: ctl slave list --watch and instance list --watch print the
// list, then each change as a line of the same columns; with --json one
// object a line; instance output --since prints what the master kept.
func TestWatch(t *testing.T) {
	t.Parallel()
	_, url := startDev(t)
	c := newCtl(url)

	t.Run("instances", func(t *testing.T) {
		w := start(t, c.env, "ctl", "instance", "list", "--watch")
		w.waitStdout(t, regexp.MustCompile(`(?m)^ID +NAME +SLAVE +STATUS\n101 +\S+ +1 +\S+\n(.+\n){3}`))
		w.waitStderrMatch(t, regexp.MustCompile(`watching for changes`))
		var id int
		if _, err := fmt.Sscanf(c.ok(t, "instance", "create", "omega"), "created instance %d (omega)", &id); err != nil {
			t.Fatal(err)
		}
		w.waitStdout(t, regexp.MustCompile(fmt.Sprintf(`(?m)^%d +omega +- +unassigned$`, id)))
		c.ok(t, "instance", "assign", fmt.Sprint(id), "2")
		w.waitStdout(t, regexp.MustCompile(fmt.Sprintf(`(?m)^%d +omega +2 +stopped$`, id)))
		c.ok(t, "instance", "delete", fmt.Sprint(id))
		w.waitStdout(t, regexp.MustCompile(fmt.Sprintf(`(?m)^%d +omega +2 +deleted$`, id)))
		if code := w.stop(t, syscall.SIGINT); code != 0 {
			t.Fatalf("exit status %d after SIGINT: %s", code, w)
		}
		lines := strings.Split(strings.TrimSuffix(w.stdout.String(), "\n"), "\n")
		if len(lines) != 1+4+3 {
			t.Errorf("want the header, 4 instances and 3 changes, one line each:\n%s", w.stdout.String())
		}
	})

	t.Run("slaves json", func(t *testing.T) {
		w := start(t, c.env, "ctl", "--json", "slave", "list", "--watch")
		w.waitStdout(t, regexp.MustCompile(`(?m)^\{"slave_id":2,.*\}\n`))
		var id int
		if _, err := fmt.Sscanf(c.ok(t, "instance", "create", "psi"), "created instance %d (psi)", &id); err != nil {
			t.Fatal(err)
		}
		c.ok(t, "instance", "assign", fmt.Sprint(id), "1")
		w.waitStdout(t, regexp.MustCompile(`(?m)^\{"slave_id":1,.*"instances":3,.*\}\n`))
		if code := w.stop(t, syscall.SIGINT); code != 0 {
			t.Fatalf("exit status %d after SIGINT: %s", code, w)
		}
		var last int64
		for line := range strings.SplitSeq(strings.TrimSuffix(w.stdout.String(), "\n"), "\n") {
			var u struct {
				SlaveID     int64 `json:"slave_id"`
				Connected   bool  `json:"connected"`
				UpdatedAtMS int64 `json:"updated_at_ms"`
				IsDeleted   bool  `json:"is_deleted"`
			}
			dec := json.NewDecoder(strings.NewReader(line))
			if err := dec.Decode(&u); err != nil || u.SlaveID == 0 || !u.Connected || u.UpdatedAtMS <= last {
				t.Errorf("line %q: %+v, %v (want one update a line, newer than the one before)", line, u, err)
			}
			last = u.UpdatedAtMS
		}
	})

	t.Run("output since", func(t *testing.T) {
		c.ok(t, "instance", "start", "101")
		c.ok(t, "instance", "command", "101", "/say", "before the follower")
		f := start(t, c.env, "ctl", "instance", "output", "101", "--since", "5m")
		f.waitStdout(t, regexp.MustCompile(`(?m)^\S+ \[info\] instance 101: \[server\] before the follower$`))
		testkit.Eventually(t, waitLong, "a live line", func() error {
			c.ok(t, "instance", "command", "101", "/say", "live")
			if !strings.Contains(f.stdout.String(), "[server] live\n") {
				return fmt.Errorf("not yet: %s", f)
			}
			return nil
		})
		if code := f.stop(t, syscall.SIGINT); code != 0 {
			t.Fatalf("exit status %d after SIGINT: %s", code, f)
		}
		failsWith(t, c.env, 2, []string{"--since -5m0s: want a positive duration"}, "ctl", "instance", "output", "101", "--since", "-5m")
	})
}
