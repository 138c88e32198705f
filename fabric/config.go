package fabric

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v10"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/console"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// ErrConfig is matched (with errors.Is) by every configuration error.
var ErrConfig = errors.New("fabric: bad configuration")

// NATSConfig says how an endpoint reaches NATS and who it is there.
type NATSConfig struct {
	// URL lists the NATS servers, comma-separated. Empty: the master starts
	// an embedded server; slaves and controls use nats://127.0.0.1:4222.
	URL string `env:"FABRIC_NATS_URL"`
	// Prefix is the first token of every subject, so several clusters can
	// share a broker.
	Prefix string `env:"FABRIC_SUBJECT_PREFIX" envDefault:"lf"`
	// User and Password authenticate with a user/password pair.
	User     string `env:"FABRIC_NATS_USER"`
	Password string `env:"FABRIC_NATS_PASSWORD"`
	// Token authenticates with a token.
	Token string `env:"FABRIC_NATS_TOKEN"`
	// NKeySeedFile authenticates with the nkey whose seed the file holds.
	NKeySeedFile string `env:"FABRIC_NATS_NKEY_SEED_FILE"`
	// CredsFile authenticates with a decentralized-auth .creds file.
	CredsFile string `env:"FABRIC_NATS_CREDS_FILE"`
	// TLSCAFile, if set, is the CA that signs the servers' certificates.
	TLSCAFile string `env:"FABRIC_NATS_TLS_CA_FILE"`
	// TLSCertFile and TLSKeyFile, if set, are this endpoint's client certificate.
	TLSCertFile string `env:"FABRIC_NATS_TLS_CERT_FILE"`
	TLSKeyFile  string `env:"FABRIC_NATS_TLS_KEY_FILE"`
	// PingInterval is how often the client pings its server; two missed
	// pings mark a half-open connection dead.
	PingInterval time.Duration `env:"FABRIC_NATS_PING_INTERVAL" envDefault:"5s"`
}

// TimingConfig holds the intervals of requests and liveness.
type TimingConfig struct {
	// RequestTimeout bounds a request that has no deadline of its own.
	RequestTimeout time.Duration `env:"FABRIC_REQUEST_TIMEOUT" envDefault:"30s"`
	// HeartbeatInterval is how often slaves and following controls ping
	// the master.
	HeartbeatInterval time.Duration `env:"FABRIC_HEARTBEAT_INTERVAL" envDefault:"2s"`
	// PeerTimeout is how long the master waits without hearing from a slave
	// before it shows the slave as not connected, and a slave without an
	// answer from the master before it tells its instances the master is
	// gone.
	PeerTimeout time.Duration `env:"FABRIC_PEER_TIMEOUT" envDefault:"10s"`
	// SessionTimeout is how long a session outlives a silent peer: within
	// it, what was sent meanwhile is delivered when the peer is back
	// (nothing lost, nothing twice); past it the session is over, pending
	// requests fail with session_lost, and slaves register again.
	SessionTimeout time.Duration `env:"FABRIC_SESSION_TIMEOUT" envDefault:"60s"`
}

// LogConfig says what the endpoint logs and how.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `env:"FABRIC_LOG_LEVEL" envDefault:"info"`
	// Format is text or json.
	Format string `env:"FABRIC_LOG_FORMAT" envDefault:"text"`
}

