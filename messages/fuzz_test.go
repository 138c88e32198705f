package messages_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

// FuzzValidatePayload feeds arbitrary bytes to the validators and decoders
// of a few core messages. It must never panic; a payload that passes
// validation is JSON and decodes to its Go type (unless it holds a number
// the schema accepts as an integer but an int64 cannot hold, which decoding
// reports as a *ValidationError), and re-encoding the decoded value passes
// validation again; a payload that fails is a *ValidationError.
func FuzzValidatePayload(f *testing.F) {
	seeds := []string{
		// Good.
		`{"instance_id":1}`,
		`{"instance_id":9223372036854775807}`,
		` {"instance_id" : 2}` + "\n",
		`{"instance_id":1,"time":1600000000000,"level":"info","message":"hello"}`,
		`{"instance_id":1,"time":-5,"level":"error","message":"\u00e9\ud83d\ude00\n"}`,
		`{"slave_id":1,"name":"s","version":"1.0","instances":[{"instance_id":2,"name":"i","status":"running"}]}`,
		`{"slave_id":1,"name":"s","version":"","instances":null}`,
		`{"slave_id":1,"name":"s","version":"","instances":[]}`,
		// Bad.
		``,
		`null`,
		`[]`,
		`"x"`,
		`{`,
		`{}`,
		`{"instance_id":0}`,
		`{"instance_id":"1"}`,
		`{"instance_id":1,"extra":true}`,
		`{"INSTANCE_ID":1}`,
		`{"instance_id":1,"instance_id":2}`,
		`{"instance_id":1}{}`,
		`{"instance_id":1,"time":0,"level":"debug","message":""}`,
		`{"slave_id":1,"name":"","version":"1","instances":[{"instance_id":2}]}`,
		"{\"instance_id\":1,\"time\":0,\"level\":\"info\",\"message\":\"\xff\"}",
		`{"instance_id":1,"time":0,"level":"info","message":"\ud800"}`,
		"\xef\xbb\xbf{\"instance_id\":1}",
		strings.Repeat("[", 10001), // past both parsers' nesting limit
		`{"instance_id":1,"x":` + strings.Repeat(`[`, 1000) + strings.Repeat(`]`, 1000) + `}`,
		// Integers the schema allows that an int64 cannot hold, or that
		// encoding/json will not put in an int64.
		`{"instance_id":1.0}`,
		`{"instance_id":1e2}`,
		`{"instance_id":1e300}`,
		`{"instance_id":9223372036854775808}`,
		`{"instance_id":1,"time":-0,"level":"info","message":""}`,
		`{"instance_id":1,"time":-9223372036854775809,"level":"info","message":""}`,
		`{"slave_id":1,"name":"s","version":"1","instances":[{"instance_id":2.0,"name":"i"}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPayload(t, messages.StartInstance.Def(), "request", data,
			messages.StartInstance.DecodeRequest, messages.StartInstance.EncodeRequest)
		checkPayload(t, messages.InstanceOutput.Def(), "event", data,
			messages.InstanceOutput.Decode, messages.InstanceOutput.Encode)
		checkPayload(t, messages.RegisterSlave.Def(), "request", data,
			messages.RegisterSlave.DecodeRequest, messages.RegisterSlave.EncodeRequest)
	})
}

func checkPayload[T any](t *testing.T, d *messages.Definition, part string, data []byte,
	decode func([]byte) (T, error), encode func(T) ([]byte, error),
) {
	t.Helper()
	verr := d.ValidatePayload(data)
	v, derr := decode(data)
	if verr != nil {
		checkFuzzError(t, verr, d.Name(), part, "ValidatePayload", data)
		if derr == nil {
			t.Fatalf("%s: Decode accepted %q, which ValidatePayload refused: %v", d.Name(), data, verr)
		}
		checkFuzzError(t, derr, d.Name(), part, "Decode", data)
		return
	}
	if !json.Valid(data) {
		t.Fatalf("%s: ValidatePayload accepted %q, which is not JSON", d.Name(), data)
	}
	if derr != nil {
		checkFuzzError(t, derr, d.Name(), part, "Decode", data)
		var ve *messages.ValidationError
		errors.As(derr, &ve)
		if !hasNumberBeyondInt64(t, data) || ve.Field == "" {
			t.Fatalf("%s: ValidatePayload accepted %q but Decode failed: %v", d.Name(), data, derr)
		}
		return
	}
	enc, err := encode(v)
	if err != nil {
		t.Fatalf("%s: re-encoding %+v decoded from %q failed: %v", d.Name(), v, data, err)
	}
	if err := d.ValidatePayload(enc); err != nil {
		t.Fatalf("%s: re-encoded %q fails validation: %v", d.Name(), enc, err)
	}
}

func checkFuzzError(t *testing.T, err error, name, part, what string, data []byte) {
	t.Helper()
	var ve *messages.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%s: %s(%q) returned %T %v; want a *messages.ValidationError", name, what, data, err, err)
	}
	if ve.Message != name || ve.Part != part || ve.Reason == "" || !errors.Is(err, messages.ErrInvalidPayload) {
		t.Fatalf("%s: %s(%q) returned %#v", name, what, data, ve)
	}
}

// hasNumberBeyondInt64 reports whether a JSON document holds a number that
// is not written as a plain integer within int64's range.
func hasNumberBeyondInt64(t *testing.T, data []byte) bool {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("a validated payload %q does not decode as JSON: %v", data, err)
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case json.Number:
			_, err := strconv.ParseInt(string(v), 10, 64)
			return err != nil
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case map[string]any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}
