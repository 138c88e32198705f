package fabric

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Broker is a NATS server embedded in the process, listening on loopback
// only: what the master runs when no NATS URL is configured, and what tests
// run on a random port.
type Broker struct {
	s *server.Server
}

// brokerStartTimeout bounds how long StartBroker waits for the server to
// accept clients once it listens.
const brokerStartTimeout = 10 * time.Second

// StartBroker starts an embedded NATS server on listen, a loopback
// host:port (port 0 picks a free one), and waits until it accepts clients.
// It does not block after that; call Close to stop it. An address that is
// taken fails at once, with an error that matches syscall.EADDRINUSE.
func StartBroker(listen string) (*Broker, error) {
	if err := checkLoopback(listen); err != nil {
		return nil, fmt.Errorf("fabric: embedded NATS on %q: %w", listen, err)
	}
	host, portText, _ := net.SplitHostPort(listen)
	port, _ := strconv.Atoi(portText)
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// Try the address first, for an error that says what is wrong:
		// the server only logs why it could not listen.
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("fabric: embedded NATS on %s: %w", listen, err)
		}
		ln.Close()
	}
	opts := &server.Options{
		Host:   host,
		Port:   port,
		NoSigs: true, // the embedding program owns its signals
		NoLog:  true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
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
			return nil, fmt.Errorf("fabric: embedded NATS on %s: %s", listen, why)
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			s.WaitForShutdown()
			return nil, errors.New("fabric: embedded NATS did not accept clients within " + brokerStartTimeout.String())
		}
	}
	return &Broker{s: s}, nil
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

// Close shuts the server down and waits until it has. It is idempotent.
func (b *Broker) Close() {
	b.s.Shutdown()
	b.s.WaitForShutdown()
}