// MasterConfig configures the master.
type MasterConfig struct {
	NATS NATSConfig
	// Listen is the address of the embedded NATS server when NATS.URL is
	// empty. It must be a loopback address; port 0 picks a free port.
	Listen string `env:"FABRIC_NATS_LISTEN" envDefault:"127.0.0.1:4222"`
	// Grants says which control users hold which permissions (see
	// Grants); nil grants none. FABRIC_CONTROL_PERMISSIONS writes it
	// "user=perm,perm;user=perm" (ParseGrants).
	Grants Grants `env:"FABRIC_CONTROL_PERMISSIONS" envDefault:"*=*"`
	// MetricsAddr, if set, is the host:port where Prometheus metrics are
	// served on /metrics.
	MetricsAddr string `env:"FABRIC_METRICS_ADDR"`
	// DataDir is where the embedded NATS server (NATS.URL empty) keeps
	// JetStream's files, and with them the master's state. Empty: a
	// temporary directory that does not outlive the master;
	// LoadMasterConfig puts DefaultDataDir there when the variable is
	// not set.
	DataDir string `env:"FABRIC_DATA_DIR"`
	// KVReplicas is how many servers of a NATS cluster keep a copy of the
	// master's state (the replicas of its JetStream buckets): 1 to 5, and
	// 1 with the embedded server. 0 means 1.
	KVReplicas int `env:"FABRIC_KV_REPLICAS" envDefault:"1"`
	// Lease is how long the active master's lease lasts without being
	// renewed: a standby takes over at most this long after the active
	// master stopped renewing it (it crashed, hung, or lost NATS). Every
	// master of a cluster must have the same. 0 means DefaultLease.
	Lease time.Duration `env:"FABRIC_MASTER_LEASE" envDefault:"2s"`
	// MaxPeerSessions bounds the sessions of one slave or control
	// address the master keeps links to at once, so that one identity
	// naming a fresh session in each message cannot make it keep a link
	// for each: a new session beyond it replaces the oldest that never
	// showed it is a live fabric peer and has no request in flight, or,
	// if every one has, is refused with unavailable (the client tries
	// again). 0 means DefaultMaxPeerSessions.
	MaxPeerSessions int `env:"FABRIC_MAX_PEER_SESSIONS" envDefault:"16"`
	// Console configures the web console the master serves.
	Console ConsoleConfig
	Timing  TimingConfig
	Log     LogConfig
}

// ConsoleConfig configures the web console (package console): a page the
// master serves, from which a browser is a control endpoint of its own,
// talking to the master over NATS through a WebSocket listener.
type ConsoleConfig struct {
	// Addr, if set, is the host:port where the master serves the page.
	// Empty: no console.
	Addr string `env:"FABRIC_CONSOLE_ADDR"`
	// NATSURL is the NATS WebSocket URLs (ws:// or wss://, comma-separated)
	// the page connects to, and the only places it may connect to. Empty:
	// the embedded server's WebSocket listener; with FABRIC_NATS_URL it
	// must be set (the servers' websocket { } blocks, see deploy/nats).
	NATSURL string `env:"FABRIC_CONSOLE_NATS_URL"`
	// WSListen is where the embedded NATS server accepts WebSocket
	// clients, a loopback host:port (port 0 picks a free one). Empty:
	// nowhere, unless the console is on, and then a free port on the
	// host of FABRIC_NATS_LISTEN. A fixed port lets an open page
	// reconnect across a restart of the master that embeds the server.
	WSListen string `env:"FABRIC_NATS_WS_LISTEN"`
}

