package fabric

import (
	"errors"
	"log/slog"

	"github.com/linkfabric/linkfabric/messages"
)

// Option configures an endpoint in code; what operators set comes from
// the endpoint's Config instead.
type Option func(*options) error

type options struct {
	logger    *slog.Logger
	plugins   []messages.Plugin
	instances InstanceFactory
	output    func(messages.OutputLine)
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
