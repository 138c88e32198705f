package messages

import (
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
	timeType       = reflect.TypeFor[time.Time]()
	rawMessageType = reflect.TypeFor[json.RawMessage]()
	marshalerType  = reflect.TypeFor[json.Marshaler]()
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
	}
	if t.Implements(marshalerType) || reflect.PointerTo(t).Implements(marshalerType) {
		return nil, fmt.Errorf("type %s has its own MarshalJSON; write its schema by hand", t)
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

func (g *generator) structSchema(t reflect.Type) (object, error) {
	if g.visiting[t] {
		return nil, fmt.Errorf("type %s is recursive; write its schema by hand", t)
	}
	g.visiting[t] = true
	defer delete(g.visiting, t)

	props := object{}
	var required []string
	if err := g.addFields(t, &props, &required); err != nil {
		return nil, err
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

func (g *generator) addFields(t reflect.Type, props *object, required *[]string) error {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if err := g.addFields(ft, props, required); err != nil {
					return err
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if strings.Contains(","+opts+",", ",string,") {
			return fmt.Errorf("field %s.%s: the json \",string\" option is not supported", t, f.Name)
		}
		fs, err := g.schemaFor(f.Type)
		if err != nil {
			return fmt.Errorf("field %s.%s: %w", t, f.Name, err)
		}
		if c := f.Tag.Get("schema"); c != "" {
			if fs, err = constrain(fs, c); err != nil {
				return fmt.Errorf("field %s.%s: schema tag: %w", t, f.Name, err)
			}
		}
		*props = append(*props, member{name, fs})
		if !strings.Contains(","+opts+",", ",omitempty,") && !strings.Contains(","+opts+",", ",omitzero,") {
			*required = append(*required, name)
		}
	}
	return nil
}

// constrain adds the keywords of a `schema` struct tag to a field's schema.
func constrain(s object, tag string) (object, error) {
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
			s = set(s, key, strings.Split(val, "|"))
		default:
			return nil, fmt.Errorf("unknown constraint %q", key)
		}
	}
	return s, nil
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
