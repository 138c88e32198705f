package fabric_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/natsauth"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The security tests run a real nats-server from the very text that
// fabric nats-config prints (natsauth.Generate), for the master, slaves
// 1 to 3 and the controls alice and bob, each with a password of its own
// that the server reads from its environment. Then every endpoint logs in
// with its own credentials, and plain NATS clients logged in as one
// identity try to speak as another or to read others' traffic.

// promptly bounds how long refusing a credential at start-up may take.
// A refused TLS handshake is noticed once the connector's first wait for
// a connection (5s for a master or slave, 3s for a control) is over: the
// connector retries failed connections, and reports only refused
// credentials at once (see the report on connector/nats).
const (
	promptly    = 3 * time.Second
	promptlyTLS = 8 * time.Second
)

// secureBroker is a nats-server configured by fabric nats-config.
type secureBroker struct {
	url   string
	pw    map[string]string // NATS user -> password
	seeds map[string]string // NATS user -> nkey seed file, with nkeys
	certs *testCerts        // nil without TLS
}

// startSecureBroker starts nats-server from the generated authorization
// block, and with TLS (verifying clients' certificates) if certs is not nil.
func startSecureBroker(t *testing.T, certs *testCerts) *secureBroker {
	t.Helper()
	return startSecureBrokerKeys(t, certs, "")
}

// startSecureBrokerKeys is startSecureBroker, with nkey users whose seeds
// go in nkeyDir if it is not "".
func startSecureBrokerKeys(t *testing.T, certs *testCerts, nkeyDir string) *secureBroker {
	t.Helper()
	catalog, err := messages.NewCatalog()
	if err != nil {
		t.Fatal(err)
	}
	text, ids, err := natsauth.Generate(natsauth.Options{Catalog: catalog, Prefix: "lf", Slaves: []int64{1, 2, 3}, Controls: []string{"alice", "bob"}, NKeyDir: nkeyDir})
	if err != nil {
		t.Fatal(err)
	}
	b := &secureBroker{pw: map[string]string{}, seeds: map[string]string{}, certs: certs}
	for _, id := range ids {
		if id.SeedFile != "" {
			b.seeds[id.User] = id.SeedFile
			continue
		}
		var r [12]byte
		_, _ = rand.Read(r[:])
		pw := "pw" + hex.EncodeToString(r[:])
		t.Setenv(id.PasswordVar, pw) // nats-server reads $LF_PASS_... from its environment
		b.pw[id.User] = pw
	}
	// The master keeps its state in JetStream, which the generated
	// permissions let it use on its own buckets only.
	text += fmt.Sprintf("jetstream {\n  store_dir: %q\n}\n", t.TempDir())
	if certs != nil {
		text += fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n  timeout: 2\n}\n",
			certs.serverCert, certs.serverKey, certs.ca)
	}
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration fabric nats-config wrote: %v\n%s", err, text)
	}
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	b.url = s.ClientURL()
	return b
}

// login is the NATS configuration of an endpoint that logs in as user,
// with the client certificate of the broker's CA if it has TLS.
func (b *secureBroker) login(user string) fabric.NATSConfig {
	c := natsConfig(b.url)
	if seed := b.seeds[user]; seed != "" {
		c.NKeySeedFile = seed
	} else {
		c.User, c.Password = user, b.pw[user]
	}
	if b.certs != nil {
		c.TLSCAFile, c.TLSCertFile, c.TLSKeyFile = b.certs.ca, b.certs.clientCert, b.certs.clientKey
	}
	return c
}

// secureCluster is the usual test topology on a secure broker: the
// master, slave 1 (instances 11 and 12), slave 2 (instance 21), and the
// controls alice and bob, each logged in as itself.
type secureCluster struct {
	b              *secureBroker
	master         *fabric.Master
	slave1, slave2 *fabric.Slave
	alice, bob     *fabric.Control
	aliceOut       *outputLog
	probes         *probes
	logs           *logRecords // every endpoint's log
}

func newSecureCluster(t *testing.T, b *secureBroker, permissions string) *secureCluster {
	t.Helper()
	return newSecureClusterWith(t, b, permissions, secureSetup{})
}

// secureSetup adds to the usual secure cluster.
type secureSetup struct {
	opts      []fabric.Option           // for every endpoint (plugins, say)
	slaveOpts map[int64][]fabric.Option // for one slave
	factory   fabric.InstanceFactory    // the slaves' instances; probes if nil
}

