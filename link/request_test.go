package link_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// A request ends with its handler's response, decoded.
func TestRequestResponse(t *testing.T) {
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	link.HandleRequest(toSlave, messages.SendCommand, func(_ context.Context, c messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: fmt.Sprintf("instance %d ran %s", c.InstanceID, c.Command)}, nil
	})
	start(t, toSlave, messages.SendCommand)
	start(t, toInstance)

	res, err := link.Request(testkit.Ctx(t, 5*time.Second), toInstance, messages.SendCommand, messages.Command{InstanceID: 7, Command: "/players"})
	testkit.NoErr(t, err, "send_command")
	equal(t, res.Output, "instance 7 ran /players", "output")

	data, err := toInstance.RequestJSON(testkit.Ctx(t, 5*time.Second), messages.SendCommand, []byte(`{"instance_id":8,"command":"/time"}`))
	testkit.NoErr(t, err, "send_command as JSON")
	equal(t, string(data), `{"output":"instance 8 ran /time"}`, "JSON response")
	equal(t, toInstance.Stats().Pending, 0, "pending requests after the responses")
}

// A handler's error reaches the requester with its code and its text;
// errors.Is matches the sentinel of the code.
func TestRequestHandlerError(t *testing.T) {
	errDiskFull := errors.New("disk full")
	tests := []struct {
		name     string
		err      error
		code     link.Code
		message  string
		sentinel error
	}{
		{name: "application code", err: link.Errorf("test.not_ready", "instance %d is still starting", 7), code: "test.not_ready", message: "instance 7 is still starting"},
		{name: "application code wrapped", err: fmt.Errorf("start: %w", &link.Error{Code: "test.not_ready", Message: "not yet"}), code: "test.not_ready", message: "not yet"},
		{name: "application code without message", err: &link.Error{Code: "test.busy"}, code: "test.busy", message: "test.busy"},
		{name: "plain error", err: errDiskFull, code: link.CodeHandlerError, message: "disk full", sentinel: link.ErrHandlerError},
		{name: "wrapped plain error", err: fmt.Errorf("save map: %w", errDiskFull), code: link.CodeHandlerError, message: "save map: disk full", sentinel: link.ErrHandlerError},
		{name: "link sentinel", err: link.ErrUnavailable, code: link.CodeUnavailable, message: link.ErrUnavailable.Message, sentinel: link.ErrUnavailable},
		{name: "wrapped link sentinel", err: fmt.Errorf("not you: %w", link.ErrPermissionDenied), code: link.CodePermissionDenied, message: "permission denied", sentinel: link.ErrPermissionDenied},
		{name: "code that is not a code", err: &link.Error{Code: "Not A Code", Message: "x"}, code: link.CodeHandlerError, message: "Not A Code: x", sentinel: link.ErrHandlerError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
			link.HandleRequest(toSlave, testEcho, func(context.Context, echoReq) (echoResp, error) { return echoResp{}, tc.err })
			toSlave.HandleRequestJSON(messages.SendCommand, func(context.Context, *link.Envelope) ([]byte, error) { return nil, tc.err })
			start(t, toSlave, testEcho, messages.SendCommand)
			start(t, toInstance)

			for _, via := range []string{"typed", "JSON"} {
				var err error
				if via == "typed" {
					_, err = link.Request(testkit.Ctx(t, 5*time.Second), toInstance, testEcho, echoReq{})
				} else {
					_, err = toInstance.RequestJSON(testkit.Ctx(t, 5*time.Second), messages.SendCommand, []byte(`{"instance_id":7,"command":"x"}`))
				}
				le := testkit.WantCode(t, err, tc.code)
				equal(t, le.Message, tc.message, via+" handler: message")
				if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
					t.Errorf("%s handler: errors.Is(%v, %v) is false", via, err, tc.sentinel)
				}
				if errors.Is(err, link.ErrTimeout) || errors.Is(err, link.ErrInternal) {
					t.Errorf("%s handler: %v matches an unrelated sentinel", via, err)
				}
			}
		})
	}
}

