package fabric

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Control is a control client, the side of the fabric that tools use: it
// connects to the master as a user, sends requests, and follows instance
// output.
//
//	ctl, err := fabric.DialControl(ctx, cfg)
//	defer ctl.Close(ctx)
//	slaves, err := link.Request(ctx, ctl.Link(), messages.ListSlaves, messages.Empty{})
type Control struct {
	cfg  ControlConfig
	log  *slog.Logger
	node transport
	l    *link.Link

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// DialControl connects a control to the master. It does not wait for the
// master to answer; the first request does. Until Close, the control pings
// the master every heartbeat interval, so that the master keeps it.
func DialControl(ctx context.Context, cfg ControlConfig, opts ...Option) (*Control, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	catalog, err := messages.NewCatalog(o.plugins...)
	if err != nil {
		return nil, err
	}
	self := link.Address{Type: messages.Control, ID: cfg.User}
	c := &Control{cfg: cfg, log: o.logger.With("endpoint", self.String()), stop: make(chan struct{})}
	url := cfg.NATS.URL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	// A control is a tool someone waits on: if NATS cannot be reached in
	// a few seconds, say so, rather than queue requests for later.
	node, err := connect(ctx, self, cfg.NATS, url, c.log, role{connectWait: 3 * time.Second, local: o.broker})
	if err != nil {
		return nil, err
	}
	c.node = node
	if !c.node.Connected() {
		why := c.node.ConnectError()
		_ = c.node.Close()
		return nil, link.Errorf(link.CodeNotConnected, "cannot reach NATS at %s: %v", url, why)
	}
	conn, err := c.node.Dial(link.MasterAddress)
	if err != nil {
		_ = c.node.Close()
		return nil, err
	}
	if c.l, err = link.New(conn, self, link.MasterAddress, catalog,
		link.WithLogger(c.log), link.WithRequestTimeout(cfg.Timing.RequestTimeout)); err != nil {
		_ = c.node.Close()
		return nil, err
	}
	output := o.output
	link.HandleEvent(c.l, messages.InstanceOutput, func(_ context.Context, line messages.OutputLine) error {
		if output != nil {
			output(line)
		}
		return nil
	})
	if o.handlers != nil {
		o.handlers(c.l)
	}
	// Plugin events for controls that no one here handles are let go.
	for _, def := range catalog.On(messages.Direction{Source: messages.Master, Target: messages.Control}) {
		if !c.l.Handles(def) && def.Kind() == messages.KindEvent {
			c.l.HandleEventJSON(def, func(context.Context, *link.Message) error { return nil })
		}
	}
	if err := c.l.Start(); err != nil {
		_ = c.node.Close()
		return nil, err
	}
	// The master closes the link of a control it has not heard from for
	// the session timeout (a killed process); a live control, idle or not,
	// proves itself with heartbeats.
	c.wg.Add(1)
	go c.heartbeat()
	return c, nil
}

// Link returns the control's link to the master, for link.Request.
func (c *Control) Link() *link.Link { return c.l }

// Follow asks the master to relay the output of the given instances (none
// to stop), which arrives at the WithOutputHandler function. Each call
// replaces the set the control follows; an id that names no instance
// fails it with instance_not_found, and the set stays as it was.
func (c *Control) Follow(ctx context.Context, instanceIDs ...int64) error {
	_, err := link.Request(ctx, c.l, messages.SetInstanceOutputSubscriptions, messages.OutputSubscriptions{InstanceIDs: instanceIDs})
	return err
}

// heartbeat pings the master every heartbeat interval until the control
// closes, so that the master keeps the link of a control that is idle.
func (c *Control) heartbeat() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Timing.HeartbeatInterval)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case <-c.l.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timing.HeartbeatInterval)
			_, err := link.Request(ctx, c.l, messages.Ping, messages.Empty{})
			cancel()
			if err == nil {
				lastOK = time.Now()
				continue
			}
			c.log.Warn("master did not answer a heartbeat", "error", err)
			if time.Since(lastOK) > c.cfg.Timing.PeerTimeout {
				c.log.Warn("master lost: no answer to heartbeats", "timeout", c.cfg.Timing.PeerTimeout)
				_ = c.l.Close()
				return
			}
		}
	}
}

// Done is closed when the link to the master has closed: the master closed
// it, or has not answered heartbeats for the peer timeout.
func (c *Control) Done() <-chan struct{} { return c.l.Done() }

// Close disconnects gracefully (in-flight requests end, within ctx) and
// closes the NATS connection.
func (c *Control) Close(ctx context.Context) error {
	c.stopOnce.Do(func() { close(c.stop) })
	err := c.l.Disconnect(ctx)
	c.wg.Wait()
	return errors.Join(err, c.node.Close())
}