// newSecureClusterWith is newSecureCluster with what setup adds. The
// master serves metrics on a free loopback port.
func newSecureClusterWith(t *testing.T, b *secureBroker, permissions string, setup secureSetup) *secureCluster {
	t.Helper()
	c := &secureCluster{b: b, probes: newProbes(nil), logs: newLogRecords(), aliceOut: &outputLog{}}
	log := fabric.WithLogger(slog.New(c.logs))
	factory := setup.factory
	if factory == nil {
		factory = c.probes.factory
	}
	var err error
	c.master, err = fabric.StartMaster(testkit.Ctx(t, waitLong), fabric.MasterConfig{NATS: b.login("master"), Listen: "127.0.0.1:0",
		Grants: grants(t, permissions), MetricsAddr: "127.0.0.1:0", Timing: testTiming(), Log: logConfig()}, append(slices.Clone(setup.opts), log)...)
	if err != nil {
		t.Fatalf("StartMaster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = c.master.Close(ctx)
	})
	startSlave := func(id int64, instances string) *fabric.Slave {
		cfg := slaveConfig("", id, instances)
		cfg.NATS = b.login(fmt.Sprintf("slave-%d", id))
		opts := append(slices.Clone(setup.opts), setup.slaveOpts[id]...)
		s, err := fabric.StartSlave(testkit.Ctx(t, waitLong), cfg, append(opts, log, fabric.WithInstanceFactory(factory))...)
		if err != nil {
			t.Fatalf("StartSlave %d: %v", id, err)
		}
		t.Cleanup(func() {
			ctx, cancel := closeCtx()
			defer cancel()
			_ = s.Close(ctx)
		})
		return s
	}
	c.slave1 = startSlave(1, "11:alpha,12:beta")
	c.slave2 = startSlave(2, "21:gamma")
	waitSlaves(t, c.master, waitLong, 1, 2)
	c.alice = c.dialControl(t, "alice", "control-alice", append(slices.Clone(setup.opts), fabric.WithOutputHandler(c.aliceOut.add))...)
	c.bob = c.dialControl(t, "bob", "control-bob", setup.opts...)
	for _, ctl := range []*fabric.Control{c.alice, c.bob} {
		request(t, ctl.Link(), messages.Ping, messages.Empty{})
	}
	return c
}

// dialControl connects control user, logged in as NATS user natsUser.
func (c *secureCluster) dialControl(t *testing.T, user, natsUser string, opts ...fabric.Option) *fabric.Control {
	t.Helper()
	cfg := fabric.ControlConfig{NATS: c.b.login(natsUser), User: user, Timing: testTiming(), Log: logConfig()}
	ctl, err := fabric.DialControl(testkit.Ctx(t, waitLong), cfg, append([]fabric.Option{fabric.WithLogger(slog.New(c.logs))}, opts...)...)
	if err != nil {
		t.Fatalf("DialControl %s: %v", user, err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = ctl.Close(ctx)
	})
	return ctl
}

// violations returns the permissions violations the endpoints logged.
func (c *secureCluster) violations() []string {
	var out []string
	for _, r := range c.logs.find("NATS error") {
		if strings.Contains(r["error"], "Permissions Violation") {
			out = append(out, r["node"]+": "+r["error"])
		}
	}
	return out
}

// noViolations fails the test if a legitimate endpoint was refused
// anything: the generated permissions must cover all the fabric does.
func (c *secureCluster) noViolations(t *testing.T) {
	t.Helper()
	if v := c.violations(); len(v) > 0 {
		t.Fatalf("the broker refused a legitimate endpoint: %q", v)
	}
}

// spy is a plain NATS client logged in with one identity's credentials,
// using that identity's inbox prefix for its requests.
type spy struct {
	user string
	nc   *natsgo.Conn
	errs chan error
}

