// Package messages defines the messages a cluster's endpoints exchange, once
// each, and the catalog that lists them.
//
// A message (Message: anything with a Def, its *Definition) is a Request (a request payload answered by a response
// payload) or an Event (one payload, no answer). Its definition names it
// (snake_case; "plugin_name:type" for a plugin's), says in which
// directions of which links it is valid (ControlToMaster: sent by a
// control, received by the master), which permission a control needs to send it, whether it is forwarded one
// hop further (ForwardTo) or broadcast to every instance (BroadcastTo), and
// holds a compiled JSON Schema for each payload. Payloads are Go types;
// their schema is generated from the type (see the `schema` struct tag) or
// written by hand, and every payload is checked against it when it is sent
// and when it is received.
//
// Defining a message checks everything that can be checked before traffic
// flows: a mistake is an error (or, for MustRequest and MustEvent, a panic
// at program start) that names the message:
//
//	var Chat = messages.MustEvent[ChatLine](messages.Spec{
//		Name:        "global_chat:chat",
//		Links:       []messages.Direction{messages.InstanceToSlave, messages.SlaveToMaster, messages.MasterToSlave, messages.SlaveToInstance},
//		ForwardTo:   messages.Master,
//		BroadcastTo: messages.Instance,
//	})
//
//	catalog, err := messages.NewCatalog(messages.Plugin{Name: "global_chat", Messages: []messages.Message{Chat}})
//
// The core messages (Ping, StartInstance, InstanceOutput, BanlistUpdate and
// the rest) are package variables. A Catalog holds them and the messages of
// the plugins it was built with; links, documentation and broker
// permissions are all derived from it.
//
// This package knows nothing of how links are wired or carried; see the
// link package for sending and handling messages.
package messages
