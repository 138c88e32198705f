package fabric_test

import (
	"context"
	"errors"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/messages"
)

func loadMaster(env []string) error  { _, err := fabric.LoadMasterConfig(env); return err }
func loadSlave(env []string) error   { _, err := fabric.LoadSlaveConfig(env); return err }
func loadControl(env []string) error { _, err := fabric.LoadControlConfig(env); return err }

// TestLoadConfigRejectsBadValues: each bad variable stops the endpoint at
// start with an error that matches ErrConfig and names the variable and
// the form it wants.
func TestLoadConfigRejectsBadValues(t *testing.T) {
	long := strings.Repeat("n", 129)
	for _, tc := range []struct {
		name    string
		load    func([]string) error
		env     string
		wantVar string
		form    string // how the error describes what is wanted
	}{
		{"master request timeout", loadMaster, "FABRIC_REQUEST_TIMEOUT=abc", "FABRIC_REQUEST_TIMEOUT", "duration"},
		{"slave request timeout", loadSlave, "FABRIC_REQUEST_TIMEOUT=abc", "FABRIC_REQUEST_TIMEOUT", "duration"},
		{"control request timeout", loadControl, "FABRIC_REQUEST_TIMEOUT=abc", "FABRIC_REQUEST_TIMEOUT", "duration"},
		{"zero request timeout", loadMaster, "FABRIC_REQUEST_TIMEOUT=0s", "FABRIC_REQUEST_TIMEOUT", "positive duration"},
		{"negative heartbeat", loadSlave, "FABRIC_HEARTBEAT_INTERVAL=-1s", "FABRIC_HEARTBEAT_INTERVAL", "positive duration"},
		{"peer timeout under two heartbeats", loadMaster, "FABRIC_PEER_TIMEOUT=3s", "FABRIC_PEER_TIMEOUT", "twice FABRIC_HEARTBEAT_INTERVAL"},
		{"negative slave id", loadSlave, "FABRIC_SLAVE_ID=-3", "FABRIC_SLAVE_ID", "positive integer"},
		{"zero slave id", loadSlave, "FABRIC_SLAVE_ID=0", "FABRIC_SLAVE_ID", "positive integer"},
		{"slave id not a number", loadSlave, "FABRIC_SLAVE_ID=three", "FABRIC_SLAVE_ID", "an integer"},
		{"slave name too long", loadSlave, "FABRIC_SLAVE_NAME=" + long, "FABRIC_SLAVE_NAME", "at most 128"},
		{"master log level", loadMaster, "FABRIC_LOG_LEVEL=loud", "FABRIC_LOG_LEVEL", "debug, info, warn or error"},
		{"slave log level", loadSlave, "FABRIC_LOG_LEVEL=loud", "FABRIC_LOG_LEVEL", "debug, info, warn or error"},
		{"control log level", loadControl, "FABRIC_LOG_LEVEL=loud", "FABRIC_LOG_LEVEL", "debug, info, warn or error"},
		{"log format", loadMaster, "FABRIC_LOG_FORMAT=xml", "FABRIC_LOG_FORMAT", "text or json"},
		{"listen on every interface", loadMaster, "FABRIC_NATS_LISTEN=0.0.0.0:4222", "FABRIC_NATS_LISTEN", "loopback"},
		{"listen on a public address", loadMaster, "FABRIC_NATS_LISTEN=192.0.2.7:4222", "FABRIC_NATS_LISTEN", "loopback"},
		{"listen without a port", loadMaster, "FABRIC_NATS_LISTEN=127.0.0.1", "FABRIC_NATS_LISTEN", "host:port"},
		{"listen on a port out of range", loadMaster, "FABRIC_NATS_LISTEN=127.0.0.1:70000", "FABRIC_NATS_LISTEN", "65535"},
		{"master NATS URL", loadMaster, "FABRIC_NATS_URL=not a url", "FABRIC_NATS_URL", "nats://"},
		{"slave NATS URL", loadSlave, "FABRIC_NATS_URL=not a url", "FABRIC_NATS_URL", "nats://"},
		{"control NATS URL", loadControl, "FABRIC_NATS_URL=not a url", "FABRIC_NATS_URL", "nats://"},
		{"NATS URL with a foreign scheme", loadSlave, "FABRIC_NATS_URL=http://127.0.0.1:4222", "FABRIC_NATS_URL", "nats://"},
		{"one bad URL in a list", loadSlave, "FABRIC_NATS_URL=nats://127.0.0.1:4222,nope", "FABRIC_NATS_URL", "nats://"},
		{"subject prefix with a wildcard", loadControl, "FABRIC_SUBJECT_PREFIX=lf.*", "FABRIC_SUBJECT_PREFIX", "without spaces or wildcards"},
		{"subject prefix of two tokens", loadMaster, "FABRIC_SUBJECT_PREFIX=acme.lf", "FABRIC_SUBJECT_PREFIX", "one subject token"},
		{"zero ping interval", loadSlave, "FABRIC_NATS_PING_INTERVAL=0s", "FABRIC_NATS_PING_INTERVAL", "at least 500ms"},
		{"ping interval under the minimum", loadControl, "FABRIC_NATS_PING_INTERVAL=400ms", "FABRIC_NATS_PING_INTERVAL", "at least 500ms"},
		{"missing credentials file", loadSlave, "FABRIC_NATS_CREDS_FILE=/nonexistent/lf.creds", "FABRIC_NATS_CREDS_FILE", "readable file"},
		{"instances not id:name", loadSlave, "FABRIC_SLAVE_INSTANCES=x:y", "FABRIC_SLAVE_INSTANCES", "id:name"},
		{"instance without a name", loadSlave, "FABRIC_SLAVE_INSTANCES=11:", "FABRIC_SLAVE_INSTANCES", "id:name"},
		{"instance listed twice", loadSlave, "FABRIC_SLAVE_INSTANCES=11:a,11:b", "FABRIC_SLAVE_INSTANCES", "listed twice"},
		{"relative program", loadSlave, "FABRIC_SLAVE_ALLOW_PROGRAMS=/bin/sh,sh", "FABRIC_SLAVE_ALLOW_PROGRAMS", "absolute paths"},
		{"program path not clean", loadSlave, "FABRIC_SLAVE_ALLOW_PROGRAMS=/bin/../bin/sh", "FABRIC_SLAVE_ALLOW_PROGRAMS", "absolute paths"},
		{"zero stop timeout", loadSlave, "FABRIC_SLAVE_STOP_TIMEOUT=0s", "FABRIC_SLAVE_STOP_TIMEOUT", "from 1ms to 1h"},
		{"permissions without =", loadMaster, "FABRIC_CONTROL_PERMISSIONS=bad", "FABRIC_CONTROL_PERMISSIONS", "user=permission"},
		{"permission that is no permission", loadMaster, "FABRIC_CONTROL_PERMISSIONS=alice=Core.Start", "FABRIC_CONTROL_PERMISSIONS", "prefix ending in .*"},
		{"control user with a space", loadControl, "FABRIC_CONTROL_USER=bad user", "FABRIC_CONTROL_USER", "letters, digits"},
		{"control user that is a subject wildcard", loadControl, "FABRIC_CONTROL_USER=*", "FABRIC_CONTROL_USER", "letters, digits"},
		{"zero lease", loadMaster, "FABRIC_MASTER_LEASE=0s", "FABRIC_MASTER_LEASE", "at least 100ms"},
		{"lease too short", loadMaster, "FABRIC_MASTER_LEASE=10ms", "FABRIC_MASTER_LEASE", "from 100ms to 1h"},
		{"lease not a duration", loadMaster, "FABRIC_MASTER_LEASE=soon", "FABRIC_MASTER_LEASE", "duration"},
		{"zero replicas", loadMaster, "FABRIC_KV_REPLICAS=0", "FABRIC_KV_REPLICAS", "1 to 5"},
		{"too many replicas", loadMaster, "FABRIC_KV_REPLICAS=7", "FABRIC_KV_REPLICAS", "1 to 5"},
		{"zero sessions per peer", loadMaster, "FABRIC_MAX_PEER_SESSIONS=0", "FABRIC_MAX_PEER_SESSIONS", "1 to 10000"},
		{"negative sessions per peer", loadMaster, "FABRIC_MAX_PEER_SESSIONS=-1", "FABRIC_MAX_PEER_SESSIONS", "1 to 10000"},
		{"replicas on the embedded server", loadMaster, "FABRIC_KV_REPLICAS=3", "FABRIC_KV_REPLICAS", "NATS cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load([]string{tc.env})
			if !errors.Is(err, fabric.ErrConfig) {
				t.Fatalf("%s: error %v, want one matching ErrConfig", tc.env, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.wantVar) || !strings.Contains(msg, tc.form) {
				t.Errorf("%s: error %q does not name %s and say %q", tc.env, msg, tc.wantVar, tc.form)
			}
		})
	}
}

