package messages_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

type chatLine struct {
	User string `json:"user"`
	Text string `json:"text"`
}

type forwardedChat struct {
	InstanceID int64  `json:"instance_id"`
	Text       string `json:"text"`
}

func TestHandWrittenSchemaReplacesGenerated(t *testing.T) {
	const schema = `{
		"type": "object",
		"properties": {
			"user": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,16}$"},
			"text": {"type": "string", "maxLength": 5}
		},
		"required": ["text"]
	}`
	ev, err := messages.NewEvent[chatLine](messages.Spec{Name: "global_chat:chat", Links: []messages.Direction{messages.MasterToSlave}, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := canon(t, ev.PayloadSchema().JSON()), canon(t, []byte(schema)); got != want {
		t.Errorf("PayloadSchema = %s; want the hand-written one %s", got, want)
	}
	if strings.ContainsAny(string(ev.PayloadSchema().JSON()), "\n\t") {
		t.Errorf("PayloadSchema().JSON() is not compact: %s", ev.PayloadSchema().JSON())
	}
	tests := []struct {
		name  string
		data  string
		ok    bool
		field string
	}{
		// The generated schema would require "user" and refuse extras;
		// the hand-written one does not.
		{name: "optional user", data: `{"text":"hi"}`, ok: true},
		{name: "extra field allowed", data: `{"text":"hi","colour":"red"}`, ok: true},
		{name: "hand-written pattern", data: `{"user":"a b","text":"hi"}`, field: "/user"},
		{name: "hand-written maxLength", data: `{"user":"ann","text":"hello!"}`, field: "/text"},
		{name: "hand-written required", data: `{"user":"ann"}`, field: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ev.Decode([]byte(tc.data))
			if tc.ok {
				if err != nil {
					t.Fatalf("Decode(%s): %v", tc.data, err)
				}
				var want chatLine
				_ = json.Unmarshal([]byte(tc.data), &want)
				if got != want {
					t.Errorf("Decode = %+v; want %+v", got, want)
				}
				return
			}
			ve := requireValidationError(t, err, "global_chat:chat", "event")
			if ve.Field != tc.field {
				t.Errorf("Field = %q; want %q (%v)", ve.Field, tc.field, ve)
			}
		})
	}
}

func TestHandWrittenResponseSchema(t *testing.T) {
	r, err := messages.NewRequest[messages.Empty, map[string]any](messages.Spec{
		Name: "statistics_exporter:get_metrics", Links: []messages.Direction{messages.MasterToSlave, messages.SlaveToInstance},
		ResponseSchema: `{"type":"object","properties":{"results":{"type":"array","items":{"type":"number"}}},"required":["results"]}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := canon(t, r.PayloadSchema().JSON()); got != `{"additionalProperties":false,"type":"object"}` {
		t.Errorf("request schema = %s; want the generated one for Empty", got)
	}
	if _, err := r.DecodeResponse([]byte(`{"results":[1,2.5]}`)); err != nil {
		t.Errorf("DecodeResponse: %v", err)
	}
	ve := requireValidationError(t, r.ValidateResponse([]byte(`{"results":["x"]}`)), "statistics_exporter:get_metrics", "response")
	if ve.Field != "/results/0" {
		t.Errorf("Field = %q; want /results/0", ve.Field)
	}
	if _, err := r.EncodeResponse(map[string]any{}); err == nil {
		t.Error("EncodeResponse of a value missing results succeeded")
	}
}

// A message forwarded to an instance always carries an integer instance_id,
// even when its hand-written schema forgot it.
func TestHandWrittenSchemaGetsInstanceID(t *testing.T) {
	tests := []struct {
		name   string
		schema string
	}{
		{name: "no properties", schema: `{"type":"object"}`},
		{name: "other properties", schema: `{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`},
		{name: "instance_id not required", schema: `{"type":"object","properties":{"instance_id":{"type":"integer"},"text":{"type":"string"}}}`},
		{name: "instance_id already required", schema: `{"type":"object","properties":{"instance_id":{"type":"integer"}},"required":["instance_id"]}`},
		{name: "instance_id of the wrong type", schema: `{"type":"object","properties":{"instance_id":{"type":"string"}}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := messages.NewRequest[forwardedChat, messages.Empty](messages.Spec{
				Name: "hand_fwd", Links: fwdInstanceLinks, ForwardTo: messages.Instance, Permission: "core.chat", Schema: tc.schema,
			})
			if err != nil {
				t.Fatal(err)
			}
			var s struct {
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
			}
			if err := json.Unmarshal(r.PayloadSchema().JSON(), &s); err != nil {
				t.Fatal(err)
			}
			if n := len(slices.DeleteFunc(slices.Clone(s.Required), func(r string) bool { return r != "instance_id" })); n != 1 {
				t.Errorf("required lists instance_id %d times: %s", n, r.PayloadSchema().JSON())
			}

			ve := requireValidationError(t, r.ValidatePayload([]byte(`{"text":"hi"}`)), "hand_fwd", "request")
			if !strings.Contains(ve.Field+" "+ve.Reason, "instance_id") {
				t.Errorf("error %v does not mention instance_id", ve)
			}
			ve = requireValidationError(t, r.ValidatePayload([]byte(`{"instance_id":"4","text":"hi"}`)), "hand_fwd", "request")
			if ve.Field != "/instance_id" {
				t.Errorf("Field = %q; want /instance_id", ve.Field)
			}
			requireValidationError(t, r.ValidatePayload([]byte(`{"instance_id":4.5,"text":"hi"}`)), "hand_fwd", "request")

			got, err := r.DecodeRequest([]byte(`{"instance_id":4,"text":"hi"}`))
			if err != nil {
				t.Fatalf("DecodeRequest with instance_id: %v", err)
			}
			if got.InstanceID != 4 || got.Text != "hi" {
				t.Errorf("DecodeRequest = %+v", got)
			}
		})
	}
}

// The generated schema of a message forwarded to an instance requires the
// integer instance_id.
func TestGeneratedSchemaForwardedRequiresInstanceID(t *testing.T) {
	for _, m := range []messages.Message{messages.StartInstance, messages.StopInstance, messages.SendCommand} {
		d := m.Def()
		t.Run(d.Name(), func(t *testing.T) {
			if got := property(t, d.PayloadSchema().JSON(), "instance_id"); !strings.Contains(got, `"type":"integer"`) {
				t.Errorf("instance_id schema = %s", got)
			}
			ve := requireValidationError(t, d.ValidatePayload([]byte(`{"command":"x"}`)), d.Name(), "request")
			if !strings.Contains(ve.Field+" "+ve.Reason, "instance_id") {
				t.Errorf("error %v does not mention instance_id", ve)
			}
		})
	}
}
