package fabric_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/messages"
)

// plainClient connects a plain NATS client, which speaks no fabric, to
// the broker at url: what anyone on an unauthenticated broker can do.
func plainClient(t *testing.T, url string) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect(url, natsgo.Name("hostile"))
	if err != nil {
		t.Fatalf("connect a plain NATS client: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// stillWorks fails the test unless the cluster answers a normal request and
// the master's view is what it was.
func stillWorks(t *testing.T, c *cluster, wantInstances []messages.InstanceInfo) {
	t.Helper()
	if got := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances; !slices.Equal(got, wantInstances) {
		t.Errorf("list_instances = %+v, want %+v", got, wantInstances)
	}
	if got := c.command(t, 11, "/players"); got != "no players online" {
		t.Errorf("send_command = %q", got)
	}
	waitSlaves(t, c.master, waitLong, 1, 2)
}

// TestHostileRequests: requests a plain NATS client publishes straight
// onto the master's subjects that are malformed, unknown, against the
// schema or too large each get an error response with the Lf-Error code
// that says why, and the cluster goes on working.
func TestHostileRequests(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)
	before := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances
	nc := plainClient(t, c.url)

	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	for _, tc := range []struct {
		name     string
		subject  string
		header   map[string]string
		data     string
		wantCode string
		wantText string // in the error text, the response body
	}{
		{"garbage payload", "lf.control.x.master.0.list_slaves", nil, "\x00\xff garbage \x7f{", "invalid_message", "list_slaves"},
		{"empty payload", "lf.control.x.master.0.list_slaves", nil, "", "invalid_message", "list_slaves"},
		{"unknown message type", "lf.control.x.master.0.no_such_message", nil, "{}", "invalid_message", "no_such_message"},
		{"message of a plugin the cluster lacks", "lf.control.x.master.0.global_chat:chat", nil, `{"from":"a","text":"b"}`, "invalid_message", "global_chat:chat"},
		{"message not valid from a control", "lf.control.x.master.0.register_slave", nil, `{"slave_id":1,"name":"x","version":"1","instances":[]}`, "invalid_message", "control-master"},
		{"event sent as a request", "lf.control.x.master.0.instance_output", nil, `{"instance_id":11,"time":0,"level":"info","message":"x"}`, "invalid_message", "instance_output"},
		{"wrong type in a field", "lf.control.x.master.0.create_instance", nil, `{"name":5}`, "invalid_message", "name"},
		{"missing field", "lf.control.x.master.0.start_instance", nil, `{}`, "invalid_message", "instance_id"},
		{"string instead of an integer", "lf.control.x.master.0.send_command", nil, `{"instance_id":"11","command":"/players"}`, "invalid_message", "instance_id"},
		{"negative instance id", "lf.control.x.master.0.send_command", nil, `{"instance_id":-11,"command":"/players"}`, "invalid_message", "instance_id"},
		{"instance id out of range", "lf.control.x.master.0.send_command", nil, `{"instance_id":1e30,"command":"/players"}`, "invalid_message", "instance_id"},
		{"oversized field", "lf.control.x.master.0.create_instance", nil, `{"name":"` + strings.Repeat("n", 512<<10) + `"}`, "invalid_message", "name"},
		{"deeply nested JSON", "lf.control.x.master.0.create_instance", nil, `{"name":` + deep + `}`, "invalid_message", "create_instance"},
		{"malformed timeout header", "lf.control.x.master.0.list_slaves", map[string]string{"Lf-Timeout": "soon"}, "{}", "invalid_message", "Lf-Timeout"},
		{"negative timeout header", "lf.control.x.master.0.list_slaves", map[string]string{"Lf-Timeout": "-5"}, "{}", "invalid_message", "Lf-Timeout"},
		{"malformed id header", "lf.control.x.master.0.list_slaves", map[string]string{"Lf-Id": "first"}, "{}", "invalid_message", "Lf-Id"},
		{"request to a broadcast address", "lf.control.x.master._all.list_slaves", nil, "{}", "invalid_message", "broadcast"},
		{"source id that is no id", "lf.control.-x.master.0.list_slaves", nil, "{}", "invalid_message", "subject"},
		{"source type that is no type", "lf.robot.x.master.0.list_slaves", nil, "{}", "invalid_message", "subject"},
		{"an instance speaking to the master", "lf.instance.11.master.0.list_slaves", nil, "{}", "not_connected", "slaves and controls only"},
		{"slave id that is not a number", "lf.slave.abc.master.0.register_slave", nil, `{"slave_id":1,"name":"x","version":"1","instances":[]}`, "invalid_message", "abc"},
		{"slave id with leading zeros", "lf.slave.00001.master.0.ping", nil, "{}", "invalid_message", "00001"},
		{"slave id with a plus", "lf.slave.+1.master.0.ping", nil, "{}", "invalid_message", "+1"},
		{"instance id past 2^53-1", "lf.control.x.master.0.send_command", nil, `{"instance_id":9007199254740992,"command":"/players"}`, "invalid_message", "instance_id"},
		{"a slave registering an instance id past 2^53-1", "lf.slave.7.master.0.register_slave", nil, `{"slave_id":7,"name":"x","version":"1","instances":[{"instance_id":9007199254740992,"name":"evil"}]}`, "invalid_message", "instance_id"},
		{"a request to a close notice", "lf.control.x.master.0._close", nil, "{}", "invalid_message", "fabric's own"},
		{"a request to an acknowledgement", "lf.control.x.master.0._ack.aaaa.bbbb.1", nil, "", "invalid_message", "fabric's own"},
		{"a request to a reply subject", "lf.control.x.master.0._reply.aaaa.1.1", nil, "{}", "invalid_message", "fabric's own"},
		{"a token of the fabric's that does not exist", "lf.control.x.master.0._nope", nil, "{}", "invalid_message", "subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := natsgo.NewMsg(tc.subject)
			msg.Data = []byte(tc.data)
			for k, v := range tc.header {
				msg.Header.Set(k, v)
			}
			resp, err := nc.RequestMsg(msg, waitLong)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			if got := resp.Header.Get("Lf-Error"); got != tc.wantCode {
				t.Errorf("Lf-Error = %q, want %q (body %.200q)", got, tc.wantCode, resp.Data)
			}
			if !strings.Contains(string(resp.Data), tc.wantText) {
				t.Errorf("error text %.300q does not mention %q", resp.Data, tc.wantText)
			}
			t.Logf("%s: %.200s", resp.Header.Get("Lf-Error"), resp.Data)
			stillWorks(t, c, before)
		})
	}
}

