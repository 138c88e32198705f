package nats

import (
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The subject scheme. Every subject starts with the sender's address and
// then the receiver's, so that from the subject alone the broker can tell
// who may publish it and who may subscribe to it:
//
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>.<type>[.<srcSession>[.<dstSession>]]
//	        a request (it has a reply subject) or an event (it has none)
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>.<type>.<srcSession>.<dstSession|->
//	        an event in the sender's numbered stream to the receiver (or,
//	        sent again to this receiver alone, of its broadcast stream);
//	        its payload starts with a line (a delivery.Head)
//	<prefix>.<srcType>.<srcID>.<dstType>._all.<type>[.<srcSession>]
//	        an event for every endpoint of dstType; with the sender's
//	        session, numbered in its broadcast stream, and its payload
//	        starts with a line (a delivery.Head)
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>._reply.<session>.<conn>.<id>[.<budget>[.<low>[.<srcSession>]]]
//	        a response, on the reply subject the requester chose; a fabric
//	        requester's always has a budget and a low mark, and the
//	        responder adds its own session
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>._ack.<srcSession>.<dstSession>.<seq>[.gap]
//	        the sender has every event of the receiver's stream up to seq
//	        (and, with gap, lacks the next one)
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>._ackall.<srcSession>.<dstSession>.<seq>[.gap]
//	        the same, of the receiver's broadcast stream
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>._close[.<srcSession>[.<dstSession>]]
//	        the sender closed its side
//	<prefix>.<srcType>.<srcID>.<dstType>._all._hello.<srcSession>
//	        the sender's session is now the one of its address (see
//	        Node.Announce)
//
// <type> is the message type name ("start_instance", "global_chat:chat").
// The sessions say which run of each endpoint is speaking and to which run
// of its peer (see Node), "-" when it does not know the peer's yet; a plain
// client leaves them out. In a reply subject, <session>, <conn> and <id>
// name the requesting run, connector and request, <budget> is how many
// milliseconds the requester waits, and <low> is the connector's oldest
// request still waiting: it has the responses of all before it (see
// internal/delivery, which is the reference for the numbers and what they
// mean). Carrying these in the subject rather than in headers spares every
// receiver the work of parsing headers. What changes with every message
// (an event's numbers) goes in the payload instead: the
// broker caches where each subject goes, and a subject used once would
// miss that cache every time. Tokens that start with '_' are the
// connector's own; ids and message names cannot start with one.

// BroadcastID stands for every endpoint of a type in a subject.
const BroadcastID = "_all"

const (
	tokReply  = "_reply"
	tokClose  = "_close"
	tokAck    = "_ack"
	tokAckAll = "_ackall"
	tokGap    = "gap"
	tokHello  = "_hello"
	noSession = "-" // in place of a session not yet known
)

type subjectKind uint8

const (
	subjMessage subjectKind = iota + 1
	subjReply
	subjClose
	subjAck
	subjHello
)

// subject is a parsed fabric subject.
type subject struct {
	kind        subjectKind
	src, dst    link.Address // dst.ID is BroadcastID for a broadcast
	msgType     string       // subjMessage
	srcSession  string       // subjMessage, subjClose: the sender's session, if it said
	dstSession  string       // subjMessage, subjClose, subjAck: the receiver's session it talks to, if it knows
	stream      bool         // subjMessage: an event is numbered (both sessions, or a broadcast with its sender's)
	ackSeq      uint64       // subjAck: every event up to this one has arrived
	gap         bool         // subjAck: and the next one is missing
	all         bool         // subjAck: of the sender's broadcast stream
	session     string       // subjReply: the requester's session
	conn, seq   uint64       // subjReply: the requester's connector and request id
	budget      uint64       // subjReply: milliseconds the requester waits; 0 if it did not say
	low         uint64       // subjReply: the requester has every response below this id; 0 if it did not say
	respSession string       // subjReply: the responder's session, if it added it
}

// requester names the requesting connector a reply subject's request
// came from.
func (s subject) requester() delivery.Requester {
	return delivery.Requester{Session: s.session, Conn: s.conn}
}

var errSubject = errors.New("not a fabric subject")

// parseSubject parses a subject of the scheme above, after "<prefix>.". It
// never panics, and accepts nothing it could not have produced.
func parseSubject(prefixDot, s string) (subject, error) {
	toks, n, ok := splitSubject(prefixDot, s)
	if !ok {
		return subject{}, errSubject
	}
	var sub subject
	var err error
	if sub.src, err = parseAddress(toks[0], toks[1], false); err != nil {
		return subject{}, err
	}
	if sub.dst, err = parseAddress(toks[2], toks[3], true); err != nil {
		return subject{}, err
	}
	rest := toks[5:n]
	switch toks[4] {
	case tokReply:
		err = sub.parseReply(rest)
	case tokClose:
		err = sub.parseClose(rest)
	case tokHello:
		err = sub.parseHello(rest)
	case tokAck, tokAckAll:
		err = sub.parseAck(toks[4] == tokAckAll, rest)
	default:
		err = sub.parseMessage(toks[4], rest)
	}
	if err != nil {
		return subject{}, err
	}
	return sub, nil
}

// maxTokens is the most tokens a subject has after the prefix: a response
// to a fabric requester.
const maxTokens = 11

// splitSubject cuts s, after prefixDot, into its tokens: at least five
// (two addresses and what is sent), at most maxTokens.
func splitSubject(prefixDot, s string) (toks [maxTokens]string, n int, ok bool) {
	rest, ok := strings.CutPrefix(s, prefixDot)
	if !ok {
		return toks, 0, false
	}
	for n < len(toks) {
		tok, more, found := strings.Cut(rest, ".")
		toks[n] = tok
		n++
		if !found {
			return toks, n, n >= 5
		}
		rest = more
	}
	return toks, n, false // more tokens than any subject has
}

// parseReply takes what follows _reply: <session>.<conn>.<id>[.<budget>[.<low>[.<srcSession>]]].
func (sub *subject) parseReply(toks []string) error {
	if len(toks) < 3 || sub.dst.ID == BroadcastID || !validSession(toks[0]) {
		return errSubject
	}
	sub.kind, sub.session = subjReply, toks[0]
	var err error
	if sub.conn, err = parseNumber(toks[1]); err != nil {
		return err
	}
	if sub.seq, err = parseNumber(toks[2]); err != nil {
		return err
	}
	if len(toks) > 3 {
		if sub.budget, err = parseNumber(toks[3]); err != nil || sub.budget == 0 {
			return errSubject
		}
	}
	if len(toks) > 4 {
		if sub.low, err = parseNumber(toks[4]); err != nil || sub.low == 0 || sub.low > sub.seq {
			return errSubject
		}
	}
	if len(toks) > 5 {
		if !validSession(toks[5]) {
			return errSubject
		}
		sub.respSession = toks[5]
	}
	return nil
}

// parseClose takes what follows _close: [<srcSession>[.<dstSession>]].
func (sub *subject) parseClose(toks []string) error {
	if sub.dst.ID == BroadcastID {
		return errSubject
	}
	sub.kind = subjClose
	return sub.sessions(toks)
}

// parseHello takes what follows _hello: <srcSession>, to every endpoint of
// a type.
func (sub *subject) parseHello(toks []string) error {
	if sub.dst.ID != BroadcastID || len(toks) != 1 || !validSession(toks[0]) {
		return errSubject
	}
	sub.kind, sub.srcSession = subjHello, toks[0]
	return nil
}

// parseAck takes what follows _ack or (all) _ackall:
// <srcSession>.<dstSession>.<seq>[.gap].
func (sub *subject) parseAck(all bool, toks []string) error {
	if sub.dst.ID == BroadcastID || (len(toks) != 3 && len(toks) != 4) || !validSession(toks[0]) || !validSession(toks[1]) {
		return errSubject
	}
	sub.kind, sub.srcSession, sub.dstSession, sub.all = subjAck, toks[0], toks[1], all
	var err error
	if sub.ackSeq, err = parseNumber(toks[2]); err != nil {
		return err
	}
	if len(toks) == 4 {
		if toks[3] != tokGap {
			return errSubject
		}
		sub.gap = true
	}
	return nil
}

// parseMessage takes a message type and the session tokens after it:
// a request or an event, numbered or not.
func (sub *subject) parseMessage(msgType string, toks []string) error {
	if msgType == "" || msgType[0] == '_' {
		return errSubject
	}
	sub.kind, sub.msgType = subjMessage, msgType
	if len(toks) == 2 && toks[1] == noSession && validSession(toks[0]) && sub.dst.ID != BroadcastID {
		// A numbered event to a receiver whose session the sender does
		// not know yet.
		sub.srcSession, sub.stream = toks[0], true
		return nil
	}
	if err := sub.sessions(toks); err != nil {
		return err
	}
	if sub.dst.ID == BroadcastID && sub.dstSession != "" {
		return errSubject // a broadcast goes to every session
	}
	sub.stream = sub.dstSession != "" || (sub.dst.ID == BroadcastID && sub.srcSession != "")
	return nil
}

// sessions takes the optional trailing session tokens.
func (sub *subject) sessions(toks []string) error {
	switch len(toks) {
	case 0:
		return nil
	case 2:
		if !validSession(toks[1]) {
			return errSubject
		}
		sub.dstSession = toks[1]
		fallthrough
	case 1:
		if !validSession(toks[0]) {
			return errSubject
		}
		sub.srcSession = toks[0]
		return nil
	}
	return errSubject
}

// validSession reports whether s may be a session token: 1 to 32 letters
// and digits. A Node's own sessions are 16 hex digits.
func validSession(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// parseNumber parses a number as replySubject writes it: decimal, with no
// sign and no leading zeros.
func parseNumber(tok string) (uint64, error) {
	if len(tok) == 0 || len(tok) > 20 || (tok[0] == '0' && len(tok) > 1) {
		return 0, errSubject
	}
	var v uint64
	for i := 0; i < len(tok); i++ {
		d := tok[i] - '0'
		if d > 9 || v > (math.MaxUint64-uint64(d))/10 {
			return 0, errSubject
		}
		v = v*10 + uint64(d)
	}
	return v, nil
}

func parseAddress(typ, id string, broadcastOK bool) (link.Address, error) {
	e, err := messages.ParseEndpoint(typ)
	if err != nil {
		return link.Address{}, errSubject
	}
	a := link.Address{Type: e, ID: id}
	if id == BroadcastID && broadcastOK {
		return a, nil
	}
	if !link.ValidID(id) {
		return link.Address{}, errSubject
	}
	return a, nil
}

// token renders an address as two subject tokens.
func token(a link.Address) string { return a.Type.String() + "." + a.ID }

// withSessions appends the session tokens that are known.
func withSessions(s, srcSession, dstSession string) string {
	switch {
	case srcSession == "":
		return s
	case dstSession == "":
		return s + "." + srcSession
	}
	return s + "." + srcSession + "." + dstSession
}

func messageSubject(prefix string, src, dst link.Address, msgType, srcSession, dstSession string) string {
	return withSessions(prefix+"."+token(src)+"."+token(dst)+"."+msgType, srcSession, dstSession)
}

// replySubject names the responses to request id of a requester's
// connector conn. budget and low are left out when zero; low only with a
// budget.
func replySubject(prefix string, responder, requester link.Address, session string, conn, id, budget, low uint64) string {
	return replyNumbers(replyHead(prefix, responder, requester, session, conn), id, budget, low)
}

// replyHead is what the reply subjects of a requester's connector conn
// start with, up to the request's number.
func replyHead(prefix string, responder, requester link.Address, session string, conn uint64) string {
	return prefix + "." + token(responder) + "." + token(requester) + "." + tokReply + "." +
		session + "." + strconv.FormatUint(conn, 10) + "."
}

// replyNumbers is replySubject from its head, in one allocation: a
// requester makes one per request.
func replyNumbers(head string, id, budget, low uint64) string {
	var b strings.Builder
	b.Grow(len(head) + 3*20 + 2)
	b.WriteString(head)
	var num [20]byte
	b.Write(strconv.AppendUint(num[:0], id, 10))
	if budget > 0 {
		b.WriteByte('.')
		b.Write(strconv.AppendUint(num[:0], budget, 10))
		if low > 0 {
			b.WriteByte('.')
			b.Write(strconv.AppendUint(num[:0], low, 10))
		}
	}
	return b.String()
}

// eventSubject names the events of type msgType in src's stream to dst.
func eventSubject(prefix string, src, dst link.Address, msgType, srcSession, dstSession string) string {
	if dstSession == "" {
		dstSession = noSession
	}
	return prefix + "." + token(src) + "." + token(dst) + "." + msgType + "." + srcSession + "." + dstSession
}

// responseSubject is the subject of a response to a fabric requester: its
// reply subject, with the responder's session added so that the requester
// need not parse a header for it.
func responseSubject(reply, responderSession string) string {
	return reply + "." + responderSession
}

// ackSubject tells src's peer dst that src has its events up to seq: of
// dst's stream to src, or, with all, of dst's broadcast stream.
func ackSubject(prefix string, src, dst link.Address, srcSession, dstSession string, seq uint64, gap, all bool) string {
	tok := tokAck
	if all {
		tok = tokAckAll
	}
	s := prefix + "." + token(src) + "." + token(dst) + "." + tok + "." + srcSession + "." + dstSession + "." + strconv.FormatUint(seq, 10)
	if gap {
		s += "." + tokGap
	}
	return s
}

func closeSubject(prefix string, src, dst link.Address, srcSession, dstSession string) string {
	return withSessions(prefix+"."+token(src)+"."+token(dst)+"."+tokClose, srcSession, dstSession)
}

// Subscriptions returns the subjects a Node of self subscribes to:
// everything addressed to it, from any sender, and the broadcasts to its
// type. A broker that lets self's user subscribe to these and to its inbox
// (InboxPrefix) lets it receive all it must, and nothing of anyone else's.
func Subscriptions(prefix string, self link.Address) []string {
	return []string{
		prefix + ".*.*." + token(self) + ".>",
		prefix + ".*.*." + self.Type.String() + "." + BroadcastID + ".>",
	}
}

// PeerSubjects returns the pattern of every subject self publishes on its
// links to the endpoints of type peer with id peerID ("*" for any): its
// requests, events and broadcasts (the id "_all" matches "*"), the
// responses it sends on the reply subjects its peers chose (inside its own
// space), its acknowledgements and its close notices.
func PeerSubjects(prefix string, self link.Address, peer messages.Endpoint, peerID string) string {
	return prefix + "." + token(self) + "." + peer.String() + "." + peerID + ".>"
}

// InboxPrefix returns the prefix of the nats.go inboxes of the endpoint
// self (nats.CustomInboxPrefix): <prefix>._inbox.<type>.<id>. A Node uses
// it; a plain NATS client acting as an endpoint must use it too (the nats
// CLI's --inbox-prefix), where a broker lets no one subscribe to the
// default _INBOX.>.
func InboxPrefix(prefix string, self link.Address) string {
	return prefix + "._inbox." + token(self)
}
