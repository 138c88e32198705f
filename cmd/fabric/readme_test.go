//go:build unix

package main_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestReadmeSession runs the example session of README.md's quick start
// against a fabric dev of its own and compares what each command prints,
// byte for byte, with what the README shows: an operator who types it sees
// just that.
func TestReadmeSession(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, session, ok := strings.Cut(string(readme), "From another terminal:\n\n```console\n")
	if !ok {
		t.Fatal("README.md has no session after \"From another terminal:\"")
	}
	session, _, _ = strings.Cut(session, "```\n")

	_, url := startDev(t)
	env := newCtl(url).env
	last, ran := 0, 0
	for _, step := range readmeSession(t, session) {
		if step.line == "echo $?" {
			if got := strconv.Itoa(last) + "\n"; got != step.want {
				t.Errorf("$ echo $?: README shows %q, the command before ended with %q", step.want, got)
			}
			continue
		}
		args, ok := strings.CutPrefix(step.line, "go run ./cmd/fabric ")
		if !ok {
			t.Fatalf("README command %q is not go run ./cmd/fabric", step.line)
		}
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		cmd := exec.CommandContext(ctx, fabricBin, strings.Fields(args)...)
		cmd.Env = environ(env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out // as a terminal shows them
		err := cmd.Run()
		cancel()
		last = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			last = ee.ExitCode()
		} else if err != nil {
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

// TestJSClient runs the JavaScript client of examples/js against fabric
// dev: a client author's reading of docs/protocol.md, checked. It needs
// node and examples/js/node_modules (npm ci in examples/js); without them
// it is skipped, unless LF_REQUIRE_NODE=1 (CI sets it) makes their absence
// a failure.
func TestJSClient(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("..", "..", "examples", "js")
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "nats", "package.json"))
	}
	if err != nil {
		if os.Getenv("LF_REQUIRE_NODE") == "1" {
			t.Fatalf("LF_REQUIRE_NODE=1, but the JavaScript client cannot run: %v (run npm ci in examples/js)", err)
		}
		t.Skipf("node or examples/js/node_modules missing (%v); npm ci in examples/js runs it", err)
	}
	_, url := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", url)
	cmd.Dir = dir
	cmd.Env = environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, out)
	}
	for _, want := range []string{"ok: ping answers {}", "ok: send_command answers \"js joined\"", "fails with instance_not_found", "ok: instance_output relayed while following 101", "ok: following stopped"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the client did not say %q:\n%s", want, out)
		}
	}
	t.Logf("%s", out)
}
