package link_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// authorizer records the permissions it is asked about and answers with
// the error decide returns.
type authorizer struct {
	mu     sync.Mutex
	asked  []string
	decide func(permission string) error
}

func (a *authorizer) authorize(_ context.Context, def *messages.Definition, m *link.Envelope) error {
	if def.Name() != m.Type {
		return fmt.Errorf("asked about %s with a %s message", def.Name(), m.Type)
	}
	a.mu.Lock()
	a.asked = append(a.asked, def.Permission())
	a.mu.Unlock()
	return a.decide(def.Permission())
}

func (a *authorizer) questions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.asked...)
}

// An authorizer on the receiving link decides whether a request that
// declares a permission runs; Unrestricted requests skip it.
func TestPermission(t *testing.T) {
	errNoMFA := link.Errorf("test.mfa_required", "log in again with a second factor")
	tests := []struct {
		name    string
		decide  func(string) error
		send    func(ctx context.Context, l *link.Link) error
		asked   []string  // what the authorizer is asked
		code    link.Code // "" for success
		text    string    // in the error
		handled bool      // whether test:guarded's handler runs
	}{
		{
			name:   "refused",
			decide: func(string) error { return errors.New("alice may not") },
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, testGuarded, messages.Empty{})
				return err
			},
			asked: []string{"test.guarded"}, code: link.CodePermissionDenied, text: "alice may not",
		},
		{
			name:   "refused with an application code",
			decide: func(string) error { return errNoMFA },
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, testGuarded, messages.Empty{})
				return err
			},
			asked: []string{"test.guarded"}, code: "test.mfa_required", text: "second factor",
		},
		{
			name:   "refused with a link sentinel",
			decide: func(string) error { return link.ErrPermissionDenied },
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.RequestJSON(ctx, testGuarded, []byte(`{}`))
				return err
			},
			asked: []string{"test.guarded"}, code: link.CodePermissionDenied,
		},
		{
			name:   "allowed",
			decide: func(string) error { return nil },
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, testGuarded, messages.Empty{})
				return err
			},
			asked: []string{"test.guarded"}, handled: true,
		},
		{
			name:   "ping is unrestricted",
			decide: func(string) error { return errors.New("nobody may do anything") },
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, messages.Ping, messages.Empty{})
				return err
			},
		},
		{
			name:   "plugin request declared unrestricted",
			decide: func(string) error { return errors.New("nobody may do anything") },
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, testEcho, echoReq{N: 1})
				return err
			},
		},
		{
			name:   "core request with a permission",
			decide: func(p string) error { return errors.New("no " + p) },
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, messages.SendCommand, messages.Command{InstanceID: 7, Command: "x"})
				return err
			},
			asked: []string{"core.instance.send_command"}, code: link.CodePermissionDenied, text: "no core.instance.send_command",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			auth := &authorizer{decide: tc.decide}
			var guardedRuns atomic.Int64
			toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, []link.Option{link.WithAuthorizer(auth.authorize)})
			link.HandleRequest(toControl, testGuarded, func(context.Context, messages.Empty) (messages.Empty, error) {
				guardedRuns.Add(1)
				return messages.Empty{}, nil
			})
			link.HandleRequest(toControl, testEcho, echoHandler)
			start(t, toControl, testGuarded, testEcho)
			start(t, toMaster)

			err := tc.send(testkit.Ctx(t, 5*time.Second), toMaster)
			if tc.code == "" {
				testkit.NoErr(t, err, "request")
			} else {
				le := testkit.WantCode(t, err, tc.code)
				if !strings.Contains(le.Message, tc.text) {
					t.Errorf("error %q does not say %q", le.Message, tc.text)
				}
			}
			asked := auth.questions()
			if strings.Join(asked, ",") != strings.Join(tc.asked, ",") {
				t.Errorf("authorizer asked about %q, want %q", asked, tc.asked)
			}
			if got := guardedRuns.Load() == 1; got != tc.handled {
				t.Errorf("test:guarded handler ran: %v, want %v", got, tc.handled)
			}
		})
	}
}

// Without an authorizer every request is allowed.
func TestPermissionNoAuthorizer(t *testing.T) {
	toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, nil)
	link.HandleRequest(toControl, testGuarded, func(context.Context, messages.Empty) (messages.Empty, error) {
		return messages.Empty{}, nil
	})
	start(t, toControl, testGuarded)
	start(t, toMaster)
	_, err := link.Request(testkit.Ctx(t, 5*time.Second), toMaster, testGuarded, messages.Empty{})
	testkit.NoErr(t, err, "test:guarded without an authorizer")
}

// Events from a control carry permissions as requests do: the authorizer
// is asked, and a refused event never reaches its handler (the sender
// does not hear of it; the link counts it). An event the authorizer
// allows is handled, in order with the rest.
func TestPermissionOnEvents(t *testing.T) {
	auth := &authorizer{decide: func(string) error { return nil }}
	var allow atomic.Bool
	auth.decide = func(string) error {
		if allow.Load() {
			return nil
		}
		return errors.New("not now")
	}
	toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, []link.Option{link.WithAuthorizer(auth.authorize)})
	got := make(chan int, 8)
	link.HandleEvent(toControl, testTick, func(_ context.Context, tk tick) error {
		got <- tk.Seq
		return nil
	})
	start(t, toControl, testTick)
	start(t, toMaster)
	ctx := testkit.Ctx(t, 5*time.Second)
	testkit.NoErr(t, link.Emit(ctx, toMaster, testTick, tick{Seq: 1}), "emit refused tick")
	testkit.Eventually(t, 5*time.Second, "the refused event counted", func() error {
		if n := toControl.Stats().Refused; n != 1 {
			return fmt.Errorf("Refused = %d", n)
		}
		return nil
	})
	allow.Store(true)
	testkit.NoErr(t, link.Emit(ctx, toMaster, testTick, tick{Seq: 2}), "emit allowed tick")
	if seq := testkit.Recv(t, got, 5*time.Second, "the allowed tick"); seq != 2 {
		t.Errorf("handled tick %d, want 2 (the refused one must not run)", seq)
	}
	if asked := auth.questions(); strings.Join(asked, ",") != "test.tick,test.tick" {
		t.Errorf("authorizer asked about %q, want test.tick twice", asked)
	}
}

// An authorizer sees the payload, so it can allow a request for one
// instance and refuse it for another.
func TestPermissionSeesPayload(t *testing.T) {
	toMaster, toControl := newPair(t, controlAddr, masterAddr, nil, []link.Option{link.WithAuthorizer(
		func(_ context.Context, def *messages.Definition, m *link.Envelope) error {
			if strings.Contains(string(m.Data), `"instance_id":7`) {
				return link.Errorf(link.CodePermissionDenied, "not instance 7")
			}
			return nil
		})})
	link.HandleRequest(toControl, messages.SendCommand, func(context.Context, messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: "ok"}, nil
	})
	start(t, toControl, messages.SendCommand)
	start(t, toMaster)
	ctx := testkit.Ctx(t, 5*time.Second)
	_, err := link.Request(ctx, toMaster, messages.SendCommand, messages.Command{InstanceID: 7, Command: "x"})
	testkit.WantCode(t, err, link.CodePermissionDenied)
	if r, err := link.Request(ctx, toMaster, messages.SendCommand, messages.Command{InstanceID: 8, Command: "x"}); err != nil || r.Output != "ok" {
		t.Errorf("instance 8: %+v, %v; want ok", r, err)
	}
}
