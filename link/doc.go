// Package link implements one side of a two-way channel between two
// endpoints of a cluster (master, slave, instance, control), after
// Clusterio's link layer.
//
// A Link knows its own address and its peer's, and talks through a
// Connector, which carries its messages, each as an Envelope (its kind,
// type, id and payload): connector/virtual joins two links in one process,
// connector/nats carries them over NATS. What a message is, its
// definition, is the messages package's; link/linktest is the behaviour a
// connector owes a link. The Link is where
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
// How handlers run:
//
//   - A handler declared NonBlocking (a HandlerOption) runs on the goroutine
//     that delivers the message, with no hand-off: over connector/virtual
//     that is the sender's, so a request is answered before the sender's
//     Send returns. It must not wait for anything (see NonBlocking).
//   - A request handler attached with HandleRequestAsync runs there too,
//     and answers now or later through its Reply: a hop that forwards
//     with ForwardRequestAsync holds no goroutine while the next hop
//     answers. Until it replies the request counts against
//     WithMaxHandlers, and CloseWait waits for it.
//   - Other request handlers run on goroutines of the link's, at most
//     WithMaxHandlers at once (256 by default); requests beyond wait in
//     arrival order, up to as many again, and beyond that the connector
//     waits to deliver them, which slows the sender.
//   - Events of one link are handled one at a time, in arrival order: on
//     the delivering goroutine when the handler is NonBlocking and no
//     event is running or waiting, otherwise on a goroutine of the link's
//     that drains the queue (WithEventQueue bounds it).
//   - A request handler's ctx has the requester's deadline, ends with it,
//     with the link, or when the handler returns, and costs no timer
//     unless the handler calls Done; ctx.Err reports DeadlineExceeded once
//     the deadline has passed all the same. An event handler's ctx ends
//     with the link.
//   - Every goroutine the link starts is counted (Stats.Goroutines) and
//     ends when its work does; CloseWait closes the link and waits for the
//     handlers still running.
//   - A message sent from inside a handler with its ctx, which reaches a
//     handler of this link again in the same process (over virtual pairs),
//     never waits for the handler it comes from: it goes over the bounds if
//     need be, so that a handler that sends on its own link cannot wait
//     for itself.
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
