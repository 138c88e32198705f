package fabric_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Greeting is the payload of the example plugin's request and response.
type Greeting struct {
	Text string `json:"text" schema:"maxLength=64"`
}

// A plugin's request, handled on the master and sent from a control, on a
// NATS server embedded in the program.
func Example() {
	greet := messages.MustRequest[Greeting, Greeting](messages.Spec{Name: "greeter:greet",
		Links: []messages.Direction{messages.ControlToMaster}, Permission: "greeter.greet"})
	plugin := fabric.WithPlugins(messages.Plugin{Name: "greeter", Messages: []messages.Message{greet}})
	quiet := fabric.WithLogger(slog.New(slog.DiscardHandler))
	ctx := context.Background()

	b, err := fabric.StartBroker("127.0.0.1:0", "") // JetStream in a temporary directory
	if err != nil {
		panic(err)
	}
	defer b.Close()
	mcfg := fabric.DefaultMasterConfig()
	mcfg.NATS.URL = b.ClientURL()
	master, err := fabric.StartMaster(ctx, mcfg, plugin, quiet, fabric.WithLocalBroker(b),
		fabric.WithHandlers(messages.Control, func(l *link.Link) {
			link.HandleRequest(l, greet, func(_ context.Context, g Greeting) (Greeting, error) {
				return Greeting{Text: "hello, " + g.Text}, nil
			})
		}))
	if err != nil {
		panic(err)
	}
	defer master.Close(ctx)

	ccfg := fabric.DefaultControlConfig()
	ccfg.NATS.URL = b.ClientURL()
	ctl, err := fabric.DialControl(ctx, ccfg, plugin, quiet, fabric.WithLocalBroker(b))
	if err != nil {
		panic(err)
	}
	defer ctl.Close(ctx)
	reply, err := link.Request(ctx, ctl.Link(), greet, Greeting{Text: "world"})
	fmt.Println(reply.Text, err)
	// Output: hello, world <nil>
}
