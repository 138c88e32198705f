// Package nats carries links over NATS: requests by NATS request/reply,
// events by publish, broadcasts by one publish that NATS fans out.
//
// A Node is one endpoint's presence on NATS. It subscribes once to
// everything addressed to the endpoint and hands each message to the
// connector (Conn) of the link to its sender. The subject names both ends,
// sender first, so that a broker can enforce who may publish and who may
// subscribe (Subscriptions, PeerSubjects, InboxPrefix):
//
//	lf.control.alice.master.0.list_slaves.<session>.<master's session>
//	        control alice asks the master
//	lf.master.0.control.alice._reply.<session>.<conn>.<id>.<budget>.<low>.<master's session>
//	        the master's answer
//	lf.master.0.slave._all.banlist_update.<session>
//	        the master tells every slave
//
// The sessions, the requester's budget and the numbers of events ride in
// the subject or at the head of the payload; headers carry only what a
// fabric peer never needs and a plain client may (Lf-Session and Lf-Error
// on an error or a plain client's response, Lf-Origin on a plain client's
// event). A plain NATS client leaves the optional tokens out, may send
// Lf-Timeout, and reads Lf-Error: docs/protocol.md shows how to drive the
// fabric with the nats CLI.
//
// Nothing is lost across broker faults between fabric peers: events and
// broadcasts are numbered, acknowledged, sent again and delivered in
// order, requests are sent again and answered once, by the state machines
// of internal/delivery (its package doc is the protocol's reference); this
// package holds the subjects, the NATS calls and the glue to them.
// docs/reliability.md says what is promised.
//
// Sessions: every end of a link has a random session id, named in every
// message: the links a Node accepts share the Node's, new in each process
// (or WithSession's); each link it dials has its own, new with each Dial. A
// link is bound to one session of its peer; a message from another
// session of that address goes to another link (through the accept
// function) or is dropped, so two processes claiming one address are told
// apart, and so are a link dialed again and the late messages of the one
// before. A peer that answers one of our requests from a new session is a
// new end: the old link's session is over and its pending requests fail
// with link.ErrSessionLost. Once a link has closed, the Node refuses its
// peer session's late messages as it does those addressed to an ended
// session of its own: silently, or, for an endpoint no other live process
// may speak as, with session_lost (WithAnswerStale). A Node keeps links
// to at most WithMaxPeerSessions sessions of one peer address at once: one
// identity naming a fresh session in every message replaces its own
// unconfirmed ones (Conn.Confirmed), and cannot make the Node keep a link
// for each.
//
// A peer's next session may take over what its ended one was never
// acknowledged (WithSessionTimeout, Conn.Adopt): the endpoint says which
// link replaces which, when it takes the new one for the peer's.
//
// Reconnection is nats.go's, configured to retry for ever with jittered
// backoff and to buffer what is published while disconnected; the Node
// turns connection changes into link.StatusDropped, StatusResumed and
// StatusClosed for its links. A request that NATS reports has no
// responders is sent again for a short while (the peer may be
// resubscribing after a failover), then fails with link.ErrNotConnected.
//
//	node, err := nats.Connect(ctx, link.Address{Type: messages.Slave, ID: "3"},
//		nats.WithURLs("nats://127.0.0.1:4222"))
//	conn, err := node.Dial(link.MasterAddress)
//	toMaster, err := link.New(conn, node.Self(), link.MasterAddress, catalog)
package nats
