package check

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The fast path. The JSON Schema library checks every payload correctly,
// but it decodes the document into maps first and walks them, which costs
// tens of microseconds and dozens of allocations for a small payload: more
// than the network. Most schemas, and all generated ones, use a handful of
// keywords, which Node checks in one pass over the bytes, allocating
// nothing.
//
// The fast path only answers when it is certain. Whatever it does not model
// exactly (a number with a fraction where an integer or a bound matters, a
// string with a format, a pattern or an encoding, deep nesting) makes it
// give up, and the library decides; a schema with any keyword it does not
// know is never checked by it at all. When the fast path finds a payload
// invalid, the library is asked again for the error to report, so errors
// read the same either way. FuzzFastPathAgrees checks that the two agree.

// Verdict is the fast path's answer.
type Verdict uint8

const (
	Valid Verdict = iota
	Invalid
	Undecided // the library must decide
)

// jsonType is a set of JSON Schema types.
type jsonType uint8

const (
	tNull jsonType = 1 << iota
	tBool
	tObject
	tArray
	tNumber  // any number
	tInteger // a number without a fractional part
	tString
	tAny jsonType = 0
)

var typeNames = map[string]jsonType{
	"null": tNull, "boolean": tBool, "object": tObject, "array": tArray,
	"number": tNumber, "integer": tInteger, "string": tString,
}

// Node is the part of a schema the fast path checks.
type Node struct {
	types jsonType // tAny: any type

	// objects
	props      []fastField // the declared properties, at most 64
	required   []string    // names, turned into requiredBits once the properties are known
	additional *Node       // checks properties not in props; nil: any
	closed     bool        // additionalProperties: false

	// arrays
	items              *Node // nil: any
	minItems, maxItems int   // -1: no bound

	// strings
	minLength, maxLength int  // in code points; -1: no bound
	stringUndecided      bool // pattern, format or contentEncoding: the library decides

	// numbers: integer bounds only; any other bound makes the schema slow
	minimum, maximum       int64
	hasMinimum, hasMaximum bool

	enum  []json.RawMessage // compacted; nil: any value
	anyOf []*Node

	requiredBits  uint64   // the props that are required
	requiredOther []string // required names that are not declared properties
}

// fastField is one declared property. A short list beats a map: objects
// have a handful of properties, and comparing a few strings costs less
// than hashing one.
type fastField struct {
	name string
	node *Node
}

// annotations are keywords that never affect validity.
var annotations = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "title": true,
	"description": true, "default": true, "examples": true,
	"readOnly": true, "writeOnly": true, "deprecated": true,
}

// Compile builds the fast path for a schema document, or returns nil if
// the schema uses anything it does not check.
func Compile(doc []byte) *Node {
	var raw any
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return nil
	}
	n, ok := fastFrom(raw, 0)
	if !ok {
		return nil
	}
	return n
}

func fastFrom(raw any, depth int) (*Node, bool) {
	if depth > 32 {
		return nil, false
	}
	if b, ok := raw.(bool); ok {
		if b {
			return &Node{minItems: -1, maxItems: -1, minLength: -1, maxLength: -1}, true
		}
		return nil, false // a false schema: rare, leave it to the library
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, false
	}
	n := &Node{minItems: -1, maxItems: -1, minLength: -1, maxLength: -1}
	for k, v := range m {
		if annotations[k] {
			continue
		}
		var ok bool
		switch k {
		case "type":
			ok = n.setTypes(v)
		case "properties":
			ok = n.setProps(v, depth)
		case "required":
			ok = n.setRequired(v)
		case "additionalProperties":
			if b, isBool := v.(bool); isBool {
				n.closed, ok = !b, true
			} else {
				n.additional, ok = fastFrom(v, depth+1)
			}
		case "items":
			if _, isList := v.([]any); !isList { // the tuple form is left to the library
				n.items, ok = fastFrom(v, depth+1)
			}
		case "minItems":
			n.minItems, ok = count(v)
		case "maxItems":
			n.maxItems, ok = count(v)
		case "minLength":
			n.minLength, ok = count(v)
		case "maxLength":
			n.maxLength, ok = count(v)
		case "pattern", "format", "contentEncoding", "contentMediaType":
			n.stringUndecided, ok = true, true
		case "minimum":
			n.minimum, ok = integer(v)
			n.hasMinimum = ok
		case "maximum":
			n.maximum, ok = integer(v)
			n.hasMaximum = ok
		case "enum":
			ok = n.setEnum(v)
		case "anyOf":
			ok = n.setAnyOf(v, depth)
		}
		if !ok {
			return nil, false
		}
	}
	for _, r := range n.required {
		if i := n.field(r); i >= 0 {
			n.requiredBits |= 1 << i
		} else {
			n.requiredOther = append(n.requiredOther, r)
		}
	}
	return n, true
}

