package messages_test

// Edge cases of Go types, schemas and validation errors, each once a bug.

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/messages"
)

type fixPointerSibling struct {
	A *int `json:"a"`
	B int  `json:"b"`
}

// firstError reports a failure from a passing anyOf branch (a valid pointer field) instead of the real one.
func TestFieldSkipsValidPointer(t *testing.T) {
	ev := messages.MustEvent[fixPointerSibling](messages.Spec{Name: "fix_ptr", Links: []messages.Direction{messages.MasterToSlave}})
	ve := requireValidationError(t, ev.ValidatePayload([]byte(`{"a":null,"b":"x"}`)), "fix_ptr", "event")
	if ve.Field != "/b" {
		t.Errorf("Field = %q; want /b (%v)", ve.Field, ve)
	}
}

type fixMap struct {
	M map[string]int `json:"m"`
}

// an error inside a map value is reported as "Additional property" on the map.
func TestFieldOfMapValue(t *testing.T) {
	ev := messages.MustEvent[fixMap](messages.Spec{Name: "fix_map", Links: []messages.Direction{messages.MasterToSlave}})
	ve := requireValidationError(t, ev.ValidatePayload([]byte(`{"m":{"k":"x"}}`)), "fix_map", "event")
	if ve.Field != "/m/k" {
		t.Errorf("Field = %q; want /m/k (%v)", ve.Field, ve)
	}
}

type fixBase struct {
	Name string `json:"name"`
}
type fixShadow struct {
	fixBase
	Name string `json:"name"`
}

// a field shadowing an embedded one (legal for encoding/json) makes the definition fail.
func TestShadowedEmbeddedField(t *testing.T) {
	ev, err := messages.NewEvent[fixShadow](messages.Spec{Name: "fix_shadow", Links: []messages.Direction{messages.MasterToSlave}})
	if err != nil {
		t.Fatalf("a type encoding/json handles is refused: %v", err)
	}
	if _, err := ev.Encode(fixShadow{Name: "x"}); err != nil {
		t.Error(err)
	}
}

type fixEmbeddedPointer struct {
	*fixBase
	X int `json:"x"`
}

// fields of an embedded *struct are required, but encoding/json omits them when the pointer is nil.
func TestNilEmbeddedPointer(t *testing.T) {
	ev := messages.MustEvent[fixEmbeddedPointer](messages.Spec{Name: "fix_emb", Links: []messages.Direction{messages.MasterToSlave}})
	if _, err := ev.Encode(fixEmbeddedPointer{X: 1}); err != nil {
		t.Errorf("Encode of a nil embedded pointer: %v", err)
	}
}

type fixPointerEnum struct {
	Level *string `json:"level" schema:"enum=info|warn"`
}

// an enum tag on a pointer field refuses null, so a nil pointer cannot be sent.
func TestPointerEnumAllowsNull(t *testing.T) {
	ev := messages.MustEvent[fixPointerEnum](messages.Spec{Name: "fix_penum", Links: []messages.Direction{messages.MasterToSlave}})
	if _, err := ev.Encode(fixPointerEnum{}); err != nil {
		t.Errorf("Encode of a nil pointer with an enum: %v", err)
	}
}

type fixIntEnum struct {
	N int `json:"n" schema:"enum=1|2"`
}

// enum values are always strings, so an enum tag on a number field refuses every value.
func TestIntegerEnum(t *testing.T) {
	ev, err := messages.NewEvent[fixIntEnum](messages.Spec{Name: "fix_ienum", Links: []messages.Direction{messages.MasterToSlave}})
	if err != nil {
		return // refusing it at definition is a fine answer too
	}
	if _, err := ev.Encode(fixIntEnum{N: 1}); err != nil {
		t.Errorf("enum=1|2 on an int refuses 1: %v", err)
	}
}

type fixNumber struct {
	N json.Number `json:"n"`
}

// json.Number gets a string schema but encodes as a number.
func TestJSONNumberField(t *testing.T) {
	ev, err := messages.NewEvent[fixNumber](messages.Spec{Name: "fix_num", Links: []messages.Direction{messages.MasterToSlave}})
	if err != nil {
		return // refusing it is fine
	}
	if _, err := ev.Encode(fixNumber{N: "12"}); err != nil {
		t.Errorf("Encode of a json.Number: %v", err)
	}
}

type fixText struct {
	Addr netip.Addr `json:"addr"`
}

// a TextMarshaler struct (netip.Addr) gets an object schema but encodes as a string.
func TestTextMarshalerField(t *testing.T) {
	ev, err := messages.NewEvent[fixText](messages.Spec{Name: "fix_text", Links: []messages.Direction{messages.MasterToSlave}})
	if err != nil {
		return // refusing it, as for MarshalJSON, is fine
	}
	if _, err := ev.Encode(fixText{Addr: netip.MustParseAddr("10.0.0.1")}); err != nil {
		t.Errorf("Encode of a TextMarshaler: %v", err)
	}
}

