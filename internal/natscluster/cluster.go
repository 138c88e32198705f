// Package natscluster runs the three-node NATS cluster of deploy/ for
// tests: the node configs in deploy/nats, started and broken by
// deploy/cluster.sh, with the nats-server version that go.mod pins.
//
// Start builds nats-server the first time a test process needs it (go
// build from the module cache, through the Go module proxy on a fresh
// machine: a minute at most; seconds once the Go build cache has it),
// keeps the binary in the user's cache directory, picks free loopback
// ports, starts the three nodes in the test's temporary directory and
// waits until they have formed a full mesh. The cluster stops when the
// test ends, and also when the test process dies without cleaning up
// (cluster.sh watches the process).
//
//	c := natscluster.Start(t)
//	cfg.NATS.URL = c.URLList(2, 1, 3) // all three, node 2 first
//	...
//	c.Kill(2)    // SIGKILL: clients fail over to nodes 1 and 3
//	c.Restart(2) // returns once node 2 routes to the others again
//
// Methods that change the cluster (Kill, Restart, Freeze, Thaw, Wait)
// fail the test when they fail, so they must be called from the
// goroutine running the test. Nodes are numbered 1 to 3.
//
// Set LF_NATS_SERVER to a nats-server binary to use it instead of
// building one, and LF_TEST_LOG to see the end of each node's log when a
// test fails.
package natscluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// Nodes is the number of nodes in a cluster.
const Nodes = 3

// Bounds on what the script does. Start's comes from WithStartTimeout.
const (
	defaultStartTimeout = 30 * time.Second
	// opTimeout bounds restart-node, kill-node, freeze-node, thaw-node,
	// wait and stop: the script's own waits end well before it.
	opTimeout = 60 * time.Second
	// buildTimeout bounds building nats-server on a fresh machine.
	buildTimeout = 10 * time.Minute
	// startAttempts is how often Start tries fresh ports when another
	// process took one of the chosen ones first.
	startAttempts = 3
)

// Option configures Start.
type Option func(*config)

type config struct {
	authFile     string
	tlsFile      string
	env          []string
	startTimeout time.Duration
}

// WithAuthFile makes the nodes include path as their auth.conf (see
// deploy/nats/auth.conf), such as the authorization block that
// `fabric nats-config` prints. Defaults to deploy/nats/auth.conf, which
// lets every client do everything.
func WithAuthFile(path string) Option {
	return func(c *config) { c.authFile = path }
}

// WithTLSFile makes the nodes include path as a tls { } block for client
// connections (see deploy/nats/tls.conf.example). Defaults to no TLS.
func WithTLSFile(path string) Option {
	return func(c *config) { c.tlsFile = path }
}

// WithEnv adds NAME=value pairs to the environment of the nodes, for
// config files that read secrets as $NAME.
func WithEnv(kv ...string) Option {
	return func(c *config) { c.env = append(c.env, kv...) }
}

// WithStartTimeout bounds how long Start waits for the nodes to accept
// clients and route to each other. Defaults to 30s; whole seconds.
func WithStartTimeout(d time.Duration) Option {
	return func(c *config) { c.startTimeout = d }
}

// Cluster is a running three-node cluster.
type Cluster struct {
	t      testing.TB
	script string
	dir    string
	env    []string
	client int // first client port; node i listens on client+i-1
	http   int // first monitoring port

	mu      sync.Mutex
	stopped bool
}

// Start starts a cluster for the test and stops it when the test ends.
// It fails the test if the cluster does not form within the start
// timeout.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	cfg := config{startTimeout: defaultStartTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("natscluster: %v", err)
	}
	server, err := serverBinary(root)
	if err != nil {
		t.Fatalf("natscluster: %v", err)
	}
	dir := t.TempDir()
	secs := max(int(cfg.startTimeout.Round(time.Second)/time.Second), 1)
	for attempt := 1; ; attempt++ {
		ports, err := pickPorts()
		if err != nil {
			t.Fatalf("natscluster: %v", err)
		}
		c := &Cluster{
			t:      t,
			script: filepath.Join(root, "deploy", "cluster.sh"),
			dir:    dir,
			client: ports.client,
			http:   ports.http,
		}
		c.env = append(baseEnv(),
			"LF_NATS_SERVER="+server,
			"LF_CLUSTER_CLIENT_PORT="+strconv.Itoa(ports.client),
			"LF_CLUSTER_ROUTE_PORT="+strconv.Itoa(ports.route),
			"LF_CLUSTER_HTTP_PORT="+strconv.Itoa(ports.http),
			"LF_CLUSTER_TIMEOUT="+strconv.Itoa(secs),
			"LF_CLUSTER_WATCH_PID="+strconv.Itoa(os.Getpid()),
		)
		if cfg.authFile != "" {
			c.env = append(c.env, "LF_CLUSTER_AUTH_FILE="+cfg.authFile)
		}
		if cfg.tlsFile != "" {
			c.env = append(c.env, "LF_CLUSTER_TLS_FILE="+cfg.tlsFile)
		}
		c.env = append(c.env, cfg.env...)
		out, err := c.run(cfg.startTimeout+opTimeout, "start", dir)
		if err == nil {
			t.Cleanup(c.cleanup)
			return c
		}
		if attempt < startAttempts && strings.Contains(out, "address already in use") {
			t.Logf("natscluster: a port was taken; trying others:\n%s", out)
			continue
		}
		t.Fatalf("natscluster: start: %v\n%s", err, out)
	}
}