// field returns the index of the declared property named name, or -1.
func (n *Node) field(name string) int {
	for i := range n.props {
		if n.props[i].name == name {
			return i
		}
	}
	return -1
}

// fieldBytes is field for a name still in the document's bytes.
func (n *Node) fieldBytes(name []byte) int {
	for i := range n.props {
		if n.props[i].name == string(name) {
			return i
		}
	}
	return -1
}

func (n *Node) setTypes(v any) bool {
	switch t := v.(type) {
	case string:
		n.types = typeNames[t]
		return n.types != 0
	case []any:
		for _, e := range t {
			s, _ := e.(string)
			bit := typeNames[s]
			if bit == 0 {
				return false
			}
			n.types |= bit
		}
		return n.types != 0
	}
	return false
}

func (n *Node) setProps(v any, depth int) bool {
	m, ok := v.(map[string]any)
	if !ok || len(m) > 64 {
		return false
	}
	for k, s := range m {
		child, ok := fastFrom(s, depth+1)
		if !ok {
			return false
		}
		n.props = append(n.props, fastField{name: k, node: child})
	}
	slices.SortFunc(n.props, func(a, b fastField) int { return strings.Compare(a.name, b.name) })
	return true
}

func (n *Node) setRequired(v any) bool {
	list, ok := v.([]any)
	if !ok {
		return false
	}
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return false
		}
		n.required = append(n.required, s)
	}
	return true
}

func (n *Node) setEnum(v any) bool {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return false
	}
	for _, e := range list {
		switch x := e.(type) {
		case string, bool:
		case json.Number:
			if _, err := strconv.ParseInt(string(x), 10, 64); err != nil {
				return false // only integers compare exactly as text
			}
		default:
			return false
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			return false
		}
		b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if bytes.IndexByte(b, '\\') >= 0 {
			return false // a value that needs escapes: compare decoded, in the library
		}
		n.enum = append(n.enum, b)
	}
	return true
}

func (n *Node) setAnyOf(v any, depth int) bool {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return false
	}
	for _, e := range list {
		child, ok := fastFrom(e, depth+1)
		if !ok {
			return false
		}
		n.anyOf = append(n.anyOf, child)
	}
	return true
}

func count(v any) (int, bool) {
	num, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(string(num), 10, 32)
	return int(i), err == nil && i >= 0
}

func integer(v any) (int64, bool) {
	num, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(string(num), 10, 64)
	return i, err == nil
}

// maxFastDepth is as deep as the fast path follows a document.
const maxFastDepth = 64

// Check decides whether data, a whole JSON document, matches the schema.
func (n *Node) Check(data []byte) Verdict {
	s := scanner{data: data}
	v := n.value(&s, 0)
	if v != Valid {
		return v
	}
	s.space()
	if s.pos != len(s.data) {
		return Invalid // trailing data
	}
	return Valid
}

// scanner walks a JSON document.
type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value checks the value at the scanner against n and moves past it.
func (n *Node) value(s *scanner, depth int) Verdict {
	if depth > maxFastDepth {
		return Undecided
	}
	s.space()
	if s.pos >= len(s.data) {
		return Invalid
	}
	start := s.pos
	if n.anyOf != nil {
		end := -1
		result := Invalid
		for _, b := range n.anyOf {
			s.pos = start
			v := b.value(s, depth+1)
			if v == Undecided {
				return Undecided
			}
			if v == Valid {
				result, end = Valid, s.pos
				break
			}
		}
		if result == Invalid {
			return Invalid
		}
		s.pos = start
		if v := n.own(s, depth); v != Valid {
			return v
		}
		if s.pos != end {
			return Undecided // cannot happen for well-formed JSON; be safe
		}
		return Valid
	}
	return n.own(s, depth)
}

// own checks the value at the scanner against n's keywords other than anyOf.
func (n *Node) own(s *scanner, depth int) Verdict {
	start := s.pos
	var v Verdict
	switch c := s.data[s.pos]; {
	case c == '{':
		v = n.object(s, depth)
	case c == '[':
		v = n.array(s, depth)
	case c == '"':
		v = n.str(s)
	case c == '-' || (c >= '0' && c <= '9'):
		v = n.number(s)
	case c == 't':
		v = n.literal(s, "true", tBool)
	case c == 'f':
		v = n.literal(s, "false", tBool)
	case c == 'n':
		v = n.literal(s, "null", tNull)
	default:
		return Invalid
	}
	if v != Valid || n.enum == nil {
		return v
	}
	return n.inEnum(s.data[start:s.pos])
}

func (n *Node) allows(t jsonType) bool { return n.types == tAny || n.types&t != 0 }

