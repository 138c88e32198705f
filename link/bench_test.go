package link_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Every benchmark family has a "direct" case: the handler's work as a
// plain Go call, no link, no JSON, no schema, measured in the same run as
// its link cases. The link cases check every payload against its schema
// on send and on receipt.

// runCommand is the handler work the benchmarks share: what an instance
// does with send_command.
func runCommand(_ context.Context, c messages.Command) (messages.CommandResult, error) {
	return messages.CommandResult{Output: "instance says: " + strings.ToUpper(c.Command)}, nil
}

var (
	benchCommand = messages.Command{InstanceID: 7, Command: "/silent-command game.print('hello')"}
	benchLine    = messages.OutputLine{InstanceID: 7, Time: 1700000000000, Level: "info", Message: "[CHAT] alice: hello everyone"}
)

// The JSON cases pass payloads through (RequestJSON, HandleRequestJSON):
// the link's own cost, with no encoding or decoding of Go values.
var (
	benchCommandJSON = []byte(`{"instance_id":7,"command":"/silent-command game.print('hello')"}`)
	benchResultJSON  = []byte(`{"output":"instance says: /SILENT-COMMAND GAME.PRINT('HELLO')"}`)
	benchLineJSON    = []byte(`{"instance_id":7,"time":1700000000000,"level":"info","message":"[CHAT] alice: hello everyone"}`)
)

func runCommandJSON(context.Context, *link.Envelope) ([]byte, error) { return benchResultJSON, nil }

// requestCases are the ways a request reaches its handler.
var requestCases = []struct {
	name string
	// attach attaches the send_command handler; send sends one request.
	attach func(l *link.Link)
	send   func(ctx context.Context, l *link.Link) error
}{
	{"pooled", func(l *link.Link) { link.HandleRequest(l, messages.SendCommand, runCommand) }, sendTyped},
	{"nonblocking", func(l *link.Link) { link.HandleRequest(l, messages.SendCommand, runCommand, link.NonBlocking()) }, sendTyped},
	{"json-pooled", func(l *link.Link) { l.HandleRequestJSON(messages.SendCommand, runCommandJSON) }, sendJSON},
	{"json-nonblocking", func(l *link.Link) { l.HandleRequestJSON(messages.SendCommand, runCommandJSON, link.NonBlocking()) }, sendJSON},
}

func sendTyped(ctx context.Context, l *link.Link) error {
	res, err := link.Request(ctx, l, messages.SendCommand, benchCommand)
	if err == nil && res.Output == "" {
		panic("no output")
	}
	return err
}

func sendJSON(ctx context.Context, l *link.Link) error {
	_, err := l.RequestJSON(ctx, messages.SendCommand, benchCommandJSON)
	return err
}

func directCommand(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := runCommand(ctx, benchCommand)
		if err != nil || res.Output == "" {
			b.Fatal("no output")
		}
	}
}