func (b *secureBroker) spy(t *testing.T, user string) *spy {
	t.Helper()
	s := &spy{user: user, errs: make(chan error, 64)}
	login := natsgo.UserInfo(user, b.pw[user])
	if seed := b.seeds[user]; seed != "" {
		var err error
		if login, err = natsgo.NkeyOptionFromSeed(seed); err != nil {
			t.Fatal(err)
		}
	}
	opts := []natsgo.Option{
		login,
		natsgo.Name("spy " + user),
		natsgo.CustomInboxPrefix(inboxOf(user)),
		// The violations arrive here, asynchronously.
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			select {
			case s.errs <- err:
			default:
			}
		}),
	}
	if b.certs != nil {
		opts = append(opts, natsgo.RootCAs(b.certs.ca), natsgo.ClientCert(b.certs.clientCert, b.certs.clientKey))
	}
	nc, err := natsgo.Connect(b.url, opts...)
	if err != nil {
		t.Fatalf("spy logging in as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	s.nc = nc
	return s
}

// inboxOf returns the inbox prefix of NATS user user: lf._inbox.<type>.<id>.
func inboxOf(user string) string {
	if user == "master" {
		return "lf._inbox.master.0"
	}
	typ, id, _ := strings.Cut(user, "-")
	return "lf._inbox." + typ + "." + id
}

// refused waits for the broker's permissions violation for op ("Publish"
// or "Subscription") on subject, and returns its text.
func (s *spy) refused(t *testing.T, op, subject string) string {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s to %q", op, subject)
	timeout := time.After(waitLong)
	for {
		select {
		case err := <-s.errs:
			if strings.Contains(err.Error(), want) {
				return err.Error()
			}
			t.Fatalf("%s: %s %s: unexpected error %v", s.user, op, subject, err)
		case <-timeout:
			t.Fatalf("%s may %s %s: no permissions violation within %s", s.user, strings.ToLower(op), subject, waitLong)
		}
	}
}

// tryPublish publishes subject as the spy and checks that the broker
// refuses it and that a client logged in as the subject's legitimate
// receiver (watcher) does not get it.
func (s *spy) tryPublish(t *testing.T, watcher *spy, subject, reply, data string) {
	t.Helper()
	sub, err := watcher.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := watcher.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	msg := &natsgo.Msg{Subject: subject, Reply: reply, Data: []byte(data)}
	if err := s.nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	text := s.refused(t, "Publish", subject)
	// The server handled the publish before it sent the violation; had it
	// delivered the message, the message would be before the watcher's
	// PONG.
	if err := watcher.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		t.Fatalf("%s publishing %s: refused (%s), yet %s received it", s.user, subject, text, watcher.user)
	}
	t.Logf("%s publish %s: %s", s.user, subject, text)
}

// trySubscribe subscribes to subject as the spy, checks that the broker
// refuses it, and returns the subscription, to be checked later by
// nothingOn.
func (s *spy) trySubscribe(t *testing.T, subject string) *natsgo.Subscription {
	t.Helper()
	sub, err := s.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatalf("subscribe %s: %v (the violation should come asynchronously)", subject, err)
	}
	t.Logf("%s subscribe %s: %s", s.user, subject, s.refused(t, "Subscription", subject))
	return sub
}

// nothingOn fails the test if any of the refused subscriptions got a
// message, once traffic that they would match has passed.
func (s *spy) nothingOn(t *testing.T, subs ...*natsgo.Subscription) {
	t.Helper()
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range subs {
		if n, _, _ := sub.Pending(); n != 0 {
			m, _ := sub.NextMsg(0)
			t.Errorf("%s's refused subscription %s received %d messages, such as %s", s.user, sub.Subject, n, m.Subject)
		}
	}
}

// masterSession learns the master's session as slave 1 may: from the
// master's answers to the real slave 1, which its credentials may read.
func masterSession(t *testing.T, slave1 *spy) string {
	t.Helper()
	sub, err := slave1.nc.SubscribeSync("lf.master.0.slave.1._reply.>")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	m, err := sub.NextMsg(waitLong)
	if err != nil {
		t.Fatalf("slave 1's credentials read no answer of the master to slave 1: %v", err)
	}
	// A response to a fabric requester ends with the responder's session,
	// the master's "m<term>x<random>".
	session := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if !strings.HasPrefix(session, "m") || !strings.Contains(session, "x") {
		t.Fatalf("an answer of the master on %q, which does not end with its session", m.Subject)
	}
	return session
}

// TestSecureClusterWorks: with every endpoint logged in as itself on a
// broker configured by fabric nats-config, the cluster works end to end
// (list_slaves, start_instance, send_command, output, a broadcast ban),
// and the broker refuses none of what the endpoints do.
func TestSecureClusterWorks(t *testing.T) {
	c := newSecureCluster(t, startSecureBroker(t, nil), "*=*")
	slaves := request(t, c.alice.Link(), messages.ListSlaves, messages.Empty{}).Slaves
	if len(slaves) != 2 || !slaves[0].Connected || !slaves[1].Connected {
		t.Fatalf("list_slaves = %+v", slaves)
	}
	request(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 21})
	waitStatus(t, c.alice.Link(), 21, messages.StatusRunning)
	if err := c.alice.Follow(testkit.Ctx(t, reqTimeout), 21); err != nil {
		t.Fatal(err)
	}
	if got := request(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 21, Command: "/say hello"}).Output; got != "ok" {
		t.Errorf("send_command = %q", got)
	}
	testkit.Eventually(t, waitLong, "output relayed to alice", func() error { return c.aliceOut.has(21, "hello") })
	request(t, c.bob.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	waitStatus(t, c.bob.Link(), 11, messages.StatusRunning)
	request(t, c.bob.Link(), messages.SetPlayerBanned, messages.Ban{Name: "griefer", Banned: true, Reason: "x"})
	for _, id := range []int64{11, 21} {
		testkit.Eventually(t, waitLong, "ban reaches instance", func() error { return c.probes.has(id, "ban:griefer") })
	}
	c.noViolations(t)
}

