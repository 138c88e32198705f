// Command hello joins a slave and an instance with a virtual link, as the
// fabric does in-process, and has the slave run a command on the instance.
package main

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/linkfabric/linkfabric/connector/virtual"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

func main() {
	catalog, err := messages.NewCatalog()
	if err != nil {
		log.Fatal(err)
	}
	slaveAddr := link.Address{Type: messages.Slave, ID: "1"}
	instanceAddr := link.Address{Type: messages.Instance, ID: "7"}
	a, b := virtual.Pair()

	// The instance's side answers what a slave may ask of it.
	instance, err := link.New(b, instanceAddr, slaveAddr, catalog)
	if err != nil {
		log.Fatal(err)
	}
	ok := func(context.Context, messages.InstanceRef) (messages.Empty, error) { return messages.Empty{}, nil }
	link.HandleRequest(instance, messages.StartInstance, ok)
	link.HandleRequest(instance, messages.StopInstance, ok)
	link.HandleRequest(instance, messages.SendCommand, func(_ context.Context, c messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: "instance 7 says: " + strings.ToUpper(c.Command)}, nil
	})
	link.HandleRequest(instance, messages.PrepareMasterDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) {
		return messages.Empty{}, nil
	})
	link.HandleEvent(instance, messages.MasterConnectionEvent, func(context.Context, messages.ConnectionEvent) error { return nil })
	link.HandleEvent(instance, messages.BanlistUpdate, func(_ context.Context, b messages.Ban) error {
		fmt.Printf("instance 7: %s banned=%v\n", b.Name, b.Banned)
		return nil
	})
	if err := instance.Start(); err != nil {
		log.Fatal(err)
	}

	// The slave's side takes what an instance reports.
	slave, err := link.New(a, slaveAddr, instanceAddr, catalog)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range []messages.Message{messages.InstanceStarted, messages.InstanceStopped, messages.InstanceOutput, messages.PlayerEvent} {
		slave.HandleEventJSON(m, func(_ context.Context, ev *link.Message) error {
			fmt.Printf("slave 1: %s %s\n", ev.Type, ev.Data)
			return nil
		})
	}
	if err := slave.Start(); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := link.Request(ctx, slave, messages.SendCommand, messages.Command{InstanceID: 7, Command: "hello"})
	fmt.Printf("send_command -> %q, err=%v\n", res.Output, err)

	// A payload that breaks the schema fails before anything is sent.
	_, err = link.Request(ctx, slave, messages.SendCommand, messages.Command{InstanceID: 7})
	fmt.Printf("send_command with no command -> %v\n", err)

	if err := link.Emit(ctx, instance, messages.InstanceOutput, messages.OutputLine{
		InstanceID: 7, Time: time.Now().UnixMilli(), Level: "info", Message: "ready",
	}); err != nil {
		log.Fatal(err)
	}
	if err := slave.Disconnect(ctx); err != nil {
		log.Fatal(err)
	}
	<-instance.Done()
	fmt.Println("disconnected")
}
