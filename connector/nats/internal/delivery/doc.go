// Package delivery is Linkfabric's delivery protocol, as state machines:
// what a connector numbers, sends, sends again, acknowledges, delivers,
// holds back, refuses and forgets, so that links keep the promises of
// docs/reliability.md over core NATS, which delivers each message at most
// once. It does no I/O, starts no goroutine and reads no clock: the
// caller passes the time in, publishes what a call returns, in order,
// and hands the link what it says to deliver. This page is the
// protocol's reference; docs/protocol.md has the subjects around it.
//
// # The pieces
//
//   - Sender, one per endpoint: an OutLink per link (its numbered event
//     stream), and a numbered broadcast stream per endpoint type.
//   - Receiver, one per link: what it knows of the peer's event stream to
//     it and of the peer's broadcast stream to its type.
//   - Requests, one per link: the requests awaiting their responses.
//   - Served, one per link: the responder's memory of the requests taken.
//
// A Sender's OutLinks and a Receiver carry events of any type E (the
// connector's message); Requests and Served, requests and responses of
// any type.
//
// # The wire
//
// A numbered event's payload starts with one line (Head, AppendHead,
// ParseHead):
//
//	[*]<seq> <floor>[ <origin>][ a=<after>][ f=<key>:<seq>[,<key>:<seq>...][,+]]
//
// <seq> numbers the event in its stream from 1; <floor> is the oldest
// event the sender still holds (on a broadcast sent to one receiver on
// its link, '*', the oldest that receiver is owed); <origin> is where a
// forwarded event started. a= and f= are the ordering extension (below);
// a reader ignores any other <name>=<value> token, so that a later
// extension does not break it. Acknowledgements are Acks, which the
// connector puts on _ack (link stream) and _ackall (broadcast stream)
// subjects: "every event up to UpTo", and with Gap "and the next is
// missing". A request's reply subject names its wire id, the budget left
// and the requester's low mark (Ask).
//
// # Events on a link
//
//   - The sender numbers a link's events 1, 2, 3... and keeps each until
//     the peer acknowledges it (Sender.Send, Sender.Acked). It holds at
//     most maxUnacked (DefaultMaxUnacked, 65,536): then Send returns
//     ErrFull until an acknowledgement makes room (OutLink.Room).
//   - The receiver delivers strictly in order, from the floor of the
//     first event it hears. A copy (a number already taken) is dropped
//     and acknowledged again; an event that skips ahead is dropped and
//     answered with a gap, at most once per GapResend (20 ms), the tick
//     reporting one held back meanwhile if it is still lacking.
//   - It acknowledges every AckEvery (64) events as they come, and what
//     came since on the tick (TickEvery, 50 ms); only what it delivered.
//   - On a gap the sender sends everything unacknowledged again
//     (go-back-N), at most once per GapResend. What stays unacknowledged
//     for ResendFirst (500 ms, doubling to ResendMax, 5 s) the timer sends
//     again: the first ProbeWindow (1,024) only, and the next window as
//     soon as the peer acknowledges the last of one. When the connection
//     comes back (Sender.Resumed) everything goes again.
//
// # Broadcasts
//
//   - A broadcast is numbered in the stream to its type, published once
//     for NATS to fan out, and kept until every receiver has acknowledged
//     it (Sender.Broadcast, Sender.AckedAll). The receivers are the
//     sender's links to endpoints of that type when it is sent; a link
//     opened later is owed only what is broadcast after.
//   - A receiver learns where its broadcast stream starts from the
//     sender, on its link: from the floor of the first broadcast sent to
//     it alone ('*'). Until then it ignores published copies, and the
//     sender sends it each broadcast on its link; once it has
//     acknowledged one (it acknowledges the first at once), published
//     copies serve it. So a receiver that
//     links late gets exactly what it is owed: never a broadcast from
//     before it linked, even one the others' lag keeps.
//   - What a receiver lacks (it reports a gap, or it has not
//     acknowledged, ResendFirst after it could have) is sent to it alone,
//     on its link; when most receivers lack it, it is published again,
//     once, from the oldest lacked. A receiver that acknowledges a probe
//     window is sent the next at once.
//   - A receiver whose link closes is no longer waited for; one whose
//     peer went away (Sender.Park) still is, and is sent nothing, until
//     its next session adopts it or it closes.
//
// # Order across the link and the broadcast stream
//
// Messages from one sender are delivered in the order sent, a link's
// events and its broadcasts together. With one ordered channel for both
// subscriptions that holds by itself while nothing is lost; when a
// message is lost and sent again, two rules keep it:
//
//   - a=: a link event names the last broadcast its receiver is owed
//     that was sent before it; the receiver delivers it only after that
//     broadcast.
//   - f=: a broadcast names, for each receiver with link events
//     unacknowledged when it was sent, the last of them (its fence); a
//     listed receiver delivers the broadcast only after that event. A
//     receiver not listed had acknowledged every event sent before, so
//     delivers at once. An entry goes once its receiver has acknowledged
//     the event, so copies sent again carry fewer.
//
// Every dependency points to a message sent earlier, so none waits for
// ever. A receiver holds up to MaxHeld events per stream while the
// first waits (beyond, it drops them unacknowledged: they come again),
// and asks for what it waits for with a gap acknowledgement on the other
// stream. A fence lists at most MaxFence receivers: past that the
// published copy says so ('+'), a receiver it does not list does not
// take it, and the sender sends each receiver not listed a copy of its
// own on its link, with its own entry. Receivers are named by endpoint
// id, so that a receiver's next session (which takes its stream over,
// numbers and all, see Adopt) reads its predecessor's entries right,
// even in a copy held up in the broker since before it linked.
//
// The extension is tolerant one way: a reader of it reads a head without
// a= and f= as one with nothing to wait for, and a broadcast stream whose
// sender never sends it a copy of its own (a sender of the earlier
// protocol does, on its timer) starts at that copy's floor. A reader of
// the earlier protocol refuses a head with a= or f=: update receivers
// (slaves) before the senders (the master). A slave's events to the
// master carry a= only if the slave broadcasts.
//
// # Sessions, restarts, adoption
//
//   - A link whose peer closed or went away is parked (Sender.Park): its
//     unacknowledged events wait, and it still takes acknowledgements
//     (the peer's last ones may come after its close).
//   - When the peer's next session links within the session timeout,
//     Sender.Adopt hands it what the previous one never acknowledged: a
//     fresh link takes the stream over, numbers and all (its receiver
//     starts at the floor); and the broadcasts the previous one lacked,
//     from the first it lacked, provided nothing was sent to the new
//     link alone before (call Adopt as soon as the link is opened).
//   - Past the session timeout, Sender.Close gives up what the link held.
//   - A closing end stops its Receiver (Receiver.Stop) before the link
//     stops taking events: from then on nothing is delivered or
//     acknowledged; the last acknowledgement covers exactly what was
//     delivered, so the peer hands the rest to the next session. The
//     caller publishes Stop's acknowledgements, and again when the
//     connection comes back if the link ended while it was down; a copy
//     of what was delivered gets them again.
//
// # Requests
//
//   - Requests gives each request a wire id, in the order sent, and
//     sends it again until its response: after RequestRTO (1 s) of
//     silence, doubling; at once when the connection comes back; after
//     NoRespondersFirst (20 ms, doubling to 250 ms) while NATS says
//     nothing subscribes, for noRespondersFor (1 s), then it ends with
//     ErrNoResponders if NATS refused every copy, else with
//     ErrSessionLost (a copy may have run). It ends each request exactly
//     once: End (the response, or the caller fails it), ErrTimeout at its
//     deadline, ErrSessionLost when the link closes. Each request names
//     the low mark, the oldest request still waiting.
//   - Served remembers each request taken, by requester and id: a copy
//     while the handler runs is ignored, a copy after is answered with
//     the response kept. Requests below the low mark are forgotten.
//     ServedOverdue (1 s) past its deadline a request's response is
//     dropped, but its id is kept until the low mark passes it, so that
//     a copy held up for longer still does not run the handler again.
//   - What a peer can make Served keep is bounded whatever it claims: one
//     requester per link (MaxRequesters; the connector also requires it
//     to be the link's peer session), RequestWindow (4,096) ids past its
//     low mark; Requests.Send returns ErrWindow rather than go further
//     (the caller waits for a request to end), and Take refuses (TooFarAhead,
//     OtherRequester) before keeping anything. The connector clips a
//     requester's budget (WithMaxRequestBudget).
//
// # Promises, the rules that keep them, the tests that check them
//
// Each promise of docs/reliability.md, within a session, across broker
// disconnects, node failures and peer restarts shorter than the session
// timeout. TestSimulation checks them all on 10,000 seeded schedules
// (drops, copies, reordering, stalls of seconds, disconnects, slave and
// master restarts graceful or not, session expiry), per message, as it
// is delivered and once everything has settled.
//
//   - Events: none lost. Numbering, acknowledgement of what was delivered
//     only, go-back-N, the timer and its probe window, resending on
//     resume, Adopt, Stop before the link stops. TestSenderGoBackN,
//     TestSenderResendTimer, TestSenderProbeWindow, TestSenderAdopt,
//     TestReceiverStop.
//   - Events: none delivered twice. Copies dropped and acknowledged
//     again; Stop's last acknowledgement, taken by a parked link too.
//     TestReceiverLinkStream. (A next session may get again what the
//     previous one delivered if every acknowledgement of it was lost;
//     the simulation counts those apart and fails any other.)
//   - Events: in the order sent. Strict in-order delivery; a fresh link
//     taking its predecessor's stream over. TestReceiverLinkStream.
//   - Broadcasts: the same, for every receiver linked when sent. Kept
//     until every receiver acknowledges; per-receiver and majority
//     resends; starts told on the link; receivership adopted.
//     TestBroadcastSettleAndTrim, TestBroadcastResendToTheLacking,
//     TestBroadcastGapAndProbe, TestBroadcastReceiverJoiningLate,
//     TestBroadcastForgottenReceiver, TestBroadcastAdopt.
//   - One sender's link events and broadcasts in the order sent. a= and
//     f=, holding, asking, the bounded fence. TestOrderHeads,
//     TestOrderHolds, TestOrderEveryArrival (every order of arrival of
//     five messages, with every subset lost), TestBroadcastFenceOverflow.
//   - Requests: each ends exactly once. TestRequestsEndOnce,
//     TestRequestsRetransmitUntilTheDeadline, TestRequestsNoResponders,
//     TestRequestsResumeAndClose.
//   - Requests: no handler runs twice. Served, the low mark, ids kept
//     past the deadline. TestServed, TestServedAfterTheDeadline,
//     TestRequestsLowMark.
//   - Bounded memory: the sender's by maxUnacked per stream
//     (TestSenderBackPressure), the receiver's by MaxHeld
//     (TestOrderHoldsAtMostMaxHeld), the responder's by the requests in
//     flight (TestServedAfterTheDeadline), and by RequestWindow per
//     requester whatever a peer claims (TestServedBounded,
//     TestRequestsWindow).
//
// # What the caller does
//
//   - Holds one lock across a Sender call and the publishing of what it
//     returned (messages go out in the order numbered), and one per
//     Receiver, Requests and Served.
//   - Feeds a Receiver from one ordered channel for the link's
//     subscription and the broadcast subscription, and hands the link
//     what it delivers in the order returned.
//   - Calls the Tick methods every TickEvery (Served.Sweep too), the
//     Resumed ones when its connection comes back, and Requests.Tick
//     when Requests.NextRetry falls between ticks.
//   - Refuses an event too large for max_payload with a head of
//     MaxHeadLen before Send or Broadcast: a numbered event is kept until
//     acknowledged.
//   - Maps ErrFull and ErrWindow to waiting (then unavailable), ErrClosed and
//     ErrSessionLost to session_lost, ErrTimeout to timeout,
//     ErrNoResponders to not_connected.
package delivery
