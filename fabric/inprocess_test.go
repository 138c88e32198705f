package fabric_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// clientAddrs maps each client connection of s, by name, to the address
// it came from: a TCP client's is its loopback IP, an in-process one's is
// not an IP at all.
func clientAddrs(t *testing.T, s *server.Server) map[string]string {
	t.Helper()
	cz, err := s.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatalf("Connz: %v", err)
	}
	out := map[string]string{}
	for _, c := range cz.Conns {
		out[c.Name] = c.IP
	}
	return out
}

func addrOf(addrs map[string]string, endpoint string) (string, bool) {
	for name, ip := range addrs {
		if strings.HasSuffix(name, " "+endpoint) {
			return ip, true
		}
	}
	return "", false
}

// TestInProcessConnections: a master connects to the broker it embeds
// in-process, and so do endpoints given that broker (WithLocalBroker);
// others come over loopback TCP, which the broker still listens on, and
// all of them talk to each other.
func TestInProcessConnections(t *testing.T) {
	m := startMasterConfig(t, fabric.MasterConfig{NATS: natsConfig(""), Listen: "127.0.0.1:0", Grants: fabric.AllGrants(), Timing: testTiming(), Log: logConfig()})
	b := m.Broker()
	if b == nil {
		t.Fatal("a master without a NATS URL has no embedded broker")
	}
	url := b.ClientURL()
	local := startSlave(t, url, 1, "101:alpha", fabric.WithLocalBroker(b))
	remote := startSlave(t, url, 2, "201:beta")
	ctl, _ := dialControl(t, url, "admin", fabric.WithLocalBroker(b))
	for _, s := range []*fabric.Slave{local, remote} {
		if !s.Connected() {
			t.Fatalf("a slave did not register")
		}
	}

	addrs := clientAddrs(t, b.Server())
	for endpoint, inProcess := range map[string]bool{"master/0": true, "slave/1": true, "slave/2": false, "control/admin": true} {
		ip, ok := addrOf(addrs, endpoint)
		switch {
		case !ok:
			t.Errorf("%s has no connection to the broker; connections: %v", endpoint, addrs)
		case inProcess && ip == "127.0.0.1":
			t.Errorf("%s connected over loopback TCP, not in-process", endpoint)
		case !inProcess && ip != "127.0.0.1":
			t.Errorf("%s connected from %q, not over loopback TCP", endpoint, ip)
		}
	}

	// Messages cross between the two kinds of connection both ways.
	ctx := testkit.Ctx(t, waitLong)
	for _, id := range []int64{101, 201} {
		if _, err := link.Request(ctx, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: id}); err != nil {
			t.Fatalf("start_instance %d: %v", id, err)
		}
	}
	// instance_started comes up from each instance on a path of its own,
	// after (or before) the answer.
	for _, id := range []int64{101, 201} {
		waitStatus(t, ctl.Link(), id, messages.StatusRunning)
	}
}

// TestLocalBrokerOtherURL: an endpoint given a local broker but configured
// with another URL connects over TCP to that URL.
func TestLocalBrokerOtherURL(t *testing.T) {
	local, other := startBroker(t), startBroker(t)
	startMaster(t, other.ClientURL(), "*=*", fabric.WithLocalBroker(local))
	if _, ok := addrOf(clientAddrs(t, local.Server()), "master/0"); ok {
		t.Error("the master connected to the local broker, not to its configured URL")
	}
	ip, ok := addrOf(clientAddrs(t, other.Server()), "master/0")
	if !ok || ip != "127.0.0.1" {
		t.Errorf("the master's connection to its configured broker: %q, %v; want loopback TCP", ip, ok)
	}
}
