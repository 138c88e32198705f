package delivery

import (
	"bytes"
	"errors"
	"math"
	"strconv"
)

// Head is the line that starts the payload of a numbered event:
//
//	[*]<seq> <floor>[ <origin>][ d=<dst>][ a=<after>][ f=<key>:<seq>[,<key>:<seq>...][,+]]
//
// The first three fields are the protocol's since the streams began; d=
// is where an addressed event goes; a= and f= are the ordering extension (see the package doc, "Order across
// the link and the broadcast stream"). A reader ignores any other
// <name>=<value> token, so a later extension does not break it.
type Head struct {
	Seq   uint64 // the event's number in its stream, from 1
	Floor uint64 // the oldest event its sender still holds (for a copy on a link, the oldest this receiver is owed)
	// All marks a broadcast sent again on one receiver's link ('*'): its
	// numbers are those of the broadcast stream, not the link's.
	All bool
	// Origin is the endpoint a forwarded event started from ("instance/101"),
	// or "". This package carries it and does not read it.
	Origin string
	// Dst is where an addressed event goes ("instance/101", "slave/*"),
	// or "". This package carries it and does not read it.
	Dst string
	// After, on a link event, is the last broadcast (to the receiver's
	// type) sent before it that the receiver is owed: the receiver
	// delivers the event only after that broadcast. 0: none.
	After uint64
	// Fence, on a broadcast, names each receiver whose link had events
	// unacknowledged when the broadcast was sent, with the last of them:
	// a listed receiver delivers the broadcast only after that event.
	Fence []Fence
	// More says that Fence is not complete: a receiver not listed may
	// not deliver this copy, and is sent one of its own on its link.
	More bool
}

// Fence is one entry of a broadcast's fence: the receiver's key (its
// endpoint id) and the last link event sent to it before the broadcast.
type Fence struct {
	Key string
	Seq uint64
}

const (
	maxKey    = 64          // a key is an endpoint id
	maxOrigin = 16 + 1 + 64 // an endpoint type, '/', an id
)

// MaxHeadLen bounds the line AppendHead writes, newline included. A
// caller refuses an event whose payload and head would pass the broker's
// max_payload before it numbers it: a numbered event is kept until it is
// acknowledged, and one the broker refuses would be sent again for ever.
const MaxHeadLen = 1 + 20 + 1 + 20 + // [*]<seq> <floor>
	1 + maxOrigin + // ' '<origin>
	3 + maxOrigin + // ' d='<dst>
	3 + 20 + // ' a='<after>
	3 + MaxFence*(maxKey+1+20+1) + 1 + // ' f='<key>:<seq>, ... +
	1 // '\n'

// ErrHead is the error ParseHead returns for a payload that does not
// start with a well-formed head.
var ErrHead = errors.New(`delivery: a numbered event's payload must start with a line "[*]<seq> <floor>[ <origin>][ a=<after>][ f=<fence>]"`)

// AppendHead appends h's line to b.
func AppendHead(b []byte, h Head) []byte {
	if h.All {
		b = append(b, '*')
	}
	b = strconv.AppendUint(b, h.Seq, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, h.Floor, 10)
	if h.Origin != "" {
		b = append(b, ' ')
		b = append(b, h.Origin...)
	}
	if h.Dst != "" {
		b = append(b, " d="...)
		b = append(b, h.Dst...)
	}
	if h.After != 0 {
		b = append(b, " a="...)
		b = strconv.AppendUint(b, h.After, 10)
	}
	if len(h.Fence) > 0 || h.More {
		b = append(b, " f="...)
		for i, f := range h.Fence {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, f.Key...)
			b = append(b, ':')
			b = strconv.AppendUint(b, f.Seq, 10)
		}
		if h.More {
			if len(h.Fence) > 0 {
				b = append(b, ',')
			}
			b = append(b, '+')
		}
	}
	return append(b, '\n')
}

var space = []byte{' '}