// servers returns the WebSocket URLs of NATSURL, or nil.
func (c ConsoleConfig) servers() []string {
	var out []string
	for u := range strings.SplitSeq(c.NATSURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func (c MasterConfig) validateConsole() []error {
	var errs []error
	errs = append(errs, checkHostPort("FABRIC_CONSOLE_ADDR", c.Console.Addr)...)
	if c.Console.NATSURL != "" {
		if err := console.CheckServers(c.Console.servers()); err != nil {
			errs = append(errs, fmt.Errorf("FABRIC_CONSOLE_NATS_URL=%q: want ws:// or wss:// URLs, comma-separated, such as wss://nats1.example:443", c.Console.NATSURL))
		}
	} else if c.Console.Addr != "" && c.NATS.URL != "" {
		errs = append(errs, fmt.Errorf("FABRIC_CONSOLE_NATS_URL is not set: with FABRIC_NATS_URL, the console needs the WebSocket URLs of those servers (their websocket { } blocks), such as wss://nats1.example:443"))
	}
	if c.Console.WSListen != "" {
		switch {
		case c.NATS.URL != "":
			errs = append(errs, fmt.Errorf("FABRIC_NATS_WS_LISTEN=%q: only the embedded NATS server listens, and FABRIC_NATS_URL is set", c.Console.WSListen))
		case c.Console.Addr == "":
			// nats-server checks a browser's Origin only against a list;
			// without the console's origin to list, it would admit a page
			// of any web site the user visits.
			errs = append(errs, fmt.Errorf("FABRIC_NATS_WS_LISTEN=%q: needs FABRIC_CONSOLE_ADDR: the WebSocket listener admits browsers only from the console's origin, and with no console it would admit every page", c.Console.WSListen))
		default:
			if err := checkLoopback(c.Console.WSListen); err != nil {
				errs = append(errs, fmt.Errorf("FABRIC_NATS_WS_LISTEN=%q: %v", c.Console.WSListen, err))
			}
		}
	}
	return errs
}

// DefaultLease is the master's lease unless FABRIC_MASTER_LEASE says
// otherwise: short enough that a standby takes over within a few seconds
// of the active master's crash, long enough that a renewal (a JetStream
// write, a round trip to the cluster) fits in it four times over.
const DefaultLease = 2 * time.Second

// DefaultMaxPeerSessions is MaxPeerSessions unless
// FABRIC_MAX_PEER_SESSIONS says otherwise: far more than a slave (one
// process, and for a while the one before it) or a user's controls hold
// at once.
const DefaultMaxPeerSessions = lfnats.DefaultMaxPeerSessions

// maxPeerSessions returns the configured bound, or DefaultMaxPeerSessions.
func (c MasterConfig) maxPeerSessions() int {
	if c.MaxPeerSessions == 0 {
		return DefaultMaxPeerSessions
	}
	return c.MaxPeerSessions
}

// lease returns the configured lease, or DefaultLease.
func (c MasterConfig) lease() time.Duration {
	if c.Lease == 0 {
		return DefaultLease
	}
	return c.Lease
}

// replicas returns the configured replicas, or 1.
func (c MasterConfig) replicas() int { return max(c.KVReplicas, 1) }

// DefaultDataDir returns the data directory of `fabric master` unless
// FABRIC_DATA_DIR says otherwise, for environ (in the form of os.Environ;
// nil means the process environment): linkfabric in the user's state
// directory, $XDG_STATE_HOME or $HOME/.local/state.
func DefaultDataDir(environ []string) string {
	if environ == nil {
		environ = os.Environ()
	}
	vars := env.ToMap(environ)
	if d := vars["XDG_STATE_HOME"]; filepath.IsAbs(d) {
		return filepath.Join(d, "linkfabric")
	}
	if home := vars["HOME"]; filepath.IsAbs(home) {
		return filepath.Join(home, ".local", "state", "linkfabric")
	}
	return filepath.Join(os.TempDir(), "linkfabric-"+strconv.Itoa(os.Getuid()))
}

// SlaveConfig configures a slave.
type SlaveConfig struct {
	NATS NATSConfig
	// ID is the slave's id, unique in the cluster.
	ID int64 `env:"FABRIC_SLAVE_ID" envDefault:"1"`
	// Name is the slave's name for people; empty means "slave-<id>".
	Name string `env:"FABRIC_SLAVE_NAME"`
	// Instances are the instances the slave hosts from the start.
	// FABRIC_SLAVE_INSTANCES writes them "id:name,id:name"
	// (ParseInstances).
	Instances []messages.HostedInstance `env:"FABRIC_SLAVE_INSTANCES"`
	// AllowPrograms are the programs the slave's instances may run, by
	// absolute path: an instance whose program (messages.Program) is not
	// one of them, literally, is neither assigned to nor started on this
	// slave. Empty, the default, allows none.
	// FABRIC_SLAVE_ALLOW_PROGRAMS writes them comma-separated.
	AllowPrograms []string `env:"FABRIC_SLAVE_ALLOW_PROGRAMS"`
	// StopTimeout bounds how long a program has to exit after SIGTERM
	// before it is killed (SIGKILL), with the rest of its process group;
	// 0 means DefaultStopTimeout.
	StopTimeout time.Duration `env:"FABRIC_SLAVE_STOP_TIMEOUT" envDefault:"5s"`
	// MetricsAddr, if set, is the host:port where Prometheus metrics are
	// served on /metrics.
	MetricsAddr string `env:"FABRIC_METRICS_ADDR"`
	Timing      TimingConfig
	Log         LogConfig
}

// ControlConfig configures a control client.
type ControlConfig struct {
	NATS NATSConfig
	// User is the control's user name, its address on the fabric. Where
	// the broker enforces identities, it must match the credentials.
	User   string `env:"FABRIC_CONTROL_USER" envDefault:"admin"`
	Timing TimingConfig
	Log    LogConfig
}

// DefaultMasterConfig returns the master's configuration as
// LoadMasterConfig gives it when no variable is set, except DataDir,
// which stays empty: the embedded server keeps its files in a temporary
// directory that does not outlive the master. It is the configuration to
// start from in code; it listens on 127.0.0.1:4222 and grants every
// control user everything (Grants).
func DefaultMasterConfig() MasterConfig {
	var c MasterConfig
	defaults(&c)
	return c
}

// DefaultSlaveConfig returns a slave's configuration as LoadSlaveConfig
// gives it when no variable is set: slave 1, hosting no instance, of a
// master on nats://127.0.0.1:4222.
func DefaultSlaveConfig() SlaveConfig {
	var c SlaveConfig
	defaults(&c)
	return c
}

// DefaultControlConfig returns a control's configuration as
// LoadControlConfig gives it when no variable is set: user admin, of a
// master on nats://127.0.0.1:4222.
func DefaultControlConfig() ControlConfig {
	var c ControlConfig
	defaults(&c)
	return c
}

// defaults fills dst with the defaults its tags declare.
func defaults(dst any) {
	if err := env.ParseWithOptions(dst, env.Options{Environment: map[string]string{}, FuncMap: textForms()}); err != nil {
		panic("fabric: a default does not parse: " + err.Error()) // the tags are wrong
	}
}

// LoadMasterConfig reads the master's configuration from environ (in the
// form of os.Environ; nil means the process environment) and validates it.
//
// FABRIC_DATA_DIR defaults to DefaultDataDir(environ), and FABRIC_MASTER_LEASE,
// FABRIC_KV_REPLICAS and FABRIC_MAX_PEER_SESSIONS, unlike the fields they
// fill, may not be 0.
func LoadMasterConfig(environ []string) (MasterConfig, error) {
	var c MasterConfig
	err := load(&c, environ, func() error {
		var errs []error
		if c.Lease == 0 {
			errs = append(errs, errors.New("FABRIC_MASTER_LEASE=0s: want a duration of at least 100ms such as 2s"))
		}
		if c.KVReplicas == 0 {
			errs = append(errs, errors.New("FABRIC_KV_REPLICAS=0: want 1 to 5"))
		}
		if c.MaxPeerSessions == 0 {
			errs = append(errs, errors.New("FABRIC_MAX_PEER_SESSIONS=0: want 1 to 10000"))
		}
		return errors.Join(append(errs, c.Validate(), c.NATS.validateVariables())...)
	})
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir(environ)
	}
	return c, err
}

// LoadSlaveConfig reads a slave's configuration from environ (nil means the
// process environment) and validates it.
//
// FABRIC_SLAVE_STOP_TIMEOUT, unlike the field it fills, may not be 0.
func LoadSlaveConfig(environ []string) (SlaveConfig, error) {
	var c SlaveConfig
	err := load(&c, environ, func() error {
		var errs []error
		if c.StopTimeout == 0 {
			errs = append(errs, errors.New("FABRIC_SLAVE_STOP_TIMEOUT=0s: want a duration from 1ms to 1h, such as 5s"))
		}
		return errors.Join(append(errs, c.Validate(), c.NATS.validateVariables())...)
	})
	return c, err
}

// DefaultStopTimeout is how long a program has to exit after SIGTERM
// when SlaveConfig.StopTimeout is 0.
const DefaultStopTimeout = 5 * time.Second

// stopTimeout returns StopTimeout, or its default.
func (c SlaveConfig) stopTimeout() time.Duration {
	if c.StopTimeout == 0 {
		return DefaultStopTimeout
	}
	return c.StopTimeout
}

// LoadControlConfig reads a control's configuration from environ (nil
// means the process environment) and validates it.
func LoadControlConfig(environ []string) (ControlConfig, error) {
	var c ControlConfig
	err := load(&c, environ, func() error { return errors.Join(c.Validate(), c.NATS.validateVariables()) })
	return c, err
}

// Validate reports every bad field, each by its variable's name and the
// form it should take.
func (c MasterConfig) Validate() error {
	errs := append(c.NATS.validate(), c.Timing.validate()...)
	errs = append(errs, c.Log.validate()...)
	if c.NATS.URL == "" {
		if err := checkLoopback(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("FABRIC_NATS_LISTEN=%q: %v", c.Listen, err))
		}
	}
	if err := c.Grants.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("FABRIC_CONTROL_PERMISSIONS=%q: %v", c.Grants.String(), err))
	}
	errs = append(errs, checkMetricsAddr(c.MetricsAddr)...)
	errs = append(errs, c.validateConsole()...)
	switch {
	case c.KVReplicas < 0 || c.KVReplicas > 5:
		errs = append(errs, fmt.Errorf("FABRIC_KV_REPLICAS=%d: want 1 to 5", c.KVReplicas))
	case c.KVReplicas > 1 && c.NATS.URL == "":
		errs = append(errs, fmt.Errorf("FABRIC_KV_REPLICAS=%d: the embedded NATS server keeps one copy; more need a NATS cluster (FABRIC_NATS_URL)", c.KVReplicas))
	}
	if c.MaxPeerSessions < 0 || c.MaxPeerSessions > 10000 {
		errs = append(errs, fmt.Errorf("FABRIC_MAX_PEER_SESSIONS=%d: want 1 to 10000", c.MaxPeerSessions))
	}
	if c.Lease < 0 || (c.Lease > 0 && c.Lease < 100*time.Millisecond) || c.Lease > time.Hour {
		errs = append(errs, fmt.Errorf("FABRIC_MASTER_LEASE=%s: want a duration from 100ms to 1h, such as 2s", c.Lease))
	}
	return joinConfig(errs)
}

