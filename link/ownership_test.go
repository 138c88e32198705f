package link_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// A handler owns the message it is given: it may keep the *Envelope and
// its payload, and change them, and nothing the sender or either link
// does afterwards changes what it kept, though over a virtual pair the
// envelope is handed over rather than copied. The sender reuses one
// buffer for every payload, as a caller may once the send has returned;
// an observer on the sending side sees every message while the handlers
// (on the link's goroutines, concurrently with the sender) rewrite theirs:
// under -race this also shows the sending link reads nothing of a message
// once the connector has it.
func TestHandlerOwnsMessage(t *testing.T) {
	for _, nonBlocking := range []bool{false, true} {
		t.Run(fmt.Sprintf("nonblocking=%v", nonBlocking), func(t *testing.T) {
			var opts []link.HandlerOption
			if nonBlocking {
				opts = append(opts, link.NonBlocking())
			}
			obs := &seen{}
			slave, inst := newPair(t, slaveAddr, instanceAddr, []link.Option{link.WithObserver(obs)}, nil)
			var mu sync.Mutex
			var kept []*link.Envelope
			keep := func(m *link.Envelope) {
				mu.Lock()
				kept = append(kept, m)
				mu.Unlock()
			}
			inst.HandleRequestJSON(messages.SendCommand, func(_ context.Context, m *link.Envelope) ([]byte, error) {
				keep(m)
				m.ID, m.Deadline = 0, time.Time{} // the handler's to change
				return []byte(`{"output":"ok"}`), nil
			}, opts...)
			inst.HandleEventJSON(testTick, func(_ context.Context, m *link.Envelope) error {
				keep(m)
				m.ID, m.Origin = 0, link.Address{}
				return nil
			}, opts...)
			start(t, inst, messages.SendCommand, testTick)
			start(t, slave)
			ctx := testkit.Ctx(t, 10*time.Second)

			const n = 50
			buf := make([]byte, 0, 256)
			payload := func(i int) []byte {
				if i%2 == 0 {
					return fmt.Appendf(buf[:0], `{"instance_id":7,"command":"c%03d"}`, i)
				}
				return fmt.Appendf(buf[:0], `{"seq":%d,"items":["m%03d"]}`, i, i)
			}
			for i := range n {
				if i%2 == 0 {
					_, err := slave.RequestJSON(ctx, messages.SendCommand, payload(i))
					testkit.NoErr(t, err, "request")
				} else {
					testkit.NoErr(t, slave.EmitJSON(ctx, testTick, payload(i)), "emit")
				}
			}
			testkit.WaitFor(t, 10*time.Second, "every message handled", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(kept) == n
			})
			// Each handler rewrites what it kept; each must still read as
			// it arrived.
			mu.Lock()
			defer mu.Unlock()
			reqs, evs := 0, 0
			for _, m := range kept {
				var want []byte
				if m.Kind == messages.KindRequest {
					want = payload(2 * reqs)
					reqs++
				} else {
					want = payload(2*evs + 1)
					evs++
				}
				if string(m.Data) != string(want) {
					t.Errorf("kept %s %s with %s, want %s", m.Kind, m.Type, m.Data, want)
				}
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if len(obs.sent) != n {
				t.Errorf("the observer saw %d messages sent, want %d", len(obs.sent), n)
			}
			for i, m := range obs.sent {
				if want := []messages.Kind{messages.KindRequest, messages.KindEvent}[i%2]; m.Kind != want {
					t.Errorf("observed message %d is %s, want %s", i, m.Kind, want)
				}
			}
		})
	}
}

// twice is a connector in one process that delivers every request twice,
// as two envelopes copied from the one sent.
type twice struct{ *virtual.Conn }

func (c twice) Send(ctx context.Context, m *link.Envelope) error {
	if m.Kind == messages.KindRequest {
		cp := *m
		if err := c.Conn.Send(ctx, &cp); err != nil {
			return err
		}
	}
	return c.Conn.Send(ctx, m)
}

// A request delivered twice in one process is served twice, each with a
// context and a response of its own (what a link allocates for its peer
// with the request is claimed once), and the requester keeps the first
// response.
func TestDuplicatedRequestServedApart(t *testing.T) {
	ca, cb := virtual.Pair()
	slave := newLink(t, twice{ca}, slaveAddr, instanceAddr)
	inst := newLink(t, cb, instanceAddr, slaveAddr)
	var served sync.WaitGroup
	link.HandleRequest(inst, testEcho, func(ctx context.Context, r echoReq) (echoResp, error) {
		defer served.Done()
		if _, ok := ctx.Deadline(); !ok {
			return echoResp{}, fmt.Errorf("no deadline")
		}
		return echoResp(r), nil
	})
	start(t, inst, testEcho)
	start(t, slave)
	ctx := testkit.Ctx(t, 10*time.Second)
	const n = 100
	served.Add(2 * n)
	for i := range n {
		resp, err := link.Request(ctx, slave, testEcho, echoReq{N: i, Text: fmt.Sprint("request ", i)})
		testkit.NoErr(t, err, "request")
		equal(t, resp, echoResp{N: i, Text: fmt.Sprint("request ", i)}, "response")
	}
	served.Wait()
	testkit.WaitFor(t, 5*time.Second, "every second response counted", func() bool {
		return slave.Stats().Invalid+slave.Stats().Late == n
	})
}