// A request ends with ErrTimeout at its context's deadline, and the
// handler's context ends then too, whatever the handler does with it.
func TestRequestTimeout(t *testing.T) {
	tests := []struct {
		name string
		// handler is the test:echo handler; it reports its ctx's end on
		// ended and may wait on release before answering.
		handler func(ctx context.Context, ended chan<- error, release <-chan struct{}) (echoResp, error)
	}{
		{
			name: "handler returns ctx.Err()",
			handler: func(ctx context.Context, ended chan<- error, _ <-chan struct{}) (echoResp, error) {
				<-ctx.Done()
				ended <- ctx.Err()
				return echoResp{}, ctx.Err()
			},
		},
		{
			name: "handler wraps ctx.Err()",
			handler: func(ctx context.Context, ended chan<- error, _ <-chan struct{}) (echoResp, error) {
				<-ctx.Done()
				ended <- ctx.Err()
				return echoResp{}, fmt.Errorf("waiting for the game: %w", ctx.Err())
			},
		},
		{
			name: "handler answers after the deadline",
			handler: func(ctx context.Context, ended chan<- error, release <-chan struct{}) (echoResp, error) {
				<-ctx.Done()
				ended <- ctx.Err()
				<-release
				return echoResp{Text: "too late"}, nil
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ended := make(chan error, 1)
			release := make(chan struct{}) // late handlers answer when the test ends
			t.Cleanup(func() { close(release) })
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
			link.HandleRequest(toSlave, testEcho, func(ctx context.Context, _ echoReq) (echoResp, error) {
				return tc.handler(ctx, ended, release)
			})
			start(t, toSlave, testEcho)
			start(t, toInstance)

			// Several rounds with a short deadline: the requester's clock
			// and the handler's end together, and either may be seen first.
			for i := range 20 {
				timeout := 5 * time.Millisecond
				if i == 0 {
					timeout = 100 * time.Millisecond
				}
				received := toSlave.Stats().Received
				began := time.Now()
				_, err := link.Request(testkit.Ctx(t, timeout), toInstance, testEcho, echoReq{N: i})
				took := time.Since(began)
				// The virtual connector delivers as it sends: had the
				// deadline passed before, the request was never sent.
				delivered := toSlave.Stats().Received > received
				le := testkit.WantCode(t, err, link.CodeTimeout)
				if !errors.Is(err, link.ErrTimeout) {
					t.Fatalf("round %d: errors.Is(%v, ErrTimeout) is false", i, err)
				}
				if took < timeout {
					t.Fatalf("round %d: ended after %s, before the %s deadline: %v", i, took, timeout, le)
				}
				if took > timeout+2*time.Second {
					t.Fatalf("round %d: ended %s after a %s deadline", i, took, timeout)
				}
				if !delivered {
					if i == 0 {
						t.Fatal("a request with a 100ms deadline was never sent")
					}
					continue // a slow machine: timed out before sending, as it should
				}
				ctxErr := testkit.Recv(t, ended, 5*time.Second, "the handler's context to end")
				if !errors.Is(ctxErr, context.DeadlineExceeded) {
					t.Fatalf("round %d: handler's ctx ended with %v, want DeadlineExceeded", i, ctxErr)
				}
			}
		})
	}
}

// A context without a deadline gets the link's request timeout, and so
// does a handler whose request arrived without one.
func TestRequestDefaultTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	t.Run("requester", func(t *testing.T) {
		deadlines := make(chan time.Time, 1)
		toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, []link.Option{link.WithRequestTimeout(timeout)}, nil)
		link.HandleRequest(toSlave, testEcho, func(ctx context.Context, _ echoReq) (echoResp, error) {
			d, _ := ctx.Deadline()
			deadlines <- d
			<-ctx.Done()
			return echoResp{}, ctx.Err()
		})
		start(t, toSlave, testEcho)
		start(t, toInstance)

		began := time.Now()
		_, err := link.Request(context.Background(), toInstance, testEcho, echoReq{})
		took := time.Since(began)
		testkit.WantCode(t, err, link.CodeTimeout)
		if took < timeout || took > timeout+2*time.Second {
			t.Errorf("request ended after %s, want about %s", took, timeout)
		}
		d := testkit.Recv(t, deadlines, time.Second, "the handler's deadline")
		if d.IsZero() || d.Sub(began) > timeout+time.Second {
			t.Errorf("handler's deadline is %s after the request began, want about %s", d.Sub(began), timeout)
		}
	})
	t.Run("handler", func(t *testing.T) {
		_, raw, rec := rawPeer(t, instanceAddr, slaveAddr, func(l *link.Link) []messages.Message {
			link.HandleRequest(l, testEcho, func(ctx context.Context, _ echoReq) (echoResp, error) {
				if _, ok := ctx.Deadline(); !ok {
					return echoResp{Text: "no deadline"}, nil
				}
				<-ctx.Done()
				return echoResp{}, ctx.Err()
			})
			return []messages.Message{testEcho}
		}, link.WithRequestTimeout(timeout))
		began := time.Now()
		send(t, raw, &link.Envelope{Kind: messages.KindRequest, Type: "test:echo", ID: 1, Data: []byte(`{"n":1,"text":""}`)})
		resp := rec.response(t, 1)
		took := time.Since(began)
		testkit.WantCode(t, resp.Error, link.CodeTimeout)
		if took < timeout {
			t.Errorf("handler ended after %s, before the link's %s timeout", took, timeout)
		}
	})
}