type fixOptionalTarget struct {
	ID int64 `json:"instance_id,omitempty"`
}

// with instance_id tagged omitempty, a message forwarded to an instance validates without it.
func TestForwardedInstanceIDRequired(t *testing.T) {
	r, err := messages.NewRequest[fixOptionalTarget, messages.Empty](messages.Spec{
		Name: "fix_fwd", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance,
	})
	if err != nil {
		return // refusing omitempty on instance_id is fine
	}
	if err := r.ValidatePayload([]byte(`{}`)); err == nil {
		t.Error("a request forwarded to an instance validates without instance_id")
	}
}

// a nil *Event (or *Request) in a plugin panics in NewCatalog instead of being reported.
func TestNilEventInPlugin(t *testing.T) {
	var late *messages.Event[messages.Empty]
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("NewCatalog panicked: %v", r)
		}
	}()
	_, err := messages.NewCatalog(messages.Plugin{Name: "late", Messages: []messages.Message{late}})
	requireDefinitionError(t, err, "late", "nil")
}

// a schema with an unresolvable $ref is accepted, and then validates anything.
func TestUnresolvedRefRefused(t *testing.T) {
	for _, schema := range []string{
		`{"$ref":"http://example.com/chat.json"}`,
		`{"type":"object","properties":{"a":{"$ref":"other.json"}}}`,
		`{"$ref":"#/definitions/missing"}`,
	} {
		ev, err := messages.NewEvent[any](messages.Spec{Name: "fix_ref", Links: []messages.Direction{messages.MasterToSlave}, Schema: schema})
		if err == nil {
			t.Errorf("schema %s with an unresolvable $ref was accepted; %q validates: %v", schema, `{"a":1}`, ev.ValidatePayload([]byte(`{"a":1}`)))
		}
	}
}

type fixTarget struct {
	ID int64 `json:"instance_id"`
}

// the hand-written constraints of instance_id are dropped for messages forwarded to an instance.
func TestHandWrittenInstanceIDKeepsConstraints(t *testing.T) {
	r := messages.MustRequest[fixTarget, messages.Empty](messages.Spec{
		Name: "fix_hand", Links: []messages.Direction{messages.SlaveToInstance}, ForwardTo: messages.Instance,
		Schema: `{"type":"object","properties":{"instance_id":{"type":"integer","minimum":1}},"required":["instance_id"]}`,
	})
	if err := r.ValidatePayload([]byte(`{"instance_id":0}`)); err == nil {
		t.Error("the hand-written minimum on instance_id was dropped")
	}
}

type fixTime struct {
	At time.Time `json:"at"`
}

// format date-time is not asserted, so a bad time.Time passes validation and fails decoding with no Field.
func TestDateTimeChecked(t *testing.T) {
	ev := messages.MustEvent[fixTime](messages.Spec{Name: "fix_time", Links: []messages.Direction{messages.MasterToSlave}})
	if err := ev.ValidatePayload([]byte(`{"at":"yesterday"}`)); err == nil {
		t.Error(`ValidatePayload accepted "yesterday" as a time.Time`)
	}
	_, err := ev.Decode([]byte(`{"at":"yesterday"}`))
	ve := requireValidationError(t, err, "fix_time", "event")
	if ve.Field != "/at" {
		t.Errorf("Field = %q; want /at", ve.Field)
	}
}

// An integer written with a fraction passes JSON Schema (1.0 is an
// integer there) but encoding/json will not put it in an int: decoding
// fails, as documented, with an error that names the field.
func TestIntegerWithFraction(t *testing.T) {
	if err := messages.StartInstance.ValidatePayload([]byte(`{"instance_id":1.0}`)); err != nil {
		t.Fatalf("JSON Schema counts 1.0 as an integer, but validation refused it: %v", err)
	}
	_, err := messages.StartInstance.DecodeRequest([]byte(`{"instance_id":1.0}`))
	ve := requireValidationError(t, err, "start_instance", "request")
	if ve.Field != "/instance_id" {
		t.Errorf("Field = %q; want /instance_id", ve.Field)
	}
}

type fixNarrow struct {
	V int8 `json:"v"`
}
type fixNarrowList struct {
	Items []fixNarrow `json:"items"`
}

// A value the schema allows but the Go type cannot hold is reported at its
// place in the document, list index included.
func TestDecodeFieldHasIndex(t *testing.T) {
	ev := messages.MustEvent[fixNarrowList](messages.Spec{Name: "fix_idx", Links: []messages.Direction{messages.MasterToSlave},
		Schema: `{"type":"object","properties":{"items":{"type":"array"}}}`})
	_, err := ev.Decode([]byte(`{"items":[{"v":1},{"v":300}]}`))
	ve := requireValidationError(t, err, "fix_idx", "event")
	if ve.Field != "/items/1/v" {
		t.Errorf("Field = %q; want /items/1/v", ve.Field)
	}
}