// TestSecureClusterNKeys: the same with nkey users (fabric nats-config
// --nkeys): every endpoint logs in with its own seed file, and one seed
// cannot speak as another identity.
func TestSecureClusterNKeys(t *testing.T) {
	b := startSecureBrokerKeys(t, nil, filepath.Join(t.TempDir(), "nkeys"))
	c := newSecureCluster(t, b, "*=*")
	request(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 21})
	waitStatus(t, c.alice.Link(), 21, messages.StatusRunning)
	if got := request(t, c.bob.Link(), messages.SendCommand, messages.Command{InstanceID: 21, Command: "/say hi"}).Output; got != "ok" {
		t.Errorf("send_command = %q", got)
	}
	b.spy(t, "slave-1").tryPublish(t, b.spy(t, "slave-2"), "lf.master.0.slave.2.stop_instance", "", `{"instance_id":21}`)
	b.spy(t, "control-alice").trySubscribe(t, "lf.master.0.control.bob.>")
	waitStatus(t, c.alice.Link(), 21, messages.StatusRunning)
	c.noViolations(t)
}

// TestImpersonationRefused: plain NATS clients logged in with one
// identity's credentials try to speak as another identity, or to read
// what is not theirs. The broker refuses each attempt (the client hears a
// permissions violation), the subject's legitimate receiver never gets
// the message, and the cluster's state is untouched.
func TestImpersonationRefused(t *testing.T) {
	b := startSecureBroker(t, nil)
	c := newSecureCluster(t, b, "alice=core.slave.list,core.instance.list,core.instance.follow_log;bob=*")
	// Instance 11, on slave 1, runs: it would receive a spoofed ban. 12
	// (slave 1) and 21 (slave 2) are stopped: they would receive a spoofed
	// start.
	request(t, c.bob.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	waitStatus(t, c.bob.Link(), 11, messages.StatusRunning)
	slavesBefore, instancesBefore := c.master.Slaves(), c.master.Instances()

	slave1 := b.spy(t, "slave-1")
	alice := b.spy(t, "control-alice")
	asMaster := b.spy(t, "master")
	asSlave1 := b.spy(t, "slave-1") // a watcher, logged in as slave 1 itself
	asSlave2 := b.spy(t, "slave-2")
	asBob := b.spy(t, "control-bob")
	session := masterSession(t, slave1)

	// The watchers can see what their identities are sent: a message the
	// master may publish to slave 2 reaches a client logged in as slave 2.
	probe, err := asSlave2.nc.SubscribeSync("lf.master.0.slave.2.watch_probe")
	if err != nil {
		t.Fatal(err)
	}
	if err := asSlave2.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := asMaster.nc.Publish("lf.master.0.slave.2.watch_probe", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.NextMsg(waitLong); err != nil {
		t.Fatalf("a client logged in as slave 2 does not see what the master sends slave 2: %v", err)
	}
	_ = probe.Unsubscribe()

	ban := func(name string) string {
		data, _ := json.Marshal(messages.Ban{Name: name, Banned: true, Reason: "spoofed"})
		return string(data)
	}
	t.Run("slave publishes", func(t *testing.T) {
		inbox := "lf._inbox.slave.1.spy"
		// As the master, with the master's real session: a slave would
		// take these as the master's.
		slave1.tryPublish(t, asSlave2, "lf.master.0.slave.2.start_instance."+session, inbox, `{"instance_id":21}`)
		slave1.tryPublish(t, asSlave2, "lf.master.0.slave.2.start_instance", inbox, `{"instance_id":21}`)
		slave1.tryPublish(t, asSlave2, "lf.master.0.slave._all.banlist_update."+session, "", ban("spoofed-by-slave"))
		slave1.tryPublish(t, asSlave2, "lf.master.0.slave._all.banlist_update", "", ban("spoofed-by-slave"))
		slave1.tryPublish(t, asSlave1, "lf.master.0.slave.1.start_instance."+session, inbox, `{"instance_id":12}`)
		// As slave 2.
		slave1.tryPublish(t, asMaster, "lf.slave.2.master.0.update_instances", "", `{"instances":[]}`)
		slave1.tryPublish(t, asMaster, "lf.slave.2.master.0.register_slave", inbox, `{"slave_id":2,"name":"evil","version":"1","instances":[]}`)
		slave1.tryPublish(t, asMaster, "lf.slave.2.master.0._close", "", "")
		// As a control, and as the master to a control.
		slave1.tryPublish(t, asMaster, "lf.control.alice.master.0.start_instance", inbox, `{"instance_id":21}`)
		slave1.tryPublish(t, asBob, "lf.master.0.control.bob.instance_output."+session, "", `{"instance_id":21,"time":0,"level":"info","message":"spoofed"}`)
		// A reply as the master to another slave's request.
		slave1.tryPublish(t, asSlave2, "lf.master.0.slave.2._reply.0123456789abcdef.1.1", "", "{}")
	})
	t.Run("control publishes", func(t *testing.T) {
		inbox := "lf._inbox.control.alice.spy"
		// As bob, who may start instances where alice may not.
		alice.tryPublish(t, asMaster, "lf.control.bob.master.0.start_instance", inbox, `{"instance_id":21}`)
		alice.tryPublish(t, asMaster, "lf.control.bob.master.0.set_player_banned", inbox, ban("spoofed-by-alice"))
		// As a slave, and as the master.
		alice.tryPublish(t, asMaster, "lf.slave.1.master.0.update_instances", "", `{"instances":[]}`)
		alice.tryPublish(t, asSlave1, "lf.master.0.slave.1.start_instance."+session, inbox, `{"instance_id":12}`)
		alice.tryPublish(t, asSlave1, "lf.master.0.slave._all.banlist_update."+session, "", ban("spoofed-by-alice"))
		alice.tryPublish(t, asBob, "lf.master.0.control.bob.instance_output."+session, "", `{"instance_id":21,"time":0,"level":"info","message":"spoofed"}`)
		// Straight to a slave, skipping the master's permission check.
		alice.tryPublish(t, asSlave1, "lf.control.alice.slave.1.start_instance", inbox, `{"instance_id":12}`)
	})

	var slaveSubs, aliceSubs []*natsgo.Subscription
	t.Run("slave subscribes", func(t *testing.T) {
		for _, subject := range []string{
			"lf.master.0.slave.2.>",       // slave 2's traffic
			"lf.*.*.slave.2.>",            // anything for slave 2
			"lf.slave.2.master.0.>",       // what slave 2 sends
			"lf.master.0.control.alice.>", // a control's traffic and replies
			"lf.*.*.control.alice.>",
			"lf.control.alice.master.0.>", // a control's requests
			"lf._inbox.control.alice.>",   // a control's inbox
			"lf._inbox.slave.2.>",
			"lf._inbox.>",
			"_INBOX.>", // every default inbox
			"lf.>",
			">",
		} {
			slaveSubs = append(slaveSubs, slave1.trySubscribe(t, subject))
		}
	})
	t.Run("control subscribes", func(t *testing.T) {
		for _, subject := range []string{
			"lf.master.0.control.bob.>", // bob's replies and output
			"lf.*.*.control.bob.>",
			"lf.control.bob.master.0.>",
			"lf._inbox.control.bob.>",
			"lf.master.0.slave.1.>", // a slave's traffic
			"lf.*.*.slave._all.>",   // the slaves' broadcasts
			"_INBOX.>",
			">",
		} {
			aliceSubs = append(aliceSubs, alice.trySubscribe(t, subject))
		}
	})

	// The cluster's state is untouched by all of the above.
	if got := c.master.Slaves(); !slices.Equal(got, slavesBefore) {
		t.Errorf("slaves at the master %+v, were %+v", got, slavesBefore)
	}
	if got := c.master.Instances(); !slices.Equal(got, instancesBefore) {
		t.Errorf("instances at the master %+v, were %+v", got, instancesBefore)
	}
	// Traffic that the refused subscriptions would match: bob's requests
	// and replies, a broadcast, commands to both slaves, alice's output.
	request(t, c.bob.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 21})
	waitStatus(t, c.bob.Link(), 21, messages.StatusRunning)
	if err := c.alice.Follow(testkit.Ctx(t, reqTimeout), 21); err != nil {
		t.Fatal(err)
	}
	request(t, c.bob.Link(), messages.SendCommand, messages.Command{InstanceID: 21, Command: "/say after"})
	testkit.Eventually(t, waitLong, "output relayed to alice", func() error { return c.aliceOut.has(21, "after") })
	request(t, c.bob.Link(), messages.SetPlayerBanned, messages.Ban{Name: "barrier", Banned: true, Reason: "x"})
	for _, id := range []int64{11, 21} {
		testkit.Eventually(t, waitLong, "ban reaches instance", func() error { return c.probes.has(id, "ban:barrier") })
	}
	slave1.nothingOn(t, slaveSubs...)
	alice.nothingOn(t, aliceSubs...)

	// No spoofed message reached an instance or a control: 11 and 21 were
	// started once each, by bob; 12 never; the only ban is the real one.
	for id, want := range map[int64]int{11: 1, 12: 0, 21: 1} {
		if got := c.probes.of(id, "start"); len(got) != want {
			t.Errorf("instance %d started %d times, want %d (by bob)", id, len(got), want)
		}
	}
	for _, id := range []int64{11, 21} {
		if got := c.probes.of(id, "ban:spoofed"); len(got) > 0 {
			t.Errorf("instance %d received a spoofed ban: %q", id, got)
		}
	}
	if got := c.aliceOut.of(21); slices.Contains(got, "spoofed") {
		t.Errorf("alice received spoofed output: %q", got)
	}
	waitSlaves(t, c.master, waitLong, 1, 2)
	c.noViolations(t)
}

// TestControlUserFromSubject: the master checks a control's requests
// against the user its subjects name, which the broker lets only that
// user's credentials publish. alice may list but not start; bob may
// start; alice's credentials cannot send as bob, neither from a plain
// client nor from a fabric control configured as bob.
func TestControlUserFromSubject(t *testing.T) {
	b := startSecureBroker(t, nil)
	c := newSecureCluster(t, b, "alice=core.slave.list;bob=*")

	if got := request(t, c.alice.Link(), messages.ListSlaves, messages.Empty{}).Slaves; len(got) != 2 {
		t.Errorf("alice's list_slaves = %+v", got)
	}
	_, err := requestErr(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 21})
	le := testkit.WantCode(t, err, link.CodePermissionDenied)
	if !strings.Contains(le.Message, "alice") {
		t.Errorf("permission_denied %q does not name alice", le.Message)
	}

	// A plain client with alice's credentials, speaking as bob.
	alice := b.spy(t, "control-alice")
	asMaster := b.spy(t, "master")
	alice.tryPublish(t, asMaster, "lf.control.bob.master.0.start_instance", "lf._inbox.control.alice.x", `{"instance_id":21}`)

	// A fabric control that claims to be bob with alice's credentials is
	// refused its subscription to what is addressed to bob, so it does
	// not start, and says which setting to check.
	cfg := fabric.ControlConfig{NATS: b.login("control-alice"), User: "bob", Timing: testTiming(), Log: logConfig()}
	if fake, err := fabric.DialControl(testkit.Ctx(t, waitLong), cfg, fabric.WithLogger(testLogger())); err == nil {
		_ = fake.Close(testkit.Ctx(t, waitLong))
		t.Fatal("a control claiming to be bob with alice's credentials connected")
	} else if !strings.Contains(err.Error(), "FABRIC_CONTROL_USER") {
		t.Errorf("a control claiming to be bob with alice's credentials: %v, want an error naming FABRIC_CONTROL_USER", err)
	}

	// bob, logged in as himself, may.
	request(t, c.bob.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 21})
	waitStatus(t, c.bob.Link(), 21, messages.StatusRunning)
	if got := c.probes.of(21, "start"); len(got) != 1 {
		t.Errorf("instance 21 started %d times, want once (by bob)", len(got))
	}
	c.noViolations(t)
}