// TestHostileEvents: events with no reply subject that are malformed or
// unknown are dropped, and the master reports each one in its log; the
// cluster goes on working.
func TestHostileEvents(t *testing.T) {
	logs := newLogRecords()
	c := newCluster(t, clusterConfig{masterOpts: []fabric.Option{fabric.WithLogger(slog.New(logs))}})
	c.start(t, 11)
	before := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances
	nc := plainClient(t, c.url)

	for _, tc := range []struct {
		name, subject, data, wantType string
	}{
		{"unknown event", "lf.control.x.master.0.bogus_event", "{}", "bogus_event"},
		{"garbage player_event", "lf.slave.1.master.0.player_event", "\x00garbage", "player_event"},
		{"player_event against the schema", "lf.slave.1.master.0.player_event", `{"instance_id":11,"type":"dance","name":"x"}`, "player_event"},
		{"request type sent as an event", "lf.control.x.master.0.list_slaves", "{}", "list_slaves"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := nc.Publish(tc.subject, []byte(tc.data)); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, waitLong, "the master drops the event", func() error {
				for _, r := range logs.find("dropped invalid message") {
					if r["endpoint"] == "master" && r["type"] == tc.wantType {
						return nil
					}
				}
				return fmt.Errorf("no record of a dropped %s", tc.wantType)
			})
			stillWorks(t, c, before)
		})
	}
}

// TestSpoofedSlave: without broker authentication a plain client can
// publish on a slave's subjects, but it is a new session of that slave,
// which has not registered: what it says does not change the master's
// view (each claim is refused and counted), and it cannot displace the
// real slave.
func TestSpoofedSlave(t *testing.T) {
	logs := newLogRecords()
	c := newCluster(t, clusterConfig{metrics: true, masterOpts: []fabric.Option{fabric.WithLogger(slog.New(logs))}})
	c.start(t, 11)
	before := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances
	nc := plainClient(t, c.url)

	for _, tc := range []struct{ name, subject, data, claim string }{
		{"update_instances with a fake list", "lf.slave.1.master.0.update_instances", `{"instances":[{"instance_id":66,"name":"fake","status":"running"}]}`, "hosting"},
		{"instance_stopped for a running instance", "lf.slave.1.master.0.instance_stopped", `{"instance_id":11}`, "instance"},
		{"instance_started for a stopped one", "lf.slave.1.master.0.instance_started", `{"instance_id":12}`, "instance"},
		{"instance_output for an instance", "lf.slave.1.master.0.instance_output", `{"instance_id":11,"time":1,"level":"info","message":"forged"}`, "instance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			labels := metricLabels("peer=slave", "claim="+tc.claim)
			n, _ := findMetric(scrapeMetrics(t, c.master.MetricsAddr()), claimsRefused, labels)
			if err := nc.Publish(tc.subject, []byte(tc.data)); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, waitLong, "the master refuses the spoofed event", func() error {
				if got, _ := findMetric(scrapeMetrics(t, c.master.MetricsAddr()), claimsRefused, labels); got != n+1 {
					return fmt.Errorf("%s = %v, want %v", claimsRefused, got, n+1)
				}
				return nil
			})
			stillWorks(t, c, before)
		})
	}
	// The first refusal of each claim is logged, saying why.
	var said []string
	for _, r := range logs.find("refused a claim") {
		said = append(said, r["error"])
	}
	if len(said) == 0 || !strings.Contains(strings.Join(said, "\n"), "has not registered") {
		t.Errorf("refusals logged %q, want one saying the sender has not registered", said)
	}

	t.Run("register_slave for a connected id", func(t *testing.T) {
		msg := natsgo.NewMsg("lf.slave.1.master.0.register_slave")
		msg.Data = []byte(`{"slave_id":1,"name":"evil","version":"6.6.6","instances":[{"instance_id":66,"name":"fake"}]}`)
		resp, err := nc.RequestMsg(msg, waitLong)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		if got := resp.Header.Get("Lf-Error"); got != string(fabric.CodeAlreadyConnected) {
			t.Errorf("Lf-Error = %q, want %q (body %q)", got, fabric.CodeAlreadyConnected, resp.Data)
		}
		stillWorks(t, c, before)
		if got := c.master.Slaves(); got[0].Name != "slave-1" {
			t.Errorf("slave 1 = %+v, want the real one", got[0])
		}
	})
}

