package fabric

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// instanceID reads the instance_id of a payload forwarded to an instance,
// which its link has checked against the message's schema already, without
// decoding the rest: routing needs this one number. It reads what
// encoding/json would read into an *int64 field tagged instance_id, so the
// answer is the same as if the whole payload were decoded: the value of the
// last top-level key that equals "instance_id" ignoring case (with escapes
// decoded), which must be an integer that fits an int64. A payload that is
// not an object, lacks the key, or has null there is an error, and so is
// any other value under any such key (encoding/json reports the first bad
// one even when a later key is good). Keys and strings inside nested values
// are skipped over, never read as top-level keys.
//
// On input that is not JSON at all it returns an error or a number, never
// panics; the link refuses such a payload before any handler sees it.
func instanceID(data []byte) (int64, error) {
	s := idScanner{data: data}
	var (
		id    int64
		found bool
		bad   bool
	)
	s.space()
	if !s.byte('{') {
		return 0, noInstanceID()
	}
	s.space()
	if !s.byte('}') {
		for {
			key, ok := s.key()
			if !ok {
				return 0, noInstanceID()
			}
			s.space()
			if !s.byte(':') {
				return 0, noInstanceID()
			}
			s.space()
			if isInstanceIDKey(key) {
				switch n, kind := s.integer(); kind {
				case valueInt:
					id, found = n, true
				case valueNull:
					id, found = 0, false
				case valueOther:
					bad = true
					if !s.skip() {
						return 0, noInstanceID()
					}
				default:
					return 0, noInstanceID()
				}
			} else if !s.skip() {
				return 0, noInstanceID()
			}
			s.space()
			if s.byte('}') {
				break
			}
			if !s.byte(',') {
				return 0, noInstanceID()
			}
			s.space()
		}
	}
	s.space()
	if bad || !found || s.i != len(s.data) {
		return 0, noInstanceID()
	}
	return id, nil
}

func noInstanceID() error {
	return link.Errorf(link.CodeInvalidMessage, "payload has no integer %s", messages.InstanceIDField)
}

// isInstanceIDKey reports whether encoding/json would decode a value under
// the raw (still quoted, escaped) key key into a field tagged instance_id:
// the key unquoted equals it, ignoring case as bytes.EqualFold does.
func isInstanceIDKey(raw []byte) bool {
	name := raw[1 : len(raw)-1]
	for _, c := range name {
		if c == '\\' || c >= 0x80 {
			// Escapes, or non-ASCII runes that fold to ASCII ones (ſ, K):
			// rare; let encoding/json unquote it as it would.
			var key string
			if json.Unmarshal(raw, &key) != nil {
				return false
			}
			return bytes.EqualFold([]byte(key), []byte(messages.InstanceIDField))
		}
	}
	return bytes.EqualFold(name, []byte(messages.InstanceIDField))
}

// idScanner reads JSON text just far enough for instanceID.
type idScanner struct {
	data []byte
	i    int
}

func (s *idScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte consumes c if it comes next.
func (s *idScanner) byte(c byte) bool {
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// key consumes a string and returns it, quotes included.
func (s *idScanner) key() ([]byte, bool) {
	start := s.i
	if !s.str() {
		return nil, false
	}
	return s.data[start:s.i], true
}

// str consumes a string.
func (s *idScanner) str() bool {
	if !s.byte('"') {
		return false
	}
	start := s.i
	for {
		j := bytes.IndexByte(s.data[s.i:], '"')
		if j < 0 {
			s.i = len(s.data)
			return false
		}
		end := s.i + j
		s.i = end + 1
		// The quote ends the string unless an odd number of backslashes
		// escapes it.
		escapes := 0
		for k := end - 1; k >= start && s.data[k] == '\\'; k-- {
			escapes++
		}
		if escapes%2 == 0 {
			return true
		}
	}
}

type valueKind uint8

const (
	valueBroken valueKind = iota // not JSON
	valueInt                     // an integer that fits an int64
	valueNull
	valueOther // any other value: left for skip
)

// integer consumes null or an integer that fits an int64. Anything else
// it leaves in place, reporting valueOther (or valueBroken).
func (s *idScanner) integer() (int64, valueKind) {
	if s.i >= len(s.data) {
		return 0, valueBroken
	}
	switch c := s.data[s.i]; {
	case c == 'n':
		if bytes.HasPrefix(s.data[s.i:], []byte("null")) {
			s.i += len("null")
			return 0, valueNull
		}
		return 0, valueBroken
	case c != '-' && (c < '0' || c > '9'):
		return 0, valueOther
	}
	end := s.i
	for end < len(s.data) && bytes.IndexByte([]byte("+-.0123456789eE"), s.data[end]) >= 0 {
		end++
	}
	n, ok := parseInt64(s.data[s.i:end])
	if !ok {
		return 0, valueOther // a fraction, an exponent, or out of range
	}
	s.i = end
	return n, valueInt
}

// parseID parses the id of a slave's or an instance's address: a positive
// decimal integer written as the fabric writes it (no sign, no leading
// zero), so that one endpoint has one address: "00001" and "+1" are not
// slave 1.
func parseID(text string) (int64, bool) {
	id, err := strconv.ParseInt(text, 10, 64)
	if err != nil || id < 1 || strconv.FormatInt(id, 10) != text {
		return 0, false
	}
	return id, true
}

// parseInt64 parses an optional minus and decimal digits, as
// strconv.ParseInt(text, 10, 64) would, without allocating.
func parseInt64(text []byte) (int64, bool) {
	neg := len(text) > 0 && text[0] == '-'
	if neg {
		text = text[1:]
	}
	if len(text) == 0 {
		return 0, false
	}
	const limit = uint64(1) << 63 // magnitude of the smallest int64
	var u uint64
	for _, c := range text {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if u > (limit-d)/10 {
			return 0, false
		}
		u = u*10 + d
	}
	switch {
	case neg:
		return int64(-u), true // -limit wraps to the smallest int64, as it should
	case u >= limit:
		return 0, false
	}
	return int64(u), true
}

// skip consumes one value of any kind. It counts brackets and steps over
// strings; the link has checked the payload is JSON.
func (s *idScanner) skip() bool {
	if s.i >= len(s.data) {
		return false
	}
	switch s.data[s.i] {
	case '"':
		return s.str()
	case '{', '[':
		depth := 0
		for s.i < len(s.data) {
			j := bytes.IndexAny(s.data[s.i:], `"{}[]`)
			if j < 0 {
				return false
			}
			s.i += j
			switch s.data[s.i] {
			case '"':
				if !s.str() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.i++
			if depth == 0 {
				return true
			}
		}
		return false
	}
	start := s.i
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return s.i > start
		}
		s.i++
	}
	return s.i > start
}
