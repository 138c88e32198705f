// Package link implements one side of a two-way channel between two
// endpoints of a cluster (master, slave, instance, control), after
// Clusterio's link layer.
//
// A Link knows its own address and its peer's, and talks through a
// Connector, which carries its messages: connector/virtual joins two links
// in one process, connector/nats carries them over NATS. The Link is where
// the rules of the message catalog are enforced:
//
//   - Sending: a message not valid on the link in that direction, or whose
//     payload does not match its schema, fails before anything is written,
//     with an error naming the message and the field.
//   - Receiving: an unknown message, one not valid on the link towards
//     this side, or one whose payload does not match its schema never
//     reaches a handler. A request gets an error response saying why; an
//     event is dropped, logged and counted. The link keeps working.
//   - Requests always end: with the response, the handler's error (its code
//     and text travel intact), ErrTimeout at the context's deadline, or
//     ErrSessionLost when the link closes. A handler that panics answers
//     with ErrInternal; the process goes on.
//   - Setup: every message that can arrive on the link must have a handler
//     when Start is called, or Start fails naming each one.
//
// The smallest use, a slave asking an instance to run a command:
//
//	a, b := virtual.Pair()
//	toInstance, _ := link.New(a, slaveAddr, instanceAddr, catalog)
//	// ... attach handlers for what the instance sends, then:
//	if err := toInstance.Start(); err != nil { ... }
//	res, err := link.Request(ctx, toInstance, messages.SendCommand,
//		messages.Command{InstanceID: 7, Command: "/players"})
//
// Errors that cross the wire are *Error values with a stable Code; match
// them with errors.Is against the sentinels (ErrTimeout, ErrSessionLost,
// ErrPermissionDenied, ...).
package link
