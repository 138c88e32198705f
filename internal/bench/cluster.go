package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The benchmark's own messages, a plugin every endpoint of its cluster has.

// Data is the payload of bench:echo and bench:tick.
type Data struct {
	Seq  int64  `json:"seq"`
	Data string `json:"data"`
}

// Target is the payload of bench:forward.
type Target struct {
	InstanceID int64  `json:"instance_id"`
	Data       string `json:"data"`
}

// Announcement is the payload of bench:announce.
type Announcement struct {
	Round int64 `json:"round"`
}

var (
	// Echo is answered by the master with its own payload.
	Echo = messages.MustRequest[Data, Data](messages.Spec{
		Name: "bench:echo", Links: []messages.Direction{messages.ControlToMaster}, Permission: "bench.echo",
		Description: "The master answers with the payload.",
	})
	// EchoJSON is Echo for senders and handlers that deal in JSON.
	EchoJSON = messages.MustRequest[Data, Data](messages.Spec{
		Name: "bench:echo_json", Links: []messages.Direction{messages.ControlToMaster}, Permission: "bench.echo",
		Description: "The master answers with the payload, as JSON.",
	})
	// Tick is counted by the master.
	Tick = messages.MustEvent[Data](messages.Spec{
		Name: "bench:tick", Links: []messages.Direction{messages.ControlToMaster}, Permission: "bench.tick",
		Description: "The master counts it.",
	})
	// TickJSON is Tick for senders and handlers that deal in JSON.
	TickJSON = messages.MustEvent[Data](messages.Spec{
		Name: "bench:tick_json", Links: []messages.Direction{messages.ControlToMaster}, Permission: "bench.tick",
		Description: "The master counts it, as JSON.",
	})
	// Forward is answered by an instance with its payload.
	Forward = messages.MustRequest[Target, Target](messages.Spec{
		Name: "bench:forward", Links: []messages.Direction{messages.ControlToMaster, messages.MasterToSlave, messages.SlaveToInstance},
		ForwardTo: messages.Instance, Permission: "bench.forward",
		Description: "An instance answers with the payload.",
	})
	// Announce is broadcast to every instance.
	Announce = messages.MustEvent[Announcement](messages.Spec{
		Name: "bench:announce", Links: []messages.Direction{messages.ControlToMaster, messages.MasterToSlave, messages.SlaveToInstance},
		BroadcastTo: messages.Instance, Permission: "bench.announce",
		Description: "Broadcast to every instance.",
	})

	plugin = messages.Plugin{Name: "bench", Messages: []messages.Message{Echo, EchoJSON, Tick, TickJSON, Forward, Announce}}
)

// cluster is a master, slaves and a control on an embedded broker, all in
// the broker's process and connected to it in-process, as fabric dev's are.
type cluster struct {
	broker *fabric.Broker
	master *fabric.Master
	slaves []*fabric.Slave
	ctl    *fabric.Control

	ticks     counter // bench:tick events the master has handled
	announced announcer
}

// counter counts events and says when it reaches a target.
type counter struct {
	n    atomic.Int64
	want atomic.Int64
	done atomic.Pointer[chan struct{}]
}

// expect resets the count and returns a channel closed when it reaches n.
func (c *counter) expect(n int64) <-chan struct{} {
	ch := make(chan struct{})
	c.n.Store(0)
	c.want.Store(n)
	c.done.Store(&ch)
	return ch
}

func (c *counter) add() {
	if c.n.Add(1) == c.want.Load() {
		close(*c.done.Load())
	}
}

// announcer counts, per round, the instances a broadcast has reached.
type announcer struct {
	mu     sync.Mutex
	want   int64
	rounds map[int64]*round
}

type round struct {
	got  int64
	done chan struct{}
}

func (a *announcer) expect(r int64, n int64) chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rounds == nil {
		a.rounds = map[int64]*round{}
	}
	a.want = n
	rd := &round{done: make(chan struct{})}
	a.rounds[r] = rd
	return rd.done
}

func (a *announcer) reached(r int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rd := a.rounds[r]
	if rd == nil {
		return
	}
	rd.got++
	if rd.got == a.want {
		close(rd.done)
	}
}

func timing() fabric.TimingConfig {
	return fabric.TimingConfig{RequestTimeout: 30 * time.Second, HeartbeatInterval: 2 * time.Second, PeerTimeout: time.Hour, SessionTimeout: time.Hour}
}

func natsConfig(url string) fabric.NATSConfig {
	return fabric.NATSConfig{URL: url, Prefix: "lf", PingInterval: 5 * time.Second}
}

var logConfig = fabric.LogConfig{Level: "error", Format: "text"}