func (n *Node) literal(s *scanner, word string, t jsonType) Verdict {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(word)) {
		return Invalid
	}
	s.pos += len(word)
	if !n.allows(t) {
		return Invalid
	}
	return Valid
}

// inEnum compares a value's text with the enum's; enum values are strings,
// booleans and integers, whose text is canonical, except strings written
// with escapes, which are left to the library.
func (n *Node) inEnum(text []byte) Verdict {
	if bytes.IndexByte(text, '\\') >= 0 {
		return Undecided
	}
	for _, e := range n.enum {
		if bytes.Equal(e, text) {
			return Valid
		}
	}
	if len(text) > 0 && (text[0] == '-' || (text[0] >= '0' && text[0] <= '9')) &&
		(!isIntegerText(text) || string(text) == "-0") {
		return Undecided // 1.0 equals 1, and -0 equals 0
	}
	return Invalid
}

func (n *Node) object(s *scanner, depth int) Verdict {
	if !n.allows(tObject) {
		return Invalid
	}
	s.pos++             // {
	var seen uint64     // declared properties met
	var others [][]byte // other names met, kept to find duplicates
	s.space()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return n.requiredIn(seen, others)
	}
	for {
		s.space()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return Invalid
		}
		key, escaped, ok := s.rawString()
		if !ok {
			return Invalid
		}
		if escaped {
			return Undecided
		}
		s.space()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return Invalid
		}
		s.pos++
		var v Verdict
		if i := n.fieldBytes(key); i >= 0 {
			if seen&(1<<i) != 0 {
				return Invalid // the library refuses duplicate names
			}
			seen |= 1 << i
			v = n.props[i].node.value(s, depth+1)
		} else {
			if n.closed {
				return Invalid
			}
			for _, k := range others {
				if bytes.Equal(k, key) {
					return Invalid
				}
			}
			others = append(others, key)
			if n.additional != nil {
				v = n.additional.value(s, depth+1)
			} else {
				v = skip(s, depth+1)
			}
		}
		if v != Valid {
			return v
		}
		s.space()
		if s.pos >= len(s.data) {
			return Invalid
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return n.requiredIn(seen, others)
		default:
			return Invalid
		}
	}
}

func (n *Node) requiredIn(seen uint64, others [][]byte) Verdict {
	if seen&n.requiredBits != n.requiredBits {
		return Invalid
	}
outer:
	for _, r := range n.requiredOther {
		for _, k := range others {
			if string(k) == r {
				continue outer
			}
		}
		return Invalid
	}
	return Valid
}

func (n *Node) array(s *scanner, depth int) Verdict {
	if !n.allows(tArray) {
		return Invalid
	}
	s.pos++ // [
	count := 0
	s.space()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return n.itemCount(0)
	}
	for {
		var v Verdict
		if n.items != nil {
			v = n.items.value(s, depth+1)
		} else {
			v = skip(s, depth+1)
		}
		if v != Valid {
			return v
		}
		count++
		s.space()
		if s.pos >= len(s.data) {
			return Invalid
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return n.itemCount(count)
		default:
			return Invalid
		}
	}
}

func (n *Node) itemCount(c int) Verdict {
	if (n.minItems >= 0 && c < n.minItems) || (n.maxItems >= 0 && c > n.maxItems) {
		return Invalid
	}
	return Valid
}

func (n *Node) str(s *scanner) Verdict {
	raw, escaped, ok := s.rawString()
	if !ok {
		return Invalid
	}
	if !n.allows(tString) {
		return Invalid
	}
	if n.stringUndecided {
		return Undecided
	}
	if n.minLength < 0 && n.maxLength < 0 {
		return Valid
	}
	length := utf8.RuneCount(raw)
	if escaped {
		length = escapedLength(raw)
	}
	if (n.minLength >= 0 && length < n.minLength) || (n.maxLength >= 0 && length > n.maxLength) {
		return Invalid
	}
	return Valid
}

// rawString reads a string at the scanner, checking that it is well formed
// (valid UTF-8, known escapes, no lone surrogates, no control characters),
// and returns its raw contents between the quotes.
func (s *scanner) rawString() (raw []byte, escaped, ok bool) {
	d := s.data
	start := s.pos + 1 // past the quote
	p := start
	ascii := true
	for {
		// Eight plain bytes at a time: most strings are mostly plain.
		for p+8 <= len(d) && plain8(binary.LittleEndian.Uint64(d[p:])) {
			p += 8
		}
		for p < len(d) && plain[d[p]] {
			p++
		}
		if p >= len(d) {
			s.pos = p
			return nil, false, false
		}
		switch c := d[p]; {
		case c == '"':
			s.pos = p + 1
			raw = d[start:p]
			return raw, escaped, ascii || utf8.Valid(raw) // escapes are ASCII: this checks the rest
		case c < 0x20:
			s.pos = p
			return nil, false, false
		case c == '\\':
			escaped = true
			s.pos = p
			if !s.escape() {
				return nil, false, false
			}
			p = s.pos
		default: // a byte of a multi-byte character, checked at the end
			ascii = false
			p++
		}
	}
}