// TestConfigReportsEveryBadField: one error names every bad variable, so
// an operator fixes them all at once.
func TestConfigReportsEveryBadField(t *testing.T) {
	_, err := fabric.LoadSlaveConfig([]string{"FABRIC_SLAVE_ID=-3", "FABRIC_LOG_LEVEL=loud", "FABRIC_SLAVE_INSTANCES=x:y", "FABRIC_NATS_URL=not a url"})
	if !errors.Is(err, fabric.ErrConfig) {
		t.Fatalf("error %v, want ErrConfig", err)
	}
	for _, v := range []string{"FABRIC_SLAVE_ID", "FABRIC_LOG_LEVEL", "FABRIC_SLAVE_INSTANCES", "FABRIC_NATS_URL"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
}

// A value that does not parse does not hide the values that parse but are
// wrong, and is itself reported once.
func TestConfigReportsParseAndValidationErrors(t *testing.T) {
	_, err := fabric.LoadControlConfig([]string{"FABRIC_REQUEST_TIMEOUT=abc", "FABRIC_LOG_LEVEL=loud", "FABRIC_CONTROL_USER=a b"})
	if !errors.Is(err, fabric.ErrConfig) {
		t.Fatalf("error %v, want ErrConfig", err)
	}
	for _, v := range []string{"FABRIC_REQUEST_TIMEOUT", "FABRIC_LOG_LEVEL", "FABRIC_CONTROL_USER"} {
		if n := strings.Count(err.Error(), v+"="); n != 1 {
			t.Errorf("error %q names %s %d times, want once", err, v, n)
		}
	}
}

// TestLoadConfigAcceptsGoodValues: values of the documented forms load.
func TestLoadConfigAcceptsGoodValues(t *testing.T) {
	m, err := fabric.LoadMasterConfig([]string{
		"FABRIC_NATS_URL=nats://127.0.0.1:4222, nats://127.0.0.1:4223",
		"FABRIC_NATS_LISTEN=0.0.0.0:4222", // not used: the URL is set
		"FABRIC_CONTROL_PERMISSIONS=alice=*; bob=core.instance.*,core.slave.list; *=core.instance.list",
		"FABRIC_REQUEST_TIMEOUT=1m30s",
		"FABRIC_LOG_LEVEL=DEBUG",
		"FABRIC_LOG_FORMAT=json",
	})
	if err != nil {
		t.Fatalf("LoadMasterConfig: %v", err)
	}
	if m.Timing.RequestTimeout != 90*time.Second || m.Log.Format != "json" {
		t.Errorf("master config %+v", m)
	}
	if want := (fabric.Grants{"alice": {"*"}, "bob": {"core.instance.*", "core.slave.list"}, "*": {"core.instance.list"}}); !reflect.DeepEqual(m.Grants, want) {
		t.Errorf("grants %v, want %v", m.Grants, want)
	}
	s, err := fabric.LoadSlaveConfig([]string{"FABRIC_SLAVE_ID=42", "FABRIC_SLAVE_NAME=north", "FABRIC_SLAVE_INSTANCES=101:alpha, 102:beta", "FABRIC_SUBJECT_PREFIX=acme_lf", "FABRIC_NATS_PING_INTERVAL=500ms",
		"FABRIC_SLAVE_ALLOW_PROGRAMS=/bin/sh,/opt/factorio/bin/x64/factorio", "FABRIC_SLAVE_STOP_TIMEOUT=30s"})
	if err != nil {
		t.Fatalf("LoadSlaveConfig: %v", err)
	}
	if s.ID != 42 || s.SlaveName() != "north" || s.NATS.Prefix != "acme_lf" || s.NATS.PingInterval != fabric.MinPingInterval ||
		!slices.Equal(s.AllowPrograms, []string{"/bin/sh", "/opt/factorio/bin/x64/factorio"}) || s.StopTimeout != 30*time.Second {
		t.Errorf("slave config %+v", s)
	}
	want := []messages.HostedInstance{{ID: 101, Name: "alpha", Status: messages.StatusStopped}, {ID: 102, Name: "beta", Status: messages.StatusStopped}}
	if !slices.Equal(s.Instances, want) {
		t.Errorf("instances %+v; want %+v", s.Instances, want)
	}
}

// TestConfigDefaults: with no variables set, each endpoint gets the
// defaults its configuration documents.
func TestConfigDefaults(t *testing.T) {
	nats := fabric.NATSConfig{Prefix: "lf", PingInterval: 5 * time.Second}
	timing := fabric.TimingConfig{RequestTimeout: 30 * time.Second, HeartbeatInterval: 2 * time.Second, PeerTimeout: 10 * time.Second, SessionTimeout: time.Minute}
	log := fabric.LogConfig{Level: "info", Format: "text"}

	m, err := fabric.LoadMasterConfig([]string{"HOME=/home/ann"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (fabric.MasterConfig{NATS: nats, Listen: "127.0.0.1:4222", Grants: fabric.AllGrants(), Timing: timing, Log: log,
		DataDir: "/home/ann/.local/state/linkfabric", KVReplicas: 1, Lease: 2 * time.Second, MaxPeerSessions: fabric.DefaultMaxPeerSessions}); !reflect.DeepEqual(m, want) {
		t.Errorf("master defaults %+v, want %+v", m, want)
	}
	m, err = fabric.LoadMasterConfig([]string{"HOME=/home/ann", "XDG_STATE_HOME=/var/state"})
	if err != nil || m.DataDir != "/var/state/linkfabric" {
		t.Errorf("with XDG_STATE_HOME, FABRIC_DATA_DIR defaults to %q (%v), want /var/state/linkfabric", m.DataDir, err)
	}
	s, err := fabric.LoadSlaveConfig([]string{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (fabric.SlaveConfig{NATS: nats, ID: 1, StopTimeout: 5 * time.Second, Timing: timing, Log: log}); !reflect.DeepEqual(s, want) {
		t.Errorf("slave defaults %+v, want %+v", s, want)
	}
	if s.SlaveName() != "slave-1" {
		t.Errorf("default slave name %q, want slave-1", s.SlaveName())
	}
	c, err := fabric.LoadControlConfig([]string{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (fabric.ControlConfig{NATS: nats, User: "admin", Timing: timing, Log: log}); c != want {
		t.Errorf("control defaults %+v, want %+v", c, want)
	}
}

// TestLoadConfigFromProcessEnvironment: a nil environ means the process's.
func TestLoadConfigFromProcessEnvironment(t *testing.T) {
	t.Setenv("FABRIC_SLAVE_ID", "7")
	t.Setenv("FABRIC_PEER_TIMEOUT", "20s")
	s, err := fabric.LoadSlaveConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != 7 || s.Timing.PeerTimeout != 20*time.Second {
		t.Errorf("slave config %+v, want id 7 and peer timeout 20s", s)
	}
	t.Setenv("FABRIC_SLAVE_ID", "-3")
	if _, err := fabric.LoadSlaveConfig(nil); !errors.Is(err, fabric.ErrConfig) {
		t.Errorf("FABRIC_SLAVE_ID=-3 in the environment: %v, want ErrConfig", err)
	}
}

// TestEndpointsRefuseBadConfig: the Start functions validate too, so a
// configuration built in code is held to the same rules.
func TestEndpointsRefuseBadConfig(t *testing.T) {
	ctx := testkit.Ctx(t, waitLong)
	good := testTiming()
	if _, err := fabric.StartMaster(ctx, fabric.MasterConfig{NATS: natsConfig(""), Listen: "0.0.0.0:0", Grants: fabric.AllGrants(), Timing: good, Log: logConfig()}); !errors.Is(err, fabric.ErrConfig) {
		t.Errorf("StartMaster listening on 0.0.0.0: %v, want ErrConfig", err)
	}
	if _, err := fabric.StartSlave(ctx, fabric.SlaveConfig{NATS: natsConfig(""), ID: -3, Timing: good, Log: logConfig()}); !errors.Is(err, fabric.ErrConfig) {
		t.Errorf("StartSlave with id -3: %v, want ErrConfig", err)
	}
	if _, err := fabric.DialControl(ctx, fabric.ControlConfig{NATS: natsConfig(""), User: "", Timing: good, Log: logConfig()}); !errors.Is(err, fabric.ErrConfig) {
		t.Errorf("DialControl without a user: %v, want ErrConfig", err)
	}
}

// TestGrantsAllows: grants by name, by prefix and to everyone.
func TestGrantsAllows(t *testing.T) {
	p, err := fabric.ParseGrants("alice=*; bob=core.instance.*, core.slave.list; carol=core.instance.start; *=core.instance.list")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, permission string
		want             bool
	}{
		{"alice", "core.instance.start", true},
		{"alice", "global_chat:send", true},
		{"bob", "core.instance.start", true},
		{"bob", "core.instance.send_command", true},
		{"bob", "core.slave.list", true},
		{"bob", "core.slave.generate_token", false},
		{"bob", "core.instance", false}, // a prefix grant covers what is under it, not itself
		{"bob", "core.instances.start", false},
		{"carol", "core.instance.start", true},
		{"carol", "core.instance.stop", false},
		{"carol", "core.instance.list", true}, // granted to everyone
		{"dave", "core.instance.list", true},
		{"dave", "core.instance.start", false},
		{"dave", messages.Unrestricted, true},
		{"", "core.instance.start", false},
	} {
		if got := p.Allows(tc.user, tc.permission); got != tc.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tc.user, tc.permission, got, tc.want)
		}
	}

	none, err := fabric.ParseGrants("")
	if err != nil {
		t.Fatal(err)
	}
	if none.Allows("alice", "core.slave.list") || !none.Allows("alice", messages.Unrestricted) {
		t.Error("empty permissions: want only unrestricted requests allowed")
	}
}

// TestParseGrantsRejects: malformed grants are errors.
func TestParseGrantsRejects(t *testing.T) {
	for _, s := range []string{
		"bad",
		"=core.slave.list",
		"bad user=*",
		"alice=Core.Start",
		"alice=core.*.start",
		"alice=core.instance.",
		"alice=**",
		"alice=core instance",
	} {
		if _, err := fabric.ParseGrants(s); err == nil {
			t.Errorf("ParseGrants(%q) accepted it", s)
		}
	}
}

// TestStartBrokerRefusesNonLoopback: the embedded broker listens on
// loopback only, and says so.
func TestStartBrokerRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.7:0", "example.com:0", "127.0.0.1", "127.0.0.1:99999"} {
		b, err := fabric.StartBroker(addr, "")
		if err == nil {
			b.Close()
			t.Errorf("StartBroker(%q) started a broker", addr)
			continue
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("StartBroker(%q): error %q does not name the address", addr, err)
		}
	}
	b := startBroker(t)
	if url := b.ClientURL(); !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Errorf("ClientURL() = %q, want nats://127.0.0.1:<port>", url)
	}
	b.Close()
	b.Close() // idempotent
}

// TestNilOptionsRefused: a nil instance factory or logger is refused
// when the endpoint starts.
func TestNilOptionsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	b := startBroker(t)
	if _, err := fabric.StartSlave(ctx, slaveConfig(b.ClientURL(), 1, ""), fabric.WithInstanceFactory(nil)); err == nil {
		t.Error("StartSlave with a nil instance factory: no error")
	}
	if _, err := fabric.DialControl(ctx, fabric.ControlConfig{NATS: natsConfig(b.ClientURL()), User: "alice", Timing: testTiming(), Log: logConfig()}, fabric.WithLogger(nil)); err == nil {
		t.Error("DialControl with a nil logger: no error")
	}
}

