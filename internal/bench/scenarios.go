package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// rawConn is a plain nats.go connection to the cluster's broker, made as
// the cluster's endpoints make theirs: in-process.
func rawConn(b *fabric.Broker, opts ...natsgo.Option) (*natsgo.Conn, error) {
	return natsgo.Connect(b.ClientURL(), append(opts, natsgo.InProcessServer(b.Server()))...)
}

// rawPair is two plain nats.go connections on the cluster's broker.
func rawPair(broker *fabric.Broker) (a, b *natsgo.Conn, err error) {
	if a, err = rawConn(broker); err != nil {
		return nil, nil, err
	}
	if b, err = rawConn(broker); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// timeRequests makes n requests with do, from par goroutines at once, and
// returns each one's round trip and the wall time of all.
func timeRequests(n, par int, do func(i int) error) (latencies, time.Duration, error) {
	lat := make(latencies, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t := time.Now()
				if err := do(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}

// rounds is how many times each measurement alternates between the
// baseline and the fabric, so that both see the machine in the same mood.
const rounds = 5

// rawEcho connects a plain responder that answers bench.echo with the
// request's payload, and a plain requester; request sends body to it.
// stop closes both.
func rawEcho(b *fabric.Broker, body []byte) (request func(int) error, stop func(), err error) {
	responder, requester, err := rawPair(b)
	if err != nil {
		return nil, nil, err
	}
	stop = func() {
		responder.Close()
		requester.Close()
	}
	if _, err := responder.Subscribe("bench.echo", func(m *natsgo.Msg) { _ = m.Respond(m.Data) }); err != nil {
		stop()
		return nil, nil, err
	}
	if err := responder.Flush(); err != nil {
		stop()
		return nil, nil, err
	}
	request = func(int) error {
		_, err := requester.Request("bench.echo", body, 10*time.Second)
		return err
	}
	return request, stop, nil
}

func runRequests(ctx context.Context, cfg Config) ([]Result, error) {
	c, err := startCluster(ctx, cfg, 0, 0)
	if err != nil {
		return nil, err
	}
	defer c.close()
	data := Data{Data: payload(cfg.PayloadBytes)}
	body, _ := json.Marshal(data)

	raw, stop, err := rawEcho(c.broker, body)
	if err != nil {
		return nil, err
	}
	defer stop()
	l := c.ctl.Link()
	viaJSON := func(int) error {
		_, err := l.RequestJSON(ctx, EchoJSON, body)
		return err
	}
	typed := func(i int) error {
		d := data
		d.Seq = int64(i)
		resp, err := link.Request(ctx, l, Echo, d)
		if err == nil && resp.Seq != d.Seq {
			err = fmt.Errorf("answer %d to request %d", resp.Seq, d.Seq)
		}
		return err
	}
	for i := range 200 { // warm up connections, buffers and the scheduler
		for _, f := range []func(int) error{raw, viaJSON, typed} {
			if err := f(i); err != nil {
				return nil, err
			}
		}
	}

	var seq [3]latencies
	var parWall [3]time.Duration
	for range rounds {
		for i, f := range []func(int) error{raw, viaJSON, typed} {
			lat, _, err := timeRequests(cfg.Requests/rounds, 1, f)
			if err != nil {
				return nil, err
			}
			seq[i] = append(seq[i], lat...)
		}
		for i, f := range []func(int) error{raw, viaJSON, typed} {
			_, wall, err := timeRequests(cfg.ParallelRequests/rounds, cfg.Parallel, f)
			if err != nil {
				return nil, err
			}
			parWall[i] += wall
		}
	}
	n := float64(cfg.ParallelRequests / rounds * rounds)
	seqName := "request/reply, sequential"
	parName := fmt.Sprintf("request/reply, %d in flight", cfg.Parallel)
	return []Result{
		compare(seqName, "p50 latency", "µs", micros(seq[0].percentile(50)), micros(seq[1].percentile(50)), 1.25, true),
		compare(seqName, "p99 latency", "µs", micros(seq[0].percentile(99)), micros(seq[1].percentile(99)), 0, true),
		compare(seqName+", typed Go values", "p50 latency", "µs", micros(seq[0].percentile(50)), micros(seq[2].percentile(50)), 0, true),
		compare(parName, "throughput", "req/s", n/parWall[0].Seconds(), n/parWall[1].Seconds(), 0.8, false),
		compare(parName+", typed Go values", "throughput", "req/s", n/parWall[0].Seconds(), n/parWall[2].Seconds(), 0, false),
	}, nil
}

func runEvents(ctx context.Context, cfg Config) ([]Result, error) {
	c, err := startCluster(ctx, cfg, 0, 0)
	if err != nil {
		return nil, err
	}
	defer c.close()
	data := Data{Data: payload(cfg.PayloadBytes)}
	body, _ := json.Marshal(data)
	n := cfg.Events / rounds

	sub, pub, err := rawPair(c.broker)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	defer pub.Close()
	var rawGot counter
	s, err := sub.Subscribe("bench.tick", func(*natsgo.Msg) { rawGot.add() })
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.Unsubscribe() }()
	if err := s.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	if err := sub.Flush(); err != nil {
		return nil, err
	}
	l := c.ctl.Link()
	senders := []struct {
		got  *counter
		send func(i int) error
	}{
		{&rawGot, func(int) error { return pub.Publish("bench.tick", body) }},
		{&c.ticks, func(int) error { return l.EmitJSON(ctx, TickJSON, body) }},
		{&c.ticks, func(i int) error {
			d := data
			d.Seq = int64(i)
			return link.Emit(ctx, l, Tick, d)
		}},
	}
	var took [3]time.Duration
	for range rounds {
		for i, s := range senders {
			all := s.got.expect(int64(n))
			start := time.Now()
			for j := range n {
				if err := s.send(j); err != nil {
					return nil, err
				}
			}
			if err := wait(ctx, all, time.Minute); err != nil {
				return nil, fmt.Errorf("events: %d of %d arrived: %w", s.got.n.Load(), n, err)
			}
			took[i] += time.Since(start)
		}
	}
	total := float64(n * rounds)
	return []Result{
		compare("events, one link", "throughput", "msg/s", total/took[0].Seconds(), total/took[1].Seconds(), 0.5, false),
		compare("events, one link, typed Go values", "throughput", "msg/s", total/took[0].Seconds(), total/took[2].Seconds(), 0, false),
	}, nil
}

func wait(ctx context.Context, ch <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("timed out")
	}
}

func runForwarded(ctx context.Context, cfg Config) ([]Result, error) {
	c, err := startCluster(ctx, cfg, 1, 1)
	if err != nil {
		return nil, err
	}
	defer c.close()
	target := c.slaves[0].Instances()[0].ID
	body, _ := json.Marshal(Target{InstanceID: target, Data: payload(cfg.PayloadBytes)})

	raw, stop, err := rawEcho(c.broker, body)
	if err != nil {
		return nil, err
	}
	defer stop()
	l := c.ctl.Link()
	fab := func(int) error {
		_, err := l.RequestJSON(ctx, Forward, body)
		return err
	}
	for i := range 200 {
		if err := raw(i); err != nil {
			return nil, err
		}
		if err := fab(i); err != nil {
			return nil, err
		}
	}
	var rawLat, fabLat latencies
	for range rounds {
		lat, _, err := timeRequests(cfg.Forwarded/rounds, 1, raw)
		if err != nil {
			return nil, err
		}
		rawLat = append(rawLat, lat...)
		if lat, _, err = timeRequests(cfg.Forwarded/rounds, 1, fab); err != nil {
			return nil, err
		}
		fabLat = append(fabLat, lat...)
	}
	name := "forwarded request (baseline: one raw hop)"
	return []Result{
		compare(name, "p50 latency", "µs", micros(rawLat.percentile(50)), micros(fabLat.percentile(50)), 2.5, true),
		compare(name, "p99 latency", "µs", micros(rawLat.percentile(99)), micros(fabLat.percentile(99)), 0, true),
	}, nil
}

func runBroadcast(ctx context.Context, cfg Config) ([]Result, error) {
	c, err := startCluster(ctx, cfg, cfg.Slaves, cfg.Instances)
	if err != nil {
		return nil, err
	}
	defer c.close()
	total := int64(cfg.Slaves * cfg.Instances)

	// Baseline: one publish to as many raw connections as there are
	// slaves, each handing it to as many callbacks as a slave has
	// instances.
	conns := make([]*natsgo.Conn, cfg.Slaves)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	var got atomic.Int64
	var done chan struct{}
	var doneMu sync.Mutex
	for i := range conns {
		nc, err := rawConn(c.broker)
		if err != nil {
			return nil, err
		}
		conns[i] = nc
		if _, err := nc.Subscribe("bench.announce", func(*natsgo.Msg) {
			for range cfg.Instances {
				if got.Add(1) == total {
					doneMu.Lock()
					close(done)
					doneMu.Unlock()
				}
			}
		}); err != nil {
			return nil, err
		}
		if err := nc.Flush(); err != nil {
			return nil, err
		}
	}
	pub, err := rawConn(c.broker)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	// A broadcast sent again to one slave alone travels on that slave's
	// link, not on the broadcast subject: an observer counts those too.
	observer, err := rawConn(c.broker, natsgo.Name(observerName))
	if err != nil {
		return nil, err
	}
	defer observer.Close()
	for _, s := range []string{"lf.master.*.slave.*." + Announce.Name() + ".>", "lf.master.*.slave." + lfnats.BroadcastID + "." + Announce.Name() + ".>"} {
		if _, err := observer.Subscribe(s, func(*natsgo.Msg) {}); err != nil {
			return nil, err
		}
	}
	if err := observer.Flush(); err != nil {
		return nil, err
	}
	var rawTimes, fabTimes latencies
	for r := range cfg.Broadcasts {
		doneMu.Lock()
		done = make(chan struct{})
		ch := done
		doneMu.Unlock()
		got.Store(0)
		start := time.Now()
		if err := pub.Publish("bench.announce", []byte(`{"round":0}`)); err != nil {
			return nil, err
		}
		if err := wait(ctx, ch, time.Minute); err != nil {
			return nil, fmt.Errorf("raw broadcast %d: %w", r, err)
		}
		rawTimes = append(rawTimes, time.Since(start))
	}

	server := c.broker.Server()
	l := c.ctl.Link()
	var fanout, resent uint64
	for r := range int64(cfg.Broadcasts) {
		ch := c.announced.expect(r, total)
		fanoutBefore, resentBefore, err := broadcastDeliveries(server)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := link.Emit(ctx, l, Announce, Announcement{Round: r}); err != nil {
			return nil, err
		}
		if err := wait(ctx, ch, time.Minute); err != nil {
			return nil, fmt.Errorf("fabric broadcast %d: %w", r, err)
		}
		fabTimes = append(fabTimes, time.Since(start))
		fanoutAfter, resentAfter, err := broadcastDeliveries(server)
		if err != nil {
			return nil, err
		}
		fanout += fanoutAfter - fanoutBefore
		resent += resentAfter - resentBefore
	}
	name := fmt.Sprintf("broadcast to %d slaves x %d instances", cfg.Slaves, cfg.Instances)
	perSlave := float64(fanout) / float64(cfg.Broadcasts) / float64(cfg.Slaves)
	perSlaveMet := perSlave <= 1
	r := compare(name, "p50 time until every instance has it", "ms",
		float64(rawTimes.percentile(50).Microseconds())/1000, float64(fabTimes.percentile(50).Microseconds())/1000, 0, true)
	if cfg.Slaves*cfg.Instances >= 10000 {
		met := fabTimes.percentile(50) < 100*time.Millisecond
		r.Target, r.Met = "< 100 ms", &met
	}
	return []Result{
		r,
		{Scenario: name, Metric: "NATS messages delivered per slave per broadcast", Unit: "msgs", Fabric: perSlave,
			Target: "<= 1", Met: &perSlaveMet,
			Note: fmt.Sprintf("%d delivered on the slaves' broadcast subscriptions in %d broadcasts", fanout, cfg.Broadcasts)},
		{Scenario: name, Metric: "NATS messages sent again to one slave alone, per broadcast", Unit: "msgs", Fabric: float64(resent) / float64(cfg.Broadcasts),
			Note: "a slave gets its first broadcasts on its link too, until the master hears that it has one (there it learns where its stream starts); after, an acknowledgement late enough to look like a loss costs the slave it is late from one more message"},
	}, nil
}

// observerName names the connection that counts what the master sends
// to one slave alone.
const observerName = "bench-observer"

// broadcastDeliveries counts the messages the server has delivered to
// slaves of what is broadcast to them: on their subscriptions to the
// broadcast subject (fanout), and sent again to one slave alone on its
// link (resent), which the observer sees as its subscription to every
// announcement less its subscription to the broadcast subject.
func broadcastDeliveries(s *server.Server) (fanout, resent uint64, err error) {
	broadcastSub := ".slave." + lfnats.BroadcastID + "."
	for offset := 0; ; {
		cz, err := s.Connz(&server.ConnzOptions{SubscriptionsDetail: true, Offset: offset, Limit: 1024})
		if err != nil {
			return 0, 0, err
		}
		for _, c := range cz.Conns {
			for _, sub := range c.SubsDetail {
				switch {
				case c.Name == observerName && strings.Contains(sub.Subject, broadcastSub):
					resent -= uint64(sub.Msgs)
				case c.Name == observerName:
					resent += uint64(sub.Msgs)
				case strings.Contains(sub.Subject, broadcastSub):
					fanout += uint64(sub.Msgs)
				}
			}
		}
		offset += len(cz.Conns)
		if len(cz.Conns) == 0 || offset >= cz.Total {
			return fanout, resent, nil
		}
	}
}

func runVirtual(ctx context.Context, cfg Config) ([]Result, error) {
	catalog, err := messages.NewCatalog(plugin)
	if err != nil {
		return nil, err
	}
	t := Target{InstanceID: 1001, Data: payload(cfg.PayloadBytes)}
	answer := func(_ context.Context, t Target) (Target, error) { return t, nil }
	count := func(context.Context, Announcement) error { return nil }
	n := cfg.Virtual
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(n) / 1000 }

	// Baseline: the handlers called directly.
	start := time.Now()
	for range n {
		if _, err := answer(ctx, t); err != nil {
			return nil, err
		}
	}
	direct := time.Since(start)
	start = time.Now()
	for range n {
		_ = count(ctx, Announcement{})
	}
	directEv := time.Since(start)

	var results []Result
	for _, kind := range []struct {
		name string
		opts []link.HandlerOption
	}{
		{"", []link.HandlerOption{link.NonBlocking()}},
		{", handlers on the link's goroutines", nil},
	} {
		req, ev, err := virtualRun(ctx, cfg, catalog, t, answer, count, kind.opts)
		if err != nil {
			return nil, err
		}
		results = append(results,
			compare("virtual link request"+kind.name+" (baseline: direct call)", "time per request", "µs", per(direct), per(req), 0, true),
			compare("virtual link event"+kind.name+" (baseline: direct call)", "time per event", "µs", per(directEv), per(ev), 0, true))
	}
	return results, nil
}

