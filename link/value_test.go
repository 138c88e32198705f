package link_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// seen records what an observer was shown.
type seen struct {
	mu       sync.Mutex
	sent     []link.Envelope
	received []link.Envelope
}

func (s *seen) Sent(_ messages.Direction, m *link.Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, *m)
}

func (s *seen) Received(_ messages.Direction, m *link.Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = append(s.received, *m)
}

func (s *seen) RequestEnded(string, error, time.Duration) {}

// TestValuesOverVirtual: over a virtual pair, typed requests, responses
// and events travel as Go values, with no JSON, and arrive equal; a JSON
// handler gets the JSON form; a type that would share memory (a slice)
// goes as JSON.
func TestValuesOverVirtual(t *testing.T) {
	obs := &seen{}
	slave, inst := newPair(t, slaveAddr, instanceAddr, []link.Option{link.WithObserver(obs)}, nil)
	link.HandleRequest(inst, testEcho, echoHandler, link.NonBlocking())
	ticks := make(chan tick, 4)
	link.HandleEvent(inst, testTick, func(_ context.Context, tk tick) error {
		ticks <- tk
		return nil
	})
	var commandJSON []byte
	inst.HandleRequestJSON(messages.SendCommand, func(_ context.Context, m *link.Envelope) ([]byte, error) {
		commandJSON = m.Data
		return []byte(`{"output":"ok"}`), nil
	}, link.NonBlocking())
	start(t, inst, testEcho, testTick, messages.SendCommand)
	start(t, slave)
	ctx := testkit.Ctx(t, 5*time.Second)

	resp, err := link.Request(ctx, slave, testEcho, echoReq{N: 3, Text: "héllo \"there\""})
	testkit.NoErr(t, err, "echo")
	equal(t, resp, echoResp{N: 3, Text: "héllo \"there\""}, "echo response")

	res, err := link.Request(ctx, slave, messages.SendCommand, messages.Command{InstanceID: 7, Command: "/help <me>"})
	testkit.NoErr(t, err, "send_command")
	equal(t, res.Output, "ok", "send_command output")
	equal(t, string(commandJSON), `{"instance_id":7,"command":"/help <me>"}`, "what the JSON handler got")

	testkit.NoErr(t, link.Emit(ctx, slave, testTick, tick{Seq: 1, Items: []string{"a"}}), "emit")
	tk := testkit.Recv(t, ticks, 5*time.Second, "the tick")
	equal(t, len(tk.Items) == 1 && tk.Items[0] == "a", true, "tick items")

	obs.mu.Lock()
	defer obs.mu.Unlock()
	byType := func(ms []link.Envelope, typ string, kind messages.Kind) link.Envelope {
		for _, m := range ms {
			if m.Type == typ && m.Kind == kind {
				return m
			}
		}
		t.Fatalf("no %s %s observed", kind, typ)
		return link.Envelope{}
	}
	if m := byType(obs.sent, "test:echo", messages.KindRequest); m.Value != (echoReq{N: 3, Text: "héllo \"there\""}) || m.Data != nil {
		t.Errorf("the echo request went as %q / %#v, want the Go value alone", m.Data, m.Value)
	}
	if m := byType(obs.received, "test:echo", messages.KindResponse); m.Value == nil || m.Data != nil {
		t.Errorf("the echo response came as %q / %#v, want a Go value", m.Data, m.Value)
	}
	if m := byType(obs.received, "send_command", messages.KindResponse); m.Value != nil || string(m.Data) != `{"output":"ok"}` {
		t.Errorf("the JSON handler's response came as %q / %#v, want its JSON", m.Data, m.Value)
	}
	if m := byType(obs.sent, "test:tick", messages.KindEvent); m.Value != nil || m.Data == nil {
		t.Errorf("a tick, which has a slice, went as %q / %#v, want JSON", m.Data, m.Value)
	}
}

// TestInvalidValueRefused: a Go value that reaches a link without the
// sender's check is checked on receipt, as JSON is, and refused.
func TestInvalidValueRefused(t *testing.T) {
	handled := 0
	l, raw, rec := rawPeerOn(t, false, instanceAddr, slaveAddr, func(l *link.Link) []messages.Message {
		link.HandleRequest(l, testEcho, func(ctx context.Context, r echoReq) (echoResp, error) {
			handled++
			return echoHandler(ctx, r)
		})
		return []messages.Message{testEcho}
	})
	deadline := time.Now().Add(5 * time.Second)
	for i, v := range []any{
		echoReq{N: -1, Text: "below the minimum"},
		messages.Command{InstanceID: 7, Command: "not the message's type"},
	} {
		id := uint64(i + 1)
		send(t, raw, &link.Envelope{Kind: messages.KindRequest, Type: testEcho.Name(), ID: id, Value: v, Deadline: deadline})
		testkit.WantCode(t, rec.response(t, id).Error, link.CodeInvalidMessage)
	}
	send(t, raw, &link.Envelope{Kind: messages.KindRequest, Type: testEcho.Name(), ID: 3, Value: echoReq{N: 2, Text: "ok"}, Deadline: deadline})
	good := rec.response(t, 3)
	if good.Error != nil || good.Value != (echoResp{N: 2, Text: "ok"}) {
		t.Errorf("a valid value: response %#v, error %v", good.Value, good.Error)
	}
	equal(t, handled, 1, "handler calls")
	equal(t, l.Stats().Invalid, uint64(2), "Stats().Invalid")
}
