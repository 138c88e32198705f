package messages_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

func TestValidatePayloadErrors(t *testing.T) {
	tests := []struct {
		name    string
		message messages.Message
		data    string
		part    string
		field   string // the Field the error must report
		mention string // what Field or Reason must mention ("" for nothing)
	}{
		{name: "wrong type", message: messages.StartInstance, data: `{"instance_id":"7"}`,
			part: "request", field: "/instance_id"},
		{name: "fraction for integer", message: messages.StartInstance, data: `{"instance_id":7.5}`,
			part: "request", field: "/instance_id"},
		{name: "below minimum", message: messages.StartInstance, data: `{"instance_id":0}`,
			part: "request", field: "/instance_id"},
		{name: "null for integer", message: messages.StartInstance, data: `{"instance_id":null}`,
			part: "request", field: "/instance_id"},
		{name: "missing required field", message: messages.StartInstance, data: `{}`,
			part: "request", field: "", mention: "instance_id"},
		{name: "unexpected extra field", message: messages.StartInstance, data: `{"instance_id":7,"force":true}`,
			part: "request", field: "", mention: "force"},
		{name: "field name in the wrong case", message: messages.StartInstance, data: `{"Instance_ID":7}`,
			part: "request", mention: "instance_id"},
		{name: "extra field on empty payload", message: messages.Ping, data: `{"hello":1}`,
			part: "request", field: "", mention: "hello"},
		{name: "enum violation", message: messages.InstanceOutput, data: `{"instance_id":1,"time":0,"level":"debug","message":"x"}`,
			part: "event", field: "/level"},
		{name: "enum violation in connection event", message: messages.MasterConnectionEvent, data: `{"event":"reconnect"}`,
			part: "event", field: "/event"},
		{name: "too long", message: messages.PlayerEvent, data: `{"instance_id":1,"type":"join","name":"` + strings.Repeat("n", 65) + `"}`,
			part: "event", field: "/name"},
		{name: "nested field", message: messages.RegisterSlave, data: `{"slave_id":1,"name":"s","version":"1","instances":[{"instance_id":2,"name":""}]}`,
			part: "request", field: "/instances/0/name"},
		{name: "nested second element", message: messages.RegisterSlave, data: `{"slave_id":1,"name":"s","version":"1","instances":[{"instance_id":2,"name":"a"},{"instance_id":"3","name":"b"}]}`,
			part: "request", field: "/instances/1/instance_id"},
		{name: "nested missing field", message: messages.RegisterSlave, data: `{"slave_id":1,"name":"s","version":"1","instances":[{"instance_id":2}]}`,
			part: "request", field: "/instances/0", mention: "name"},
		{name: "nested extra field", message: messages.RegisterSlave, data: `{"slave_id":1,"name":"s","version":"1","instances":[{"instance_id":2,"name":"a","host":"h"}]}`,
			part: "request", field: "/instances/0", mention: "host"},
		{name: "nested enum", message: messages.UpdateInstances, data: `{"instances":[{"instance_id":2,"name":"a","status":"exploded"}]}`,
			part: "event", field: "/instances/0/status"},
		{name: "missing field wins over a wrong one", message: messages.SendCommand, data: `{"instance_id":"x"}`,
			part: "request", field: "", mention: "command"},
		{name: "malformed JSON", message: messages.StartInstance, data: `{"instance_id":`,
			part: "request", field: ""},
		{name: "trailing garbage", message: messages.StartInstance, data: `{"instance_id":7} x`,
			part: "request", field: ""},
		{name: "two documents", message: messages.StartInstance, data: `{"instance_id":7}{"instance_id":8}`,
			part: "request", field: ""},
		{name: "duplicate key", message: messages.StartInstance, data: `{"instance_id":7,"instance_id":8}`,
			part: "request", field: ""},
		{name: "invalid UTF-8", message: messages.PlayerEvent, data: "{\"instance_id\":1,\"type\":\"join\",\"name\":\"\xff\"}",
			part: "event", field: ""},
		{name: "empty input", message: messages.StartInstance, data: ``,
			part: "request", field: ""},
		{name: "only spaces", message: messages.Ping, data: `   `,
			part: "request", field: ""},
		{name: "array instead of object", message: messages.StartInstance, data: `[{"instance_id":7}]`,
			part: "request", field: ""},
		{name: "null instead of object", message: messages.StartInstance, data: `null`,
			part: "request", field: ""},
		{name: "string instead of object", message: messages.InstanceOutput, data: `"hello"`,
			part: "event", field: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.message.Def()
			err := d.ValidatePayload([]byte(tc.data))
			ve := requireValidationError(t, err, d.Name(), tc.part)
			if ve.Field != tc.field {
				t.Errorf("Field = %q; want %q (%v)", ve.Field, tc.field, err)
			}
			if !strings.Contains(ve.Field+" "+ve.Reason, tc.mention) {
				t.Errorf("error %v does not mention %q", err, tc.mention)
			}
			msg := err.Error()
			wantField := tc.field
			if wantField == "" {
				wantField = "payload"
			}
			if !strings.HasPrefix(msg, fmt.Sprintf("invalid %s %s: %s: ", d.Name(), tc.part, wantField)) {
				t.Errorf("Error() = %q; want it to begin with the message, the part and the field", msg)
			}
		})
	}
}