// TestMasterRefusesUnknownPermissions: a permission that no message of
// the master's catalog needs (a typo, a plugin the master lacks) stops
// the master at start, naming it; a plugin's own permission is known.
func TestMasterRefusesUnknownPermissions(t *testing.T) {
	ctx := testkit.Ctx(t, waitLong)
	for _, perms := range []fabric.Grants{{"alice": {"core.instanse.start"}}, {"bob": {"core.slave.list", "storage:*"}}, {"*": {"nosuch.*"}}} {
		_, err := fabric.StartMaster(ctx, fabric.MasterConfig{NATS: natsConfig(""), Listen: "127.0.0.1:0", Grants: perms, Timing: testTiming(), Log: logConfig()})
		if !errors.Is(err, fabric.ErrConfig) || !strings.Contains(err.Error(), "FABRIC_CONTROL_PERMISSIONS") {
			t.Errorf("permissions %q: %v, want ErrConfig naming FABRIC_CONTROL_PERMISSIONS", perms, err)
		}
	}
	p, err := fabric.ParseGrants("alice=core.instance.*,storage.save;bob=*;*=core.slave.list")
	if err != nil {
		t.Fatal(err)
	}
	plugin := messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "storage:save", Links: []messages.Direction{messages.ControlToMaster}, Permission: "storage.save"})
	catalog, err := messages.NewCatalog(messages.Plugin{Name: "storage", Messages: []messages.Message{plugin}})
	if err != nil {
		t.Fatal(err)
	}
	if unknown := p.Unknown(catalog); len(unknown) != 0 {
		t.Errorf("Unknown with the plugin = %q, want none", unknown)
	}
	core, _ := messages.NewCatalog()
	if unknown := p.Unknown(core); len(unknown) != 1 || unknown[0] != "storage.save" {
		t.Errorf("Unknown without the plugin = %q, want [storage.save]", unknown)
	}
}