// URL returns the client URL of node i (1 to 3).
func (c *Cluster) URL(i int) string {
	c.node(i)
	return "nats://127.0.0.1:" + strconv.Itoa(c.client+i-1)
}

// URLs returns the client URLs of the three nodes, node 1 first.
func (c *Cluster) URLs() []string {
	return []string{c.URL(1), c.URL(2), c.URL(3)}
}

// URLList returns the client URLs of the given nodes, comma-separated, as
// FABRIC_NATS_URL and NATSConfig.URL take them; with no nodes, all three
// in order. NATS clients shuffle the list unless told not to, and learn
// every node of the cluster from the first they reach.
func (c *Cluster) URLList(nodes ...int) string {
	if len(nodes) == 0 {
		nodes = []int{1, 2, 3}
	}
	urls := make([]string, len(nodes))
	for k, i := range nodes {
		urls[k] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// MonitorURL returns the base URL of node i's monitoring endpoint
// (/varz, /connz, /routez, ...).
func (c *Cluster) MonitorURL(i int) string {
	c.node(i)
	return "http://127.0.0.1:" + strconv.Itoa(c.http+i-1)
}

// Dir returns the cluster's run directory: the configs the nodes run
// (conf/) and each node's pid file and logs (node1/ ... node3/).
func (c *Cluster) Dir() string { return c.dir }

// Kill kills node i with SIGKILL and waits until it is gone. Its clients
// see their connections reset at once.
func (c *Cluster) Kill(i int) { c.op("kill-node", i) }

// Restart stops node i if it runs (SIGTERM), starts it again on the same
// ports, and waits until it accepts clients and routes to every other
// node that runs and is not frozen.
func (c *Cluster) Restart(i int) { c.op("restart-node", i) }

// Freeze stops node i with SIGSTOP: its connections stay open but it
// answers nothing, like a hung machine, until Thaw. The other nodes drop
// their routes to it after the configured pings (ping_interval 2s,
// ping_max 3).
func (c *Cluster) Freeze(i int) { c.op("freeze-node", i) }

// Thaw resumes node i after Freeze. Call Wait to wait until the cluster
// has healed.
func (c *Cluster) Thaw(i int) { c.op("thaw-node", i) }

// Wait waits until every node that runs and is not frozen accepts clients
// and routes to all the other such nodes, and to no others.
func (c *Cluster) Wait() {
	c.t.Helper()
	if out, err := c.run(opTimeout, "wait", c.dir); err != nil {
		c.t.Fatalf("natscluster: wait: %v\n%s", err, out)
	}
}

// Stop stops the cluster (the test's cleanup does it too); it is safe to
// call more than once.
func (c *Cluster) Stop() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	if out, err := c.run(opTimeout, "stop", c.dir); err != nil {
		c.t.Errorf("natscluster: stop: %v\n%s", err, out)
	}
}

// cleanup stops the cluster; if the test failed, it first logs the end
// of each node's log when LF_TEST_LOG is set (the run directory goes with
// the test), or says how to see them.
func (c *Cluster) cleanup() {
	if c.t.Failed() {
		if os.Getenv("LF_TEST_LOG") != "" {
			c.logTails(30)
		} else {
			c.t.Log("natscluster: set LF_TEST_LOG=1 to see the end of each node's log")
		}
	}
	c.Stop()
}

// logTails logs the last n lines of each node's log.
func (c *Cluster) logTails(n int) {
	for i := 1; i <= Nodes; i++ {
		path := filepath.Join(c.dir, "node"+strconv.Itoa(i), "nats-server.log")
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		lines = lines[max(len(lines)-n, 0):]
		c.t.Logf("natscluster: last lines of %s:\n%s", path, strings.Join(lines, "\n"))
	}
}

// Peers returns how many other nodes node i has routes to, from its
// /routez (the route pool makes several connections to each).
func (c *Cluster) Peers(i int) (int, error) {
	var rz struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := c.monitor(i, "/routez", &rz); err != nil {
		return 0, err
	}
	var names []string
	for _, r := range rz.Routes {
		if !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	return len(names), nil
}

// Clients returns the names of node i's client connections, from its
// /connz. Linkfabric endpoints name theirs "linkfabric <type>/<id>", such
// as "linkfabric slave/1".
func (c *Cluster) Clients(i int) ([]string, error) {
	var cz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := c.monitor(i, "/connz?limit=10000", &cz); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cz.Connections))
	for _, conn := range cz.Connections {
		names = append(names, conn.Name)
	}
	return names, nil
}

