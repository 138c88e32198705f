package messages

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// generateSchema derives a JSON Schema from a Go type, so that a message's
// Go type and its wire schema cannot drift apart.
//
// The mapping follows encoding/json: exported fields under their json names,
// embedded structs flattened, "-" skipped. A field is required unless its
// json tag says omitempty or omitzero; objects allow no other properties.
// Integers are bounded by their Go width, pointers may be null, []byte is a
// string, time.Time a date-time string, json.RawMessage and interfaces any
// value; slices and maps may be null, as encoding/json writes nil ones. A
// `schema` struct tag adds constraints:
//
//	Name  string `json:"name" schema:"minLength=1,maxLength=64,pattern=^[a-z]+$"`
//	Level string `json:"level" schema:"enum=info|warn|error"`
//	Count int    `json:"count" schema:"minimum=0,maximum=100"`
//	Tags  []string `json:"tags" schema:"maxItems=16"`
//	Note  string `json:"note" schema:"description=free text shown to operators"`
//
// A description, if given, must come last since it may contain commas.
func generateSchema(t reflect.Type) (json.RawMessage, error) {
	g := generator{visiting: map[reflect.Type]bool{}}
	s, err := g.schemaFor(t)
	if err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

type generator struct {
	visiting map[reflect.Type]bool
}

var (
	timeType          = reflect.TypeFor[time.Time]()
	rawMessageType    = reflect.TypeFor[json.RawMessage]()
	numberType        = reflect.TypeFor[json.Number]()
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// object is an ordered JSON object, so generated schemas are stable
// byte for byte (docs and broker configs are derived from them).
type object []member

type member struct {
	key   string
	value any
}

func (o object) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(m.value)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

func (g *generator) schemaFor(t reflect.Type) (object, error) {
	switch t {
	case timeType:
		return object{{"type", "string"}, {"format", "date-time"}}, nil
	case rawMessageType:
		return object{}, nil
	case numberType:
		return object{{"type", "number"}}, nil
	}
	if implements(t, marshalerType) {
		return nil, fmt.Errorf("type %s has its own MarshalJSON; write its schema by hand", t)
	}
	if implements(t, textMarshalerType) {
		return object{{"type", "string"}}, nil // encoding/json writes its text
	}
	switch t.Kind() {
	case reflect.Bool:
		return object{{"type", "boolean"}}, nil
	case reflect.String:
		return object{{"type", "string"}}, nil
	case reflect.Int8, reflect.Int16, reflect.Int32:
		bits := t.Bits()
		return object{{"type", "integer"}, {"minimum", -(int64(1) << (bits - 1))}, {"maximum", int64(1)<<(bits-1) - 1}}, nil
	case reflect.Int, reflect.Int64:
		// Out-of-range values fail when decoding, which reports them as
		// invalid payloads too; bounds here would only clutter the docs.
		return object{{"type", "integer"}}, nil
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return object{{"type", "integer"}, {"minimum", 0}, {"maximum", uint64(1)<<t.Bits() - 1}}, nil
	case reflect.Uint, reflect.Uint64:
		return object{{"type", "integer"}, {"minimum", 0}}, nil
	case reflect.Float32, reflect.Float64:
		return object{{"type", "number"}}, nil
	case reflect.Interface:
		return object{}, nil
	case reflect.Pointer:
		inner, err := g.schemaFor(t.Elem())
		if err != nil {
			return nil, err
		}
		return object{{"anyOf", []any{inner, object{{"type", "null"}}}}}, nil
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Kind() == reflect.Slice {
			return object{{"type", []string{"string", "null"}}, {"contentEncoding", "base64"}}, nil
		}
		items, err := g.schemaFor(t.Elem())
		if err != nil {
			return nil, err
		}
		if t.Kind() == reflect.Array {
			return object{{"type", "array"}, {"items", items}, {"minItems", t.Len()}, {"maxItems", t.Len()}}, nil
		}
		// A nil slice encodes as null.
		return object{{"type", []string{"array", "null"}}, {"items", items}}, nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("map %s: only string keys are supported", t)
		}
		values, err := g.schemaFor(t.Elem())
		if err != nil {
			return nil, err
		}
		// A nil map encodes as null.
		return object{{"type", []string{"object", "null"}}, {"additionalProperties", values}}, nil
	case reflect.Struct:
		return g.structSchema(t)
	}
	return nil, fmt.Errorf("type %s (%s) has no JSON form", t, t.Kind())
}

func implements(t, iface reflect.Type) bool {
	return t.Implements(iface) || (t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(iface))
}

func (g *generator) structSchema(t reflect.Type) (object, error) {
	if g.visiting[t] {
		return nil, fmt.Errorf("type %s is recursive; write its schema by hand", t)
	}
	g.visiting[t] = true
	defer delete(g.visiting, t)

	props := object{}
	var required []string
	for _, f := range jsonFields(t) {
		if f.quoted {
			return nil, fmt.Errorf("field %s.%s: the json \",string\" option is not supported", t, f.goName)
		}
		fs, err := g.schemaFor(f.typ)
		if err != nil {
			return nil, fmt.Errorf("field %s.%s: %w", t, f.goName, err)
		}
		if f.constraints != "" {
			if fs, err = constrain(fs, f.typ, f.constraints); err != nil {
				return nil, fmt.Errorf("field %s.%s: schema tag: %w", t, f.goName, err)
			}
		}
		props = append(props, member{f.name, fs})
		if f.required {
			required = append(required, f.name)
		}
	}
	s := object{{"type", "object"}}
	if len(props) > 0 {
		s = append(s, member{"properties", props})
	}
	if len(required) > 0 {
		s = append(s, member{"required", required})
	}
	return append(s, member{"additionalProperties", false}), nil
}

// field is one property of a struct's JSON form.
type field struct {
	name        string
	goName      string
	typ         reflect.Type
	constraints string // the schema tag
	required    bool
	depth       int  // embedding depth
	tagged      bool // named by a json tag
	quoted      bool // the ",string" option
}

// jsonFields lists the fields encoding/json writes for struct type t, in
// order, with its rules: embedded structs are flattened, a shallower field
// hides a deeper one of the same name, a tagged one an untagged one at the
// same depth, and names still ambiguous are dropped. Fields reached through
// an embedded pointer are optional: a nil pointer omits them.
func jsonFields(t reflect.Type) []field {
	var all []field
	var walk func(t reflect.Type, depth int, viaPointer bool, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, depth int, viaPointer bool, seen map[reflect.Type]bool) {
		if seen[t] {
			return
		}
		seen[t] = true
		defer delete(seen, t)
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				ft, ptr := f.Type, false
				if ft.Kind() == reflect.Pointer {
					ft, ptr = ft.Elem(), true
				}
				if ft.Kind() == reflect.Struct {
					walk(ft, depth+1, viaPointer || ptr, seen)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			tagged := name != ""
			if !tagged {
				name = f.Name
			}
			optional := strings.Contains(","+opts+",", ",omitempty,") || strings.Contains(","+opts+",", ",omitzero,")
			all = append(all, field{
				name: name, goName: f.Name, typ: f.Type, constraints: f.Tag.Get("schema"),
				required: !optional && !viaPointer, depth: depth, tagged: tagged,
				quoted: strings.Contains(","+opts+",", ",string,"),
			})
		}
	}
	walk(t, 0, false, map[reflect.Type]bool{})

	var out []field
	for i, f := range all {
		dominant := true
		for j, g := range all {
			if i == j || g.name != f.name {
				continue
			}
			if g.depth < f.depth || (g.depth == f.depth && g.tagged && !f.tagged) ||
				(g.depth == f.depth && g.tagged == f.tagged) {
				dominant = false // hidden, or as deep and as tagged: ambiguous
				break
			}
		}
		if dominant {
			out = append(out, f)
		}
	}
	return out
}

// constrain adds the keywords of a `schema` struct tag to the schema of a
// field of type t. On a pointer they constrain the value pointed to; null
// stays allowed.
func constrain(s object, t reflect.Type, tag string) (object, error) {
	if t.Kind() == reflect.Pointer && len(s) == 1 && s[0].key == "anyOf" {
		branches := s[0].value.([]any)
		inner, err := constrain(branches[0].(object), t.Elem(), tag)
		if err != nil {
			return nil, err
		}
		return object{{"anyOf", []any{inner, branches[1]}}}, nil
	}
	for tag != "" {
		var item string
		if strings.HasPrefix(tag, "description=") {
			item, tag = tag, ""
		} else {
			item, tag, _ = strings.Cut(tag, ",")
		}
		key, val, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value", item)
		}
		switch key {
		case "minimum", "maximum":
			n, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return nil, fmt.Errorf("%s=%q is not a number", key, val)
			}
			s = set(s, key, json.Number(strconv.FormatFloat(n, 'f', -1, 64)))
		case "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties":
			n, err := strconv.ParseUint(val, 10, 31)
			if err != nil {
				return nil, fmt.Errorf("%s=%q is not a count", key, val)
			}
			s = set(s, key, n)
		case "pattern", "format", "description":
			s = set(s, key, val)
		case "enum":
			values, err := enumValues(t, strings.Split(val, "|"))
			if err != nil {
				return nil, err
			}
			s = set(s, key, values)
		default:
			return nil, fmt.Errorf("unknown constraint %q", key)
		}
	}
	return s, nil
}

// enumValues gives enum values the JSON type of the field they constrain.
func enumValues(t reflect.Type, texts []string) ([]any, error) {
	out := make([]any, len(texts))
	for i, v := range texts {
		switch t.Kind() {
		case reflect.String:
			out[i] = v
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
			reflect.Float32, reflect.Float64:
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				return nil, fmt.Errorf("enum value %q is not a number", v)
			}
			out[i] = json.Number(v)
		case reflect.Bool:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("enum value %q is not true or false", v)
			}
			out[i] = b
		default:
			return nil, fmt.Errorf("enum applies to strings, numbers and booleans, not %s", t)
		}
	}
	return out, nil
}

// set replaces key in s, or appends it.
func set(s object, key string, value any) object {
	for i := range s {
		if s[i].key == key {
			s[i].value = value
			return s
		}
	}
	return append(s, member{key, value})
}
