package messages

import (
	"reflect"

	"github.com/linkfabric/linkfabric/internal/codec"
	"github.com/linkfabric/linkfabric/messages/internal/check"
)

// What the link package needs of a definition beyond this package's API,
// handed to it through internal/codec rather than exported.
func init() {
	codec.ValueOK = func(def codec.Definition, response bool, v any) bool {
		return def.(*Definition).valueOK(response, v)
	}
	codec.Marshal = func(def codec.Definition, response bool, v any) ([]byte, error) {
		return def.(*Definition).marshal(response, v)
	}
	codec.Unmarshal = func(def codec.Definition, part string, data []byte, v any) error {
		return unmarshal(def.(*Definition), part, data, v)
	}
}

// valueOK reports whether v, a payload (with response, a request's
// response) as a Go value, matches its schema and may travel as that
// value between two links in one process: v is of the Go type the message
// was defined with, of a kind that has no shared memory, and the check is
// exact. False means: send it as JSON, whose check decides (and explains
// a failure).
func (d *Definition) valueOK(response bool, v any) bool {
	if response {
		return d.responseValue != nil && reflect.TypeOf(v) == d.responseType && d.responseValue.Check(v) == check.Valid
	}
	return d.payloadValue != nil && reflect.TypeOf(v) == d.payloadType && d.payloadValue.Check(v) == check.Valid
}

// marshal returns the wire form of v, a payload (with response, a
// request's response) as a Go value, checked against the schema.
func (d *Definition) marshal(response bool, v any) ([]byte, error) {
	if !response {
		return encode(d, d.payload, d.kind.String(), v)
	}
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
