package messages_test

import (
	"math"
	"reflect"
	"testing"

	"github.com/linkfabric/linkfabric/internal/codec"
	"github.com/linkfabric/linkfabric/messages"
)

func TestRequestRoundTrip(t *testing.T) {
	t.Run("start_instance", func(t *testing.T) {
		data, err := messages.StartInstance.EncodeRequest(messages.InstanceRef{InstanceID: 7})
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != `{"instance_id":7}` {
			t.Errorf("EncodeRequest = %s", data)
		}
		req, err := messages.StartInstance.DecodeRequest(data)
		if err != nil || req.InstanceID != 7 {
			t.Errorf("DecodeRequest = %+v, %v", req, err)
		}
		resp, err := messages.StartInstance.EncodeResponse(messages.Empty{})
		if err != nil || string(resp) != `{}` {
			t.Errorf("EncodeResponse = %s, %v", resp, err)
		}
		if _, err := messages.StartInstance.DecodeResponse(resp); err != nil {
			t.Errorf("DecodeResponse: %v", err)
		}
	})
	t.Run("send_command", func(t *testing.T) {
		in := messages.Command{InstanceID: 3, Command: `/c game.print("hi & <bye>")`}
		data, err := messages.SendCommand.EncodeRequest(in)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := messages.SendCommand.DecodeRequest(data); err != nil || got != in {
			t.Errorf("DecodeRequest = %+v, %v; want %+v", got, err, in)
		}
		out := messages.CommandResult{Output: "line 1\nline 2\n"}
		data, err = messages.SendCommand.EncodeResponse(out)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := messages.SendCommand.DecodeResponse(data); err != nil || got != out {
			t.Errorf("DecodeResponse = %+v, %v; want %+v", got, err, out)
		}
	})
	t.Run("register_slave", func(t *testing.T) {
		in := messages.SlaveRegistration{ID: 1, Name: "slave one", Version: "2.0.0", Instances: []messages.HostedInstance{
			{ID: 10, Name: "alpha", Status: messages.StatusRunning},
			{ID: 11, Name: "beta"},
		}}
		data, err := messages.RegisterSlave.EncodeRequest(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := messages.RegisterSlave.DecodeRequest(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("DecodeRequest = %+v; want %+v", got, in)
		}
	})
	t.Run("list_instances response", func(t *testing.T) {
		out := messages.InstanceList{Instances: []messages.InstanceInfo{
			{ID: 1, Name: "a", Status: messages.StatusUnassigned},
			{ID: 2, Name: "b", SlaveID: 4, Status: messages.StatusStopping},
		}}
		data, err := messages.ListInstances.EncodeResponse(out)
		if err != nil {
			t.Fatal(err)
		}
		got, err := messages.ListInstances.DecodeResponse(data)
		if err != nil || !reflect.DeepEqual(got, out) {
			t.Errorf("DecodeResponse = %+v, %v; want %+v", got, err, out)
		}
	})
	t.Run("nil list", func(t *testing.T) {
		data, err := messages.ListSlaves.EncodeResponse(messages.SlaveList{})
		if err != nil {
			t.Fatalf("a nil list does not encode: %v", err)
		}
		if _, err := messages.ListSlaves.DecodeResponse(data); err != nil {
			t.Errorf("DecodeResponse(%s): %v", data, err)
		}
	})
}

func TestEventRoundTrip(t *testing.T) {
	t.Run("instance_output", func(t *testing.T) {
		in := messages.OutputLine{InstanceID: 5, Time: 1600000000123, Level: "warn", Message: "low on iron"}
		data, err := messages.InstanceOutput.Encode(in)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := messages.InstanceOutput.Decode(data); err != nil || got != in {
			t.Errorf("Decode = %+v, %v; want %+v", got, err, in)
		}
	})
	t.Run("banlist_update without reason", func(t *testing.T) {
		in := messages.Ban{Name: "griefer", Banned: true}
		data, err := messages.BanlistUpdate.Encode(in)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != `{"name":"griefer","banned":true}` {
			t.Errorf("Encode = %s; the empty reason should be left out", data)
		}
		if got, err := messages.BanlistUpdate.Decode(data); err != nil || got != in {
			t.Errorf("Decode = %+v, %v; want %+v", got, err, in)
		}
	})
	t.Run("master_connection_event", func(t *testing.T) {
		for _, ev := range []string{"connect", "drop", "resume", "close"} {
			data, err := messages.MasterConnectionEvent.Encode(messages.ConnectionEvent{Event: ev})
			if err != nil {
				t.Fatalf("Encode(%q): %v", ev, err)
			}
			if got, err := messages.MasterConnectionEvent.Decode(data); err != nil || got.Event != ev {
				t.Errorf("Decode = %+v, %v", got, err)
			}
		}
	})
}

// A sender's bad value fails before anything is sent, naming the field.
func TestEncodeInvalidValue(t *testing.T) {
	tests := []struct {
		name    string
		encode  func() ([]byte, error)
		message string
		part    string
		field   string
	}{
		{name: "request below minimum", message: "start_instance", part: "request", field: "/instance_id",
			encode: func() ([]byte, error) { return messages.StartInstance.EncodeRequest(messages.InstanceRef{}) }},
		{name: "request empty string", message: "send_command", part: "request", field: "/command",
			encode: func() ([]byte, error) {
				return messages.SendCommand.EncodeRequest(messages.Command{InstanceID: 1})
			}},
		{name: "request nested", message: "register_slave", part: "request", field: "/instances/1/status",
			encode: func() ([]byte, error) {
				return messages.RegisterSlave.EncodeRequest(messages.SlaveRegistration{ID: 1, Name: "s", Instances: []messages.HostedInstance{
					{ID: 1, Name: "a"}, {ID: 2, Name: "b", Status: "on fire"},
				}})
			}},
		{name: "response enum", message: "list_instances", part: "response", field: "/instances/0/status",
			encode: func() ([]byte, error) {
				return messages.ListInstances.EncodeResponse(messages.InstanceList{Instances: []messages.InstanceInfo{{ID: 1, Name: "a"}}})
			}},
		{name: "event enum", message: "instance_output", part: "event", field: "/level",
			encode: func() ([]byte, error) {
				return messages.InstanceOutput.Encode(messages.OutputLine{InstanceID: 1, Message: "m"})
			}},
		{name: "event too long", message: "banlist_update", part: "event", field: "/reason",
			encode: func() ([]byte, error) {
				return messages.BanlistUpdate.Encode(messages.Ban{Name: "n", Reason: string(make([]byte, 1025))})
			}},
		{name: "value encoding/json cannot write", message: "reading", part: "event", field: "",
			encode: func() ([]byte, error) {
				ev := messages.MustEvent[struct {
					V float64 `json:"v"`
				}](messages.Spec{Name: "reading", Links: []messages.Direction{messages.MasterToSlave}})
				return ev.Encode(struct {
					V float64 `json:"v"`
				}{V: math.NaN()})
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := tc.encode()
			ve := requireValidationError(t, err, tc.message, tc.part)
			if ve.Field != tc.field {
				t.Errorf("Field = %q; want %q (%v)", ve.Field, tc.field, err)
			}
			if data != nil {
				t.Errorf("returned %s along with the error", data)
			}
		})
	}
}

type narrow struct {
	V int8 `json:"v"`
}

type narrowList struct {
	Items []narrow `json:"items"`
}

// A value the schema allows but the Go type cannot hold is reported like any
// other invalid payload, not as a raw encoding/json error.
func TestDecodeOutOfRange(t *testing.T) {
	loose := messages.MustEvent[narrow](messages.Spec{
		Name: "loose", Links: []messages.Direction{messages.MasterToSlave},
		Schema: `{"type":"object","properties":{"v":{"type":"integer"}},"required":["v"]}`,
	})
	looseReq := messages.MustRequest[narrow, narrow](messages.Spec{
		Name: "loose_req", Links: []messages.Direction{messages.MasterToSlave},
		Schema:         `{"type":"object","properties":{"v":{"type":"integer"}}}`,
		ResponseSchema: `{"type":"object","properties":{"v":{"type":"integer"}}}`,
	})
	list := messages.MustEvent[narrowList](messages.Spec{
		Name: "loose_list", Links: []messages.Direction{messages.MasterToSlave},
		Schema: `{"type":"object","properties":{"items":{"type":"array","items":{"type":"object"}}}}`,
	})
	tests := []struct {
		name    string
		decode  func([]byte) error
		data    string
		message string
		part    string
		field   string
	}{
		{name: "int8 given 300", data: `{"v":300}`, message: "loose", part: "event", field: "/v",
			decode: func(b []byte) error { _, err := loose.Decode(b); return err }},
		{name: "int8 given -129", data: `{"v":-129}`, message: "loose", part: "event", field: "/v",
			decode: func(b []byte) error { _, err := loose.Decode(b); return err }},
		{name: "request int8 given 128", data: `{"v":128}`, message: "loose_req", part: "request", field: "/v",
			decode: func(b []byte) error { _, err := looseReq.DecodeRequest(b); return err }},
		{name: "response int8 given 1000", data: `{"v":1000}`, message: "loose_req", part: "response", field: "/v",
			decode: func(b []byte) error { _, err := looseReq.DecodeResponse(b); return err }},
		{name: "int64 overflow", data: `{"instance_id":9223372036854775808}`, message: "start_instance", part: "request", field: "/instance_id",
			decode: func(b []byte) error { _, err := messages.StartInstance.DecodeRequest(b); return err }},
		{name: "int64 overflow written as exponent", data: `{"instance_id":1e300}`, message: "start_instance", part: "request", field: "/instance_id",
			decode: func(b []byte) error { _, err := messages.StartInstance.DecodeRequest(b); return err }},
		{name: "wrong type let through by a loose schema", data: `{"items":[{"v":"x"}]}`, message: "loose_list", part: "event",
			decode: func(b []byte) error { _, err := list.Decode(b); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ve := requireValidationError(t, tc.decode([]byte(tc.data)), tc.message, tc.part)
			if tc.field != "" && ve.Field != tc.field {
				t.Errorf("Field = %q; want %q (%v)", ve.Field, tc.field, ve)
			}
		})
	}
	if v, err := loose.Decode([]byte(`{"v":-128}`)); err != nil || v.V != -128 {
		t.Errorf("Decode of an in-range value = %+v, %v", v, err)
	}
}

func TestDecodeInvalidReturnsZero(t *testing.T) {
	req, err := messages.SendCommand.DecodeRequest([]byte(`{"instance_id":3,"command":""}`))
	requireValidationError(t, err, "send_command", "request")
	if req != (messages.Command{}) {
		t.Errorf("DecodeRequest filled %+v from a refused payload", req)
	}
}

func TestUnmarshal(t *testing.T) {
	var v messages.InstanceRef
	if err := codec.Unmarshal(messages.StartInstance.Definition, "request", []byte(`{"instance_id":42}`), &v); err != nil || v.InstanceID != 42 {
		t.Errorf("Unmarshal = %+v, %v", v, err)
	}
	err := codec.Unmarshal(messages.StartInstance.Definition, "request", []byte(`{"instance_id":"42"}`), &v)
	ve := requireValidationError(t, err, "start_instance", "request")
	if ve.Field != "/instance_id" {
		t.Errorf("Field = %q; want /instance_id", ve.Field)
	}
	err = codec.Unmarshal(messages.InstanceOutput.Definition, "event", []byte(`{`), &v)
	requireValidationError(t, err, "instance_output", "event")
}

// Encode writes what encoding/json writes, except that it leaves <, > and
// & alone (payloads are not HTML), so peers in other languages and people
// reading the wire see ordinary JSON.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	in := messages.PlayerActivity{InstanceID: 9, Type: "join", Name: "<Ann & Bob>"}
	got, err := messages.PlayerEvent.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"instance_id":9,"type":"join","name":"<Ann & Bob>"}`; string(got) != want {
		t.Errorf("Encode = %s; want %s", got, want)
	}
}