// TestMasterTakenPort: an embedded NATS port or a metrics port that
// another process holds fails at once, as a configuration error that says
// so.
func TestMasterTakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	ctx := testkit.Ctx(t, waitLong)
	b := startBroker(t)
	for _, cfg := range []fabric.MasterConfig{
		{NATS: natsConfig(""), Listen: taken, Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()},
		{NATS: natsConfig(b.ClientURL()), Listen: "127.0.0.1:0", MetricsAddr: taken, Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()},
	} {
		start := time.Now()
		m, err := fabric.StartMaster(ctx, cfg, fabric.WithLogger(testLogger()))
		if err == nil {
			cctx, cancel := closeCtx()
			_ = m.Close(cctx)
			cancel()
		}
		if !errors.Is(err, fabric.ErrConfig) || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("listen %q, metrics %q: %v, want ErrConfig saying address already in use", cfg.Listen, cfg.MetricsAddr, err)
		}
		t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
}

// The default configurations are the ones the variables' defaults give,
// valid as they are, so that an embedder can start from them.
func TestDefaultConfigs(t *testing.T) {
	m, err := fabric.LoadMasterConfig([]string{"FABRIC_DATA_DIR=/x"})
	if err != nil {
		t.Fatal(err)
	}
	m.DataDir = ""
	if d := fabric.DefaultMasterConfig(); !reflect.DeepEqual(d, m) || d.Validate() != nil {
		t.Errorf("DefaultMasterConfig() = %+v (%v), want %+v", d, d.Validate(), m)
	}
	s, err := fabric.LoadSlaveConfig([]string{})
	if err != nil {
		t.Fatal(err)
	}
	if d := fabric.DefaultSlaveConfig(); !reflect.DeepEqual(d, s) || d.Validate() != nil {
		t.Errorf("DefaultSlaveConfig() = %+v (%v), want %+v", d, d.Validate(), s)
	}
	c, err := fabric.LoadControlConfig([]string{})
	if err != nil {
		t.Fatal(err)
	}
	if d := fabric.DefaultControlConfig(); !reflect.DeepEqual(d, c) || d.Validate() != nil {
		t.Errorf("DefaultControlConfig() = %+v (%v), want %+v", d, d.Validate(), c)
	}
}