// startCluster starts a broker, a master, slaves of instancesPerSlave
// running instances each, and a control.
func startCluster(ctx context.Context, cfg Config, slaves, instancesPerSlave int) (*cluster, error) {
	c, err := startStopped(ctx, cfg, slaves, instancesPerSlave)
	if err != nil {
		return nil, err
	}
	if err := c.startInstances(ctx); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// startStopped is startCluster with the instances not started.
func startStopped(ctx context.Context, cfg Config, slaves, instancesPerSlave int) (*cluster, error) {
	c := &cluster{}
	var err error
	if c.broker, err = fabric.StartBroker("127.0.0.1:0", ""); err != nil {
		return nil, err
	}
	url := c.broker.ClientURL()
	masterHandlers := fabric.WithHandlers(messages.Control, func(l *link.Link) {
		// They return at once, as a raw subscriber's callback does: run
		// them where the message is delivered.
		nb := link.NonBlocking()
		link.HandleRequest(l, Echo, func(_ context.Context, d Data) (Data, error) { return d, nil }, nb)
		l.HandleRequestJSON(EchoJSON, func(_ context.Context, m *link.Envelope) ([]byte, error) { return m.Data, nil }, nb)
		link.HandleEvent(l, Tick, func(context.Context, Data) error {
			c.ticks.add()
			return nil
		}, nb)
		l.HandleEventJSON(TickJSON, func(context.Context, *link.Envelope) error {
			c.ticks.add()
			return nil
		}, nb)
	})
	mcfg := fabric.MasterConfig{NATS: natsConfig(url), Listen: "127.0.0.1:0", Grants: fabric.AllGrants(), Timing: timing(), Log: logConfig}
	if c.master, err = fabric.StartMaster(ctx, mcfg, fabric.WithLogger(cfg.Log), fabric.WithLocalBroker(c.broker), fabric.WithPlugins(plugin), masterHandlers); err != nil {
		c.close()
		return nil, err
	}
	for i := 1; i <= slaves; i++ {
		if err := c.addSlave(ctx, cfg, i, instancesPerSlave); err != nil {
			c.close()
			return nil, err
		}
	}
	ccfg := fabric.ControlConfig{NATS: natsConfig(url), User: "bench", Timing: timing(), Log: logConfig}
	if c.ctl, err = fabric.DialControl(ctx, ccfg, fabric.WithLogger(cfg.Log), fabric.WithLocalBroker(c.broker), fabric.WithPlugins(plugin)); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// addSlave starts slave id with instances stopped instances.
func (c *cluster) addSlave(ctx context.Context, cfg Config, id, instances int) error {
	factory := func(id int64, name string) fabric.Instance { return &instance{id: id, name: name, c: c} }
	var hosted []messages.HostedInstance
	for j := 1; j <= instances; j++ {
		iid := int64(id*1000 + j)
		hosted = append(hosted, messages.HostedInstance{ID: iid, Name: "i" + strconv.FormatInt(iid, 10)})
	}
	scfg := fabric.SlaveConfig{NATS: natsConfig(c.broker.ClientURL()), ID: int64(id), Instances: hosted, Timing: timing(), Log: logConfig}
	s, err := fabric.StartSlave(ctx, scfg, fabric.WithLogger(cfg.Log), fabric.WithLocalBroker(c.broker), fabric.WithPlugins(plugin), fabric.WithInstanceFactory(factory))
	if err != nil {
		return err
	}
	c.slaves = append(c.slaves, s)
	if !s.Connected() {
		return fmt.Errorf("slave %d did not register", id)
	}
	return nil
}

// startInstances starts every instance, each slave's in turn, the slaves
// at once.
func (c *cluster) startInstances(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.slaves))
	for i, s := range c.slaves {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, h := range s.Instances() {
				if _, err := link.Request(ctx, c.ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: h.ID}); err != nil {
					errs[i] = fmt.Errorf("start instance %d: %w", h.ID, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *cluster) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.ctl != nil {
		_ = c.ctl.Close(ctx)
	}
	var wg sync.WaitGroup
	for _, s := range c.slaves {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Close(ctx)
		}()
	}
	wg.Wait()
	if c.master != nil {
		_ = c.master.Close(ctx)
	}
	if c.broker != nil {
		c.broker.Close()
	}
}

// instance is the benchmark's instance: a simulated one that also answers
// bench:forward and counts bench:announce.
type instance struct {
	id   int64
	name string
	c    *cluster
}

func (i *instance) Attach(l *link.Link) {
	fabric.SimulatedInstances(i.id, i.name).Attach(l)
	l.HandleRequestJSON(Forward, func(_ context.Context, m *link.Envelope) ([]byte, error) {
		return m.Data, nil // the same fields as Data's, but instance_id
	}, link.NonBlocking())
	link.HandleEvent(l, Announce, func(_ context.Context, a Announcement) error {
		i.c.announced.reached(a.Round)
		return nil
	}, link.NonBlocking())
}
