package link

import (
	"context"
	"errors"
	"fmt"

	"github.com/linkfabric/linkfabric/messages"
)

// Fanout carries one message to every endpoint of a type: connector/nats's
// Node does, with one publish that NATS fans out.
type Fanout interface {
	// Broadcast hands m, an event, to the transport for every endpoint of
	// type to, blocking at most until ctx is done. The transport owns m
	// afterwards. An error means the event was not sent; an *Error tells
	// why in the link's terms.
	Broadcast(ctx context.Context, to messages.Endpoint, m *Envelope) error
}

// Broadcaster sends events from one endpoint to every endpoint of a type,
// checked as a Link checks what it sends: an event that is not in the
// catalog, not an event, or not valid from the sender's type to the
// receivers', fails with CodeInvalidMessage before anything is sent. It is
// safe for concurrent use.
type Broadcaster struct {
	fan     Fanout
	to      messages.Endpoint
	out     messages.Direction
	catalog *messages.Catalog
}

// NewBroadcaster returns a Broadcaster from self to every endpoint of type
// to, carried by fan, for the messages of catalog.
func NewBroadcaster(fan Fanout, self Address, to messages.Endpoint, catalog *messages.Catalog) (*Broadcaster, error) {
	if err := self.Validate(); err != nil {
		return nil, err
	}
	if !to.Valid() || to == self.Type {
		return nil, fmt.Errorf("link: %s cannot broadcast to %s", self, to)
	}
	if fan == nil || catalog == nil {
		return nil, errors.New("link: fanout and catalog are required")
	}
	return &Broadcaster{fan: fan, to: to, out: messages.Direction{Source: self.Type, Target: to}, catalog: catalog}, nil
}

// ForwardEvent broadcasts an event that arrived on a link, keeping its
// type, payload, origin and destination (a broadcast address). The payload was validated on arrival and is
// not checked again. It returns once the transport has taken the event.
func (b *Broadcaster) ForwardEvent(ctx context.Context, ev *Envelope) error {
	def, ok := b.catalog.Lookup(ev.Type)
	if !ok {
		return Errorf(CodeInvalidMessage, "%s is not in the catalog of broadcasts %s", ev.Type, b.out)
	}
	if err := checkKind(def, messages.KindEvent, b.out); err != nil {
		return err
	}
	if err := b.fan.Broadcast(ctx, b.to, &Envelope{Kind: messages.KindEvent, Type: ev.Type, Data: ev.Data, Origin: ev.Origin, Dst: ev.Dst}); err != nil {
		return sendError(ev.Type, err)
	}
	return nil
}
