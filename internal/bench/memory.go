package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
)

// heap returns the live heap after a full collection, and the goroutines.
func heap() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

func runMemory(ctx context.Context, cfg Config) ([]Result, error) {
	perInstance, err := heapPerInstance(ctx, cfg)
	if err != nil {
		return nil, err
	}
	perSlave, goroutines, err := masterHeapPerSlave(ctx, cfg)
	if err != nil {
		return nil, err
	}
	met := perSlave < 64*1024
	return []Result{
		{Scenario: fmt.Sprintf("memory, %d idle slaves", cfg.MemorySlaves), Metric: "master heap per connected slave", Unit: "KiB",
			Fabric: perSlave / 1024, Target: "< 64 KiB", Met: &met,
			Note: fmt.Sprintf("plus %.1f goroutines per slave, whose stacks are not heap", goroutines)},
		{Scenario: fmt.Sprintf("memory, %d running instances", cfg.MemoryInstances), Metric: "heap per running instance (both ends of its link)", Unit: "KiB",
			Fabric: perInstance / 1024},
	}, nil
}

// masterHeapPerSlave registers idle slaves with a master, and measures how
// the heap grows. One plain NATS connection speaks for every slave, so
// that what grows is the master's.
func masterHeapPerSlave(ctx context.Context, cfg Config) (float64, float64, error) {
	broker, err := fabric.StartBroker("127.0.0.1:0", "")
	if err != nil {
		return 0, 0, err
	}
	defer broker.Close()
	url := broker.ClientURL()
	mcfg := fabric.MasterConfig{NATS: natsConfig(url), Listen: "127.0.0.1:0", Grants: fabric.AllGrants(), Timing: timing(), Log: logConfig}
	m, err := fabric.StartMaster(ctx, mcfg, fabric.WithLogger(cfg.Log))
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Close(cctx)
	}()

	nc, err := natsgo.Connect(url)
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	n := cfg.MemorySlaves
	var registered atomic.Int64
	done := make(chan struct{})
	// The fake slaves answer whatever the master asks them (ping,
	// prepare_disconnect) and count their registrations' answers.
	sub, err := nc.Subscribe("lf.master.0.slave.*.>", func(msg *natsgo.Msg) {
		if msg.Reply != "" {
			resp := natsgo.NewMsg(msg.Reply)
			resp.Header.Set("Lf-Session", "fake"+tokenAt(msg.Subject, 4))
			resp.Data = []byte("{}")
			_ = nc.PublishMsg(resp)
			return
		}
		if tokenAt(msg.Subject, 5) == "_reply" && msg.Header.Get("Lf-Error") == "" {
			if registered.Add(1) == int64(n) {
				close(done)
			}
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return 0, 0, err
	}

	before, gBefore := heap()
	for i := 1; i <= n; i++ {
		id := strconv.Itoa(i)
		msg := natsgo.NewMsg("lf.slave." + id + ".master.0.register_slave.fake" + id)
		msg.Reply = "lf.master.0.slave." + id + "._reply.fake" + id + ".1.1.30000"
		msg.Data = []byte(`{"slave_id":` + id + `,"name":"idle-` + id + `","version":"bench","instances":[]}`)
		if err := nc.PublishMsg(msg); err != nil {
			return 0, 0, err
		}
	}
	if err := wait(ctx, done, time.Minute); err != nil {
		return 0, 0, fmt.Errorf("%d of %d idle slaves registered: %w", registered.Load(), n, err)
	}
	after, gAfter := heap()
	if got := len(m.Slaves()); got != n {
		return 0, 0, fmt.Errorf("the master lists %d slaves, want %d", got, n)
	}
	return float64(after-before) / float64(n), float64(gAfter-gBefore) / float64(n), nil
}

// tokenAt returns the i-th dot-separated token of a subject, or "".
func tokenAt(subject string, i int) string {
	toks := strings.Split(subject, ".")
	if i >= len(toks) {
		return ""
	}
	return toks[i]
}

// heapPerInstance adds a slave with MemoryInstances running instances to
// a running cluster and measures how the heap grows, per instance: the
// slave's ends of the virtual links, the instances' ends, the simulated
// instances, the master's records of them, and a share of the slave's own.
func heapPerInstance(ctx context.Context, cfg Config) (float64, error) {
	c, err := startStopped(ctx, cfg, 0, 0)
	if err != nil {
		return 0, err
	}
	defer c.close()
	before := settledHeap()
	if err := c.addSlave(ctx, cfg, 1, cfg.MemoryInstances); err != nil {
		return 0, err
	}
	if err := c.startInstances(ctx); err != nil {
		return 0, err
	}
	after := settledHeap()
	return float64(int64(after)-int64(before)) / float64(cfg.MemoryInstances), nil
}

// settledHeap returns the live heap once what earlier work left behind
// (goroutines and connections still closing) has let go: two readings
// 50 ms apart within 1%, or the last within two seconds.
func settledHeap() uint64 {
	last, _ := heap()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // polling for the condition below
		h, _ := heap()
		if diff := int64(h) - int64(last); diff < int64(last/100) && -diff < int64(last/100) {
			return h
		}
		last = h
	}
	return last
}
