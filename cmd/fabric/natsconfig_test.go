//go:build unix

package main_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// loadNATSConfig has nats-server read text as its configuration file.
func loadNATSConfig(t *testing.T, text string) *server.Options {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses what fabric nats-config printed: %v\n%s", err, text)
	}
	return opts
}

// TestNATSConfig: fabric nats-config prints an authorization block that
// nats-server loads, with one user per endpoint and its passwords taken
// from the server's environment. (The security tests in package fabric
// run a cluster on it.)
func TestNATSConfig(t *testing.T) {
	out := ok(t, []string{"FABRIC_SUBJECT_PREFIX=acme.lf"}, "nats-config", "--slaves", "1-2,5", "--controls", "alice,ops-team")
	for _, v := range []string{"MASTER", "SLAVE_1", "SLAVE_2", "SLAVE_5", "CONTROL_ALICE", "CONTROL_OPS_TEAM"} {
		t.Setenv("LF_PASS_"+v, "pw"+strings.ToLower(v))
	}
	opts := loadNATSConfig(t, out)
	var users []string
	for _, u := range opts.Users {
		users = append(users, u.Username)
		if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil || u.Permissions.Response != nil {
			t.Errorf("user %s: permissions %+v", u.Username, u.Permissions)
		}
	}
	want := []string{"master", "slave-1", "slave-2", "slave-5", "control-alice", "control-ops-team"}
	if !slices.Equal(users, want) {
		t.Fatalf("users %q, want %q", users, want)
	}
	if got := opts.Users[3].Permissions.Publish.Allow; !slices.Equal(got, []string{"acme.lf.slave.5.master.0.>"}) {
		t.Errorf("slave 5 may publish %q", got)
	}
	if opts.Users[3].Password != "pwslave_5" {
		t.Errorf("slave 5's password %q, want the one in $LF_PASS_SLAVE_5", opts.Users[3].Password)
	}
	for _, w := range []string{"FABRIC_SLAVE_ID=5 FABRIC_NATS_USER=slave-5 FABRIC_NATS_PASSWORD=<password of $LF_PASS_SLAVE_5>", "FABRIC_SUBJECT_PREFIX=acme.lf"} {
		if !strings.Contains(out, w) {
			t.Errorf("the header does not say %q", w)
		}
	}

	// --prefix wins over the environment; --env-prefix names the variables.
	out = ok(t, []string{"FABRIC_SUBJECT_PREFIX=acme.lf"}, "nats-config", "--prefix", "lf", "--env-prefix", "CL1_", "--controls", "bob")
	t.Setenv("CL1_MASTER", "pwa")
	t.Setenv("CL1_CONTROL_BOB", "pwb")
	opts = loadNATSConfig(t, out)
	if len(opts.Users) != 2 || !slices.Equal(opts.Users[1].Permissions.Publish.Allow, []string{"lf.control.bob.master.0.>"}) {
		t.Errorf("users %+v", opts.Users)
	}
}

func TestNATSConfigNKeys(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	out := ok(t, nil, "nats-config", "--slaves", "1", "--nkeys", dir)
	if again := ok(t, nil, "nats-config", "--slaves", "1", "--nkeys", dir); again != out {
		t.Error("a second run made new keys")
	}
	opts := loadNATSConfig(t, out)
	if len(opts.Nkeys) != 2 || len(opts.Users) != 0 {
		t.Fatalf("%d nkey users and %d password users, want 2 nkey users", len(opts.Nkeys), len(opts.Users))
	}
	seed := filepath.Join(dir, "slave-1.nk")
	if !strings.Contains(out, "FABRIC_NATS_NKEY_SEED_FILE="+seed) {
		t.Errorf("the header does not name %s:\n%s", seed, out)
	}
	if fi, err := os.Stat(seed); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("seed file %s: %v, %v", seed, fi, err)
	}
}

func TestNATSConfigUsage(t *testing.T) {
	t.Parallel()
	help := ok(t, nil, "nats-config", "--help")
	for _, w := range []string{"Usage:\n  fabric nats-config [flags]", "--slaves", "--controls", "--prefix", "--nkeys", "LF_PASS_"} {
		if !strings.Contains(help, w) {
			t.Errorf("help does not say %q:\n%s", w, help)
		}
	}
	if out := ok(t, nil, "--help"); !strings.Contains(out, "nats-config") {
		t.Errorf("fabric --help does not list nats-config:\n%s", out)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad slave id", []string{"--slaves", "one"}, `fabric: nats-config: --slaves: "one": want a positive slave id or a range such as 1-20`},
		{"backward range", []string{"--slaves", "5-1"}, `"5-1"`},
		{"slave twice", []string{"--slaves", "1-3,2"}, "slave 2 is listed twice"},
		{"bad control", []string{"--controls", "a.b"}, `fabric: nats-config: --controls: "a.b"`},
		{"bad prefix", []string{"--prefix", "lf.>"}, `subject prefix "lf.>"`},
		{"bad variable prefix", []string{"--env-prefix", "A-B"}, `variable prefix "A-B"`},
		{"unknown flag", []string{"--users", "x"}, "fabric: nats-config: unknown flag: --users (see fabric nats-config --help)"},
		{"argument", []string{"alice"}, "fabric: nats-config takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failsWith(t, nil, 2, []string{tc.want}, append([]string{"nats-config"}, tc.args...)...)
		})
	}
}