// Validate reports every bad field, each by its variable's name and the
// form it should take.
func (c SlaveConfig) Validate() error {
	errs := append(c.NATS.validate(), c.Timing.validate()...)
	errs = append(errs, c.Log.validate()...)
	if c.ID < 1 {
		errs = append(errs, fmt.Errorf("FABRIC_SLAVE_ID=%d: want a positive integer", c.ID))
	}
	if len(c.Name) > 128 {
		errs = append(errs, errors.New("FABRIC_SLAVE_NAME: want at most 128 characters"))
	}
	if err := validInstances(c.Instances); err != nil {
		errs = append(errs, fmt.Errorf("FABRIC_SLAVE_INSTANCES: %v", err))
	}
	for _, p := range c.AllowPrograms {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p {
			errs = append(errs, fmt.Errorf("FABRIC_SLAVE_ALLOW_PROGRAMS: %q: want absolute paths such as /usr/bin/factorio, comma-separated", p))
			break
		}
	}
	if c.StopTimeout < 0 || c.StopTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("FABRIC_SLAVE_STOP_TIMEOUT=%s: want a duration from 1ms to 1h, such as 5s", c.StopTimeout))
	}
	errs = append(errs, checkMetricsAddr(c.MetricsAddr)...)
	return joinConfig(errs)
}

