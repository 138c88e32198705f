package link_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// runCommand is the handler work the benchmarks share: what an instance
// does with send_command.
func runCommand(_ context.Context, c messages.Command) (messages.CommandResult, error) {
	return messages.CommandResult{Output: "instance says: " + strings.ToUpper(c.Command)}, nil
}

var benchCommand = messages.Command{InstanceID: 7, Command: "/silent-command game.print('hello')"}

// BenchmarkRequestRoundTrip: a typed send_command over a virtual pair, with
// the payloads checked against their schemas on both sides.
func BenchmarkRequestRoundTrip(b *testing.B) {
	toInstance, toSlave := newPair(b, slaveAddr, instanceAddr, nil, nil)
	link.HandleRequest(toSlave, messages.SendCommand, runCommand)
	start(b, toSlave, messages.SendCommand)
	start(b, toInstance)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()

	b.ReportAllocs()
	for b.Loop() {
		res, err := link.Request(ctx, toInstance, messages.SendCommand, benchCommand)
		if err != nil || res.Output == "" {
			b.Fatalf("send_command: %q, %v", res.Output, err)
		}
	}
}

// BenchmarkRequestRoundTripParallel: the same from many goroutines at once.
func BenchmarkRequestRoundTripParallel(b *testing.B) {
	toInstance, toSlave := newPair(b, slaveAddr, instanceAddr, nil, nil)
	link.HandleRequest(toSlave, messages.SendCommand, runCommand)
	start(b, toSlave, messages.SendCommand)
	start(b, toInstance)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()

	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := link.Request(ctx, toInstance, messages.SendCommand, benchCommand); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkEvent: typed events over a virtual pair, until the handler has
// received every one.
func BenchmarkEvent(b *testing.B) {
	var handled atomic.Int64
	done := make(chan struct{})
	toInstance, toSlave := newPair(b, slaveAddr, instanceAddr, nil, nil)
	var want atomic.Int64 // set before the first event is sent
	link.HandleEvent(toInstance, messages.InstanceOutput, func(_ context.Context, ev messages.OutputLine) error {
		if ev.Message == "" {
			b.Error("empty event")
		}
		if handled.Add(1) == want.Load() {
			close(done)
		}
		return nil
	})
	start(b, toInstance, messages.InstanceOutput)
	start(b, toSlave)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	line := messages.OutputLine{InstanceID: 7, Time: 1700000000000, Level: "info", Message: "[CHAT] alice: hello everyone"}

	want.Store(int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := link.Emit(ctx, toSlave, messages.InstanceOutput, line); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("handled %d of %d events", handled.Load(), b.N)
	}
}

// BenchmarkDirectCall is the baseline: the handler's work as a plain Go
// call, no link, no JSON, no schema.
func BenchmarkDirectCall(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := runCommand(ctx, benchCommand)
		if err != nil || res.Output == "" {
			b.Fatal("no output")
		}
	}
}
