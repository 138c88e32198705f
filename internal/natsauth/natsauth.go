// Package natsauth writes the nats-server authorization block that gives
// each endpoint of a Linkfabric cluster its own NATS user, allowed to
// publish and subscribe only the subjects of its own links
// (AllowLists), and the master what its JetStream buckets need
// (fabric.JetStreamAllowList). fabric nats-config prints it; the tests load the
// very same text into a real nats-server.
package natsauth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// DefaultEnvPrefix starts the name of every password variable.
const DefaultEnvPrefix = "LF_PASS_"

// MaxSlaves bounds how many slaves one configuration lists.
const MaxSlaves = 100000

// Options says which identities to write users for, and how they log in.
type Options struct {
	// Catalog is the cluster's message catalog, with its plugins: it says
	// which endpoint types talk to which.
	Catalog *messages.Catalog
	// Prefix is the clusters's subject prefix (FABRIC_SUBJECT_PREFIX).
	Prefix string
	// Slaves and Controls are the slave ids and control user names.
	// The master is always included.
	Slaves   []int64
	Controls []string
	// EnvPrefix starts the names of the environment variables that hold
	// the passwords, in nats-server's environment. Default DefaultEnvPrefix.
	EnvPrefix string
	// NKeyDir, if set, makes every user an nkey user instead: its seed is
	// read from NKeyDir/<user>.nk, or generated there if the file does
	// not exist.
	NKeyDir string
}

// Identity is one endpoint's user on the broker.
type Identity struct {
	Address link.Address
	// User is the NATS user name (FABRIC_NATS_USER): "master",
	// "slave-<id>" or "control-<user>". With nkeys it is only a name for
	// people and for the seed file.
	User string
	// PasswordVar is the environment variable of nats-server that holds
	// the user's password ("" with nkeys).
	PasswordVar string
	// NKey is the user's public nkey, and SeedFile where its seed is
	// (FABRIC_NATS_NKEY_SEED_FILE); both "" without nkeys.
	NKey, SeedFile string
	// Publish and Subscribe are the subjects the user may publish and
	// subscribe to.
	Publish, Subscribe []string
}