// refusedAtStart checks that starting an endpoint failed promptly with an
// error that says why.
func refusedAtStart(t *testing.T, what string, err error, d, within time.Duration, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: started", what)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(w)) {
			t.Errorf("%s: error %q does not say %q", what, err, w)
		}
	}
	if d > within {
		t.Errorf("%s: refused after %s, want within %s", what, d.Round(time.Millisecond), within)
	}
	t.Logf("%s: refused after %s: %v", what, d.Round(time.Millisecond), err)
}

// startEndpoint starts one endpoint of kind "master", "slave" or "control"
// with the NATS configuration nc, closing it if it starts, and reports how
// long the attempt took.
func startEndpoint(t *testing.T, kind string, nc fabric.NATSConfig) (time.Duration, error) {
	t.Helper()
	begin := time.Now()
	ctx := testkit.Ctx(t, 2*waitLong)
	stopCtx, cancel := closeCtx()
	defer cancel()
	var err error
	switch kind {
	case "master":
		var m *fabric.Master
		if m, err = fabric.StartMaster(ctx, fabric.MasterConfig{NATS: nc, Listen: "127.0.0.1:0", Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()}, fabric.WithLogger(testLogger())); err == nil {
			defer m.Close(stopCtx)
		}
	case "slave":
		cfg := slaveConfig("", 3, "31:delta")
		cfg.NATS = nc
		var s *fabric.Slave
		if s, err = fabric.StartSlave(ctx, cfg, fabric.WithLogger(testLogger())); err == nil {
			defer s.Close(stopCtx)
		}
	case "control":
		var c *fabric.Control
		if c, err = fabric.DialControl(ctx, fabric.ControlConfig{NATS: nc, User: "alice", Timing: testTiming(), Log: logConfig()}, fabric.WithLogger(testLogger())); err == nil {
			defer c.Close(stopCtx)
		}
	default:
		t.Fatalf("no endpoint kind %q", kind)
	}
	return time.Since(begin), err
}

