package link_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// A bad payload fails on the sender's side, before anything is written,
// with an error that names the message and the field.
func TestSendInvalidPayload(t *testing.T) {
	tests := []struct {
		name    string
		send    func(ctx context.Context, l *link.Link) error
		message string // the message named in the error
		field   string // named in the error: a JSON pointer, or a property the reason names; "" for the whole payload
	}{
		{
			name: "typed request, field below minimum",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, messages.SendCommand, messages.Command{InstanceID: 0, Command: "x"})
				return err
			},
			message: "send_command", field: "/instance_id",
		},
		{
			name: "typed request, empty string with minLength",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, messages.SendCommand, messages.Command{InstanceID: 7})
				return err
			},
			message: "send_command", field: "/command",
		},
		{
			name: "typed request, string too long",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, testEcho, echoReq{Text: strings.Repeat("x", 65)})
				return err
			},
			message: "test:echo", field: "/text",
		},
		{
			name: "RequestJSON, wrong type",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.RequestJSON(ctx, messages.SendCommand, []byte(`{"instance_id":"seven","command":"x"}`))
				return err
			},
			message: "send_command", field: "/instance_id",
		},
		{
			name: "RequestJSON, missing field",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.RequestJSON(ctx, messages.SendCommand, []byte(`{"instance_id":7}`))
				return err
			},
			message: "send_command", field: "command",
		},
		{
			name: "RequestJSON, unknown field",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.RequestJSON(ctx, testEcho, []byte(`{"n":1,"text":"","bogus":1}`))
				return err
			},
			message: "test:echo", field: "bogus",
		},
		{
			name: "RequestJSON, not JSON",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.RequestJSON(ctx, testEcho, []byte(`{"n":1,`))
				return err
			},
			message: "test:echo",
		},
		{
			name: "typed event, too many items",
			send: func(ctx context.Context, l *link.Link) error {
				return link.Emit(ctx, l, testTick, tick{Seq: 1, Items: make([]string, 101)})
			},
			message: "test:tick", field: "/items",
		},
		{
			name: "typed event, negative seq",
			send: func(ctx context.Context, l *link.Link) error {
				return link.Emit(ctx, l, testTick, tick{Seq: -1})
			},
			message: "test:tick", field: "/seq",
		},
		{
			name: "EmitJSON, wrong type",
			send: func(ctx context.Context, l *link.Link) error {
				return l.EmitJSON(ctx, testTick, []byte(`{"seq":1,"items":"a"}`))
			},
			message: "test:tick", field: "/items",
		},
		{
			name: "EmitJSON, not JSON",
			send: func(ctx context.Context, l *link.Link) error {
				return l.EmitJSON(ctx, testTick, []byte(`]`))
			},
			message: "test:tick",
		},
	}
	toInstance, toSlave := echoPair(t, nil, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			peerBefore, selfBefore := toSlave.Stats(), toInstance.Stats()
			err := tc.send(testkit.Ctx(t, 5*time.Second), toInstance)
			le := testkit.WantCode(t, err, link.CodeInvalidMessage)
			if !errors.Is(err, link.ErrInvalidMessage) {
				t.Errorf("errors.Is(err, ErrInvalidMessage) is false for %v", err)
			}
			var ve *messages.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("errors.As(%v, *messages.ValidationError) is false", err)
			}
			equal(t, ve.Message, tc.message, "ValidationError.Message")
			if !errors.Is(err, messages.ErrInvalidPayload) {
				t.Errorf("errors.Is(err, messages.ErrInvalidPayload) is false for %v", err)
			}
			if !strings.Contains(le.Error(), tc.message) {
				t.Errorf("error %q does not name message %s", le.Error(), tc.message)
			}
			if tc.field != "" && !strings.Contains(le.Error(), tc.field) {
				t.Errorf("error %q does not name field %s", le.Error(), tc.field)
			}
			if strings.HasPrefix(tc.field, "/") {
				equal(t, ve.Field, tc.field, "ValidationError.Field")
			}
			equal(t, toSlave.Stats().Received, peerBefore.Received, "peer's Stats().Received")
			equal(t, toInstance.Stats().Sent, selfBefore.Sent, "sender's Stats().Sent")
		})
	}
	// The link is unharmed.
	resp, err := link.Request(testkit.Ctx(t, 5*time.Second), toInstance, testEcho, echoReq{N: 1, Text: "fine"})
	testkit.NoErr(t, err, "good request after bad ones")
	equal(t, resp, echoResp{N: 1, Text: "fine"}, "response")
}

// A message the link may not send that way fails locally too.
func TestSendNotValidOnLink(t *testing.T) {
	stray := messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{Name: "stray", Links: []messages.Direction{messages.SlaveToInstance}})
	tests := []struct {
		name string
		send func(ctx context.Context, l *link.Link) error
		why  string
	}{
		{
			name: "request valid only the other way",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, messages.SendCommand, messages.Command{InstanceID: 7, Command: "x"})
				return err
			},
			why: "send_command is not valid on instance-slave",
		},
		{
			name: "request of another link",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := link.Request(ctx, l, messages.Ping, messages.Empty{})
				return err
			},
			why: "ping is not valid on instance-slave",
		},
		{
			name: "event valid only the other way",
			send: func(ctx context.Context, l *link.Link) error {
				return link.Emit(ctx, l, messages.BanlistUpdate, messages.Ban{Name: "bob", Banned: true})
			},
			why: "banlist_update is not valid on instance-slave",
		},
		{
			name: "event sent as a request",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.RequestJSON(ctx, testTick, []byte(`{"seq":1,"items":[]}`))
				return err
			},
			why: "not a request",
		},
		{
			name: "request sent as an event",
			send: func(ctx context.Context, l *link.Link) error {
				return l.EmitJSON(ctx, testEcho, []byte(`{"n":1,"text":""}`))
			},
			why: "test:echo is a request",
		},
		{
			name: "message not in the catalog",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.RequestJSON(ctx, stray, []byte(`{}`))
				return err
			},
			why: "stray is not in the catalog",
		},
		{
			name: "forward of an unknown type",
			send: func(ctx context.Context, l *link.Link) error {
				_, err := l.ForwardRequest(ctx, &link.Envelope{Kind: messages.KindRequest, Type: "no_such", Data: []byte(`{}`)})
				return err
			},
			why: "no_such is not in the catalog",
		},
		{
			name: "forward of an event valid only the other way",
			send: func(ctx context.Context, l *link.Link) error {
				return l.ForwardEvent(ctx, &link.Envelope{Kind: messages.KindEvent, Type: "banlist_update", Data: []byte(`{"name":"bob","banned":true}`)})
			},
			why: "banlist_update is not valid on instance-slave",
		},
	}
	// The instance's side of the link sends on instance-slave.
	_, toSlave := echoPair(t, nil, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := toSlave.Stats().Sent
			err := tc.send(testkit.Ctx(t, 5*time.Second), toSlave)
			le := testkit.WantCode(t, err, link.CodeInvalidMessage)
			if !strings.Contains(le.Message, tc.why) {
				t.Errorf("error %q does not say %q", le.Message, tc.why)
			}
			equal(t, toSlave.Stats().Sent, before, "Stats().Sent")
		})
	}
}
