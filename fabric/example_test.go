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

// Ask is the payload of the addressed example's request and its answer.
type Ask struct {
	Text string `json:"text" schema:"maxLength=64"`
}

// A plugin's addressed messages: instance 11, on slave 1, asks instance 21,
// on slave 2, across the cluster (the master routes it, and checks that
// slave 1 hosts instance 11), then tells every control, wherever they are.
func Example_addressed() {
	all := []messages.Endpoint{messages.Master, messages.Slave, messages.Instance, messages.Control}
	ask := messages.MustRequest[Ask, Ask](messages.Spec{Name: "relay:ask",
		Src: []messages.Endpoint{messages.Instance}, Dst: []messages.Endpoint{messages.Instance}})
	news := messages.MustEvent[Ask](messages.Spec{Name: "relay:news",
		Src: all, Dst: []messages.Endpoint{messages.Control}, Permission: "relay.news"})
	plugin := fabric.WithPlugins(messages.Plugin{Name: "relay", Messages: []messages.Message{ask, news}})
	quiet := fabric.WithLogger(slog.New(slog.DiscardHandler))
	ctx := context.Background()

	b, err := fabric.StartBroker("127.0.0.1:0", "")
	if err != nil {
		panic(err)
	}
	defer b.Close()
	mcfg := fabric.DefaultMasterConfig()
	mcfg.NATS.URL = b.ClientURL()
	master, err := fabric.StartMaster(ctx, mcfg, plugin, quiet, fabric.WithLocalBroker(b))
	if err != nil {
		panic(err)
	}
	defer master.Close(ctx)

	// Each instance answers relay:ask with who asked; instance 11's link
	// to its slave is how it sends.
	links := make(chan *link.Link, 2)
	instances := func(id int64, name string) fabric.Instance {
		return exampleInstance{id: id, sim: fabric.SimulatedInstances(id, name), ask: ask, links: links}
	}
	for _, id := range []int64{1, 2} {
		scfg := fabric.DefaultSlaveConfig()
		scfg.NATS.URL, scfg.ID = b.ClientURL(), id
		scfg.Instances = []messages.HostedInstance{{ID: id*10 + 1, Name: fmt.Sprint("i", id)}}
		s, err := fabric.StartSlave(ctx, scfg, plugin, quiet, fabric.WithLocalBroker(b), fabric.WithInstanceFactory(instances))
		if err != nil {
			panic(err)
		}
		defer s.Close(ctx)
	}

	got := make(chan string, 1)
	ccfg := fabric.DefaultControlConfig()
	ccfg.NATS.URL = b.ClientURL()
	ctl, err := fabric.DialControl(ctx, ccfg, plugin, quiet, fabric.WithLocalBroker(b),
		fabric.WithHandlers(messages.Master, func(l *link.Link) {
			link.HandleEvent(l, news, func(ctx context.Context, a Ask) error {
				got <- fmt.Sprintf("%s heard %q from %s", l.Self(), a.Text, link.Source(ctx))
				return nil
			})
		}))
	if err != nil {
		panic(err)
	}
	defer ctl.Close(ctx)
	for _, id := range []int64{11, 21} {
		if _, err := link.Request(ctx, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: id}); err != nil {
			panic(err)
		}
	}
	var from11 *link.Link
	for range 2 {
		if l := <-links; l.Self() == link.InstanceAddress(11) {
			from11 = l
		}
	}

	reply, err := link.RequestTo(ctx, from11, link.InstanceAddress(21), ask, Ask{Text: "ping"})
	fmt.Println(reply.Text, err)
	err = link.EmitTo(ctx, from11, link.All(messages.Control), news, Ask{Text: "all well"})
	fmt.Println(<-got, err)
	// Output:
	// instance/21 got "ping" from instance/11 <nil>
	// control/admin heard "all well" from instance/11 <nil>
}

// exampleInstance is a simulated instance that answers relay:ask.
type exampleInstance struct {
	id    int64
	sim   fabric.Instance
	ask   *messages.Request[Ask, Ask]
	links chan<- *link.Link
}

func (e exampleInstance) Attach(l *link.Link) {
	e.sim.Attach(l)
	link.HandleRequest(l, e.ask, func(ctx context.Context, a Ask) (Ask, error) {
		return Ask{Text: fmt.Sprintf("%s got %q from %s", l.Self(), a.Text, link.Source(ctx))}, nil
	})
	e.links <- l
}
