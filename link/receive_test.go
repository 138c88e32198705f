package link_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// A bad inbound request never reaches a handler: the requester gets
// ErrInvalidMessage saying why, and the link goes on answering.
func TestReceiveInvalidRequest(t *testing.T) {
	tests := []struct {
		name string
		typ  string
		data string
		why  string // in the error's text
	}{
		{name: "unknown type", typ: "no_such_message", data: `{}`, why: `unknown message type "no_such_message"`},
		{name: "unknown plugin type", typ: "test:nope", data: `{}`, why: "unknown message type"},
		{name: "valid on another link", typ: "ping", data: `{}`, why: "ping is not valid on slave-instance"},
		{name: "valid the other way only", typ: "instance_started", data: `{"instance_id":1}`, why: "not a request"},
		{name: "request of the other direction", typ: "register_slave", data: `{"slave_id":1,"name":"s","version":"1","instances":[]}`, why: "register_slave is not valid on slave-instance"},
		{name: "event type sent as a request", typ: "banlist_update", data: `{"name":"bob","banned":true}`, why: "not a request"},
		{name: "field out of range", typ: "send_command", data: `{"instance_id":0,"command":"x"}`, why: "/instance_id"},
		{name: "required field missing", typ: "send_command", data: `{"instance_id":1}`, why: "command"},
		{name: "field of the wrong type", typ: "test:echo", data: `{"n":"one","text":""}`, why: "/n"},
		{name: "unexpected field", typ: "test:echo", data: `{"n":1,"text":"","extra":true}`, why: "extra"},
		{name: "not JSON", typ: "test:echo", data: `{"n":1,`, why: "invalid test:echo request"},
		{name: "no payload", typ: "test:echo", data: ``, why: "invalid test:echo request"},
	}
	var calls atomic.Int64
	l, raw, rec := rawPeer(t, instanceAddr, slaveAddr, func(l *link.Link) []messages.Message {
		count := func(context.Context, *link.Envelope) ([]byte, error) {
			calls.Add(1)
			return nil, errors.New("a handler ran")
		}
		for _, m := range []messages.Message{messages.SendCommand, messages.StartInstance, messages.StopInstance, messages.PrepareMasterDisconnect} {
			l.HandleRequestJSON(m, count)
		}
		link.HandleRequest(l, testEcho, echoHandler)
		return []messages.Message{messages.SendCommand, messages.StartInstance, messages.StopInstance, messages.PrepareMasterDisconnect, testEcho}
	})
	id := uint64(0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := l.Stats().Invalid
			id++
			send(t, raw, &link.Envelope{Kind: messages.KindRequest, Type: tc.typ, ID: id, Data: []byte(tc.data), Deadline: time.Now().Add(5 * time.Second)})
			resp := rec.response(t, id)
			le := testkit.WantCode(t, resp.Error, link.CodeInvalidMessage)
			if !errors.Is(resp.Error, link.ErrInvalidMessage) {
				t.Errorf("errors.Is(%v, ErrInvalidMessage) is false", resp.Error)
			}
			if !strings.Contains(le.Message, tc.why) {
				t.Errorf("error %q does not say %q", le.Message, tc.why)
			}
			if resp.Data != nil {
				t.Errorf("a refused request carries data %q", resp.Data)
			}
			if got := l.Stats().Invalid; got != before+1 {
				t.Errorf("Stats().Invalid = %d, want %d", got, before+1)
			}

			// The link keeps working: a good request is answered.
			id++
			send(t, raw, &link.Envelope{Kind: messages.KindRequest, Type: "test:echo", ID: id, Data: []byte(`{"n":3,"text":"ok"}`), Deadline: time.Now().Add(5 * time.Second)})
			good := rec.response(t, id)
			if good.Error != nil {
				t.Fatalf("good request after a bad one failed: %v", good.Error)
			}
			equal(t, string(good.Data), `{"n":3,"text":"ok"}`, "echo response")
		})
	}
	equal(t, calls.Load(), 0, "handler calls for bad requests")
}

