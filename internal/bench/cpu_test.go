package bench

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// BenchmarkCPUPerRequest is what a request costs in CPU, the fabric's
// against raw nats.go's, in one process with in-process connections and
// 64 requests in flight. Run it with -cpu 1: on one P the scheduler has no
// idle P to spin, so ns/op is the process's CPU per request. The
// "raw, long subjects" case sends raw nats.go requests on subjects as long
// as the fabric's (two sessions in the request subject; a session and
// four numbers in the reply subject), which says how much of the
// difference is the subjects' length alone:
//
//	go test -run '^$' -bench CPUPerRequest -cpu 1 ./internal/bench
func BenchmarkCPUPerRequest(b *testing.B) {
	ctx := context.Background()
	cfg := Defaults()
	cfg.Log = slog.New(slog.DiscardHandler)
	c, err := startCluster(ctx, cfg, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer c.close()
	body, _ := json.Marshal(Data{Data: payload(cfg.PayloadBytes)})

	raw, stop, err := rawEcho(c.broker, body)
	if err != nil {
		b.Fatal(err)
	}
	defer stop()

	// The fabric's subjects have these lengths; the ids are not the
	// control's, so that no fabric endpoint subscribes to them.
	const longSubject = "lf.control.benchx.master.9.bench:echo_json.0123456789abcdef.m1x0123456789abcdef"
	responder, err := rawConn(c.broker)
	if err != nil {
		b.Fatal(err)
	}
	defer responder.Close()
	requester, err := rawConn(c.broker, natsgo.CustomInboxPrefix("lf.master.9.control.benchx._reply.0123456789abcdef.1"))
	if err != nil {
		b.Fatal(err)
	}
	defer requester.Close()
	if _, err := responder.Subscribe(longSubject, func(m *natsgo.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		b.Fatal(err)
	}
	long := func(int) error {
		_, err := requester.Request(longSubject, body, 10*time.Second)
		return err
	}
	l := c.ctl.Link()
	fabric := func(int) error {
		_, err := l.RequestJSON(ctx, EchoJSON, body)
		return err
	}

	for _, bc := range []struct {
		name string
		do   func(int) error
	}{{"raw", raw}, {"raw, long subjects", long}, {"fabric", fabric}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := range 1000 { // warm up
				if err := bc.do(i); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			if err := inFlight(b.N, cfg.Parallel, bc.do); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// inFlight makes n requests with do, par at a time.
func inFlight(n, par int, do func(int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, par)
	next := make(chan int)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
