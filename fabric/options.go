package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Option configures an endpoint in code; what operators set comes from
// the endpoint's Config instead.
type Option func(*options) error

type options struct {
	handlers  handlerSet
	logger    *slog.Logger
	plugins   []messages.Plugin
	instances InstanceFactory
	output    func(messages.OutputLine)
	authorize ControlAuthorizer
	broker    *Broker
	// subscribable are the plugins' update events (WithSubscribable).
	subscribable []subscribable
}

func buildOptions(opts []Option) (options, error) {
	o := options{logger: slog.Default(), instances: SimulatedInstances}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// WithLogger sets the endpoint's logger. Defaults to slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("fabric: nil logger")
		}
		o.logger = l
		return nil
	}
}

// WithPlugins adds plugins' messages to the endpoint's catalog. Every
// endpoint of a cluster must be built with the same plugins. Forwarded and
// broadcast plugin messages are routed by the fabric; any other plugin
// message an endpoint receives needs a handler, or the endpoint refuses
// the link. Defaults to none.
func WithPlugins(plugins ...messages.Plugin) Option {
	return func(o *options) error {
		o.plugins = append(o.plugins, plugins...)
		return nil
	}
}

// WithHandlers adds attach, a function that attaches a plugin's handlers
// to each link the endpoint makes to an endpoint of type peer, before the
// link starts: the master's links to slaves and to controls, a slave's
// link to the master, to each of its instances and, when the catalog has
// messages from slave to slave, with each other slave (peer
// messages.Slave: the direct links, where those arrive), a control's link
// to the master. Handlers compose: every function given for a peer type runs, in
// the order given, so that each plugin attaches its own; attaching a
// second handler for one message is a mistake that the endpoint reports
// as it starts. The fabric routes what the functions leave unhandled
// (forwarding, broadcasts); a message that arrives at its destination
// needs a handler here, or the endpoint refuses to start, naming the
// message. Defaults to none.
func WithHandlers(peer messages.Endpoint, attach func(l *link.Link)) Option {
	return func(o *options) error {
		if !peer.Valid() || attach == nil {
			return fmt.Errorf("fabric: WithHandlers needs an endpoint type and a function, not %s and %p", peer, attach)
		}
		o.handlers = append(o.handlers, peerHandlers{peer, attach})
		return nil
	}
}

// handlerSet is what WithHandlers gave, in order.
type handlerSet []peerHandlers

type peerHandlers struct {
	peer   messages.Endpoint
	attach func(*link.Link)
}

// attach runs, in order, the functions given for l's peer type.
func (hs handlerSet) attach(l *link.Link) {
	for _, h := range hs {
		if h.peer == l.Peer().Type {
			h.attach(l)
		}
	}
}

// WithInstanceFactory sets how a slave makes the instances it hosts.
// Defaults to SimulatedInstances.
func WithInstanceFactory(f InstanceFactory) Option {
	return func(o *options) error {
		if f == nil {
			return errors.New("fabric: nil instance factory")
		}
		o.instances = f
		return nil
	}
}

// WithOutputHandler sets what a control does with the instance output the
// master relays to it (see Control.Follow). Defaults to discarding it.
func WithOutputHandler(f func(messages.OutputLine)) Option {
	return func(o *options) error {
		o.output = f
		return nil
	}
}

// WithLocalBroker tells an endpoint that b, an embedded broker, runs in
// its process: when the endpoint's NATS URL is b's (Broker.ClientURL), it
// connects to b in-process, through a pipe rather than loopback TCP, which
// costs no system call per message. b must outlive the endpoint: an
// in-process connection cannot reconnect to another server. A master that
// embeds its own broker connects to it in-process without this option.
// Defaults to none: every endpoint connects over TCP.
func WithLocalBroker(b *Broker) Option {
	return func(o *options) error {
		if b == nil {
			return errors.New("fabric: nil broker")
		}
		o.broker = b
		return nil
	}
}

// A ControlAuthorizer decides, on the master, whether control user may
// have a message handled, once FABRIC_CONTROL_PERMISSIONS has granted the
// message's permission: like Clusterio's function permissions, it sees
// the message's definition and the message itself (its type and payload,
// already checked against the schema), so it can allow a user some
// instances and not others. The user is the one the broker lets publish on
// the control's subjects, never a field the control wrote. A nil error
// allows the message; see link.Authorizer for what a refusal does. A
// subscription (the subscribe request) is shown to it as the request that
// reads the same data, list_slaves for slave_updates and list_instances
// for instance_updates, with the subscribe request as m; a plugin's update
// event as itself.
type ControlAuthorizer func(ctx context.Context, user string, def *messages.Definition, m *link.Envelope) error

// WithControlAuthorizer adds authorize to the master's permission check of
// what controls send (see ControlAuthorizer). Other endpoints ignore it.
// Defaults to none: the permission table alone decides.
func WithControlAuthorizer(authorize ControlAuthorizer) Option {
	return func(o *options) error {
		o.authorize = authorize
		return nil
	}
}

// checkWiring builds a throwaway link from self to peer, wires it as the
// endpoint would, and starts it: the error names every message that could
// arrive with no handler.
func checkWiring(catalog *messages.Catalog, self, peer link.Address, wire func(*link.Link)) error {
	a, _ := virtual.Pair()
	l, err := link.New(a, self, peer, catalog, link.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	wire(l)
	err = l.Start()
	_ = l.Close()
	if err != nil {
		return fmt.Errorf("fabric: %s cannot handle what a %s may send it (attach handlers WithHandlers): %w", self.Type, peer.Type, err)
	}
	return nil
}