// A handler that panics answers CodeInternal; the process and the link go on.
func TestRequestHandlerPanics(t *testing.T) {
	tests := []struct {
		name  string
		panic any
	}{
		{name: "string", panic: "boom"},
		{name: "error", panic: errors.New("boom")},
		{name: "nil", panic: nil},
		{name: "runtime error", panic: func() any { return outOfRange([]int{}, 3) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
			link.HandleRequest(toSlave, testEcho, func(_ context.Context, r echoReq) (echoResp, error) {
				if r.N == 1 {
					if f, ok := tc.panic.(func() any); ok {
						f()
					}
					panic(tc.panic)
				}
				return echoResp(r), nil
			})
			toSlave.HandleRequestJSON(messages.SendCommand, func(context.Context, *link.Envelope) ([]byte, error) {
				panic(tc.panic)
			})
			start(t, toSlave, testEcho, messages.SendCommand)
			start(t, toInstance)

			_, err := link.Request(testkit.Ctx(t, 5*time.Second), toInstance, testEcho, echoReq{N: 1})
			testkit.WantCode(t, err, link.CodeInternal)
			if !errors.Is(err, link.ErrInternal) {
				t.Errorf("errors.Is(%v, ErrInternal) is false", err)
			}
			_, err = toInstance.RequestJSON(testkit.Ctx(t, 5*time.Second), messages.SendCommand, []byte(`{"instance_id":7,"command":"x"}`))
			testkit.WantCode(t, err, link.CodeInternal)

			resp, err := link.Request(testkit.Ctx(t, 5*time.Second), toInstance, testEcho, echoReq{N: 2, Text: "still here"})
			testkit.NoErr(t, err, "request after a panic")
			equal(t, resp.Text, "still here", "response after a panic")
		})
	}
}

// A handler whose response does not match the schema answers CodeInternal
// instead of sending it.
func TestRequestInvalidResponse(t *testing.T) {
	tests := []struct {
		name  string
		typed bool   // the typed handler answers a string too long
		resp  string // otherwise the JSON handler answers this
	}{
		{name: "typed, field too long", typed: true},
		{name: "JSON, unknown field", resp: `{"output":"x","bogus":1}`},
		{name: "JSON, missing field", resp: `{}`},
		{name: "JSON, wrong type", resp: `{"output":7}`},
		{name: "JSON, not JSON", resp: `{"output":`},
		{name: "JSON, nothing", resp: ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
			link.HandleRequest(toSlave, testEcho, func(_ context.Context, r echoReq) (echoResp, error) {
				return echoResp{N: r.N, Text: strings.Repeat("x", 65)}, nil
			})
			toSlave.HandleRequestJSON(messages.SendCommand, func(context.Context, *link.Envelope) ([]byte, error) {
				return []byte(tc.resp), nil
			})
			start(t, toSlave, testEcho, messages.SendCommand)
			start(t, toInstance)

			var err error
			if tc.typed {
				_, err = link.Request(testkit.Ctx(t, 5*time.Second), toInstance, testEcho, echoReq{N: 1})
			} else {
				_, err = toInstance.RequestJSON(testkit.Ctx(t, 5*time.Second), messages.SendCommand, []byte(`{"instance_id":7,"command":"x"}`))
			}
			le := testkit.WantCode(t, err, link.CodeInternal)
			if !strings.Contains(le.Message, "response") {
				t.Errorf("error %q does not say the response was bad", le.Message)
			}
		})
	}
}

// The requester checks the response against the schema too: a peer that
// answers with a bad payload yields ErrInvalidMessage, not bad data.
func TestRequestResponseCheckedOnArrival(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{name: "wrong type", data: `{"n":"1","text":""}`},
		{name: "missing field", data: `{"n":1}`},
		{name: "not JSON", data: `{{`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The slave's link asks; the test answers by hand as the instance.
			l, raw, rec := rawPeer(t, slaveAddr, instanceAddr, nil)
			type result struct {
				resp echoResp
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := link.Request(context.Background(), l, testEcho, echoReq{N: 1})
				done <- result{resp, err}
			}()
			var req *link.Envelope
			testkit.WaitFor(t, 5*time.Second, "the request to arrive", func() bool {
				rec.mu.Lock()
				defer rec.mu.Unlock()
				for _, m := range rec.msgs {
					if m.Kind == messages.KindRequest && m.Type == "test:echo" {
						req = m
						return true
					}
				}
				return false
			})
			if req.Deadline.IsZero() {
				t.Error("the request carries no deadline")
			}
			send(t, raw, &link.Envelope{Kind: messages.KindResponse, Type: req.Type, ID: req.ID, Data: []byte(tc.data)})
			r := testkit.Recv(t, done, 5*time.Second, "the request to end")
			le := testkit.WantCode(t, r.err, link.CodeInvalidMessage)
			if !strings.Contains(le.Message, "test:echo response") {
				t.Errorf("error %q does not name the message's response", le.Message)
			}
		})
	}
}

// A link that is not started refuses requests and events at once.
func TestRequestBeforeStart(t *testing.T) {
	toInstance, _ := newPair(t, slaveAddr, instanceAddr, nil, nil)
	_, err := link.Request(testkit.Ctx(t, 5*time.Second), toInstance, testEcho, echoReq{})
	testkit.WantCode(t, err, link.CodeUnavailable)
	err = link.Emit(testkit.Ctx(t, 5*time.Second), toInstance, testTick, tick{})
	testkit.WantCode(t, err, link.CodeUnavailable)
}

// outOfRange indexes s at i, which panics when i is out of range.
func outOfRange(s []int, i int) any { return s[i] }
