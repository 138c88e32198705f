package link_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// fakeConn is a link.Connector that delivers nothing by itself: the test
// calls the link's Receiver directly and reads what the link sent.
type fakeConn struct {
	mu     sync.Mutex
	r      link.Receiver
	sent   []*link.Envelope
	notify chan struct{} // holds a token after each Send
}

func newFakeConn() *fakeConn { return &fakeConn{notify: make(chan struct{}, 1)} }

func (c *fakeConn) Start(r link.Receiver) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.r = r
	return nil
}

func (c *fakeConn) Flush(context.Context) error { return nil }

func (c *fakeConn) Send(_ context.Context, m *link.Envelope) error {
	c.mu.Lock()
	c.sent = append(c.sent, m)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return nil
}

func (c *fakeConn) Close() error { return nil }

func (c *fakeConn) receiver() link.Receiver {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r
}

// withID returns the messages sent with id.
func (c *fakeConn) withID(id uint64) []*link.Envelope {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*link.Envelope
	for _, m := range c.sent {
		if m.ID == id {
			out = append(out, m)
		}
	}
	return out
}

// waitID waits until something has been sent with id and returns it all,
// failing the test after timeout.
func (c *fakeConn) waitID(t *testing.T, id uint64, timeout time.Duration, what string) []*link.Envelope {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if got := c.withID(id); len(got) > 0 {
			return got
		}
		select {
		case <-c.notify:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// fuzzDecoders decode, as the typed handlers do, every request that may
// arrive at an instance from its slave: a request is valid when its
// decoder accepts it.
var fuzzDecoders = map[string]func([]byte) error{
	"send_command":              func(d []byte) error { _, err := messages.SendCommand.DecodeRequest(d); return err },
	"start_instance":            func(d []byte) error { _, err := messages.StartInstance.DecodeRequest(d); return err },
	"stop_instance":             func(d []byte) error { _, err := messages.StopInstance.DecodeRequest(d); return err },
	"prepare_master_disconnect": func(d []byte) error { _, err := messages.PrepareMasterDisconnect.DecodeRequest(d); return err },
	"test:echo":                 func(d []byte) error { _, err := testEcho.DecodeRequest(d); return err },
}

var slaveToInstance = messages.Direction{Source: messages.Slave, Target: messages.Instance}

// fuzzLink returns a started instance-side link on a fakeConn, with typed
// handlers for everything a slave may send it.
func fuzzLink(t *testing.T) (*link.Link, *fakeConn) {
	t.Helper()
	conn := newFakeConn()
	l, err := link.New(conn, instanceAddr, slaveAddr, testCat, link.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	empty := func(context.Context, messages.InstanceRef) (messages.Empty, error) { return messages.Empty{}, nil }
	link.HandleRequest(l, messages.StartInstance, empty)
	link.HandleRequest(l, messages.StopInstance, empty)
	link.HandleRequest(l, messages.SendCommand, func(_ context.Context, c messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: c.Command}, nil
	})
	link.HandleRequest(l, messages.PrepareMasterDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) {
		return messages.Empty{}, nil
	})
	link.HandleRequest(l, testEcho, echoHandler)
	link.HandleEvent(l, messages.MasterConnectionEvent, func(context.Context, messages.ConnectionEvent) error { return nil })
	link.HandleEvent(l, messages.BanlistUpdate, func(context.Context, messages.Ban) error { return nil })
	link.HandleEvent(l, testTick, func(context.Context, tick) error { return nil })
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, conn
}

// FuzzReceive delivers arbitrary messages to a started link. It must never
// panic; a request gets exactly one response, an error unless the request
// was valid; anything else gets none; and the link goes on answering.
func FuzzReceive(f *testing.F) {
	for _, def := range testCat.On(slaveToInstance) {
		if def.Kind() == messages.KindRequest && fuzzDecoders[def.Name()] == nil {
			f.Fatalf("FuzzReceive has no decoder for %s, which may arrive at an instance", def.Name())
		}
	}
	req, resp, ev := byte(messages.KindRequest), byte(messages.KindResponse), byte(messages.KindEvent)
	seeds := []struct {
		kind byte
		typ  string
		data string
	}{
		{req, "send_command", `{"instance_id":7,"command":"/players"}`},
		{req, "send_command", `{"instance_id":0,"command":"/players"}`},
		{req, "send_command", `{"instance_id":7}`},
		{req, "start_instance", `{"instance_id":9223372036854775807}`},
		{req, "start_instance", `{"instance_id":9223372036854775808}`},
		{req, "start_instance", `{"instance_id":1.0}`},
		{req, "stop_instance", `{"instance_id":1,"extra":null}`},
		{req, "prepare_master_disconnect", `{}`},
		{req, "prepare_master_disconnect", `[]`},
		{req, "test:echo", `{"n":1,"text":"hi"}`},
		{req, "test:echo", `{"n":1,"text":"hi","n":"x"}`},
		{req, "test:echo", `{"n":1,`},
		{req, "test:echo", ``},
		{req, "ping", `{}`},
		{req, "register_slave", `{"slave_id":1,"name":"s","version":"1","instances":[]}`},
		{req, "banlist_update", `{"name":"bob","banned":true}`},
		{req, "no_such", `{}`},
		{req, "", `null`},
		{ev, "banlist_update", `{"name":"bob","banned":true}`},
		{ev, "banlist_update", `{"name":"","banned":true}`},
		{ev, "test:tick", `{"seq":1,"items":["a"]}`},
		{ev, "send_command", `{"instance_id":7,"command":"x"}`},
		{ev, "instance_started", `{"instance_id":7}`},
		{resp, "test:echo", `{"n":1,"text":""}`},
		{0, "test:echo", `{"n":1,"text":""}`},
		{255, "test:tick", `{"seq":1,"items":[]}`},
	}
	for _, s := range seeds {
		f.Add(s.kind, s.typ, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, kind byte, typ string, data []byte) {
		l, conn := fuzzLink(t)
		r := conn.receiver()
		deadline := time.Now().Add(5 * time.Second)
		_ = r.Receive(context.Background(), &link.Envelope{Kind: messages.Kind(kind), Type: typ, ID: 1, Data: data, Deadline: deadline})

		// A good request after it is answered: the link still works, and
		// (responses being sent as handlers end) a response to the fuzzed
		// request, if any, has been sent by then or is about to be.
		_ = r.Receive(context.Background(), &link.Envelope{Kind: messages.KindRequest, Type: "test:echo", ID: 2, Data: []byte(`{"n":2,"text":"after"}`), Deadline: deadline})
		if good := conn.waitID(t, 2, 5*time.Second, "the response to the good request"); len(good) != 1 || good[0].Error != nil || string(good[0].Data) != `{"n":2,"text":"after"}` {
			t.Fatalf("good request after %s %q %q: got %s", messages.Kind(kind), typ, data, describe(good))
		}

		if messages.Kind(kind) != messages.KindRequest {
			if got := conn.withID(1); len(got) != 0 {
				t.Fatalf("%s %q %q was answered: %s", messages.Kind(kind), typ, data, describe(got))
			}
			return
		}
		got := conn.waitID(t, 1, 5*time.Second, "the response to the fuzzed request")
		if len(got) != 1 {
			t.Fatalf("request %q %q got %d responses: %s", typ, data, len(got), describe(got))
		}
		m := got[0]
		if m.Kind != messages.KindResponse || m.Type != typ {
			t.Fatalf("request %q %q answered with %s %q", typ, data, m.Kind, m.Type)
		}
		def, known := testCat.Lookup(typ)
		valid := known && def.Kind() == messages.KindRequest && def.ValidOn(slaveToInstance) && fuzzDecoders[typ](data) == nil
		switch {
		case valid && m.Error != nil:
			t.Fatalf("valid request %q %q refused: %v", typ, data, m.Error)
		case valid:
			if err := def.ValidateResponse(m.Data); err != nil {
				t.Fatalf("valid request %q %q answered with a bad response %q: %v", typ, data, m.Data, err)
			}
		case m.Error == nil:
			t.Fatalf("invalid request %q %q answered with data %q", typ, data, m.Data)
		case m.Data != nil:
			t.Fatalf("refused request %q %q carries data %q", typ, data, m.Data)
		case !link.ValidCode(m.Error.Code):
			t.Fatalf("request %q %q refused with a malformed code %q", typ, data, m.Error.Code)
		}
		if s := l.Stats(); s.Pending != 0 {
			t.Fatalf("link has %d pending requests", s.Pending)
		}
	})
}

func describe(ms []*link.Envelope) string {
	s := fmt.Sprintf("%d messages", len(ms))
	for _, m := range ms {
		s += fmt.Sprintf("; %s %s id=%d data=%q error=%v", m.Kind, m.Type, m.ID, m.Data, m.Error)
	}
	return s
}
