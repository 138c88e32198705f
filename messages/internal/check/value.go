package check

import (
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
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

// Value checks values of one Go type against one schema node.
type Value struct {
	node   *Node
	kind   reflect.Kind
	fields []valueField // structs
}

// valueField is one field of a struct, as encoding/json writes it.
type valueField struct {
	index     int
	name      string
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
	c := &Value{node: n, kind: t.Kind()}
	switch t.Kind() {
	case reflect.String:
		if !n.allows(tString) || n.stringUndecided || !enumOf(n, '"') {
			return nil
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
			if i := n.field(name); i >= 0 {
				child, declared = n.props[i].node, declared|1<<i
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
			c.fields = append(c.fields, valueField{index: i, name: name, omitEmpty: opts == "omitempty", check: fc})
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

// Check decides whether v, of the Check's type, matches the schema; it
// never answers invalid for a value whose JSON form matches.
func (c *Value) Check(v reflect.Value) Verdict {
	n := c.node
	switch c.kind {
	case reflect.String:
		s := v.String()
		if !utf8.ValidString(s) {
			return Undecided // encoding/json would change it
		}
		if n.minLength >= 0 || n.maxLength >= 0 {
			length := utf8.RuneCountInString(s)
			if (n.minLength >= 0 && length < n.minLength) || (n.maxLength >= 0 && length > n.maxLength) {
				return Invalid
			}
		}
		if n.enum != nil {
			for _, e := range n.enum {
				if string(e[1:len(e)-1]) == s {
					return Valid
				}
			}
			// The enum's strings need no escapes (setEnum), so neither
			// does a value equal to one: no other value's JSON matches.
			return Invalid
		}
		return Valid
	case reflect.Bool:
		if n.enum != nil {
			text := "false"
			if v.Bool() {
				text = "true"
			}
			return inTextEnum(n, text)
		}
		return Valid
	case reflect.Struct:
		var present uint64
		for i := range c.fields {
			f := &c.fields[i]
			fv := v.Field(f.index)
			if f.omitEmpty && fv.IsZero() {
				continue
			}
			if j := n.field(f.name); j >= 0 {
				present |= 1 << j
			}
			if r := f.check.Check(fv); r != Valid {
				return r
			}
		}
		if present&n.requiredBits != n.requiredBits {
			return Invalid
		}
		return Valid
	}
	// An integer.
	var text string
	var i int64
	if v.CanInt() {
		i = v.Int()
	} else {
		u := v.Uint()
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
		text = strconv.FormatInt(i, 10)
		return inTextEnum(n, text)
	}
	return Valid
}

func inTextEnum(n *Node, text string) Verdict {
	for _, e := range n.enum {
		if string(e) == text {
			return Valid
		}
	}
	return Invalid
}