// Validate reports every bad field, each by its variable's name and the
// form it should take.
func (c ControlConfig) Validate() error {
	errs := append(c.NATS.validate(), c.Timing.validate()...)
	errs = append(errs, c.Log.validate()...)
	if !link.ValidID(c.User) {
		errs = append(errs, fmt.Errorf("FABRIC_CONTROL_USER=%q: want 1-64 letters, digits, '-' or '_', starting with a letter or digit", c.User))
	}
	return joinConfig(errs)
}

// SlaveName returns the configured name, or "slave-<id>".
func (c SlaveConfig) SlaveName() string {
	if c.Name != "" {
		return c.Name
	}
	return "slave-" + strconv.FormatInt(c.ID, 10)
}

func (c NATSConfig) validate() []error {
	var errs []error
	if c.URL != "" {
		for _, u := range strings.Split(c.URL, ",") {
			u = strings.TrimSpace(u)
			p, err := url.Parse(u)
			if err != nil || p.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, p.Scheme) {
				errs = append(errs, fmt.Errorf("FABRIC_NATS_URL=%q: want comma-separated URLs such as nats://127.0.0.1:4222", c.URL))
				break
			}
		}
	}
	if c.Prefix == "" || strings.ContainsAny(c.Prefix, " \t*>") || strings.HasPrefix(c.Prefix, ".") || strings.HasSuffix(c.Prefix, ".") {
		errs = append(errs, fmt.Errorf("FABRIC_SUBJECT_PREFIX=%q: want a subject token such as lf, without spaces or wildcards", c.Prefix))
	}
	if (c.User == "") != (c.Password == "") {
		errs = append(errs, errors.New("FABRIC_NATS_USER and FABRIC_NATS_PASSWORD: set both or neither"))
	}
	methods := 0
	for _, set := range []bool{c.User != "", c.Token != "", c.NKeySeedFile != "", c.CredsFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		errs = append(errs, errors.New("FABRIC_NATS_USER, FABRIC_NATS_TOKEN, FABRIC_NATS_NKEY_SEED_FILE, FABRIC_NATS_CREDS_FILE: set at most one way to authenticate"))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("FABRIC_NATS_TLS_CERT_FILE and FABRIC_NATS_TLS_KEY_FILE: set both or neither"))
	}
	for name, path := range map[string]string{
		"FABRIC_NATS_NKEY_SEED_FILE": c.NKeySeedFile, "FABRIC_NATS_CREDS_FILE": c.CredsFile,
		"FABRIC_NATS_TLS_CA_FILE": c.TLSCAFile, "FABRIC_NATS_TLS_CERT_FILE": c.TLSCertFile, "FABRIC_NATS_TLS_KEY_FILE": c.TLSKeyFile,
	} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want a readable file: %v", name, path, err))
		}
	}
	if c.PingInterval < MinPingInterval {
		errs = append(errs, fmt.Errorf("FABRIC_NATS_PING_INTERVAL=%s: want at least %s, such as 5s: shorter, a busy machine misses pings and drops healthy connections", c.PingInterval, MinPingInterval))
	}
	return errs
}

