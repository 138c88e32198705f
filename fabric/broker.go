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
func StartBroker(listen, dataDir string) (*Broker, error) {
	if err := checkLoopback(listen); err != nil {
		return nil, fmt.Errorf("fabric: embedded NATS on %q: %w", listen, err)
	}
	host, portText, _ := net.SplitHostPort(listen)
	port, _ := strconv.Atoi(portText)
	if port == 0 {
		port = server.RANDOM_PORT
	} else if err := portFree(listen); err != nil {
		// Checked before the server starts: it opens its JetStream store
		// before it listens, and must not touch the files of a broker that
		// is already running there.
		return nil, err
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
	return b, nil
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
