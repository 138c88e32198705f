package check

import (
	"encoding/binary"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Checking Go values without JSON. Between two links in one process
// (connector/virtual) a typed payload can travel as the Go value itself:
// no encoding, no decoding. It is still checked against the schema on send
// and on receipt, by a Value compiled once for the schema and the Go
// type from the fast path's nodes (fast.go). A value passes through only
// when its JSON form would be exactly what the receiver decodes back into
// the same Go value, and the check decides exactly what the schema says of
// that JSON form: the type is a struct whose fields, recursively, are
// strings, booleans, integers or such structs (no pointer, slice, map,
// interface or float shares memory or loses anything on the way), and the
// schema uses only what the fast path models of them. Anything else (and
// any value the check cannot decide, such as a string that is not valid
// UTF-8) goes as JSON, checked as before.
//
// The check is compiled for its Go type: each field's offset, the bit it
// sets among the schema's required properties, its bounds and its enum
// are worked out once, and a check reads the value's memory through
// them, with no reflect.Value per field (walking the value with reflect
// was most of a virtual event's cost). It is safe because the types it
// accepts are exactly those compileValue admits: structs of strings,
// booleans, integers and such structs, which hold no pointer of their own
// and are never stored directly in an interface.

// Value checks values of one Go type against one schema node.
type Value struct {
	node *Node
	kind reflect.Kind

	// strings
	minLength, maxLength int      // the node's, in code points; -1: no bound
	enum                 []string // the enum's strings, unquoted (they need no escapes: setEnum)

	// structs
	fields       []valueField
	requiredBits uint64 // the node's
}

// valueField is one field of a struct, as encoding/json writes it.
type valueField struct {
	offset    uintptr // in the struct
	bit       uint64  // the field's bit among the node's declared properties; 0: not declared
	omitEmpty bool
	check     *Value
}

// CompileValue builds the check of values of t against n, or returns nil
// if a value of t cannot be checked exactly.
func CompileValue(n *Node, t reflect.Type) *Value { return compileValue(n, t, 0) }

// compileValue builds the check of t against n, or returns nil if a value
// of t cannot be checked exactly.
func compileValue(n *Node, t reflect.Type, depth int) *Value {
	if n == nil || depth > 16 || n.anyOf != nil {
		return nil
	}
	c := &Value{node: n, kind: t.Kind(), minLength: n.minLength, maxLength: n.maxLength, requiredBits: n.requiredBits}
	switch t.Kind() {
	case reflect.String:
		if !n.allows(tString) || n.stringUndecided || !enumOf(n, '"') {
			return nil
		}
		for _, e := range n.enum {
			c.enum = append(c.enum, string(e[1:len(e)-1]))
		}
	case reflect.Bool:
		if !n.allows(tBool) || !enumOf(n, 't', 'f') {
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if !n.allows(tInteger) || !enumOf(n, '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9') {
			return nil
		}
	case reflect.Struct:
		if !n.allows(tObject) || n.enum != nil || len(n.requiredOther) > 0 {
			return nil
		}
		seen := map[string]bool{}
		var declared uint64
		for i := range t.NumField() {
			f := t.Field(i)
			tag, hasTag := f.Tag.Lookup("json")
			if tag == "-" {
				continue
			}
			if f.Anonymous || !f.IsExported() {
				return nil // embedding's promotion rules: left to JSON
			}
			name, opts, _ := strings.Cut(tag, ",")
			if !hasTag || name == "" {
				name = f.Name
			}
			if opts != "" && opts != "omitempty" || seen[name] {
				return nil
			}
			seen[name] = true
			child := n.additional
			var bit uint64
			if i := n.field(name); i >= 0 {
				child, bit = n.props[i].node, 1<<i
				declared |= bit
			} else if n.closed {
				return nil
			}
			var fc *Value
			if child == nil {
				child = &Node{minItems: -1, maxItems: -1, minLength: -1, maxLength: -1}
			}
			if fc = compileValue(child, f.Type, depth+1); fc == nil {
				return nil
			}
			c.fields = append(c.fields, valueField{offset: f.Offset, bit: bit, omitEmpty: opts == "omitempty", check: fc})
		}
		if n.requiredBits&^declared != 0 {
			return nil // a required property the type never writes
		}
	default:
		return nil
	}
	return c
}

// enumOf reports whether n has no enum, or only values whose JSON text
// starts with one of first (a string's quote, a boolean's letter, a
// number's sign or digit): then an enum check compares like with like.
func enumOf(n *Node, first ...byte) bool {
	for _, e := range n.enum {
		if len(e) == 0 || !strings.ContainsRune(string(first), rune(e[0])) {
			return false
		}
	}
	return true
}

// Check decides whether v, which must be of the Check's type, matches the
// schema; it never answers invalid for a value whose JSON form matches.
func (c *Value) Check(v any) Verdict {
	// The interface's data word points at the value: no type compileValue
	// admits is stored in the interface itself (see above).
	return c.check((*[2]unsafe.Pointer)(unsafe.Pointer(&v))[1])
}

// check decides for the value of the Check's type at p.
func (c *Value) check(p unsafe.Pointer) Verdict {
	switch c.kind {
	case reflect.String:
		return c.checkString(*(*string)(p))
	case reflect.Bool:
		if c.node.enum != nil {
			text := "false"
			if *(*bool)(p) {
				text = "true"
			}
			return inTextEnum(c.node, text)
		}
		return Valid
	case reflect.Struct:
		var present uint64
		for i := range c.fields {
			f := &c.fields[i]
			fp := unsafe.Add(p, f.offset)
			if f.omitEmpty && f.check.isZero(fp) {
				continue
			}
			present |= f.bit
			if r := f.check.check(fp); r != Valid {
				return r
			}
		}
		if present&c.requiredBits != c.requiredBits {
			return Invalid
		}
		return Valid
	}
	return c.checkInt(p)
}

func (c *Value) checkString(s string) Verdict {
	if !validUTF8(s) {
		return Undecided // encoding/json would change it
	}
	// A string has at most as many code points as bytes, and at least a
	// quarter as many: count them only when the bytes do not decide.
	if (c.maxLength >= 0 && len(s) > c.maxLength) || (c.minLength > 0 && (len(s)+3)/4 < c.minLength) {
		length := utf8.RuneCountInString(s)
		if (c.minLength >= 0 && length < c.minLength) || (c.maxLength >= 0 && length > c.maxLength) {
			return Invalid
		}
	}
	if c.enum != nil {
		for _, e := range c.enum {
			if e == s {
				return Valid
			}
		}
		// The enum's strings need no escapes (setEnum), so neither
		// does a value equal to one: no other value's JSON matches.
		return Invalid
	}
	return Valid
}

func (c *Value) checkInt(p unsafe.Pointer) Verdict {
	n := c.node
	var i int64
	switch c.kind {
	case reflect.Int:
		i = int64(*(*int)(p))
	case reflect.Int8:
		i = int64(*(*int8)(p))
	case reflect.Int16:
		i = int64(*(*int16)(p))
	case reflect.Int32:
		i = int64(*(*int32)(p))
	case reflect.Int64:
		i = *(*int64)(p)
	case reflect.Uint8:
		i = int64(*(*uint8)(p))
	case reflect.Uint16:
		i = int64(*(*uint16)(p))
	case reflect.Uint32:
		i = int64(*(*uint32)(p))
	default: // uint, uint64, uintptr-sized
		var u uint64
		if c.kind == reflect.Uint {
			u = uint64(*(*uint)(p))
		} else {
			u = *(*uint64)(p)
		}
		if u > 1<<63-1 {
			if n.hasMinimum || n.hasMaximum || n.enum != nil {
				return Undecided
			}
			return Valid
		}
		i = int64(u)
	}
	if (n.hasMinimum && i < n.minimum) || (n.hasMaximum && i > n.maximum) {
		return Invalid
	}
	if n.enum != nil {
		return inTextEnum(n, strconv.FormatInt(i, 10))
	}
	return Valid
}

// isZero reports whether omitempty leaves out the value at p: encoding/json
// omits a zero string, boolean or integer, and never a struct.
func (c *Value) isZero(p unsafe.Pointer) bool {
	switch c.kind {
	case reflect.String:
		return len(*(*string)(p)) == 0
	case reflect.Bool:
		return !*(*bool)(p)
	case reflect.Struct:
		return false
	case reflect.Int8, reflect.Uint8:
		return *(*uint8)(p) == 0
	case reflect.Int16, reflect.Uint16:
		return *(*uint16)(p) == 0
	case reflect.Int32, reflect.Uint32:
		return *(*uint32)(p) == 0
	case reflect.Int, reflect.Uint:
		return *(*uint)(p) == 0
	}
	return *(*uint64)(p) == 0
}

// validUTF8 is utf8.ValidString, eight bytes of ASCII at a time in one
// load where the machine has one (binary.LittleEndian.Uint64 compiles to
// it); the rest, from the first word that is not all ASCII, is left to it.
func validUTF8(s string) bool {
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:])&0x8080808080808080 != 0 {
			return utf8.ValidString(s[i:])
		}
	}
	for ; i < len(b); i++ {
		if b[i] >= utf8.RuneSelf {
			return utf8.ValidString(s[i:])
		}
	}
	return true
}

func inTextEnum(n *Node, text string) Verdict {
	for _, e := range n.enum {
		if string(e) == text {
			return Valid
		}
	}
	return Invalid
}