// TestUnregisteredSlaveLinkClosed: a session of a slave that speaks but
// never registers (a spoofer, or a process that died first) does not keep
// a link at the master for ever: the master closes it, and says so on the
// link's close subject, within twice its peer timeout.
func TestUnregisteredSlaveLinkClosed(t *testing.T) {
	c := newCluster(t, clusterConfig{fastMaster: true})
	c.start(t, 11)
	before := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances
	nc := plainClient(t, c.url)
	closed, err := nc.SubscribeSync("lf.master.0.slave.9._close.>")
	if err != nil {
		t.Fatal(err)
	}
	msg := natsgo.NewMsg("lf.slave.9.master.0.update_instances.spoofed")
	msg.Data = []byte(`{"instances":[{"instance_id":99,"name":"ghost"}]}`)
	sent := time.Now()
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	notice, err := closed.NextMsg(2*fastPeerTimeout + waitLong)
	if err != nil {
		t.Fatalf("the master did not close the unregistered link: %v", err)
	}
	after := time.Since(sent)
	if got := notice.Subject; !strings.HasSuffix(got, ".spoofed") {
		t.Errorf("close notice %q is not for session %q", got, "spoofed")
	}
	if after > 2*fastPeerTimeout+time.Second {
		t.Errorf("the master closed the link after %s, want about %s", after, 2*fastPeerTimeout)
	}
	t.Logf("the master closed the unregistered link after %s", after.Round(time.Millisecond))
	if got := c.master.Slaves(); len(got) != 2 {
		t.Errorf("master knows slaves %+v, want only 1 and 2", got)
	}
	stillWorks(t, c, before)
}

// TestSpoofedMaster: a plain client that speaks as the master to a slave
// cannot make it act: the slave takes the strange session for a restarted
// master, ends its link and registers again. The forged assignment is not
// applied and the slave is back within the re-registration bound.
func TestSpoofedMaster(t *testing.T) {
	p := newProbes(nil)
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(p.factory)}})
	c.start(t, 11)
	p.setCommandHook(func(_ context.Context, _ int64, _ messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: "no players online"}, nil
	})
	before := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances
	nc := plainClient(t, c.url)

	msg := natsgo.NewMsg("lf.master.0.slave.1.assign_instance")
	msg.Data = []byte(`{"instance_id":66,"name":"fake"}`)
	resp, err := nc.RequestMsg(msg, waitLong)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	if got := resp.Header.Get("Lf-Error"); got == "" {
		t.Errorf("the forged assign_instance was answered without an error: %q", resp.Data)
	}
	if got := c.slave1.Instances(); slices.ContainsFunc(got, func(h messages.HostedInstance) bool { return h.ID == 66 }) {
		t.Errorf("slave 1 hosts %+v after a forged assign_instance", got)
	}
	testkit.Eventually(t, reRegisterBound, "slave 1 registered again", func() error {
		if !c.slave1.Connected() {
			return fmt.Errorf("slave 1 is not registered")
		}
		_, err := requestErr(t, c.alice.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"})
		return err
	})
	stillWorks(t, c, before)
	t.Logf("instance 11 heard %q", p.of(11, "conn:"))
}

// TestOverMaxPayload: a message larger than the broker's max_payload
// never reaches the fabric (the broker cuts the sender off), and the
// cluster is unaffected.
func TestOverMaxPayload(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)
	before := request(t, c.alice.Link(), messages.ListInstances, messages.Empty{}).Instances

	// nats.go refuses to send it, so speak the protocol by hand.
	u, err := url.Parse(c.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, waitLong)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitLong))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("broker greeting %q, %v", line, err)
	}
	size := 2 << 20
	var b bytes.Buffer
	fmt.Fprintf(&b, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPUB lf.control.x.master.0.create_instance _INBOX.big %d\r\n", size)
	b.WriteString(`{"name":"`)
	b.WriteString(strings.Repeat("n", size-len(`{"name":""}`)))
	b.WriteString("\"}\r\n")
	_, _ = conn.Write(b.Bytes()) // the broker may hang up mid-write
	var reply strings.Builder
	for {
		line, err := r.ReadString('\n')
		reply.WriteString(line)
		if err != nil || strings.HasPrefix(line, "-ERR") {
			break
		}
	}
	if !strings.Contains(reply.String(), "Maximum Payload") {
		t.Errorf("broker said %q, want a Maximum Payload error", reply.String())
	}
	stillWorks(t, c, before)
}
