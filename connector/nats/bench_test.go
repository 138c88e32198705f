package nats_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The benchmarks compare the connector with plain nats.go on the same
// embedded server and the same payloads: what the fabric's checks,
// headers and routing cost per message.

var (
	benchCommand = messages.Command{InstanceID: 7, Command: "/silent-command game.print('players online: ' .. #game.connected_players)"}
	benchResult  = messages.CommandResult{Output: "players online: 12\n[gc] 3 ms"}
	benchLine    = messages.OutputLine{InstanceID: 7, Time: 1700000000000, Level: "info", Message: "[CHAT] alice: anyone up for a rocket launch?"}
	controlAddr  = link.Address{Type: messages.Control, ID: "alice"}
)

func mustJSON(b *testing.B, v any) []byte {
	b.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// A control asks the master to run a command: typed link.Request over
// NATS between two Nodes on one embedded server.
func BenchmarkRequestNATS(b *testing.B) {
	s := runServer(b, 0, nil)
	acc := newAcceptor(b, func(l *link.Link) {
		link.HandleRequest(l, messages.SendCommand, func(context.Context, messages.Command) (messages.CommandResult, error) {
			return benchResult, nil
		})
	})
	connect(b, s, masterAddr, acc.option())
	control := connect(b, s, controlAddr)
	l := dial(b, control, masterAddr, nil)
	ping(b, l)
	acc.next(b)
	size := int64(len(mustJSON(b, benchCommand)) + len(mustJSON(b, benchResult)))
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			if _, err := link.Request(ctx, l, messages.SendCommand, benchCommand); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(size)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := link.Request(ctx, l, messages.SendCommand, benchCommand); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// The baseline of BenchmarkRequestNATS: nc.Request of the same payload to
// a plain subscriber that answers with a response of the same size.
func BenchmarkRawRequest(b *testing.B) {
	s := runServer(b, 0, nil)
	responder, requester := plainClient(b, s), plainClient(b, s)
	req, resp := mustJSON(b, benchCommand), mustJSON(b, benchResult)
	_, err := responder.Subscribe("bench.master.send_command", func(m *natsgo.Msg) { _ = m.Respond(resp) })
	if err != nil {
		b.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		b.Fatal(err)
	}
	size := int64(len(req) + len(resp))
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			if _, err := requester.Request("bench.master.send_command", req, 10*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(size)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := requester.Request("bench.master.send_command", req, 10*time.Second); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// window bounds the events sent and not yet received, below the
// connector's per-peer queue, so that the benchmarks measure delivery and
// not loss.
const window = 512

// received counts deliveries and wakes a sender waiting for them.
type received struct {
	n        atomic.Int64
	progress chan struct{}
}

func newReceived() *received { return &received{progress: make(chan struct{}, 1)} }

func (r *received) add() {
	r.n.Add(1)
	select {
	case r.progress <- struct{}{}:
	default:
	}
}

// await blocks until at least n have been received.
func (r *received) await(b *testing.B, n int64) {
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for r.n.Load() < n {
		select {
		case <-r.progress:
		case <-timer.C:
			b.Fatalf("received %d of %d", r.n.Load(), n)
		}
	}
}

// sendAll sends b.N messages with send, at most window ahead of what r
// has received, and waits until r has all of them.
func sendAll(b *testing.B, r *received, send func() error) {
	b.Helper()
	start := r.n.Load()
	for i := range int64(b.N) {
		if i-(r.n.Load()-start) >= window {
			r.await(b, start+i-window+1)
		}
		if err := send(); err != nil {
			b.Fatal(err)
		}
	}
	r.await(b, start+int64(b.N))
}

// A slave emits instance output to the master: typed link.Emit over NATS
// until the master's handler has had all b.N.
func BenchmarkEventNATS(b *testing.B) {
	s := runServer(b, 0, nil)
	r := newReceived()
	acc := newAcceptor(b, func(l *link.Link) {
		link.HandleEvent(l, messages.InstanceOutput, func(context.Context, messages.OutputLine) error {
			r.add()
			return nil
		})
	})
	master := connect(b, s, masterAddr, acc.option())
	slave := connect(b, s, slaveAddr)
	l := dial(b, slave, masterAddr, nil)
	ping(b, l)
	acc.next(b)
	b.SetBytes(int64(len(mustJSON(b, benchLine))))
	ctx := context.Background()
	b.ResetTimer()
	sendAll(b, r, func() error { return link.Emit(ctx, l, messages.InstanceOutput, benchLine) })
	b.StopTimer()
	if d := master.Dropped(); d != 0 {
		b.Errorf("the master dropped %d events", d)
	}
}

// The baseline of BenchmarkEventNATS: nc.Publish of the same payload to a
// plain subscriber that counts.
func BenchmarkRawPublish(b *testing.B) {
	s := runServer(b, 0, nil)
	publisher, subscriber := plainClient(b, s), plainClient(b, s)
	r := newReceived()
	if _, err := subscriber.Subscribe("bench.slave.3.master.0.instance_output", func(*natsgo.Msg) { r.add() }); err != nil {
		b.Fatal(err)
	}
	if err := subscriber.Flush(); err != nil {
		b.Fatal(err)
	}
	data := mustJSON(b, benchLine)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	sendAll(b, r, func() error { return publisher.Publish("bench.slave.3.master.0.instance_output", data) })
}

// BenchmarkEventJSON is BenchmarkEventNATS with the payload already JSON at
// both ends (EmitJSON, HandleEventJSON): the fabric's cost on top of NATS
// without the application's own encoding.
func BenchmarkEventJSON(b *testing.B) {
	s := runServer(b, 0, nil)
	r := newReceived()
	acc := newAcceptor(b, func(l *link.Link) {
		l.HandleEventJSON(messages.InstanceOutput, func(context.Context, *link.Envelope) error {
			r.add()
			return nil
		})
	})
	master := connect(b, s, masterAddr, acc.option())
	slave := connect(b, s, slaveAddr)
	l := dial(b, slave, masterAddr, nil)
	ping(b, l)
	acc.next(b)
	data := mustJSON(b, benchLine)
	b.SetBytes(int64(len(data)))
	ctx := context.Background()
	b.ResetTimer()
	sendAll(b, r, func() error { return l.EmitJSON(ctx, messages.InstanceOutput, data) })
	b.StopTimer()
	if d := master.Dropped(); d != 0 {
		b.Errorf("the master dropped %d events", d)
	}
}