var (
	prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	envPattern    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// OptionError is an Options value that cannot be written: a bad prefix,
// id or name.
type OptionError struct{ Msg string }

func (e *OptionError) Error() string { return "natsauth: " + e.Msg }

func invalid(format string, args ...any) error {
	return &OptionError{Msg: fmt.Sprintf(format, args...)}
}

// UserName returns the NATS user name of an endpoint: "master",
// "slave-<id>" or "control-<user>".
func UserName(a link.Address) string {
	if a.Type == messages.Master {
		return "master"
	}
	return a.Type.String() + "-" + a.ID
}

// PasswordVar returns the name of the environment variable that holds an
// endpoint's password: envPrefix, then its type and id in upper case, with
// '-' as '_' (LF_PASS_MASTER, LF_PASS_SLAVE_1, LF_PASS_CONTROL_ALICE).
func PasswordVar(envPrefix string, a link.Address) string {
	if a.Type == messages.Master {
		return envPrefix + "MASTER"
	}
	return envPrefix + strings.ToUpper(a.Type.String()+"_"+strings.ReplaceAll(a.ID, "-", "_"))
}

// Identities returns the master's, each slave's and each control's user,
// in that order, generating nkey seeds if asked to and none exist yet.
func Identities(o Options) ([]Identity, error) {
	if o.Catalog == nil {
		return nil, invalid("no catalog")
	}
	if !prefixPattern.MatchString(o.Prefix) {
		return nil, invalid("subject prefix %q: want tokens of letters, digits, '-' and '_' separated by dots, such as lf or acme.lf", o.Prefix)
	}
	if o.EnvPrefix == "" {
		o.EnvPrefix = DefaultEnvPrefix
	}
	if o.NKeyDir == "" && !envPattern.MatchString(o.EnvPrefix) {
		return nil, invalid("variable prefix %q: want letters, digits and '_', not starting with a digit", o.EnvPrefix)
	}
	addrs := []link.Address{link.MasterAddress}
	for _, id := range o.Slaves {
		if id < 1 {
			return nil, invalid("slave id %d: want a positive integer", id)
		}
		addrs = append(addrs, link.Address{Type: messages.Slave, ID: strconv.FormatInt(id, 10)})
	}
	for _, u := range o.Controls {
		if !link.ValidID(u) {
			return nil, invalid("control user %q: want 1-64 letters, digits, '-' or '_', starting with a letter or digit", u)
		}
		addrs = append(addrs, link.Address{Type: messages.Control, ID: u})
	}
	var out []Identity
	users := map[string]link.Address{}
	vars := map[string]link.Address{}
	for _, a := range addrs {
		id := Identity{Address: a, User: UserName(a)}
		if prev, dup := users[id.User]; dup {
			return nil, invalid("%s is listed twice", prev)
		}
		users[id.User] = a
		if o.NKeyDir == "" {
			id.PasswordVar = PasswordVar(o.EnvPrefix, a)
			if prev, dup := vars[id.PasswordVar]; dup {
				return nil, invalid("%s and %s would share the password variable %s: rename one", prev, a, id.PasswordVar)
			}
			vars[id.PasswordVar] = a
		} else {
			id.SeedFile = filepath.Join(o.NKeyDir, id.User+".nk")
			pub, err := loadOrCreateSeed(id.SeedFile)
			if err != nil {
				return nil, err
			}
			id.NKey = pub
		}
		id.Publish, id.Subscribe = AllowLists(o.Catalog, o.Prefix, a)
		if a.Type == messages.Master {
			// The master keeps its state, and its lease, in JetStream.
			id.Publish = append(id.Publish, fabric.JetStreamAllowList(o.Prefix)...)
		}
		out = append(out, id)
	}
	return out, nil
}

// loadOrCreateSeed returns the public key of the user seed in path,
// writing a new seed there (mode 0600) if the file does not exist.
func loadOrCreateSeed(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", fmt.Errorf("natsauth: nkey directory: %w", err)
		}
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", fmt.Errorf("natsauth: new nkey: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return "", fmt.Errorf("natsauth: new nkey: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("natsauth: write nkey seed: %w", err)
		}
		_, err = f.Write(append(seed, '\n'))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("natsauth: write nkey seed: %w", err)
		}
		return kp.PublicKey()
	}
	if err != nil {
		return "", fmt.Errorf("natsauth: read nkey seed: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("natsauth: %s: not an nkey seed: %w", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("natsauth: %s: not a user nkey seed (it should start with SU)", path)
	}
	return pub, nil
}

