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

// StartBroker starts an embedded NATS server on listen, a loopback
// host:port (port 0 picks a free one), and waits until it accepts clients.
// It does not block after that; call Close to stop it.
func StartBroker(listen string) (*Broker, error) {
	if err := checkLoopback(listen); err != nil {
		return nil, fmt.Errorf("fabric: embedded NATS on %q: %w", listen, err)
	}
	host, portText, _ := net.SplitHostPort(listen)
	port, _ := strconv.Atoi(portText)
	if port == 0 {
		port = server.RANDOM_PORT
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
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, errors.New("fabric: embedded NATS did not start within 10s (is the port in use?)")
	}
	return &Broker{s: s}, nil
}

// ClientURL returns the URL clients connect to, e.g. nats://127.0.0.1:4222.
func (b *Broker) ClientURL() string { return b.s.ClientURL() }

// Server returns the embedded server, for inspection.
func (b *Broker) Server() *server.Server { return b.s }

// Close shuts the server down and waits until it has. It is idempotent.
func (b *Broker) Close() {
	b.s.Shutdown()
	b.s.WaitForShutdown()
}