// NodeOf returns the node that a client named name is connected to. It
// asks every node that answers; a node that is down or frozen is skipped.
func (c *Cluster) NodeOf(name string) (int, error) {
	var errs []error
	for i := 1; i <= Nodes; i++ {
		names, err := c.Clients(i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.Contains(names, name) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("natscluster: no node has a client named %q: %w", name, errors.Join(errs...))
}

// monitorClient bounds each monitoring request; a frozen node never answers.
var monitorClient = &http.Client{Timeout: 2 * time.Second}

func (c *Cluster) monitor(i int, path string, v any) error {
	resp, err := monitorClient.Get(c.MonitorURL(i) + path)
	if err != nil {
		return fmt.Errorf("node %d: %w", i, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node %d: GET %s: %s", i, path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("node %d: GET %s: %w", i, path, err)
	}
	return nil
}

func (c *Cluster) node(i int) {
	if i < 1 || i > Nodes {
		c.t.Helper()
		c.t.Fatalf("natscluster: no node %d (nodes are 1 to %d)", i, Nodes)
	}
}

// op runs a node command of the script.
func (c *Cluster) op(cmd string, i int) {
	c.t.Helper()
	c.node(i)
	if out, err := c.run(opTimeout, cmd, strconv.Itoa(i), c.dir); err != nil {
		c.t.Fatalf("natscluster: %s %d: %v\n%s", cmd, i, err, out)
	}
}

// run runs the script with the cluster's environment and returns what it
// printed (stdout and stderr).
func (c *Cluster) run(timeout time.Duration, args ...string) (string, error) {
	return runScript(c.script, c.env, timeout, args...)
}

func runScript(script string, env []string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Env = env
	cmd.Dir = filepath.Dir(script)
	// The nodes the script starts write to files of their own, so the
	// output pipe closes when the script exits; WaitDelay is the backstop.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: not within %s: %w", filepath.Base(script), strings.Join(args, " "), timeout, ctx.Err())
	}
	return out.String(), err
}

// baseEnv is the test process's environment without the script's
// variables, so that a developer's shell does not change what tests run.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LF_CLUSTER_") || strings.HasPrefix(kv, "LF_NATS_SERVER=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// StreamLeader returns the node that leads JetStream stream (such as
// KV_lf_master, the master's state bucket), from the first node that
// answers its monitoring endpoint.
func (c *Cluster) StreamLeader(stream string) (int, error) {
	var jz struct {
		Accounts []struct {
			Streams []struct {
				Name    string `json:"name"`
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	var errs []error
	for i := 1; i <= Nodes; i++ {
		if err := c.monitor(i, "/jsz?streams=true", &jz); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range jz.Accounts {
			for _, s := range a.Streams {
				if s.Name == stream && s.Cluster.Leader != "" {
					n, err := strconv.Atoi(strings.TrimPrefix(s.Cluster.Leader, "node"))
					if err != nil {
						return 0, fmt.Errorf("natscluster: stream %s led by %q", stream, s.Cluster.Leader)
					}
					return n, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("natscluster: no node knows the leader of stream %s: %w", stream, errors.Join(errs...))
}

// MoveStreamLeader makes a node other than off lead JetStream stream, by
// asking its leader to step down until another is elected, within a
// bound. Tests that freeze a node use it to keep the streams they do not
// mean to disturb led elsewhere.
func (c *Cluster) MoveStreamLeader(stream string, off int) error {
	return c.moveLeader(stream, func(leader int) bool { return leader != off })
}

// LeadStream makes node on lead JetStream stream, by asking its leader to
// step down until that node is elected, within a bound. Tests that break
// a node use it to break the leader of a stream too.
func (c *Cluster) LeadStream(stream string, on int) error {
	return c.moveLeader(stream, func(leader int) bool { return leader == on })
}

func (c *Cluster) moveLeader(stream string, ok func(leader int) bool) error {
	nc, err := natsgo.Connect(strings.Join(c.URLs(), ","), natsgo.Timeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("natscluster: connect: %w", err)
	}
	defer nc.Close()
	deadline := time.Now().Add(opTimeout)
	leader := 0
	for time.Now().Before(deadline) {
		var err error
		leader, err = c.StreamLeader(stream)
		if err == nil && ok(leader) {
			return nil
		}
		if err == nil {
			_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 2*time.Second)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("natscluster: stream %s is still led by node %d", stream, leader)
}
