package link_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// A slave asks one of its instances to run a command, over a virtual pair.
// Each side must handle every message the other may send it before Start.
func Example() {
	catalog, err := messages.NewCatalog()
	if err != nil {
		log.Fatal(err)
	}
	slave := link.Address{Type: messages.Slave, ID: "1"}
	instance := link.Address{Type: messages.Instance, ID: "7"}
	a, b := virtual.Pair()

	// The instance's side answers what its slave may ask.
	toSlave, err := link.New(b, instance, slave, catalog)
	if err != nil {
		log.Fatal(err)
	}
	// This handler never waits, so it may run on the goroutine that
	// delivers the request: here the slave's own, inside its Request.
	link.HandleRequest(toSlave, messages.SendCommand, func(_ context.Context, c messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: fmt.Sprintf("instance %d ran %s: 2 players online", c.InstanceID, c.Command)}, nil
	}, link.NonBlocking())
	ok := func(context.Context, messages.InstanceRef) (messages.Empty, error) { return messages.Empty{}, nil }
	link.HandleRequest(toSlave, messages.StartInstance, ok)
	link.HandleRequest(toSlave, messages.StopInstance, ok)
	link.HandleRequest(toSlave, messages.PrepareMasterDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) {
		return messages.Empty{}, nil
	})
	link.HandleEvent(toSlave, messages.MasterConnectionEvent, func(context.Context, messages.ConnectionEvent) error { return nil })
	link.HandleEvent(toSlave, messages.BanlistUpdate, func(context.Context, messages.Ban) error { return nil })
	if err := toSlave.Start(); err != nil {
		log.Fatal(err)
	}

	// The slave's side takes the events an instance reports.
	toInstance, err := link.New(a, slave, instance, catalog)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range []messages.Message{messages.InstanceStarted, messages.InstanceStopped, messages.InstanceOutput, messages.PlayerEvent} {
		toInstance.HandleEventJSON(m, func(context.Context, *link.Envelope) error { return nil })
	}
	if err := toInstance.Start(); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := link.Request(ctx, toInstance, messages.SendCommand, messages.Command{InstanceID: 7, Command: "/players"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Output)

	// A payload that breaks the schema fails before anything is sent.
	_, err = link.Request(ctx, toInstance, messages.SendCommand, messages.Command{InstanceID: 7})
	fmt.Println(err)

	if err := toInstance.Disconnect(ctx); err != nil {
		log.Fatal(err)
	}
	<-toSlave.Done()
	fmt.Println("disconnected")
	// Output:
	// instance 7 ran /players: 2 players online
	// invalid_message: invalid send_command request: /command: Value should be at least 1 characters
	// disconnected
}
