package soak

import "github.com/linkfabric/linkfabric/messages"

// Up is the payload of soak:up: event Seq of incarnation Inc of an
// instance.
type Up struct {
	InstanceID int64 `json:"instance_id"`
	Inc        int64 `json:"inc" schema:"minimum=1"`
	Seq        int64 `json:"seq" schema:"minimum=1"`
}

// Down is the payload of soak:down: event Seq of incarnation Inc of the
// master to one slave.
type Down struct {
	SlaveID int64 `json:"slave_id" schema:"minimum=1"`
	Inc     int64 `json:"inc" schema:"minimum=1"`
	Seq     int64 `json:"seq" schema:"minimum=1"`
}

// All is the payload of soak:all: broadcast Seq of incarnation Inc of
// instance InstanceID, sent while the master was in its Epoch-th
// incarnation.
type All struct {
	InstanceID int64 `json:"instance_id"`
	Inc        int64 `json:"inc" schema:"minimum=1"`
	Epoch      int64 `json:"epoch" schema:"minimum=1"`
	Seq        int64 `json:"seq" schema:"minimum=1"`
}

// Ask is the payload of soak:ask: request ID, for an instance.
type Ask struct {
	InstanceID int64 `json:"instance_id"`
	ID         int64 `json:"id" schema:"minimum=1"`
}

// Tell is the payload of soak:tell: request ID, from an instance.
type Tell struct {
	InstanceID int64 `json:"instance_id"`
	ID         int64 `json:"id" schema:"minimum=1"`
}

// Answer is the response to soak:ask and soak:tell: the request's ID.
type Answer struct {
	ID int64 `json:"id"`
}

// The soak plugin's messages. Every endpoint of a soak is built with
// Plugin; nothing else in a cluster knows them.
var (
	// UpEvent goes instance -> slave -> master: the slave forwards it.
	UpEvent = messages.MustEvent[Up](messages.Spec{
		Name: "soak:up", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster}, ForwardTo: messages.Master,
		Description: "A numbered event from an instance to the master.",
	})
	// DownEvent goes master -> slave, on each of the master's slave links.
	DownEvent = messages.MustEvent[Down](messages.Spec{
		Name: "soak:down", Links: []messages.Direction{messages.MasterToSlave},
		Description: "A numbered event from the master to a slave.",
	})
	// AllEvent goes from an instance to every other instance: to its
	// siblings through its slave, and through the master to every other
	// slave's.
	AllEvent = messages.MustEvent[All](messages.Spec{
		Name: "soak:all", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster, messages.MasterToSlave, messages.SlaveToInstance}, BroadcastTo: messages.Instance,
		Description: "A numbered broadcast from an instance to every other instance.",
	})
	// AskRequest goes control -> master -> slave -> instance and is
	// answered by the instance.
	AskRequest = messages.MustRequest[Ask, Answer](messages.Spec{
		Name: "soak:ask", Links: []messages.Direction{messages.ControlToMaster, messages.MasterToSlave, messages.SlaveToInstance},
		ForwardTo: messages.Instance, Permission: "soak.ask",
		Description: "A numbered request from a control, answered by an instance.",
	})
	// TellRequest goes instance -> slave -> master and is answered by the
	// master.
	TellRequest = messages.MustRequest[Tell, Answer](messages.Spec{
		Name: "soak:tell", Links: []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster}, ForwardTo: messages.Master,
		Description: "A numbered request from an instance, answered by the master.",
	})

	// Plugin holds the soak's messages.
	Plugin = messages.Plugin{Name: "soak", Messages: []messages.Message{UpEvent, DownEvent, AllEvent, AskRequest, TellRequest}}
)
