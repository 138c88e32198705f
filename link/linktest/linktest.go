package linktest

import (
	"context"
	"sync"
	"testing"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The addresses of the two links a factory makes: A is a slave, B the
// master, and the suite's messages are valid both ways between them.
var (
	AddrA = link.Address{Type: messages.Slave, ID: "1"}
	AddrB = link.MasterAddress
)

// EchoRequest is the payload of Echo.
type EchoRequest struct {
	N    int    `json:"n" schema:"minimum=0"`
	Text string `json:"text" schema:"maxLength=1048576"`
}

// EchoResponse is the response of Echo: the request's fields and who
// answered.
type EchoResponse struct {
	N    int    `json:"n" schema:"minimum=0"`
	Text string `json:"text" schema:"maxLength=1048576"`
	From string `json:"from"`
}

// Failure is the payload of Fail: how its handler should fail.
type Failure struct {
	// Mode is "coded" (a *link.Error with Code and Message), "wrapped"
	// (the same wrapped with %w), "plain" (errors.New(Message)),
	// "sentinel" (link.ErrPermissionDenied) or "panic".
	Mode    string `json:"mode" schema:"enum=coded|wrapped|plain|sentinel|panic"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TickEvent is the payload of Tick.
type TickEvent struct {
	Seq int `json:"seq" schema:"minimum=0"`
}

// The suite's messages, in the plugin "conformance". Each test attaches
// the handlers it needs.
var (
	// Echo answers with its request.
	Echo = messages.MustRequest[EchoRequest, EchoResponse](messages.Spec{
		Name:        "conformance:echo",
		Description: "Answer with the request's fields.",
		Links:       []messages.Direction{messages.SlaveToMaster, messages.MasterToSlave},
	})
	// Fail fails as its payload says.
	Fail = messages.MustRequest[Failure, messages.Empty](messages.Spec{
		Name:        "conformance:fail",
		Description: "Fail as the payload says.",
		Links:       []messages.Direction{messages.SlaveToMaster, messages.MasterToSlave},
	})
	// Hold is answered when the test lets its handler go, or not at all.
	Hold = messages.MustRequest[messages.Empty, messages.Empty](messages.Spec{
		Name:        "conformance:hold",
		Description: "Answer when the test says so.",
		Links:       []messages.Direction{messages.SlaveToMaster, messages.MasterToSlave},
	})
	// Tick is an event with a sequence number.
	Tick = messages.MustEvent[TickEvent](messages.Spec{
		Name:        "conformance:tick",
		Description: "An event with a sequence number.",
		Links:       []messages.Direction{messages.SlaveToMaster, messages.MasterToSlave},
	})
)

// CodeStub is the error code of the requests Stub answers.
const CodeStub link.Code = "linktest.stub"

var catalog = sync.OnceValue(func() *messages.Catalog {
	c, err := messages.NewCatalog(messages.Plugin{Name: "conformance", Messages: []messages.Message{Echo, Fail, Hold, Tick}})
	if err != nil {
		panic(err)
	}
	return c
})

// Catalog returns the core messages and the suite's.
func Catalog() *messages.Catalog { return catalog() }

// NewPair makes two started links over the connector under test: a from
// AddrA to AddrB and b from AddrB to AddrA, both using cat. setupA and
// setupB attach the handlers of a and b; the factory calls each before
// Start. The factory closes the links, and whatever carries them, when t
// ends.
type NewPair func(t *testing.T, cat *messages.Catalog, setupA, setupB func(*link.Link)) (a, b *link.Link)

// Stub attaches a handler to l for every message of cat that can arrive on
// l and has none yet: requests fail with CodeStub, events are ignored.
// Call it after the handlers a test needs, so that Start is satisfied.
func Stub(l *link.Link, cat *messages.Catalog) {
	in := messages.Direction{Source: l.Peer().Type, Target: l.Self().Type}
	for _, def := range cat.On(in) {
		if l.Handles(def) {
			continue
		}
		name := def.Name()
		if def.Kind() == messages.KindRequest {
			l.HandleRequestJSON(def, func(context.Context, *link.Envelope) ([]byte, error) {
				return nil, link.Errorf(CodeStub, "%s is stubbed", name)
			})
		} else {
			l.HandleEventJSON(def, func(context.Context, *link.Envelope) error { return nil })
		}
	}
}

// EchoHandler answers Echo with the request and the answering link's
// address.
func EchoHandler(l *link.Link) func(context.Context, EchoRequest) (EchoResponse, error) {
	from := l.Self().String()
	return func(_ context.Context, r EchoRequest) (EchoResponse, error) {
		return EchoResponse{N: r.N, Text: r.Text, From: from}, nil
	}
}