// virtualRun times cfg.Virtual requests, one at a time, and as many events
// over a virtual link between a slave and an instance whose handlers are
// answer and count, attached with opts.
func virtualRun(ctx context.Context, cfg Config, catalog *messages.Catalog, t Target,
	answer func(context.Context, Target) (Target, error), count func(context.Context, Announcement) error,
	opts []link.HandlerOption) (req, ev time.Duration, err error) {
	slaveAddr := link.Address{Type: messages.Slave, ID: "1"}
	instAddr := link.Address{Type: messages.Instance, ID: "1001"}
	a, b := virtual.Pair()
	var events counter
	events.expect(-1)
	inst, err := link.New(b, instAddr, slaveAddr, catalog, link.WithLogger(cfg.Log))
	if err != nil {
		return 0, 0, err
	}
	fabric.SimulatedInstances(1001, "v").Attach(inst)
	link.HandleRequest(inst, Forward, answer, opts...)
	link.HandleEvent(inst, Announce, func(ctx context.Context, a Announcement) error {
		defer events.add()
		return count(ctx, a)
	}, opts...)
	link.HandleRequest(inst, messages.PrepareMasterDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) { return messages.Empty{}, nil })
	if err := inst.Start(); err != nil {
		return 0, 0, err
	}
	sl, err := link.New(a, slaveAddr, instAddr, catalog, link.WithLogger(cfg.Log))
	if err != nil {
		return 0, 0, err
	}
	for _, m := range catalog.On(messages.Direction{Source: messages.Instance, Target: messages.Slave}) {
		sl.HandleEventJSON(m, func(context.Context, *link.Envelope) error { return nil })
	}
	if err := sl.Start(); err != nil {
		return 0, 0, err
	}
	defer sl.Close()
	n := cfg.Virtual

	// A tenth as many untimed first, so that the figures are not those of
	// a cold heap.
	w := max(n/10, 1)
	warm := events.expect(int64(w))
	for i := range w {
		if _, err := link.Request(ctx, sl, Forward, t); err != nil {
			return 0, 0, err
		}
		if err := link.Emit(ctx, sl, Announce, Announcement{Round: int64(i)}); err != nil {
			return 0, 0, err
		}
	}
	if err := wait(ctx, warm, time.Minute); err != nil {
		return 0, 0, err
	}

	start := time.Now()
	for range n {
		if _, err := link.Request(ctx, sl, Forward, t); err != nil {
			return 0, 0, err
		}
	}
	req = time.Since(start)

	all := events.expect(int64(n))
	start = time.Now()
	for i := range n {
		if err := link.Emit(ctx, sl, Announce, Announcement{Round: int64(i)}); err != nil {
			return 0, 0, err
		}
	}
	if err := wait(ctx, all, time.Minute); err != nil {
		return 0, 0, err
	}
	return req, time.Since(start), nil
}
