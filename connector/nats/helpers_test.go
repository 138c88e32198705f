package nats_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// quiet discards logs: the tests provoke many warnings on purpose.
var quiet = slog.New(slog.DiscardHandler)

var (
	masterAddr = link.MasterAddress
	slaveAddr  = link.Address{Type: messages.Slave, ID: "3"}
)

// runServer starts an embedded nats-server on 127.0.0.1, on port if it is
// not 0 and a random port otherwise, with edit applied to its options. It
// is shut down when the test ends.
func runServer(t testing.TB, port int, edit func(*server.Options)) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	opts := &server.Options{Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true}
	if edit != nil {
		edit(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready for connections")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// port returns the client port a running server listens on.
func port(t testing.TB, s *server.Server) int {
	t.Helper()
	a, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("server address %v is not TCP", s.Addr())
	}
	return a.Port
}

// connect starts a Node for self on s, closed when the test ends. The
// tests' master, like the fabric's, is the one process of its address: it
// answers what is sent to an ended session of it (WithAnswerStale).
func connect(t testing.TB, s *server.Server, self link.Address, opts ...lfnats.Option) *lfnats.Node {
	t.Helper()
	opts = append([]lfnats.Option{lfnats.WithURLs(s.ClientURL()), lfnats.WithLogger(quiet)}, opts...)
	if self == masterAddr {
		opts = append([]lfnats.Option{lfnats.WithAnswerStale()}, opts...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := lfnats.Connect(ctx, self, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", self, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	// Connect returns before the server has surely seen the Node's
	// subscriptions; a plain client (which does not retry on "no
	// responders") must not race them.
	if err := n.NATS().Flush(); err != nil {
		t.Fatalf("flush %s: %v", self, err)
	}
	return n
}

// plainClient connects a nats.go client with none of the fabric's logic.
func plainClient(t testing.TB, s *server.Server) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("plain client: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startLink makes a started link over conn whose handlers setup attaches
// (the rest stubbed), closed when the test ends.
func startLink(t testing.TB, conn link.Connector, self, peer link.Address, setup func(*link.Link), opts ...link.Option) *link.Link {
	t.Helper()
	l, err := newStartedLink(conn, self, peer, setup, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func newStartedLink(conn link.Connector, self, peer link.Address, setup func(*link.Link), opts ...link.Option) (*link.Link, error) {
	opts = append([]link.Option{link.WithLogger(quiet)}, opts...)
	l, err := link.New(conn, self, peer, linktest.Catalog(), opts...)
	if err != nil {
		return nil, fmt.Errorf("link %s -> %s: %w", self, peer, err)
	}
	if setup != nil {
		setup(l)
	}
	linktest.Stub(l, linktest.Catalog())
	if err := l.Start(); err != nil {
		return nil, fmt.Errorf("start link %s -> %s: %w", self, peer, err)
	}
	return l, nil
}

// acceptor is an accept function that starts a link on every connector it
// is offered and hands the links out, in order, on its channel.
type acceptor struct {
	links chan *link.Link
	setup func(*link.Link)
	opts  []link.Option
}

// newAcceptor returns an acceptor whose links get setup's handlers and
// opts. Links nobody took with next are closed when the test ends.
func newAcceptor(t testing.TB, setup func(*link.Link), opts ...link.Option) *acceptor {
	a := &acceptor{links: make(chan *link.Link, 64), setup: setup, opts: opts}
	t.Cleanup(func() {
		for {
			select {
			case l := <-a.links:
				_ = l.Close()
			default:
				return
			}
		}
	})
	return a
}

func (a *acceptor) option() lfnats.Option {
	return lfnats.WithAccept(func(c *lfnats.Conn) error {
		l, err := newStartedLink(c, c.Node().Self(), c.Peer(), a.setup, a.opts...)
		if err != nil {
			return err
		}
		select {
		case a.links <- l:
		default:
			_ = l.Close()
			return fmt.Errorf("test acceptor: too many links")
		}
		return nil
	})
}

// next returns the next link accepted, closed when the test ends.
func (a *acceptor) next(t testing.TB) *link.Link {
	t.Helper()
	l := testkit.Recv(t, a.links, 10*time.Second, "a link to be accepted")
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// dial starts a link from node to peer.
func dial(t testing.TB, node *lfnats.Node, peer link.Address, setup func(*link.Link), opts ...link.Option) *link.Link {
	t.Helper()
	conn, err := node.Dial(peer)
	if err != nil {
		t.Fatalf("dial %s: %v", peer, err)
	}
	return startLink(t, conn, node.Self(), peer, setup, opts...)
}

// echo attaches linktest.EchoHandler, if Echo can arrive on l.
func echo(l *link.Link) {
	if linktest.Echo.ValidOn(messages.Direction{Source: l.Peer().Type, Target: l.Self().Type}) {
		link.HandleRequest(l, linktest.Echo, linktest.EchoHandler(l))
	}
}

// ping sends a ping on l and fails the test if it fails.
func ping(t testing.TB, l *link.Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := link.Request(ctx, l, messages.Ping, messages.Empty{}); err != nil {
		t.Fatalf("ping from %s to %s: %v", l.Self(), l.Peer(), err)
	}
}

// statuses records what a link's status handler is told.
type statuses struct{ ch chan link.Status }

func newStatuses() *statuses { return &statuses{ch: make(chan link.Status, 64)} }

func (s *statuses) option() link.Option {
	return link.WithStatusHandler(func(st link.Status) {
		select {
		case s.ch <- st:
		default:
		}
	})
}

// await fails the test unless want is the next status within timeout.
func (s *statuses) await(t testing.TB, want link.Status, timeout time.Duration) {
	t.Helper()
	if got := testkit.Recv(t, s.ch, timeout, "status "+want.String()); got != want {
		t.Fatalf("got status %s, want %s", got, want)
	}
}

// headerMsg returns a message to subject with the given headers, in pairs.
func headerMsg(subject string, data string, kv ...string) *natsgo.Msg {
	m := natsgo.NewMsg(subject)
	for i := 0; i+1 < len(kv); i += 2 {
		m.Header.Set(kv[i], kv[i+1])
	}
	m.Data = []byte(data)
	return m
}
