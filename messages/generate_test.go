package messages_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/messages"
)

type label struct {
	Text string `json:"text"`
}

type common struct {
	Shared string `json:"shared"`
	Hidden string `json:"-"`
	inner  int
}

// sample has one field of each kind the generator maps.
type sample struct {
	common
	Name     string            `json:"name" schema:"minLength=1,maxLength=8,pattern=^[a-z]+$"`
	Level    string            `json:"level" schema:"enum=info|warn|error"`
	Count    int               `json:"count" schema:"minimum=0,maximum=100"`
	Tags     []string          `json:"tags" schema:"maxItems=2"`
	Note     string            `json:"note,omitempty" schema:"description=free text, shown to operators"`
	Small    int8              `json:"small"`
	Medium   int16             `json:"medium"`
	Tiny     uint8             `json:"tiny"`
	Unsigned uint              `json:"unsigned"`
	Big      int64             `json:"big"`
	Ratio    float64           `json:"ratio"`
	Flag     bool              `json:"flag"`
	Label    label             `json:"label"`
	Blob     []byte            `json:"blob"`
	When     time.Time         `json:"when"`
	Attrs    map[string]int    `json:"attrs"`
	Raw      json.RawMessage   `json:"raw"`
	Any      any               `json:"any"`
	Pair     [2]int            `json:"pair"`
	Labels   []label           `json:"labels"`
	Nested   map[string][]bool `json:"nested"`
	Zero     label             `json:"zero,omitzero"`
	Skipped  string            `json:"-"`
	NoTag    string
	private  string
}

var sampleEvent = messages.MustEvent[sample](messages.Spec{Name: "sample", Links: []messages.Direction{messages.MasterToSlave}})

// nullable holds the pointer fields. They are kept apart from sample
// because an error elsewhere in a document with a pointer field is reported
// against the pointer field (see known_bugs_test.go).
type nullable struct {
	Opt    *label `json:"opt"`
	OptInt *int   `json:"opt_int"`
}

var nullableEvent = messages.MustEvent[nullable](messages.Spec{Name: "nullable", Links: []messages.Direction{messages.MasterToSlave}})

// goodSample returns a value that satisfies every constraint of sample.
func goodSample() sample {
	return sample{
		common: common{Shared: "s", Hidden: "not sent", inner: 1},
		Name:   "abc", Level: "warn", Count: 100, Tags: []string{"a", "b"},
		Note: "hi", Small: -128, Medium: 32767, Tiny: 255, Unsigned: math.MaxUint, Big: math.MinInt64,
		Ratio: 0.5, Flag: true, Label: label{Text: "x"},
		Blob: []byte{0, 1, 255}, When: time.Date(2020, 9, 1, 12, 0, 0, 5, time.FixedZone("x", 3600)),
		Attrs: map[string]int{"a": 1}, Raw: json.RawMessage(`{"free":[1,"form"]}`), Any: []any{1, "two"},
		Pair: [2]int{1, 2}, Labels: []label{{Text: "l"}}, Nested: map[string][]bool{"k": {true}},
		Zero: label{Text: "z"}, Skipped: "not sent", NoTag: "untagged", private: "p",
	}
}

