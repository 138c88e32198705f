package link_test

import (
	"context"
	"errors"
	"testing"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// fanout records what a Broadcaster hands the transport.
type fanout struct {
	to   []messages.Endpoint
	sent []*link.Envelope
	err  error
}

func (f *fanout) Broadcast(_ context.Context, to messages.Endpoint, m *link.Envelope) error {
	if f.err != nil {
		return f.err
	}
	f.to, f.sent = append(f.to, to), append(f.sent, m)
	return nil
}

// A Broadcaster passes on, with its type, payload and origin, an event
// valid from the sender's type to the receivers'; anything else fails
// with invalid_message before the transport sees it, and the transport's
// refusal comes back in the link's terms.
func TestBroadcaster(t *testing.T) {
	cat, err := messages.NewCatalog()
	if err != nil {
		t.Fatal(err)
	}
	f := &fanout{}
	b, err := link.NewBroadcaster(f, masterAddr, messages.Slave, cat)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ban := &link.Envelope{Kind: messages.KindEvent, Type: messages.BanlistUpdate.Name(), Data: []byte(`{"name":"griefer","banned":true}`), Origin: controlAddr}
	if err := b.ForwardEvent(ctx, ban); err != nil {
		t.Fatalf("broadcasting %s: %v", ban.Type, err)
	}
	if len(f.sent) != 1 || f.to[0] != messages.Slave || f.sent[0].Type != ban.Type || string(f.sent[0].Data) != string(ban.Data) || f.sent[0].Origin != controlAddr || f.sent[0].Kind != messages.KindEvent {
		t.Fatalf("the transport got %+v to %v, want %s from %s to every slave", f.sent, f.to, ban.Type, controlAddr)
	}
	for _, tc := range []struct{ name, typ string }{
		{"not in the catalog", "nobody:nothing"},
		{"a request", messages.Ping.Name()},
		{"not valid from the master to slaves", messages.InstanceOutput.Name()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := b.ForwardEvent(ctx, &link.Envelope{Kind: messages.KindEvent, Type: tc.typ, Data: []byte(`{}`)})
			testkit.WantCode(t, err, link.CodeInvalidMessage)
		})
	}
	if len(f.sent) != 1 {
		t.Errorf("the transport got %d broadcasts, want only the valid one", len(f.sent))
	}
	f.err = link.Errorf(link.CodeUnavailable, "too many broadcasts waiting")
	if err := b.ForwardEvent(ctx, ban); !errors.Is(err, link.ErrUnavailable) {
		t.Errorf("a refusal of the transport: %v, want %v", err, link.ErrUnavailable)
	}
	if _, err := link.NewBroadcaster(f, masterAddr, messages.Master, cat); err == nil {
		t.Error("a broadcaster from the master to masters was made")
	}
}
