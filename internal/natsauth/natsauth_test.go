package natsauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/natsauth"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

func catalog(t *testing.T) *messages.Catalog {
	t.Helper()
	c, err := messages.NewCatalog()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// load writes text to a file and has nats-server read it.
func load(t *testing.T, text string) (*server.Options, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return server.ProcessConfigFile(path)
}

// run starts a server from opts on a random loopback port.
func run(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
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
	return s
}

// TestGenerate: the text loads in nats-server, with the passwords from its
// environment, one user per endpoint, and exactly the permissions of
// AllowLists.
func TestGenerate(t *testing.T) {
	o := natsauth.Options{Catalog: catalog(t), Prefix: "lf", Slaves: []int64{1, 2, 3}, Controls: []string{"alice", "ops-team"}}
	text, ids, err := natsauth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	wantUsers := []string{"master", "slave-1", "slave-2", "slave-3", "control-alice", "control-ops-team"}
	wantVars := []string{"LF_PASS_MASTER", "LF_PASS_SLAVE_1", "LF_PASS_SLAVE_2", "LF_PASS_SLAVE_3", "LF_PASS_CONTROL_ALICE", "LF_PASS_CONTROL_OPS_TEAM"}
	if len(ids) != len(wantUsers) {
		t.Fatalf("%d identities, want %d", len(ids), len(wantUsers))
	}
	for i, id := range ids {
		if id.User != wantUsers[i] || id.PasswordVar != wantVars[i] {
			t.Errorf("identity %d: user %q, variable %q; want %q, %q", i, id.User, id.PasswordVar, wantUsers[i], wantVars[i])
		}
		t.Setenv(id.PasswordVar, "pw"+strings.ToLower(id.PasswordVar))
		for _, want := range []string{"FABRIC_NATS_USER=" + id.User + " ", "$" + id.PasswordVar} {
			if !strings.Contains(text, want) {
				t.Errorf("the header does not mention %q", want)
			}
		}
	}
	for _, want := range []string{"FABRIC_SLAVE_ID=3 ", "FABRIC_CONTROL_USER=ops-team ", "FABRIC_SUBJECT_PREFIX=lf"} {
		if !strings.Contains(text, want) {
			t.Errorf("the header does not mention %q", want)
		}
	}
	opts, err := load(t, text)
	if err != nil {
		t.Fatalf("nats-server refuses the generated text: %v\n%s", err, text)
	}
	if len(opts.Users) != len(ids) || len(opts.Nkeys) != 0 {
		t.Fatalf("nats-server read %d users and %d nkeys, want %d users", len(opts.Users), len(opts.Nkeys), len(ids))
	}
	for i, u := range opts.Users {
		id := ids[i]
		pub, sub := natsauth.AllowLists(o.Catalog, o.Prefix, id.Address)
		if id.Address == link.MasterAddress {
			pub = append(pub, fabric.JetStreamAllowList(o.Prefix)...)
		}
		if u.Username != id.User || u.Password != "pw"+strings.ToLower(id.PasswordVar) {
			t.Errorf("user %d: %q with password %q", i, u.Username, u.Password)
		}
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil {
			t.Fatalf("user %s: permissions %+v", u.Username, p)
		}
		if !slices.Equal(p.Publish.Allow, pub) || len(p.Publish.Deny) > 0 {
			t.Errorf("user %s: publish %q deny %q, want %q", u.Username, p.Publish.Allow, p.Publish.Deny, pub)
		}
		if !slices.Equal(p.Subscribe.Allow, sub) || len(p.Subscribe.Deny) > 0 {
			t.Errorf("user %s: subscribe %q deny %q, want %q", u.Username, p.Subscribe.Allow, p.Subscribe.Deny, sub)
		}
		if p.Response != nil {
			t.Errorf("user %s: allow_responses %+v, want none", u.Username, p.Response)
		}
	}
}

// TestMissingPasswordVariable: nats-server refuses to start without a
// password variable, and names it.
func TestMissingPasswordVariable(t *testing.T) {
	o := natsauth.Options{Catalog: catalog(t), Prefix: "lf", Slaves: []int64{1}, EnvPrefix: "LF_TEST_MISSING_"}
	text, _, err := natsauth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("LF_TEST_MISSING_MASTER", "pwmaster")
	os.Unsetenv("LF_TEST_MISSING_SLAVE_1")
	_, err = load(t, text)
	if err == nil || !strings.Contains(err.Error(), "LF_TEST_MISSING_SLAVE_1") {
		t.Fatalf("error %v, want one naming LF_TEST_MISSING_SLAVE_1", err)
	}
}

// TestPasswordForms: what a password variable may hold. A bcrypt hash and
// a password of letters and digits starting with a letter work; a password
// of digits only is read as a number and refused when the file loads.
func TestPasswordForms(t *testing.T) {
	o := natsauth.Options{Catalog: catalog(t), Prefix: "lf", Slaves: []int64{1}}
	text, _, err := natsauth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("S3cretPassword9"), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("LF_PASS_MASTER", string(hash))
	t.Setenv("LF_PASS_SLAVE_1", "p4f3e2d1c0")
	opts, err := load(t, text)
	if err != nil {
		t.Fatal(err)
	}
	s := run(t, opts)
	for user, pw := range map[string]string{"master": "S3cretPassword9", "slave-1": "p4f3e2d1c0"} {
		nc, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo(user, pw))
		if err != nil {
			t.Errorf("%s: %v", user, err)
			continue
		}
		nc.Close()
	}
	if _, err := natsgo.Connect(s.ClientURL(), natsgo.UserInfo("master", string(hash))); err == nil {
		t.Error("the hash itself is accepted as the password")
	}

	t.Setenv("LF_PASS_SLAVE_1", "123456")
	if _, err := load(t, text); err == nil {
		t.Error("a password of digits only loads; the documentation says it does not")
	}
}