// MinPingInterval is the shortest FABRIC_NATS_PING_INTERVAL: two missed
// pings drop a connection, and a loaded machine can be late by a few
// hundred milliseconds without being dead.
const MinPingInterval = 500 * time.Millisecond

// validateVariables checks what the environment variables promise beyond
// what Validate checks of a configuration built in code: the subject
// prefix is one token, as README says, so that subjects keep one shape
// and the names of the users and permissions that fabric nats-config
// prints stay simple. Programs may still give several tokens (acme.lf).
func (c NATSConfig) validateVariables() error {
	if strings.Contains(c.Prefix, ".") {
		return fmt.Errorf("FABRIC_SUBJECT_PREFIX=%q: want one subject token such as lf or acme_lf, without dots", c.Prefix)
	}
	return nil
}

func (c TimingConfig) validate() []error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"FABRIC_REQUEST_TIMEOUT", c.RequestTimeout},
		{"FABRIC_HEARTBEAT_INTERVAL", c.HeartbeatInterval},
		{"FABRIC_PEER_TIMEOUT", c.PeerTimeout},
		{"FABRIC_SESSION_TIMEOUT", c.SessionTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: want a positive duration such as 10s", d.name, d.v))
		}
	}
	if c.HeartbeatInterval > 0 && c.PeerTimeout > 0 && c.PeerTimeout < 2*c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("FABRIC_PEER_TIMEOUT=%s: want at least twice FABRIC_HEARTBEAT_INTERVAL (%s), or every hiccup loses a peer", c.PeerTimeout, c.HeartbeatInterval))
	}
	if c.PeerTimeout > 0 && c.SessionTimeout > 0 && c.SessionTimeout < c.PeerTimeout {
		errs = append(errs, fmt.Errorf("FABRIC_SESSION_TIMEOUT=%s: want at least FABRIC_PEER_TIMEOUT (%s): a session outlives a peer's silence", c.SessionTimeout, c.PeerTimeout))
	}
	return errs
}