// Write writes the authorization block for ids to w: a comment header
// that says what each endpoint sets, then
//
//	authorization { users = [ { user, password or nkey, permissions } ... ] }
//
// valid nats-server configuration that can be pasted into a server's file
// or included from it.
func Write(w io.Writer, o Options, ids []Identity) error {
	if o.EnvPrefix == "" {
		o.EnvPrefix = DefaultEnvPrefix
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Linkfabric: NATS authorization for the cluster with subject prefix %q,", o.Prefix)
	p("# generated by fabric nats-config. Each endpoint has its own user, which may")
	p("# publish and subscribe only the subjects of its own links (docs/protocol.md,")
	p("# \"Who may publish and subscribe what\").")
	p("#")
	if o.NKeyDir == "" {
		p("# Passwords are read from nats-server's environment: before starting it, set")
		p("# each $%s* variable below, best to a bcrypt hash (nats server passwd),", o.EnvPrefix)
		p("# else to a password of letters and digits that starts with a letter.")
		p("# Each endpoint sets its user and the clear password:")
	} else {
		p("# Users log in with nkeys; the seeds are in %s. Each endpoint sets:", o.NKeyDir)
	}
	p("#")
	for _, id := range ids {
		var vars []string
		switch id.Address.Type {
		case messages.Slave:
			vars = append(vars, "FABRIC_SLAVE_ID="+id.Address.ID)
		case messages.Control:
			vars = append(vars, "FABRIC_CONTROL_USER="+id.Address.ID)
		}
		if id.NKey == "" {
			vars = append(vars, "FABRIC_NATS_USER="+id.User, "FABRIC_NATS_PASSWORD=<password of $"+id.PasswordVar+">")
		} else {
			vars = append(vars, "FABRIC_NATS_NKEY_SEED_FILE="+id.SeedFile)
		}
		p("#   %-16s %s", describe(id.Address)+":", strings.Join(vars, " "))
	}
	p("#")
	p("# Every endpoint also sets FABRIC_NATS_URL and FABRIC_SUBJECT_PREFIX=%s, and with", o.Prefix)
	p("# TLS FABRIC_NATS_TLS_CA_FILE (plus FABRIC_NATS_TLS_CERT_FILE and")
	p("# FABRIC_NATS_TLS_KEY_FILE if the server verifies clients). The master checks")
	p("# each control's requests against FABRIC_CONTROL_PERMISSIONS, for the user its")
	p("# subjects name. Instances never connect to NATS. A plain NATS client acting")
	p("# as an endpoint logs in as its user and uses its inbox prefix")
	p("# (nats --inbox-prefix %s).", lfnats.InboxPrefix(o.Prefix, link.Address{Type: messages.Control, ID: "<user>"}))
	p("# No user has allow_responses: every response goes to a subject that the")
	p("# responder may publish anyway, and no one may read the default _INBOX.>.")
	p("# The master also may use JetStream on its two key-value buckets, %s and", fabric.StateBucket(o.Prefix))
	p("# %s, where it keeps its state and its lease: the server must run", fabric.LeaseBucket(o.Prefix))
	p("# JetStream, and every master of the cluster logs in as user master.")
	p("authorization {")
	p("  users = [")
	for i, id := range ids {
		p("    # %s", describe(id.Address))
		p("    {")
		if id.NKey != "" {
			p("      nkey: %s", quote(id.NKey))
		} else {
			p("      user: %s", quote(id.User))
			p("      password: $%s", id.PasswordVar)
		}
		p("      permissions: {")
		p("        publish: { allow: %s }", list(id.Publish))
		p("        subscribe: { allow: %s }", list(id.Subscribe))
		p("        allow_responses: false")
		p("      }")
		if i < len(ids)-1 {
			p("    },")
		} else {
			p("    }")
		}
	}
	p("  ]")
	p("}")
	_, err := io.WriteString(w, b.String())
	return err
}

// Generate returns the identities and the text Write writes for them.
func Generate(o Options) (string, []Identity, error) {
	ids, err := Identities(o)
	if err != nil {
		return "", nil, err
	}
	var b strings.Builder
	if err := Write(&b, o, ids); err != nil {
		return "", nil, err
	}
	return b.String(), ids, nil
}

func describe(a link.Address) string {
	if a.Type == messages.Master {
		return "master"
	}
	return a.Type.String() + " " + a.ID
}

// quote writes s as a configuration string. Every string written here is
// made of letters, digits and "._-*>$", which need no escaping in quotes
// (a $ there is not a variable).
func quote(s string) string { return `"` + s + `"` }

func list(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// ParseSlaves parses slave ids: "1,2,3", ranges such as "1-20", or both
// ("1-3,7"). Each id must be positive and listed once.
func ParseSlaves(s string) ([]int64, error) {
	var out []int64
	seen := map[int64]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		loText, hiText, isRange := strings.Cut(item, "-")
		lo, err1 := strconv.ParseInt(strings.TrimSpace(loText), 10, 64)
		hi, err2 := lo, error(nil)
		if isRange {
			hi, err2 = strconv.ParseInt(strings.TrimSpace(hiText), 10, 64)
		}
		if err1 != nil || err2 != nil || lo < 1 || hi < lo {
			return nil, fmt.Errorf("%q: want a positive slave id or a range such as 1-20", item)
		}
		if hi-lo >= MaxSlaves || len(out)+int(hi-lo+1) > MaxSlaves {
			return nil, fmt.Errorf("%q: at most %d slaves", item, MaxSlaves)
		}
		for id := lo; id <= hi; id++ {
			if seen[id] {
				return nil, fmt.Errorf("slave %d is listed twice", id)
			}
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// ParseControls parses control user names: "alice,bob". Each must be a
// valid id and listed once.
func ParseControls(s string) ([]string, error) {
	var out []string
	for u := range strings.SplitSeq(s, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !link.ValidID(u) {
			return nil, fmt.Errorf("%q: want 1-64 letters, digits, '-' or '_', starting with a letter or digit", u)
		}
		if slices.Contains(out, u) {
			return nil, fmt.Errorf("control %s is listed twice", u)
		}
		out = append(out, u)
	}
	return out, nil
}