// A bad inbound event never reaches a handler: it is dropped and counted,
// and the events after it are handled.
func TestReceiveInvalidEvent(t *testing.T) {
	tests := []struct {
		name string
		kind messages.Kind
		typ  string
		data string
	}{
		{name: "unknown type", kind: messages.KindEvent, typ: "no_such_event", data: `{}`},
		{name: "valid the other way only", kind: messages.KindEvent, typ: "instance_started", data: `{"instance_id":1}`},
		{name: "valid on another link", kind: messages.KindEvent, typ: "update_instances", data: `{"instances":[]}`},
		{name: "request type sent as an event", kind: messages.KindEvent, typ: "send_command", data: `{"instance_id":1,"command":"x"}`},
		{name: "field out of range", kind: messages.KindEvent, typ: "banlist_update", data: `{"name":"","banned":true}`},
		{name: "required field missing", kind: messages.KindEvent, typ: "test:tick", data: `{"items":[]}`},
		{name: "too many items", kind: messages.KindEvent, typ: "test:tick", data: `{"seq":1,"items":[` + strings.Repeat(`"x",`, 100) + `"x"]}`},
		{name: "not JSON", kind: messages.KindEvent, typ: "test:tick", data: `not json`},
		{name: "unknown kind", kind: messages.Kind(9), typ: "test:tick", data: `{"seq":1,"items":[]}`},
		{name: "zero kind", kind: 0, typ: "test:tick", data: `{"seq":1,"items":[]}`},
	}
	var (
		mu  sync.Mutex
		got []int
	)
	handled := make(chan int, 100)
	l, raw, rec := rawPeer(t, instanceAddr, slaveAddr, func(l *link.Link) []messages.Message {
		link.HandleEvent(l, testTick, func(_ context.Context, ev tick) error {
			mu.Lock()
			got = append(got, ev.Seq)
			mu.Unlock()
			handled <- ev.Seq
			return nil
		})
		link.HandleEvent(l, messages.BanlistUpdate, func(context.Context, messages.Ban) error {
			t.Error("banlist_update handler ran for an invalid event")
			return nil
		})
		return []messages.Message{testTick, messages.BanlistUpdate}
	})
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := l.Stats().Invalid
			send(t, raw, &link.Envelope{Kind: tc.kind, Type: tc.typ, Data: []byte(tc.data)})
			// Events are handled in order, so once the good event that
			// follows is handled, the bad one has been dealt with.
			seq := 1000 + i
			send(t, raw, &link.Envelope{Kind: messages.KindEvent, Type: "test:tick", Data: []byte(`{"seq":` + strconv.Itoa(seq) + `,"items":["a"]}`)})
			equal(t, testkit.Recv(t, handled, 5*time.Second, "the good event"), seq, "handled event")
			if got := l.Stats().Invalid; got != before+1 {
				t.Errorf("Stats().Invalid = %d, want %d", got, before+1)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	equal(t, len(got), len(tests), "events handled")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	equal(t, len(rec.msgs), 0, "messages sent back for events")
}

// A response to no pending request is counted as late and ignored; the
// link goes on.
func TestReceiveLateResponse(t *testing.T) {
	tests := []struct {
		name string
		msg  *link.Envelope
	}{
		{name: "unknown id", msg: &link.Envelope{Kind: messages.KindResponse, Type: "test:echo", ID: 4242, Data: []byte(`{"n":1,"text":""}`)}},
		{name: "unknown id with error", msg: &link.Envelope{Kind: messages.KindResponse, Type: "test:echo", ID: 4243, Error: link.Errorf(link.CodeInternal, "boom")}},
		{name: "id zero, unknown type", msg: &link.Envelope{Kind: messages.KindResponse, Type: "nonsense"}},
	}
	l, raw, _ := rawPeer(t, instanceAddr, slaveAddr, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := l.Stats()
			send(t, raw, tc.msg)
			after := l.Stats()
			equal(t, after.Late, before.Late+1, "Stats().Late")
			equal(t, after.Invalid, before.Invalid, "Stats().Invalid")
			equal(t, after.Received, before.Received+1, "Stats().Received")
		})
	}
	select {
	case <-l.Done():
		t.Fatal("the link closed after late responses")
	default:
	}
}

// A late response to a request that already timed out does not disturb
// the next request, which gets its own response.
func TestReceiveLateResponseAfterTimeout(t *testing.T) {
	release := make(chan struct{})
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	link.HandleRequest(toSlave, testEcho, func(ctx context.Context, r echoReq) (echoResp, error) {
		if r.N == 1 {
			<-release // answer only after the requester gave up
		}
		return echoResp(r), nil
	})
	start(t, toSlave, testEcho)
	start(t, toInstance)

	for attempt := 0; ; attempt++ {
		received := toSlave.Stats().Received
		_, err := link.Request(testkit.Ctx(t, 50*time.Millisecond), toInstance, testEcho, echoReq{N: 1})
		testkit.WantCode(t, err, link.CodeTimeout)
		if toSlave.Stats().Received > received {
			break // delivered, and will be answered late
		}
		if attempt == 5 { // the deadline passed before sending, each time
			t.Fatal("could not deliver a request with a 50ms deadline")
		}
	}
	close(release)
	testkit.WaitFor(t, 5*time.Second, "the late response to be counted", func() bool { return toInstance.Stats().Late == 1 })

	resp, err := link.Request(testkit.Ctx(t, 5*time.Second), toInstance, testEcho, echoReq{N: 2, Text: "two"})
	testkit.NoErr(t, err, "request after a late response")
	equal(t, resp, echoResp{N: 2, Text: "two"}, "response")
}