// ParseHead splits a numbered event's payload into its head and the
// message's own payload, which aliases data. It never panics; it accepts
// what AppendHead writes, plus <name>=<value> tokens it does not know,
// and nothing else.
func ParseHead(data []byte) (h Head, payload []byte, err error) {
	end := bytes.IndexByte(data[:min(len(data), MaxHeadLen)], '\n')
	if end < 0 {
		return Head{}, nil, ErrHead
	}
	line := data[:end]
	if len(line) > 0 && line[0] == '*' {
		h.All, line = true, line[1:]
	}
	seqTok, rest, _ := bytes.Cut(line, space)
	floorTok, rest, more := bytes.Cut(rest, space)
	if h.Seq, err = parseNumber(seqTok); err != nil || h.Seq == 0 {
		return Head{}, nil, ErrHead
	}
	if h.Floor, err = parseNumber(floorTok); err != nil || h.Floor == 0 || h.Floor > h.Seq {
		return Head{}, nil, ErrHead
	}
	first, seenAfter, seenFence, seenDst := true, false, false, false
	for more {
		var tok []byte
		tok, rest, more = bytes.Cut(rest, space)
		name, value, isExt := bytes.Cut(tok, []byte{'='})
		switch {
		case !isExt:
			if !first || !validOrigin(tok) {
				return Head{}, nil, ErrHead
			}
			h.Origin = string(tok)
		case string(name) == "d":
			if seenDst || !validOrigin(value) {
				return Head{}, nil, ErrHead
			}
			seenDst = true
			h.Dst = string(value)
		case string(name) == "a":
			if seenAfter {
				return Head{}, nil, ErrHead
			}
			seenAfter = true
			if h.After, err = parseNumber(value); err != nil || h.After == 0 {
				return Head{}, nil, ErrHead
			}
		case string(name) == "f":
			if seenFence || !h.parseFence(value) {
				return Head{}, nil, ErrHead
			}
			seenFence = true
		default:
			if !validExtension(name, value) {
				return Head{}, nil, ErrHead
			}
		}
		first = false
	}
	return h, data[end+1:], nil
}

// parseFence parses the value of an f= token into h.
func (h *Head) parseFence(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	n := bytes.Count(v, []byte{','}) + 1
	if n > MaxFence+1 {
		return false
	}
	h.Fence = make([]Fence, 0, n)
	for len(v) > 0 {
		var entry []byte
		entry, v, _ = bytes.Cut(v, []byte{','})
		if string(entry) == "+" {
			if len(v) > 0 {
				return false // '+' ends the list
			}
			h.More = true
			break
		}
		key, seq, ok := bytes.Cut(entry, []byte{':'})
		if !ok || !ValidKey(string(key)) || len(h.Fence) == MaxFence {
			return false
		}
		s, err := parseNumber(seq)
		if err != nil || s == 0 {
			return false
		}
		for _, f := range h.Fence {
			if f.Key == string(key) {
				return false
			}
		}
		h.Fence = append(h.Fence, Fence{Key: string(key), Seq: s})
	}
	if len(h.Fence) == 0 {
		h.Fence = nil
	}
	return len(h.Fence) > 0 || h.More
}

// ValidKey reports whether k may name a receiver in a fence: an
// endpoint id, 1 to 64 letters, digits, '-' or '_'.
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > maxKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validOrigin accepts what could be an endpoint, "<type>/<id>": the
// caller parses it as one.
func validOrigin(tok []byte) bool {
	return len(tok) >= 3 && len(tok) <= maxOrigin && bytes.IndexByte(tok, '/') > 0
}

// validExtension accepts an unknown token: a name of lower-case letters,
// a value of printable characters.
func validExtension(name, value []byte) bool {
	if len(name) == 0 || len(name) > 16 || len(value) == 0 {
		return false
	}
	for _, c := range name {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	for _, c := range value {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

var errNumber = errors.New("not a number")

// parseNumber parses a number as strconv.AppendUint writes it: decimal,
// with no sign and no leading zeros.
func parseNumber(tok []byte) (uint64, error) {
	if len(tok) == 0 || len(tok) > 20 || (tok[0] == '0' && len(tok) > 1) {
		return 0, errNumber
	}
	var v uint64
	for _, c := range tok {
		d := c - '0'
		if d > 9 || v > (math.MaxUint64-uint64(d))/10 {
			return 0, errNumber
		}
		v = v*10 + uint64(d)
	}
	return v, nil
}
