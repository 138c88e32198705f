package fabric

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Broker is a NATS server embedded in the process, listening on loopback
// only: what the master runs when no NATS URL is configured, and what tests
// run on a random port. It runs JetStream, where the master keeps its
// state.
type Broker struct {
	s       *server.Server
	tempDir string // removed by Close; "" when the data directory is the caller's
	ws      bool   // it accepts WebSocket clients
}

// BrokerOption configures StartBroker.
type BrokerOption func(*brokerOptions)

type brokerOptions struct {
	wsListen  string
	wsOrigins []string
}

// WithWebSocket makes the broker accept NATS clients over WebSocket too
// (browsers: the web console), on listen, a loopback host:port (port 0
// picks a free one), without TLS since it is loopback only. A browser's
// connection is accepted only from a page of one of origins (such as
// "http://127.0.0.1:4280"), so that no other web site the user visits can
// reach the broker; clients that are not browsers send no origin and are
// not checked. No origins: every page may connect.
func WithWebSocket(listen string, origins ...string) BrokerOption {
	return func(o *brokerOptions) {
		o.wsListen = listen
		o.wsOrigins = origins
	}
}

// brokerStartTimeout bounds how long StartBroker waits for the server to
// accept clients once it listens.
const brokerStartTimeout = 10 * time.Second

// StartBroker starts an embedded NATS server on listen, a loopback
// host:port (port 0 picks a free one), with JetStream storing its files in
// dataDir ("" for a new temporary directory that Close removes, so that
// nothing survives the broker), and waits until it accepts clients. It does
// not block after that; call Close to stop it. Only one broker may use a
// data directory at a time. An address that is taken fails at once, with
// an error that matches syscall.EADDRINUSE.
func StartBroker(listen, dataDir string, options ...BrokerOption) (*Broker, error) {
	var bo brokerOptions
	for _, o := range options {
		o(&bo)
	}
	if err := checkLoopback(listen); err != nil {
		return nil, fmt.Errorf("fabric: embedded NATS on %q: %w", listen, err)
	}
	host, port, err := loopbackPort(listen)
	if err != nil {
		// Checked before the server starts: it opens its JetStream store
		// before it listens, and must not touch the files of a broker that
		// is already running there.
		return nil, err
	}
	var ws server.WebsocketOpts
	if bo.wsListen != "" {
		if err := checkLoopback(bo.wsListen); err != nil {
			return nil, fmt.Errorf("fabric: embedded NATS, WebSocket on %q: %w", bo.wsListen, err)
		}
		if ws.Host, ws.Port, err = loopbackPort(bo.wsListen); err != nil {
			return nil, fmt.Errorf("%w: %w", errWebSocketListen, err)
		}
		ws.NoTLS = true // loopback only
		ws.AllowedOrigins = bo.wsOrigins
	}
	b := &Broker{}
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "linkfabric-nats-")
		if err != nil {
			return nil, fmt.Errorf("fabric: embedded NATS: data directory: %w", err)
		}
		dataDir, b.tempDir = dir, dir
	} else if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: FABRIC_DATA_DIR=%q: want a directory the master may write: %v", ErrConfig, dataDir, err)
	}
	opts := &server.Options{
		Host:      host,
		Port:      port,
		NoSigs:    true, // the embedding program owns its signals
		NoLog:     true,
		JetStream: true,
		StoreDir:  dataDir,
		Websocket: ws,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		b.removeTemp()
		return nil, fmt.Errorf("fabric: embedded NATS: %w", err)
	}
	// The server reports a failure to listen (someone took the port since
	// the check above) only as a fatal log line: catch it, rather than
	// wait for a readiness that never comes.
	fatal := make(chan string, 1)
	s.SetLogger(fatalLogger(fatal), false, false)
	go s.Start()
	deadline := time.Now().Add(brokerStartTimeout)
	for !s.ReadyForConnections(50 * time.Millisecond) {
		select {
		case why := <-fatal:
			s.Shutdown()
			s.WaitForShutdown()
			b.removeTemp()
			return nil, fmt.Errorf("fabric: embedded NATS on %s: %s", listen, why)
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			s.WaitForShutdown()
			b.removeTemp()
			return nil, errors.New("fabric: embedded NATS did not accept clients within " + brokerStartTimeout.String())
		}
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		s.WaitForShutdown()
		b.removeTemp()
		return nil, fmt.Errorf("%w: FABRIC_DATA_DIR=%q: the embedded NATS server could not start JetStream there (is the directory writable, and not used by another master?)", ErrConfig, dataDir)
	}
	b.s = s
	b.ws = bo.wsListen != ""
	return b, nil
}

// errWebSocketListen marks StartBroker's failure to listen for WebSocket
// clients (WithWebSocket), as opposed to NATS clients.
var errWebSocketListen = errors.New("fabric: embedded NATS, WebSocket listener")

// loopbackPort splits a checked loopback address into the host and the
// port nats-server takes, refusing a fixed port that is already taken.
func loopbackPort(addr string) (string, int, error) {
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portText)
	if port == 0 {
		return host, server.RANDOM_PORT, nil
	}
	return host, port, portFree(addr)
}

// portFree reports whether something already listens on addr, as an
// error that matches syscall.EADDRINUSE if so.
func portFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fabric: embedded NATS on %s: %w", addr, err)
	}
	return l.Close()
}

// fatalLogger is a nats-server logger that passes on the first fatal
// error and drops everything else.
type fatalLogger chan string

func (l fatalLogger) Fatalf(format string, v ...any) {
	select {
	case l <- fmt.Sprintf(format, v...):
	default:
	}
}
func (fatalLogger) Noticef(string, ...any) {}
func (fatalLogger) Warnf(string, ...any)   {}
func (fatalLogger) Errorf(string, ...any)  {}
func (fatalLogger) Debugf(string, ...any)  {}
func (fatalLogger) Tracef(string, ...any)  {}

// ClientURL returns the URL clients connect to, e.g. nats://127.0.0.1:4222.
func (b *Broker) ClientURL() string { return b.s.ClientURL() }

// WebSocketURL returns the URL WebSocket clients connect to, such as
// ws://127.0.0.1:4223, or "" if the broker does not accept them
// (WithWebSocket).
func (b *Broker) WebSocketURL() string {
	if !b.ws {
		return ""
	}
	return b.s.WebsocketURL()
}

// Server returns the embedded server, for inspection.
func (b *Broker) Server() *server.Server { return b.s }

// Close shuts the server down and waits until it has, then removes its
// data directory if it was a temporary one. It is idempotent.
func (b *Broker) Close() {
	b.s.Shutdown()
	b.s.WaitForShutdown()
	b.removeTemp()
}

func (b *Broker) removeTemp() {
	if b.tempDir != "" {
		_ = os.RemoveAll(b.tempDir)
	}
}
