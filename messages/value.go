package messages

import (
	"reflect"

	"github.com/linkfabric/linkfabric/messages/internal/check"
)

// PayloadValueOK reports whether v, a request's or event's payload as a Go
// value, matches the payload schema and may travel as that value between
// two links in one process: v is of the Go type the message was defined
// with, of a kind that has no shared memory, and the check is exact.
// False means: send it as JSON, whose check decides (and explains a
// failure).
func (d *Definition) PayloadValueOK(v any) bool {
	return d.payloadValue != nil && reflect.TypeOf(v) == d.payloadType && d.payloadValue.Check(reflect.ValueOf(v)) == check.Valid
}

// ResponseValueOK is PayloadValueOK for a request's response.
func (d *Definition) ResponseValueOK(v any) bool {
	return d.responseValue != nil && reflect.TypeOf(v) == d.responseType && d.responseValue.Check(reflect.ValueOf(v)) == check.Valid
}

// MarshalPayload returns the wire form of v, a request's or event's
// payload as a Go value, checked against the schema.
func (d *Definition) MarshalPayload(v any) ([]byte, error) {
	return encode(d, d.payload, d.kind.String(), v)
}

// MarshalResponse returns the wire form of v, a request's response as a
// Go value, checked against the schema.
func (d *Definition) MarshalResponse(v any) ([]byte, error) {
	if d.response == nil {
		return nil, &ValidationError{Message: d.name, Part: "response", Reason: "an event has no response"}
	}
	return encode(d, d.response, "response", v)
}

// compileValues prepares the checks of the Go types a message was defined
// with; a type that cannot travel as a value gets none.
func (d *Definition) compileValues(payloadType, responseType reflect.Type) {
	d.payloadType, d.responseType = payloadType, responseType
	if payloadType != nil && payloadType.Kind() == reflect.Struct && d.payload.fast != nil {
		d.payloadValue = check.CompileValue(d.payload.fast, payloadType)
	}
	if responseType != nil && responseType.Kind() == reflect.Struct && d.response != nil && d.response.fast != nil {
		d.responseValue = check.CompileValue(d.response.fast, responseType)
	}
}