func (c LogConfig) validate() []error {
	var errs []error
	if _, err := parseLevel(c.Level); err != nil {
		errs = append(errs, fmt.Errorf("FABRIC_LOG_LEVEL=%q: want debug, info, warn or error", c.Level))
	}
	if c.Format != "text" && c.Format != "json" {
		errs = append(errs, fmt.Errorf("FABRIC_LOG_FORMAT=%q: want text or json", c.Format))
	}
	return errs
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return l, l.UnmarshalText([]byte(s))
	}
	return l, fmt.Errorf("unknown level %q", s)
}

// NewLogger returns the logger the configuration asks for, writing to
// standard error.
func (c LogConfig) NewLogger() *slog.Logger {
	level, err := parseLevel(c.Level)
	if err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func checkMetricsAddr(addr string) []error { return checkHostPort("FABRIC_METRICS_ADDR", addr) }

// checkHostPort checks the address of an HTTP server, variable name's
// value; "" is none.
func checkHostPort(name, addr string) []error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
		return []error{fmt.Errorf("%s=%q: want host:port, such as 127.0.0.1:9090 or :9090", name, addr)}
	}
	return nil
}

func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port, such as 127.0.0.1:4222")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return errors.New("want a port between 0 and 65535")
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errors.New("the embedded server listens on loopback only: want 127.0.0.1, ::1 or localhost")
	}
	return nil
}

func joinConfig(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
}

// load fills dst from environ and validates it, reporting every bad
// variable at once: those that do not parse, then the others that
// validate finds wrong.
func load(dst any, environ []string, validate func() error) error {
	bad, errs := parseEnv(dst, environ)
	if err := validate(); err != nil {
		for _, e := range flatten(err) {
			name, _, _ := strings.Cut(e.Error(), "=")
			if !bad[name] { // a variable that did not parse is reported once
				errs = append(errs, e)
			}
		}
	}
	return joinConfig(errs)
}

// flatten lists the errors joined in a configuration error.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			if e != ErrConfig {
				out = append(out, flatten(e)...)
			}
		}
		return out
	}
	return []error{err}
}

// parseEnv fills dst from environ, turning the env package's errors (which
// name Go fields) into errors that name the variable and the form it takes,
// and returns the variables that did not parse.
func parseEnv(dst any, environ []string) (map[string]bool, []error) {
	if environ == nil {
		environ = os.Environ()
	}
	values := env.ToMap(environ)
	err := env.ParseWithOptions(dst, env.Options{Environment: values, FuncMap: textForms()})
	if err == nil {
		return nil, nil
	}
	vars := envVars(reflect.TypeOf(dst).Elem())
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return nil, []error{err}
	}
	bad := map[string]bool{}
	var errs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if v, ok := vars[pe.Name]; ok {
				bad[v] = true
				if ownTextForm(pe.Type) {
					errs = append(errs, fmt.Errorf("%s=%q: %v", v, values[v], pe.Err))
				} else {
					errs = append(errs, fmt.Errorf("%s=%q: want %s", v, values[v], expectedForm(pe.Type)))
				}
				continue
			}
		}
		errs = append(errs, e)
	}
	return bad, errs
}

// textForms returns the parsers of the variables whose fields are not
// plain values: the text forms of the typed fields, which only the Load
// functions read. It is a new map each time: the env package adds its own
// parsers to the map it is given.
func textForms() map[reflect.Type]env.ParserFunc {
	return map[reflect.Type]env.ParserFunc{
		reflect.TypeFor[Grants](): func(s string) (any, error) { return ParseGrants(s) },
		reflect.TypeFor[[]messages.HostedInstance](): func(s string) (any, error) {
			return ParseInstances(s)
		},
	}
}

// ownTextForm reports whether t is one of textForms' types, whose parsing
// errors say what is wrong themselves.
func ownTextForm(t reflect.Type) bool {
	return t == reflect.TypeFor[Grants]() || t == reflect.TypeFor[[]messages.HostedInstance]()
}

// envVars maps Go field names to their variables, through nested structs.
func envVars(t reflect.Type) map[string]string {
	out := map[string]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			out[f.Name] = name
		} else if f.Type.Kind() == reflect.Struct {
			for k, v := range envVars(f.Type) {
				out[k] = v
			}
		}
	}
	return out
}

func expectedForm(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration such as 500ms, 10s or 1m30s"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "a non-negative integer"
	}
	return "a value of type " + t.String()
}