// TestBadCredentialsRefusedAtStart: a wrong password, no credentials, or
// a user the broker does not know stop a master, a slave or a control at
// start-up, promptly, with an error that says the broker refused the
// credentials; the cluster already running is not disturbed.
func TestBadCredentialsRefusedAtStart(t *testing.T) {
	b := startSecureBroker(t, nil)
	c := newSecureCluster(t, b, "*=*")
	request(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	waitStatus(t, c.alice.Link(), 11, messages.StatusRunning)
	instancesBefore := c.master.Instances()

	wrong := func(user string) fabric.NATSConfig {
		nc := b.login(user)
		nc.Password = "wrong" + nc.Password
		return nc
	}
	anonymous := b.login("")
	anonymous.User, anonymous.Password = "", ""
	unknown := b.login("slave-9")
	unknown.Password = b.pw["slave-3"]

	for _, tc := range []struct {
		name, kind string
		nc         fabric.NATSConfig
	}{
		{"slave, wrong password", "slave", wrong("slave-3")},
		{"slave, no credentials", "slave", anonymous},
		{"slave, unknown user", "slave", unknown},
		{"control, wrong password", "control", wrong("control-alice")},
		{"control, no credentials", "control", anonymous},
		{"master, wrong password", "master", wrong("master")},
		{"master, no credentials", "master", anonymous},
		{"master, another's password", "master", func() fabric.NATSConfig { nc := b.login("master"); nc.Password = b.pw["slave-1"]; return nc }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			took, err := startEndpoint(t, tc.kind, tc.nc)
			refusedAtStart(t, tc.name, err, took, promptly, "the server refused the credentials", "authorization violation")
		})
	}

	// Good credentials for another slave: the broker takes the login but
	// not the subscription for slave 3, so the slave must not start deaf.
	t.Run("slave, another slave's credentials", func(t *testing.T) {
		took, err := startEndpoint(t, "slave", b.login("slave-1"))
		refusedAtStart(t, "slave 3 with slave-1's credentials", err, took, promptly, "FABRIC_SLAVE_ID", "permissions violation")
	})

	// Nothing else was disturbed.
	waitSlaves(t, c.master, waitLong, 1, 2)
	if got := c.master.Instances(); !slices.Equal(got, instancesBefore) {
		t.Errorf("instances %+v, were %+v", got, instancesBefore)
	}
	if got := request(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/say still"}).Output; got != "ok" {
		t.Errorf("send_command = %q", got)
	}
	c.noViolations(t)
}