func TestValidateResponseErrors(t *testing.T) {
	tests := []struct {
		name    string
		message messages.Message
		data    string
		field   string
		mention string
	}{
		{name: "response wrong type", message: messages.ListSlaves,
			data: `{"slaves":[{"slave_id":"1","name":"s","connected":true,"instances":0}]}`, field: "/slaves/0/slave_id"},
		{name: "response enum", message: messages.ListInstances,
			data: `{"instances":[{"instance_id":1,"name":"i","status":"gone"}]}`, field: "/instances/0/status"},
		{name: "response missing field", message: messages.SendCommand, data: `{}`, mention: "output"},
		{name: "empty response with a field", message: messages.Ping, data: `{"pong":true}`, mention: "pong"},
		{name: "response not JSON", message: messages.Ping, data: `pong`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.message.Def()
			err := d.ValidateResponse([]byte(tc.data))
			ve := requireValidationError(t, err, d.Name(), "response")
			if ve.Field != tc.field {
				t.Errorf("Field = %q; want %q (%v)", ve.Field, tc.field, err)
			}
			if !strings.Contains(ve.Field+" "+ve.Reason, tc.mention) {
				t.Errorf("error %v does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name     string
		validate func([]byte) error
		data     string
	}{
		{name: "ping request", validate: messages.Ping.ValidatePayload, data: `{}`},
		{name: "ping response", validate: messages.Ping.ValidateResponse, data: `{}`},
		{name: "spaces around", validate: messages.StartInstance.ValidatePayload, data: " \n{ \"instance_id\" : 7 }\n"},
		{name: "integer written as exponent", validate: messages.StartInstance.ValidatePayload, data: `{"instance_id":7e0}`},
		{name: "optional field omitted", validate: messages.SetPlayerBanned.ValidatePayload, data: `{"name":"griefer","banned":true}`},
		{name: "optional field present", validate: messages.BanlistUpdate.ValidatePayload, data: `{"name":"griefer","banned":true,"reason":"griefing"}`},
		{name: "null list", validate: messages.UpdateInstances.ValidatePayload, data: `{"instances":null}`},
		{name: "empty list", validate: messages.UpdateInstances.ValidatePayload, data: `{"instances":[]}`},
		{name: "list response", validate: messages.ListInstances.ValidateResponse,
			data: `{"instances":[{"instance_id":1,"name":"i","status":"unassigned"},{"instance_id":2,"name":"j","slave_id":3,"status":"running"}]}`},
		{name: "escaped string", validate: messages.SendCommand.ValidatePayload, data: `{"instance_id":1,"command":"/c game.print(\"\u00e9\\n\")"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.validate([]byte(tc.data)); err != nil {
				t.Errorf("refused %s: %v", tc.data, err)
			}
		})
	}
}

func TestValidateResponseOfEvent(t *testing.T) {
	err := messages.InstanceOutput.ValidateResponse([]byte(`{}`))
	requireValidationError(t, err, "instance_output", "response")
}

func TestValidationErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  messages.ValidationError
		want string
	}{
		{name: "field", err: messages.ValidationError{Message: "start_instance", Part: "request", Field: "/instance_id", Reason: "too small"},
			want: "invalid start_instance request: /instance_id: too small"},
		{name: "whole payload", err: messages.ValidationError{Message: "ping", Part: "response", Reason: "not JSON"},
			want: "invalid ping response: payload: not JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q; want %q", got, tc.want)
			}
			wrapped := fmt.Errorf("send: %w", &tc.err)
			if !errors.Is(wrapped, messages.ErrInvalidPayload) {
				t.Error("a wrapped *ValidationError does not match ErrInvalidPayload")
			}
			if errors.Is(wrapped, messages.ErrDefinition) {
				t.Error("a *ValidationError matches ErrDefinition")
			}
		})
	}
}

// Each validation returns its own error: filling in one message's name
// must not leak into another's.
func TestValidationErrorsAreIndependent(t *testing.T) {
	e1 := messages.StartInstance.ValidatePayload([]byte(`{}`))
	e2 := messages.StopInstance.ValidatePayload([]byte(`{}`))
	e3 := messages.StartInstance.ValidateResponse([]byte(`[]`))
	requireValidationError(t, e1, "start_instance", "request")
	requireValidationError(t, e2, "stop_instance", "request")
	requireValidationError(t, e3, "start_instance", "response")
}

// Definitions are safe for concurrent use (run with -race).
func TestConcurrentValidation(t *testing.T) {
	inputs := []struct {
		data string
		ok   bool
	}{
		{`{"instance_id":1}`, true},
		{`{"instance_id":0}`, false},
		{`{}`, false},
		{`{`, false},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				in := inputs[(g+i)%len(inputs)]
				err := messages.StartInstance.ValidatePayload([]byte(in.data))
				if (err == nil) != in.ok {
					errs <- fmt.Errorf("ValidatePayload(%s) = %v", in.data, err)
					return
				}
				if _, err := messages.RegisterSlave.DecodeRequest([]byte(`{"slave_id":1,"name":"s","version":"v","instances":[{"instance_id":2,"name":"i"}]}`)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
