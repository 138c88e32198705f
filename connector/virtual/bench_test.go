package virtual_test

import (
	"context"
	"testing"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// discard is a link.Receiver that takes every message and keeps none.
type discard struct{}

func (discard) Receive(context.Context, *link.Envelope) error { return nil }
func (discard) Status(link.Status, error)                     {}

// BenchmarkSend: the pair's own cost of carrying one message to a started
// peer, without the links: a typed event (its payload a Go value) and a
// JSON one. The link allocates each envelope it sends; so does the loop.
func BenchmarkSend(b *testing.B) {
	line := any(messages.OutputLine{InstanceID: 7, Time: 1700000000000, Level: "info", Message: "[CHAT] alice: hello everyone"})
	data := []byte(`{"instance_id":7,"time":1700000000000,"level":"info","message":"[CHAT] alice: hello everyone"}`)
	for _, tc := range []struct {
		name string
		m    link.Envelope
	}{
		{"value", link.Envelope{Kind: messages.KindEvent, Type: messages.InstanceOutput.Name(), Value: line}},
		{"json", link.Envelope{Kind: messages.KindEvent, Type: messages.InstanceOutput.Name(), Data: data}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a, p := virtual.Pair()
			if err := p.Start(discard{}); err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			var conn link.Connector = a // as a link calls it: m escapes
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				m := new(link.Envelope)
				*m = tc.m
				if err := conn.Send(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
