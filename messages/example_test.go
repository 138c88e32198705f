package messages_test

import (
	"errors"
	"fmt"

	"github.com/linkfabric/linkfabric/messages"
)

// ChatLine is the payload of the global_chat plugin's chat event.
type ChatLine struct {
	InstanceID int64  `json:"instance_id"`
	Player     string `json:"player" schema:"minLength=1,maxLength=64"`
	Text       string `json:"text" schema:"maxLength=512"`
}

// A plugin defines its messages once, then the cluster builds its catalog
// from the core messages and the plugins'. A chat line travels from an
// instance up to the master and is broadcast to every instance.
func ExampleNewCatalog() {
	chat, err := messages.NewEvent[ChatLine](messages.Spec{
		Name:        "global_chat:chat",
		Description: "A chat line, shared with every instance.",
		Links:       []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster, messages.MasterToSlave, messages.SlaveToInstance},
		ForwardTo:   messages.Master,
		BroadcastTo: messages.Instance,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	catalog, err := messages.NewCatalog(messages.Plugin{Name: "global_chat", Messages: []messages.Message{chat}})
	if err != nil {
		fmt.Println(err)
		return
	}
	d, _ := catalog.Lookup("global_chat:chat")
	fmt.Println(d.Name(), "from plugin", d.Plugin(), "forwarded to", d.ForwardTo(), "broadcast to", d.BroadcastTo())

	data, _ := chat.Encode(ChatLine{InstanceID: 3, Player: "ann", Text: "hello"})
	fmt.Println(string(data))

	// A bad value fails before it is sent, naming the message and field.
	_, err = chat.Encode(ChatLine{InstanceID: 3, Text: "who am I?"})
	var invalid *messages.ValidationError
	if errors.As(err, &invalid) {
		fmt.Println("invalid:", invalid.Message, invalid.Part, invalid.Field)
	}

	for _, dir := range []messages.Direction{messages.InstanceToSlave, messages.SlaveToInstance, messages.MasterToControl} {
		fmt.Println(dir, d.ValidOn(dir))
	}

	// A name without the plugin's prefix is refused when the catalog is built.
	stray := messages.MustEvent[messages.Empty](messages.Spec{Name: "chat", Links: []messages.Direction{messages.MasterToSlave}})
	_, err = messages.NewCatalog(messages.Plugin{Name: "global_chat", Messages: []messages.Message{stray}})
	fmt.Println(err)
	// Output:
	// global_chat:chat from plugin global_chat forwarded to master broadcast to instance
	// {"instance_id":3,"player":"ann","text":"hello"}
	// invalid: global_chat:chat event /player
	// instance-slave true
	// slave-instance true
	// master-control false
	// messages: bad definition: message "chat": plugin "global_chat"'s messages must be named "global_chat:type"
}