// testCerts are the files of a test PKI: a CA that signs the server's
// certificate (for 127.0.0.1) and a client's, and another CA that signs
// another client's certificate and another server's.
type testCerts struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	otherCA, otherCert, otherKey                     string
}

func newTestCerts(t *testing.T) *testCerts {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serial := int64(0)
	issue := func(name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.Subject = pkix.Name{CommonName: name}
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key, write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	caTmpl := func() *x509.Certificate {
		return &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	}
	serverTmpl := &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	clientTmpl := func() *x509.Certificate {
		return &x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	}
	var c testCerts
	ca, caKey, caFile, _ := issue("ca", nil, nil, caTmpl())
	other, otherKey, otherFile, _ := issue("other-ca", nil, nil, caTmpl())
	c.ca, c.otherCA = caFile, otherFile
	_, _, c.serverCert, c.serverKey = issue("server", ca, caKey, serverTmpl)
	_, _, c.clientCert, c.clientKey = issue("client", ca, caKey, clientTmpl())
	_, _, c.otherCert, c.otherKey = issue("other-client", other, otherKey, clientTmpl())
	return &c
}

// TestTLSClientCertificates: on a broker that requires TLS and verifies
// client certificates (and still wants each identity's password), the
// endpoints with a certificate of the broker's CA work; an endpoint with a
// certificate of another CA, with none, or that does not trust the
// broker's certificate, is refused at start-up with an error that says
// so, and the cluster is not disturbed.
func TestTLSClientCertificates(t *testing.T) {
	certs := newTestCerts(t)
	b := startSecureBroker(t, certs)
	c := newSecureCluster(t, b, "*=*")
	request(t, c.alice.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 21})
	waitStatus(t, c.alice.Link(), 21, messages.StatusRunning)
	if got := request(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 21, Command: "/say tls"}).Output; got != "ok" {
		t.Errorf("send_command = %q", got)
	}

	otherCert := func(user string) fabric.NATSConfig {
		nc := b.login(user)
		nc.TLSCertFile, nc.TLSKeyFile = certs.otherCert, certs.otherKey
		return nc
	}
	noCert := func(user string) fabric.NATSConfig {
		nc := b.login(user)
		nc.TLSCertFile, nc.TLSKeyFile = "", ""
		return nc
	}
	distrust := func(user string) fabric.NATSConfig {
		nc := b.login(user)
		nc.TLSCAFile = certs.otherCA
		return nc
	}
	cases := []struct {
		name, kind string
		nc         fabric.NATSConfig
		want       string
	}{
		{"slave, certificate of another CA", "slave", otherCert("slave-3"), "TLS"},
		{"slave, no certificate", "slave", noCert("slave-3"), "TLS"},
		{"slave, does not trust the server", "slave", distrust("slave-3"), "certificate"},
		{"control, certificate of another CA", "control", otherCert("control-alice"), "TLS"},
		{"control, no certificate", "control", noCert("control-alice"), "TLS"},
		{"master, certificate of another CA", "master", otherCert("master"), "TLS"},
	}
	// Each attempt waits for its connect timeout: run them side by side.
	type result struct {
		err  error
		took time.Duration
	}
	results := make([]result, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := startEndpoint(t, tc.kind, tc.nc)
			results[i] = result{err, took}
		}()
	}
	wg.Wait()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refusedAtStart(t, tc.name, results[i].err, results[i].took, promptlyTLS, tc.want)
		})
	}

	waitSlaves(t, c.master, waitLong, 1, 2)
	if got := request(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 21, Command: "/say still"}).Output; got != "ok" {
		t.Errorf("send_command = %q", got)
	}
	c.noViolations(t)
}