// plain8 reports whether all eight bytes of w are plain: none is below
// 0x20, at or above 0x80, a quote or a backslash. Once no byte has its high
// bit set, subtracting from each byte sets the high bit of the lowest one
// that is below the amount (a borrow only spoils the bytes above it), which
// is all an "any" needs.
func plain8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below20 := w - ones*0x20
	quote := (w ^ ones*'"') - ones
	backslash := (w ^ ones*'\\') - ones
	return (w|below20|quote|backslash)&highs == 0
}

// plain marks the bytes a string may hold with nothing to check: printable
// ASCII but the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escape checks one escape sequence and moves past it. A \u escape of a
// surrogate must be half of a pair.
func (s *scanner) escape() bool {
	s.pos++ // backslash
	if s.pos >= len(s.data) {
		return false
	}
	switch s.data[s.pos] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos++
		return true
	case 'u':
		r, ok := s.hex4(s.pos + 1)
		if !ok {
			return false
		}
		s.pos += 5
		if !utf16.IsSurrogate(r) {
			return true
		}
		if r >= 0xDC00 || s.pos+1 >= len(s.data) || s.data[s.pos] != '\\' || s.data[s.pos+1] != 'u' {
			return false // a lone surrogate
		}
		r2, ok := s.hex4(s.pos + 2)
		if !ok || utf16.DecodeRune(r, r2) == utf8.RuneError {
			return false
		}
		s.pos += 6
		return true
	}
	return false
}

func (s *scanner) hex4(at int) (rune, bool) {
	if at+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// escapedLength counts the code points of a string's raw contents, which
// rawString has checked.
func escapedLength(raw []byte) int {
	n := 0
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			_, size := utf8.DecodeRune(raw[i:])
			i += size
			n++
			continue
		}
		if raw[i+1] == 'u' {
			i += 6
			if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				if r, _ := (&scanner{data: raw}).hex4(i - 4); utf16.IsSurrogate(r) {
					i += 6 // the low half of a pair
				}
			}
		} else {
			i += 2
		}
		n++
	}
	return n
}

func (n *Node) number(s *scanner) Verdict {
	start := s.pos
	if !s.numberText() {
		return Invalid
	}
	text := s.data[start:s.pos]
	isInt := isIntegerText(text)
	switch {
	case n.types == tAny || n.types&tNumber != 0:
	case n.types&tInteger != 0:
		if !isInt {
			return Undecided // 1.0 and 1e2 are integers too
		}
	default:
		return Invalid
	}
	if !n.hasMinimum && !n.hasMaximum {
		return Valid
	}
	if !isInt {
		return Undecided
	}
	v, ok := parseInt64(text)
	if !ok {
		return Undecided // beyond int64: exact comparison is the library's
	}
	if (n.hasMinimum && v < n.minimum) || (n.hasMaximum && v > n.maximum) {
		return Invalid
	}
	return Valid
}

// numberText moves past a number, checking the JSON grammar.
func (s *scanner) numberText() bool {
	d := s.data
	if s.pos < len(d) && d[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(d) && d[s.pos] == '0':
		s.pos++
	case s.pos < len(d) && d[s.pos] >= '1' && d[s.pos] <= '9':
		for s.pos < len(d) && d[s.pos] >= '0' && d[s.pos] <= '9' {
			s.pos++
		}
	default:
		return false
	}
	if s.pos < len(d) && d[s.pos] == '.' {
		s.pos++
		if !s.digits() {
			return false
		}
	}
	if s.pos < len(d) && (d[s.pos] == 'e' || d[s.pos] == 'E') {
		s.pos++
		if s.pos < len(d) && (d[s.pos] == '+' || d[s.pos] == '-') {
			s.pos++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

func (s *scanner) digits() bool {
	start := s.pos
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
	}
	return s.pos > start
}

// parseInt64 parses an integer literal the JSON grammar has checked,
// reporting false if it does not fit in an int64.
func parseInt64(text []byte) (int64, bool) {
	neg := text[0] == '-'
	if neg {
		text = text[1:]
	}
	if len(text) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range text {
		u = u*10 + uint64(c-'0')
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

func isIntegerText(text []byte) bool { return !bytes.ContainsAny(text, ".eE") }

// skip moves past any well-formed value.
func skip(s *scanner, depth int) Verdict {
	any := Node{minItems: -1, maxItems: -1, minLength: -1, maxLength: -1}
	return any.value(s, depth)
}
