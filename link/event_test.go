package link_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// tickLog is an event handler that keeps the sequence numbers it handled.
type tickLog struct {
	mu   sync.Mutex
	seqs []int
}

func (g *tickLog) handle(_ context.Context, ev tick) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seqs = append(g.seqs, ev.Seq)
	return nil
}

func (g *tickLog) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seqs)
}

// Events from one sender are handled one at a time, in the order sent.
func TestEventOrder(t *testing.T) {
	tests := []struct {
		name  string
		queue int
	}{
		{name: "default queue"},
		{name: "queue of one", queue: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n = 1000
			var opts []link.Option
			if tc.queue > 0 {
				opts = append(opts, link.WithEventQueue(tc.queue))
			}
			var (
				log     tickLog
				running sync.Mutex // held while a handler runs: a second one at once fails TryLock
				overlap atomic.Bool
			)
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, opts)
			link.HandleEvent(toSlave, testTick, func(ctx context.Context, ev tick) error {
				if !running.TryLock() {
					overlap.Store(true)
					return nil
				}
				defer running.Unlock()
				return log.handle(ctx, ev)
			})
			start(t, toSlave, testTick)
			start(t, toInstance)

			ctx := testkit.Ctx(t, 10*time.Second)
			for i := range n {
				testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: i}), "Emit")
			}
			testkit.WaitFor(t, 10*time.Second, "every event to be handled", func() bool { return log.len() == n })
			log.mu.Lock()
			defer log.mu.Unlock()
			for i, seq := range log.seqs {
				if seq != i {
					t.Fatalf("event %d handled in place %d", seq, i)
				}
			}
			if overlap.Load() {
				t.Error("two event handlers ran at once")
			}
		})
	}
}

// A slow event handler does not hold up requests and responses on the
// same link, either way.
func TestEventSlowHandlerDoesNotBlockRequests(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	var log tickLog
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	link.HandleEvent(toSlave, testTick, func(ctx context.Context, ev tick) error {
		if ev.Seq == 0 {
			started <- struct{}{}
			<-release
		}
		return log.handle(ctx, ev)
	})
	link.HandleRequest(toSlave, testEcho, echoHandler)
	link.HandleRequest(toInstance, testEcho, echoHandler)
	start(t, toSlave, testTick, testEcho)
	start(t, toInstance, testEcho)

	ctx := testkit.Ctx(t, 10*time.Second)
	testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: 0}), "Emit")
	testkit.Recv(t, started, 5*time.Second, "the slow handler to start")
	testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: 1}), "Emit behind the slow one")

	for i := range 10 {
		resp, err := link.Request(testkit.Ctx(t, 2*time.Second), toInstance, testEcho, echoReq{N: i})
		testkit.NoErr(t, err, "slave -> instance request while an event handler is stuck")
		equal(t, resp.N, i, "response")
		resp, err = link.Request(testkit.Ctx(t, 2*time.Second), toSlave, testEcho, echoReq{N: i})
		testkit.NoErr(t, err, "instance -> slave request while an event handler is stuck")
		equal(t, resp.N, i, "response")
	}
	equal(t, log.len(), 0, "events handled while the first is stuck")
	close(release)
	testkit.WaitFor(t, 5*time.Second, "the queued event", func() bool { return log.len() == 2 })
}

// An event handler that fails or panics is counted; the events after it
// are handled, and the sender hears nothing of it.
func TestEventHandlerFailure(t *testing.T) {
	var log tickLog
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	link.HandleEvent(toSlave, testTick, func(ctx context.Context, ev tick) error {
		switch ev.Seq {
		case 1:
			return errors.New("cannot handle 1")
		case 2:
			panic("cannot handle 2")
		}
		return log.handle(ctx, ev)
	})
	start(t, toSlave, testTick)
	start(t, toInstance)

	ctx := testkit.Ctx(t, 5*time.Second)
	for i := range 4 {
		testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: i}), "Emit")
	}
	testkit.WaitFor(t, 5*time.Second, "events 0 and 3", func() bool { return log.len() == 2 })
	equal(t, toSlave.Stats().HandlerErrors, 2, "Stats().HandlerErrors")
	equal(t, toSlave.Stats().Invalid, 0, "Stats().Invalid")
	_, err := link.Request(ctx, toInstance, messages.SendCommand, messages.Command{InstanceID: 7, Command: "x"})
	testkit.WantCode(t, err, codeStub) // the link still answers
}

// An event sent to a link before it starts is handled once it starts.
func TestEventBeforePeerStarts(t *testing.T) {
	var log tickLog
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	start(t, toInstance)
	ctx := testkit.Ctx(t, 5*time.Second)
	for i := range 3 {
		testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: i}), "Emit before the peer starts")
	}
	link.HandleEvent(toSlave, testTick, log.handle)
	start(t, toSlave, testTick)
	testkit.WaitFor(t, 5*time.Second, "the early events", func() bool { return log.len() == 3 })
	log.mu.Lock()
	defer log.mu.Unlock()
	if !slices.Equal(log.seqs, []int{0, 1, 2}) {
		t.Errorf("early events handled as %v, want [0 1 2]", log.seqs)
	}
}

// An event sent while the receiver's event queue is full waits for room,
// but no longer than its context: then it fails with ErrTimeout and is not
// delivered, and the events already queued still are.
func TestEventFullQueueBoundedByContext(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	var log tickLog
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, []link.Option{link.WithEventQueue(1)})
	link.HandleEvent(toSlave, testTick, func(ctx context.Context, ev tick) error {
		if ev.Seq == 0 {
			started <- struct{}{}
			<-release
		}
		return log.handle(ctx, ev)
	})
	start(t, toSlave, testTick)
	start(t, toInstance)

	ctx := testkit.Ctx(t, 10*time.Second)
	testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: 0}), "Emit")
	testkit.Recv(t, started, 5*time.Second, "the slow handler to start")
	testkit.NoErr(t, link.Emit(ctx, toInstance, testTick, tick{Seq: 1}), "Emit into the queue's one place")

	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- link.Emit(short, toInstance, testTick, tick{Seq: 2}) }()
	err := testkit.Recv(t, done, 5*time.Second, "Emit into a full queue to give up at its deadline")
	testkit.WantCode(t, err, link.CodeTimeout)

	close(release)
	testkit.WaitFor(t, 5*time.Second, "the queued event", func() bool { return log.len() == 2 })
	equal(t, log.len(), 2, "events handled (the timed-out one is not)")
}