func TestGeneratedSchemaShape(t *testing.T) {
	schema := sampleEvent.PayloadSchema().JSON()

	var root struct {
		Type                 string                     `json:"type"`
		Properties           map[string]json.RawMessage `json:"properties"`
		Required             []string                   `json:"required"`
		AdditionalProperties *bool                      `json:"additionalProperties"`
	}
	if err := json.Unmarshal(schema, &root); err != nil {
		t.Fatalf("schema: %v: %s", err, schema)
	}
	if root.Type != "object" || root.AdditionalProperties == nil || *root.AdditionalProperties {
		t.Errorf("root is not a closed object: %s", schema)
	}
	wantProps := []string{"shared", "name", "level", "count", "tags", "note", "small", "medium", "tiny", "unsigned",
		"big", "ratio", "flag", "label", "blob", "when", "attrs", "raw", "any", "pair",
		"labels", "nested", "zero", "NoTag"}
	gotProps := slices.Sorted(maps.Keys(root.Properties))
	if !slices.Equal(gotProps, slices.Sorted(slices.Values(wantProps))) {
		t.Errorf("properties = %v; want %v (embedded fields flattened, json:\"-\" and unexported skipped)", gotProps, wantProps)
	}
	wantRequired := slices.DeleteFunc(slices.Clone(wantProps), func(p string) bool { return p == "note" || p == "zero" })
	if !slices.Equal(slices.Sorted(slices.Values(root.Required)), slices.Sorted(slices.Values(wantRequired))) {
		t.Errorf("required = %v; want all but the omitempty/omitzero fields: %v", root.Required, wantRequired)
	}

	// The generated document is stable byte for byte and follows field
	// order, since docs and broker configs are derived from it.
	again := messages.MustEvent[sample](messages.Spec{Name: "sample_again", Links: []messages.Direction{messages.MasterToSlave}})
	if string(again.PayloadSchema().JSON()) != string(schema) {
		t.Errorf("the same type gave two schemas:\n%s\n%s", schema, again.PayloadSchema().JSON())
	}
	last := -1
	for _, p := range wantProps {
		i := strings.Index(string(schema), `"`+p+`":{`)
		if i < last {
			t.Errorf("property %q is out of field order in %s", p, schema)
		}
		last = i
	}

	tests := []struct {
		name     string
		property string
		want     string
	}{
		{name: "string with tags", property: "name", want: `{"type":"string","minLength":1,"maxLength":8,"pattern":"^[a-z]+$"}`},
		{name: "enum", property: "level", want: `{"type":"string","enum":["info","warn","error"]}`},
		{name: "bounded int", property: "count", want: `{"type":"integer","minimum":0,"maximum":100}`},
		{name: "slice nullable with maxItems", property: "tags", want: `{"type":["array","null"],"items":{"type":"string"},"maxItems":2}`},
		{name: "description with comma", property: "note", want: `{"type":"string","description":"free text, shown to operators"}`},
		{name: "int8 bounds", property: "small", want: `{"type":"integer","minimum":-128,"maximum":127}`},
		{name: "int16 bounds", property: "medium", want: `{"type":"integer","minimum":-32768,"maximum":32767}`},
		{name: "uint8 bounds", property: "tiny", want: `{"type":"integer","minimum":0,"maximum":255}`},
		{name: "uint non-negative", property: "unsigned", want: `{"type":"integer","minimum":0}`},
		{name: "int64", property: "big", want: `{"type":"integer"}`},
		{name: "float", property: "ratio", want: `{"type":"number"}`},
		{name: "bool", property: "flag", want: `{"type":"boolean"}`},
		{name: "nested struct", property: "label", want: `{"type":"object","properties":{"text":{"type":"string"}},"required":["text"],"additionalProperties":false}`},
		{name: "bytes", property: "blob", want: `{"type":["string","null"],"contentEncoding":"base64"}`},
		{name: "time", property: "when", want: `{"type":"string","format":"date-time"}`},
		{name: "map nullable", property: "attrs", want: `{"type":["object","null"],"additionalProperties":{"type":"integer"}}`},
		{name: "raw message", property: "raw", want: `{}`},
		{name: "interface", property: "any", want: `{}`},
		{name: "array fixed length", property: "pair", want: `{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":2}`},
		{name: "untagged field by Go name", property: "NoTag", want: `{"type":"string"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := property(t, schema, tc.property), canon(t, []byte(tc.want)); got != want {
				t.Errorf("property %q:\n got %s\nwant %s", tc.property, got, want)
			}
		})
	}
}

func TestGeneratedSchemaTopLevelTypes(t *testing.T) {
	tests := []struct {
		name   string
		schema func() (json.RawMessage, error)
		want   string
	}{
		{name: "empty", want: `{"type":"object","additionalProperties":false}`, schema: func() (json.RawMessage, error) {
			e, err := messages.NewEvent[messages.Empty](messages.Spec{Name: "e", Links: []messages.Direction{messages.MasterToSlave}})
			if err != nil {
				return nil, err
			}
			return e.PayloadSchema().JSON(), nil
		}},
		{name: "string", want: `{"type":"string"}`, schema: func() (json.RawMessage, error) {
			e, err := messages.NewEvent[string](messages.Spec{Name: "e", Links: []messages.Direction{messages.MasterToSlave}})
			if err != nil {
				return nil, err
			}
			return e.PayloadSchema().JSON(), nil
		}},
		{name: "slice of uint16", want: `{"type":["array","null"],"items":{"type":"integer","minimum":0,"maximum":65535}}`, schema: func() (json.RawMessage, error) {
			e, err := messages.NewEvent[[]uint16](messages.Spec{Name: "e", Links: []messages.Direction{messages.MasterToSlave}})
			if err != nil {
				return nil, err
			}
			return e.PayloadSchema().JSON(), nil
		}},
		{name: "int32 response", want: `{"type":"integer","minimum":-2147483648,"maximum":2147483647}`, schema: func() (json.RawMessage, error) {
			r, err := messages.NewRequest[messages.Empty, int32](messages.Spec{Name: "r", Links: []messages.Direction{messages.MasterToSlave}})
			if err != nil {
				return nil, err
			}
			return r.ResponseSchema().JSON(), nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.schema()
			if err != nil {
				t.Fatal(err)
			}
			if canon(t, got) != canon(t, []byte(tc.want)) {
				t.Errorf("schema = %s; want %s", got, tc.want)
			}
		})
	}
}

// Whatever encoding/json writes for a valid Go value must pass the schema
// generated from its type, and decode back to the same value.
func TestGeneratedSchemaAcceptsEncodedValues(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*sample)
	}{
		{name: "every field set", modify: func(*sample) {}},
		{name: "nil slices and maps", modify: func(s *sample) { s.Tags, s.Blob, s.Attrs, s.Labels, s.Nested = nil, nil, nil, nil, nil }},
		{name: "empty slices and maps", modify: func(s *sample) {
			s.Tags, s.Blob, s.Attrs, s.Labels, s.Nested = []string{}, []byte{}, map[string]int{}, []label{}, map[string][]bool{}
		}},
		{name: "omitted optional fields", modify: func(s *sample) { s.Note, s.Zero = "", label{} }},
		{name: "nil raw message and interface", modify: func(s *sample) { s.Raw, s.Any = nil, nil }},
		{name: "zero time", modify: func(s *sample) { s.When = time.Time{} }},
		{name: "other extremes", modify: func(s *sample) {
			s.Small, s.Medium, s.Tiny, s.Unsigned, s.Big, s.Count = 127, -32768, 0, 0, math.MaxInt64, 0
			s.Ratio = -math.MaxFloat64
		}},
		{name: "escaped strings", modify: func(s *sample) {
			s.Shared, s.NoTag, s.Label.Text = "<&>\"\\\u2028", "tab\there", "ünïcödé ☃"
		}},
		{name: "unexported and skipped fields are not sent", modify: func(s *sample) { s.Hidden, s.Skipped, s.private = "", "", "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := goodSample()
			tc.modify(&v)
			data, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if err := sampleEvent.ValidatePayload(data); err != nil {
				t.Fatalf("encoding/json output fails its schema: %v\n%s", err, data)
			}
			enc, err := sampleEvent.Encode(v)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			var unescaped bytes.Buffer
			e := json.NewEncoder(&unescaped)
			e.SetEscapeHTML(false)
			if err := e.Encode(v); err != nil {
				t.Fatal(err)
			}
			if data := bytes.TrimSuffix(unescaped.Bytes(), []byte("\n")); string(enc) != string(data) {
				t.Errorf("Encode = %s; want what encoding/json writes: %s", enc, data)
			}
			got, err := sampleEvent.Decode(enc)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			again, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(data) {
				t.Errorf("round trip changed the value:\n got %s\nwant %s", again, data)
			}
		})
	}
}

// Hand-crafted documents that break one rule each are refused, and the
// error points at the broken field.
func TestGeneratedSchemaRejects(t *testing.T) {
	tests := []struct {
		name  string
		set   map[string]any // top-level fields to replace in a good document
		drop  string         // a top-level field to remove
		field string         // the Field the error must report
		want  string         // a word the Reason or Field must contain
	}{
		{name: "empty name", set: map[string]any{"name": ""}, field: "/name"},
		{name: "name too long", set: map[string]any{"name": "abcdefghi"}, field: "/name"},
		{name: "name against pattern", set: map[string]any{"name": "ABC"}, field: "/name"},
		{name: "level not in enum", set: map[string]any{"level": "debug"}, field: "/level"},
		{name: "count above maximum", set: map[string]any{"count": 101}, field: "/count"},
		{name: "count below minimum", set: map[string]any{"count": -1}, field: "/count"},
		{name: "count fractional", set: map[string]any{"count": 1.5}, field: "/count"},
		{name: "too many tags", set: map[string]any{"tags": []string{"a", "b", "c"}}, field: "/tags"},
		{name: "tag not a string", set: map[string]any{"tags": []any{"a", 1}}, field: "/tags/1"},
		{name: "int8 above range", set: map[string]any{"small": 128}, field: "/small"},
		{name: "int8 below range", set: map[string]any{"small": -129}, field: "/small"},
		{name: "int16 above range", set: map[string]any{"medium": 32768}, field: "/medium"},
		{name: "uint8 above range", set: map[string]any{"tiny": 256}, field: "/tiny"},
		{name: "uint8 negative", set: map[string]any{"tiny": -1}, field: "/tiny"},
		{name: "uint negative", set: map[string]any{"unsigned": -1}, field: "/unsigned"},
		{name: "int64 as string", set: map[string]any{"big": "1"}, field: "/big"},
		{name: "float as string", set: map[string]any{"ratio": "0.5"}, field: "/ratio"},
		{name: "bool as string", set: map[string]any{"flag": "true"}, field: "/flag"},
		{name: "bool as number", set: map[string]any{"flag": 1}, field: "/flag"},
		{name: "nested wrong type", set: map[string]any{"label": map[string]any{"text": 1}}, field: "/label/text"},
		{name: "nested missing field", set: map[string]any{"label": map[string]any{}}, field: "/label", want: "text"},
		{name: "nested extra field", set: map[string]any{"label": map[string]any{"text": "x", "colour": "red"}}, field: "/label", want: "colour"},
		{name: "null for a struct", set: map[string]any{"label": nil}, field: "/label"},
		{name: "bytes as number", set: map[string]any{"blob": 5}, field: "/blob"},
		{name: "time as number", set: map[string]any{"when": 1600000000}, field: "/when"},
		{name: "map as list", set: map[string]any{"attrs": []int{1}}, field: "/attrs"},
		{name: "array too short", set: map[string]any{"pair": []int{1}}, field: "/pair"},
		{name: "array too long", set: map[string]any{"pair": []int{1, 2, 3}}, field: "/pair"},
		{name: "array as null", set: map[string]any{"pair": nil}, field: "/pair"},
		{name: "list element wrong", set: map[string]any{"labels": []any{map[string]any{"text": "a"}, map[string]any{"text": false}}}, field: "/labels/1/text"},
		{name: "number for string enum", set: map[string]any{"level": 1}, field: "/level"},
		{name: "missing embedded field", drop: "shared", field: "", want: "shared"},
		{name: "missing untagged field", drop: "NoTag", field: "", want: "NoTag"},
		{name: "missing required field", drop: "when", field: "", want: "when"},
		{name: "skipped field sent", set: map[string]any{"Skipped": "x"}, field: "", want: "Skipped"},
		{name: "hidden embedded field sent", set: map[string]any{"Hidden": "x"}, field: "", want: "Hidden"},
		{name: "Go name of a tagged field", set: map[string]any{"Name": "abc"}, field: "", want: "Name"},
	}
	good, err := json.Marshal(goodSample())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(good, &doc); err != nil {
				t.Fatal(err)
			}
			maps.Copy(doc, tc.set)
			if tc.drop != "" {
				delete(doc, tc.drop)
			}
			data, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			err = sampleEvent.ValidatePayload(data)
			ve := requireValidationError(t, err, "sample", "event")
			if ve.Field != tc.field {
				t.Errorf("Field = %q; want %q (%v)", ve.Field, tc.field, err)
			}
			if tc.want != "" && !strings.Contains(ve.Field+" "+ve.Reason, tc.want) {
				t.Errorf("error %v does not mention %q", err, tc.want)
			}
			if _, derr := sampleEvent.Decode(data); derr == nil {
				t.Error("Decode accepted what ValidatePayload refused")
			}
		})
	}
}

// Pointers may be null, and otherwise hold what their element type allows.
func TestGeneratedSchemaPointers(t *testing.T) {
	schema := nullableEvent.PayloadSchema().JSON()
	for _, c := range []struct{ property, want string }{
		{"opt", `{"anyOf":[{"type":"object","properties":{"text":{"type":"string"}},"required":["text"],"additionalProperties":false},{"type":"null"}]}`},
		{"opt_int", `{"anyOf":[{"type":"integer"},{"type":"null"}]}`},
	} {
		if got, want := property(t, schema, c.property), canon(t, []byte(c.want)); got != want {
			t.Errorf("property %q:\n got %s\nwant %s", c.property, got, want)
		}
	}

	n := 0
	accepted := []struct {
		name  string
		value nullable
	}{
		{name: "nil", value: nullable{}},
		{name: "set", value: nullable{Opt: &label{Text: "x"}, OptInt: &n}},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			data, err := nullableEvent.Encode(tc.value)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := nullableEvent.Decode(data)
			if err != nil {
				t.Fatalf("Decode(%s): %v", data, err)
			}
			if (got.Opt == nil) != (tc.value.Opt == nil) || (got.OptInt == nil) != (tc.value.OptInt == nil) {
				t.Errorf("Decode(%s) = %+v", data, got)
			}
		})
	}

	refused := []struct {
		name  string
		data  string
		field string
		want  string
	}{
		{name: "wrong type inside", data: `{"opt":{"text":1},"opt_int":null}`, field: "/opt/text"},
		{name: "missing field inside", data: `{"opt":{},"opt_int":null}`, field: "/opt", want: "text"},
		{name: "neither element nor null", data: `{"opt":"x","opt_int":null}`, field: "/opt"},
		{name: "pointer field missing", data: `{"opt":null}`, field: "", want: "opt_int"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			ve := requireValidationError(t, nullableEvent.ValidatePayload([]byte(tc.data)), "nullable", "event")
			if ve.Field != tc.field {
				t.Errorf("Field = %q; want %q (%v)", ve.Field, tc.field, ve)
			}
			if !strings.Contains(ve.Reason, tc.want) {
				t.Errorf("Reason %q does not mention %q", ve.Reason, tc.want)
			}
		})
	}
}

func TestGeneratedSchemaIsValidJSONSchema(t *testing.T) {
	// Feeding a generated schema back as a hand-written one must give the
	// same document: the generator only writes valid Draft-07.
	for _, m := range newCatalog(t).All() {
		t.Run(m.Name(), func(t *testing.T) {
			_, err := messages.NewEvent[any](messages.Spec{Name: "copy", Links: []messages.Direction{messages.MasterToSlave}, Schema: string(m.PayloadSchema().JSON())})
			if err != nil {
				t.Errorf("payload schema is not a valid schema: %v", err)
			}
			if rs := m.ResponseSchema(); rs != nil {
				if _, err := messages.NewEvent[any](messages.Spec{Name: "copy", Links: []messages.Direction{messages.MasterToSlave}, Schema: string(rs.JSON())}); err != nil {
					t.Errorf("response schema is not a valid schema: %v", err)
				}
			}
		})
	}
}