// TestNKeys: with an nkey directory, every user logs in with an nkey whose
// seed is generated once and reused, and the server enforces the same
// permissions.
func TestNKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nkeys")
	o := natsauth.Options{Catalog: catalog(t), Prefix: "lf", Slaves: []int64{1}, Controls: []string{"alice"}, NKeyDir: dir}
	text, ids, err := natsauth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, "password") || strings.Contains(text, "LF_PASS_") {
		t.Errorf("nkey users with passwords:\n%s", text)
	}
	for _, id := range ids {
		fi, err := os.Stat(id.SeedFile)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", id.SeedFile, fi.Mode().Perm())
		}
		if !strings.Contains(text, "FABRIC_NATS_NKEY_SEED_FILE="+id.SeedFile) || !strings.Contains(text, `nkey: "`+id.NKey+`"`) {
			t.Errorf("%s: seed file or key missing from the text", id.User)
		}
	}
	again, ids2, err := natsauth.Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if again != text || ids2[1].NKey != ids[1].NKey {
		t.Error("a second run did not reuse the seeds")
	}
	opts, err := load(t, text)
	if err != nil {
		t.Fatalf("nats-server refuses the generated text: %v\n%s", err, text)
	}
	if len(opts.Nkeys) != 3 || len(opts.Users) != 0 {
		t.Fatalf("nats-server read %d nkeys and %d users, want 3 nkeys", len(opts.Nkeys), len(opts.Users))
	}
	s := run(t, opts)
	slave := ids[1]
	login, err := natsgo.NkeyOptionFromSeed(slave.SeedFile)
	if err != nil {
		t.Fatal(err)
	}
	violation := make(chan error, 1)
	nc, err := natsgo.Connect(s.ClientURL(), login, natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
		select {
		case violation <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatalf("slave 1 logging in with its nkey: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish("lf.slave.1.master.0.ping", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("lf.master.0.slave.1.ping", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-violation:
		if !strings.Contains(err.Error(), `Permissions Violation for Publish to "lf.master.0.slave.1.ping"`) {
			t.Errorf("violation %v, want one for lf.master.0.slave.1.ping", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("slave 1's nkey may publish as the master")
	}

	// A file that holds no seed is an error that names it.
	bad := natsauth.Options{Catalog: o.Catalog, Prefix: "lf", Slaves: []int64{9}, NKeyDir: dir}
	if err := os.WriteFile(filepath.Join(dir, "slave-9.nk"), []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := natsauth.Generate(bad); err == nil || !strings.Contains(err.Error(), "slave-9.nk") {
		t.Errorf("a bad seed file: error %v, want one naming it", err)
	}
}

func TestBadOptions(t *testing.T) {
	cat := catalog(t)
	for _, tc := range []struct {
		name string
		o    natsauth.Options
		want string
	}{
		{"no catalog", natsauth.Options{Prefix: "lf"}, "catalog"},
		{"prefix with a wildcard", natsauth.Options{Catalog: cat, Prefix: "lf.*"}, "prefix"},
		{"prefix with a quote", natsauth.Options{Catalog: cat, Prefix: `l"f`}, "prefix"},
		{"empty prefix", natsauth.Options{Catalog: cat}, "prefix"},
		{"bad variable prefix", natsauth.Options{Catalog: cat, Prefix: "lf", EnvPrefix: "1-X"}, "variable prefix"},
		{"slave 0", natsauth.Options{Catalog: cat, Prefix: "lf", Slaves: []int64{0}}, "slave id 0"},
		{"bad control", natsauth.Options{Catalog: cat, Prefix: "lf", Controls: []string{"a.b"}}, `"a.b"`},
		{"control twice", natsauth.Options{Catalog: cat, Prefix: "lf", Controls: []string{"a", "a"}}, "twice"},
		{"shared variable", natsauth.Options{Catalog: cat, Prefix: "lf", Controls: []string{"ops-team", "ops_team"}}, "LF_PASS_CONTROL_OPS_TEAM"},
		{"shared variable by case", natsauth.Options{Catalog: cat, Prefix: "lf", Controls: []string{"Alice", "alice"}}, "LF_PASS_CONTROL_ALICE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := natsauth.Generate(tc.o)
			var oe *natsauth.OptionError
			if !errors.As(err, &oe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want an OptionError mentioning %q", err, tc.want)
			}
		})
	}
	// With nkeys, names are only file names: no variables to share.
	o := natsauth.Options{Catalog: cat, Prefix: "lf", Controls: []string{"ops-team", "ops_team"}, NKeyDir: t.TempDir()}
	if _, _, err := natsauth.Generate(o); err != nil {
		t.Errorf("nkeys for ops-team and ops_team: %v", err)
	}
}

func TestParseSlaves(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int64
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "1", want: []int64{1}},
		{in: "1,2, 3", want: []int64{1, 2, 3}},
		{in: "1-4", want: []int64{1, 2, 3, 4}},
		{in: "7,1-3,10", want: []int64{7, 1, 2, 3, 10}},
		{in: "5-5", want: []int64{5}},
		{in: "0", wantErr: true},
		{in: "-3", wantErr: true},
		{in: "3-1", wantErr: true},
		{in: "1-", wantErr: true},
		{in: "a", wantErr: true},
		{in: "1,1", wantErr: true},
		{in: "1-3,2", wantErr: true},
		{in: "1-100001", wantErr: true},
		{in: "1-9223372036854775807", wantErr: true},
	} {
		got, err := natsauth.ParseSlaves(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("ParseSlaves(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseControls(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "alice", want: []string{"alice"}},
		{in: "alice, bob,ops-team", want: []string{"alice", "bob", "ops-team"}},
		{in: "alice,alice", wantErr: true},
		{in: "a.b", wantErr: true},
		{in: "_x", wantErr: true},
		{in: "*", wantErr: true},
	} {
		got, err := natsauth.ParseControls(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("ParseControls(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		a          link.Address
		user, vari string
	}{
		{link.MasterAddress, "master", "LF_PASS_MASTER"},
		{link.Address{Type: messages.Slave, ID: "12"}, "slave-12", "LF_PASS_SLAVE_12"},
		{link.Address{Type: messages.Control, ID: "Ops-Team"}, "control-Ops-Team", "LF_PASS_CONTROL_OPS_TEAM"},
	} {
		if got := natsauth.UserName(tc.a); got != tc.user {
			t.Errorf("UserName(%s) = %q, want %q", tc.a, got, tc.user)
		}
		if got := natsauth.PasswordVar(natsauth.DefaultEnvPrefix, tc.a); got != tc.vari {
			t.Errorf("PasswordVar(%s) = %q, want %q", tc.a, got, tc.vari)
		}
	}
}