// Typed fields are checked as their variables are: a bad table of grants
// or list of instances built in code is a configuration error that names
// the variable.
func TestValidateTypedFields(t *testing.T) {
	m := fabric.DefaultMasterConfig()
	m.Grants = fabric.Grants{"a b": {"*"}}
	if err := m.Validate(); !errors.Is(err, fabric.ErrConfig) || !strings.Contains(err.Error(), "FABRIC_CONTROL_PERMISSIONS") {
		t.Errorf("grants to %q: %v", "a b", err)
	}
	m.Grants = fabric.Grants{"alice": {"core.instance.*x"}}
	if err := m.Validate(); !errors.Is(err, fabric.ErrConfig) {
		t.Errorf("a malformed permission: %v", err)
	}
	s := fabric.DefaultSlaveConfig()
	for _, bad := range [][]messages.HostedInstance{
		{{ID: 0, Name: "zero"}},
		{{ID: 1, Name: ""}},
		{{ID: 1, Name: "a"}, {ID: 1, Name: "b"}},
	} {
		s.Instances = bad
		if err := s.Validate(); !errors.Is(err, fabric.ErrConfig) || !strings.Contains(err.Error(), "FABRIC_SLAVE_INSTANCES") {
			t.Errorf("instances %+v: %v", bad, err)
		}
	}
}