// TestResponsesOnlyToTheRequester: a control cannot use the master as a
// deputy, naming as the reply subject of its request a subject that only
// the master may publish (another control's, a slave's, a broadcast, an
// inbox): the broker cannot tell a response from the master's own
// messages, so the master must answer only on the requester's own reply
// subjects (<p>.master.0.<requester>._reply...) or its inbox
// (<p>._inbox.<requester>...); a plain nats.go inbox (_INBOX...) is
// answered too, but the broker lets no identity read _INBOX.>, nor the
// master publish there (internal/natsauth).
func TestResponsesOnlyToTheRequester(t *testing.T) {
	b := startSecureBroker(t, nil)
	newSecureCluster(t, b, "*=*")
	alice := b.spy(t, "control-alice")
	session := masterSession(t, b.spy(t, "slave-1"))
	watchers := map[string]*spy{
		"lf.master.0.control.bob.instance_output":              b.spy(t, "control-bob"),
		"lf._inbox.control.bob.x":                              b.spy(t, "control-bob"),
		"lf.master.0.slave._all.banlist_update." + session:     b.spy(t, "slave-2"),
		"lf.master.0.slave.2.start_instance." + session:        b.spy(t, "slave-2"),
		"lf.master.0.slave.2._reply.0123456789abcdef.1.1.5000": b.spy(t, "slave-2"),
	}
	var subs []*natsgo.Subscription
	for subject, w := range watchers {
		sub, err := w.nc.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		msg := &natsgo.Msg{Subject: "lf.control.alice.master.0.list_slaves", Reply: subject, Data: []byte("{}")}
		if err := alice.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	// alice's own request, answered after the others.
	if _, err := alice.nc.Request("lf.control.alice.master.0.list_slaves", []byte("{}"), waitLong); err != nil {
		t.Fatalf("alice's own request: %v", err)
	}
	for _, sub := range subs {
		if n, _, _ := sub.Pending(); n != 0 {
			t.Errorf("the master published alice's response on %s", sub.Subject)
		}
	}
}
