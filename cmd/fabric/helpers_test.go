package main_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/fabric"
)

// brokerAndMaster starts a broker for the test (closed when it ends) and
// `fabric master` on it with fastTimings, and waits until the master says
// it is running. It returns the broker's client URL, the environment that
// points fabric processes at it, and the master.
func brokerAndMaster(t *testing.T) (url string, env []string, master *proc) {
	t.Helper()
	b, err := fabric.StartBroker("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	env = append([]string{"FABRIC_NATS_URL=" + b.ClientURL()}, fastTimings...)
	master = start(t, env, "master")
	master.waitStdout(t, masterRunning)
	return b.ClientURL(), env, master
}

// readmeStep is one command of a shell session in README.md (line, without
// its "$ ") and what README shows it printing (want, each line ending in a
// newline).
type readmeStep struct{ line, want string }

// readmeSession splits a shell session of README.md into its commands: each
// line that starts with "$ " and the lines up to the next one. It fails the
// test if the session does not start with a command.
func readmeSession(t *testing.T, session string) []readmeStep {
	t.Helper()
	prompt := regexp.MustCompile(`^\$ (.*)$`)
	lines := strings.Split(strings.TrimSuffix(session, "\n"), "\n")
	var steps []readmeStep
	for i := 0; i < len(lines); {
		m := prompt.FindStringSubmatch(lines[i])
		if m == nil {
			t.Fatalf("README line %q is not a command", lines[i])
		}
		i++
		var want strings.Builder
		for ; i < len(lines) && !prompt.MatchString(lines[i]); i++ {
			want.WriteString(lines[i] + "\n")
		}
		steps = append(steps, readmeStep{line: m[1], want: want.String()})
	}
	return steps
}