// BenchmarkRequestRoundTrip: one send_command at a time over a virtual
// pair, with each kind of handler.
func BenchmarkRequestRoundTrip(b *testing.B) {
	b.Run("direct", directCommand)
	for _, tc := range requestCases {
		b.Run(tc.name, func(b *testing.B) {
			toInstance := commandPair(b, tc.attach)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			b.ReportAllocs()
			for b.Loop() {
				if err := tc.send(ctx, toInstance); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// As `fabric bench` sends: a ctx without deadline, so each request
	// gets the link's timeout.
	b.Run("nonblocking-no-deadline", func(b *testing.B) {
		toInstance := commandPair(b, func(l *link.Link) {
			link.HandleRequest(l, messages.SendCommand, runCommand, link.NonBlocking())
		})
		b.ReportAllocs()
		for b.Loop() {
			if err := sendTyped(context.Background(), toInstance); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRequestRoundTripParallel: the same from many goroutines at
// once.
func BenchmarkRequestRoundTripParallel(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if res, _ := runCommand(context.Background(), benchCommand); res.Output == "" {
					panic("no output")
				}
			}
		})
	})
	for _, tc := range requestCases {
		b.Run(tc.name, func(b *testing.B) {
			toInstance := commandPair(b, tc.attach)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := tc.send(ctx, toInstance); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkEvent: instance_output events over a virtual pair, until the
// handler has received every one.
func BenchmarkEvent(b *testing.B) {
	var sink atomic.Int64
	handle := func(_ context.Context, ev messages.OutputLine) error {
		if ev.Message == "" {
			panic("empty event")
		}
		sink.Add(1)
		return nil
	}
	b.Run("direct", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			_ = handle(ctx, benchLine)
		}
	})
	cases := []struct {
		name   string
		attach func(l *link.Link, counted func()) // attaches the instance_output handler
		emit   func(ctx context.Context, l *link.Link) error
	}{
		{"queued", func(l *link.Link, counted func()) {
			link.HandleEvent(l, messages.InstanceOutput, func(ctx context.Context, ev messages.OutputLine) error {
				defer counted()
				return handle(ctx, ev)
			})
		}, emitTyped},
		{"nonblocking", func(l *link.Link, counted func()) {
			link.HandleEvent(l, messages.InstanceOutput, func(ctx context.Context, ev messages.OutputLine) error {
				defer counted()
				return handle(ctx, ev)
			}, link.NonBlocking())
		}, emitTyped},
		{"json-nonblocking", func(l *link.Link, counted func()) {
			l.HandleEventJSON(messages.InstanceOutput, func(context.Context, *link.Envelope) error {
				counted()
				return nil
			}, link.NonBlocking())
		}, func(ctx context.Context, l *link.Link) error {
			return l.EmitJSON(ctx, messages.InstanceOutput, benchLineJSON)
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var handled, want atomic.Int64
			done := make(chan struct{})
			toInstance, toSlave := newPair(b, slaveAddr, instanceAddr, nil, nil)
			tc.attach(toInstance, func() {
				if handled.Add(1) == want.Load() {
					close(done)
				}
			})
			start(b, toInstance, messages.InstanceOutput)
			start(b, toSlave)
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			want.Store(int64(b.N))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := tc.emit(ctx, toSlave); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-done:
			case <-ctx.Done():
				b.Fatalf("handled %d of %d events", handled.Load(), b.N)
			}
		})
	}
}

func emitTyped(ctx context.Context, l *link.Link) error {
	return link.Emit(ctx, l, messages.InstanceOutput, benchLine)
}

// BenchmarkForwardedRequest: a request forwarded by a hop that does not
// decode it: instance 7 asks its slave, whose JSON handler forwards the
// request to instance 8 over a second virtual pair and returns the
// response as it came. The hop checks the response as it arrives and not
// again as it sends it on.
func BenchmarkForwardedRequest(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := echoHandler(ctx, echoReq{N: 1, Text: "forwarded"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	forwarders := []struct {
		name   string
		attach func(from, to *link.Link)
	}{
		{"one-hop", func(from, to *link.Link) {
			from.HandleRequestJSON(testEcho, func(ctx context.Context, req *link.Envelope) ([]byte, error) {
				return to.ForwardRequest(ctx, req)
			})
		}},
		{"one-hop-async", func(from, to *link.Link) {
			from.HandleRequestAsync(testEcho, func(ctx context.Context, req *link.Envelope, reply link.Reply) {
				to.ForwardRequestAsync(ctx, req, reply)
			})
		}},
	}
	for _, f := range forwarders {
		b.Run(f.name, func(b *testing.B) { benchForwarded(b, f.attach) })
	}
}

// benchForwarded is BenchmarkForwardedRequest's hop, attach its forwarder.
func benchForwarded(b *testing.B, attach func(from, to *link.Link)) {
	{
		other := link.Address{Type: messages.Instance, ID: "8"}
		toSlave, fromInstance := newPair(b, instanceAddr, slaveAddr, nil, nil)
		ca, cb := virtual.Pair()
		toOther := newLink(b, ca, slaveAddr, other)
		otherSide := newLink(b, cb, other, slaveAddr)
		attach(fromInstance, toOther)
		link.HandleRequest(otherSide, testEcho, echoHandler, link.NonBlocking())
		start(b, fromInstance, testEcho)
		start(b, otherSide, testEcho)
		start(b, toOther)
		start(b, toSlave)
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := link.Request(ctx, toSlave, testEcho, echoReq{N: 1, Text: "forwarded"}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
