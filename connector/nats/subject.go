package nats

import (
	"errors"
	"strconv"
	"strings"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The subject scheme. Every subject starts with the sender's address and
// then the receiver's, so that from the subject alone the broker can tell
// who may publish it and who may subscribe to it:
//
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>.<type>          a request or an event
//	<prefix>.<srcType>.<srcID>.<dstType>._all.<type>             an event to every endpoint of dstType
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>._reply.<session>.<conn>.<id>
//	                                                             a response (the requester names it)
//	<prefix>.<srcType>.<srcID>.<dstType>.<dstID>._close          the sender closed its side
//
// <type> is the message type name ("start_instance", "global_chat:chat").
// Tokens that start with '_' are the connector's own; ids and message
// names cannot start with one.

// BroadcastID stands for every endpoint of a type in a subject.
const BroadcastID = "_all"

const (
	tokReply = "_reply"
	tokClose = "_close"
)

type subjectKind uint8

const (
	subjMessage subjectKind = iota + 1
	subjReply
	subjClose
)

// subject is a parsed fabric subject.
type subject struct {
	kind      subjectKind
	src, dst  link.Address // dst.ID is BroadcastID for a broadcast
	msgType   string       // subjMessage
	session   string       // subjReply: the requester's session
	conn, seq uint64       // subjReply: the requester's connector and request id
}

var errSubject = errors.New("not a fabric subject")

// parseSubject parses a subject of the scheme above. It never panics, and
// accepts nothing it could not have produced.
func parseSubject(prefix, s string) (subject, error) {
	var sub subject
	rest, ok := strings.CutPrefix(s, prefix+".")
	if !ok {
		return sub, errSubject
	}
	var toks [8]string
	n := 0
	for n < len(toks) {
		tok, more, found := strings.Cut(rest, ".")
		toks[n] = tok
		n++
		if !found {
			rest = ""
			break
		}
		rest = more
	}
	if rest != "" || n < 5 {
		return sub, errSubject
	}
	var err error
	if sub.src, err = parseAddress(toks[0], toks[1], false); err != nil {
		return sub, err
	}
	if sub.dst, err = parseAddress(toks[2], toks[3], true); err != nil {
		return sub, err
	}
	switch toks[4] {
	case tokReply:
		if n != 8 || sub.dst.ID == BroadcastID || toks[5] == "" {
			return sub, errSubject
		}
		sub.kind, sub.session = subjReply, toks[5]
		if sub.conn, err = parseNumber(toks[6]); err != nil {
			return sub, err
		}
		if sub.seq, err = parseNumber(toks[7]); err != nil {
			return sub, err
		}
	case tokClose:
		if n != 5 || sub.dst.ID == BroadcastID {
			return sub, errSubject
		}
		sub.kind = subjClose
	default:
		if n != 5 || toks[4] == "" || toks[4][0] == '_' {
			return sub, errSubject
		}
		sub.kind, sub.msgType = subjMessage, toks[4]
	}
	return sub, nil
}

// parseNumber parses a number as replySubject writes it: decimal, with no
// sign and no leading zeros.
func parseNumber(tok string) (uint64, error) {
	v, err := strconv.ParseUint(tok, 10, 64)
	if err != nil || strconv.FormatUint(v, 10) != tok {
		return 0, errSubject
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

func messageSubject(prefix string, src, dst link.Address, msgType string) string {
	return prefix + "." + token(src) + "." + token(dst) + "." + msgType
}

func replySubject(prefix string, responder, requester link.Address, session string, conn, id uint64) string {
	return prefix + "." + token(responder) + "." + token(requester) + "." + tokReply + "." +
		session + "." + strconv.FormatUint(conn, 10) + "." + strconv.FormatUint(id, 10)
}

func closeSubject(prefix string, src, dst link.Address) string {
	return prefix + "." + token(src) + "." + token(dst) + "." + tokClose
}
