package messages_test

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/linkfabric/linkfabric/internal/codec"
	"github.com/linkfabric/linkfabric/messages"
)

// valueAgrees checks what a Go value passed between links relies on: a
// value the value check passes is one whose JSON form the schema passes,
// and a value the schema passes as JSON passes the value check too when
// its type can travel as a value (its strings valid UTF-8).
func valueAgrees(t *testing.T, def *messages.Definition, v any, canTravel bool) {
	t.Helper()
	ok := codec.ValueOK(def, false, v)
	data, err := codec.Marshal(def, false, v)
	switch {
	case ok && err != nil:
		t.Errorf("%s: value %+v passed as a value, but its JSON %s fails: %v", def.Name(), v, data, err)
	case !ok && err == nil && canTravel:
		t.Errorf("%s: value %+v failed as a value, but its JSON %s passes", def.Name(), v, data)
	}
}

func TestPayloadValueOK(t *testing.T) {
	long := strings.Repeat("é", 65)
	for _, tc := range []struct {
		def       *messages.Definition
		v         any
		canTravel bool
	}{
		{messages.SendCommand.Definition, messages.Command{InstanceID: 7, Command: "/help"}, true},
		{messages.SendCommand.Definition, messages.Command{InstanceID: 0, Command: "/help"}, true}, // minimum 1
		{messages.SendCommand.Definition, messages.Command{InstanceID: -3, Command: "/help"}, true},
		{messages.SendCommand.Definition, messages.Command{InstanceID: 7, Command: ""}, true}, // minLength 1
		{messages.SendCommand.Definition, messages.Command{InstanceID: 7, Command: strings.Repeat("x", 4097)}, true},
		{messages.SendCommand.Definition, messages.Command{InstanceID: 7, Command: "a\"quote\\and\ncontrol\u2028"}, true},
		{messages.SendCommand.Definition, messages.Command{InstanceID: 7, Command: "bad \xff utf-8"}, false},
		{messages.PlayerEvent.Definition, messages.PlayerActivity{InstanceID: 1, Type: "join", Name: "alice"}, true},
		{messages.PlayerEvent.Definition, messages.PlayerActivity{InstanceID: 1, Type: "jump", Name: "alice"}, true}, // enum
		{messages.PlayerEvent.Definition, messages.PlayerActivity{InstanceID: 1, Type: "leave", Name: long}, true},   // maxLength 64 code points
		{messages.PlayerEvent.Definition, messages.PlayerActivity{InstanceID: 1, Type: "leave", Name: long[:128]}, true},
		{messages.BanlistUpdate.Definition, messages.Ban{Name: "bob", Banned: true}, true}, // reason omitted
		{messages.BanlistUpdate.Definition, messages.Ban{Name: "bob", Reason: strings.Repeat("r", 1025)}, true},
		{messages.MasterConnectionEvent.Definition, messages.ConnectionEvent{Event: "drop"}, true},
		{messages.MasterConnectionEvent.Definition, messages.ConnectionEvent{}, true}, // "" is not in the enum
		{messages.InstanceOutput.Definition, messages.OutputLine{InstanceID: 3, Time: -5, Level: "warn", Message: "hi"}, true},
		{messages.Ping.Definition, messages.Empty{}, true},
		{messages.StartInstance.Definition, messages.InstanceRef{InstanceID: 1 << 62}, true},
		// Types with slices travel as JSON: never as values.
		{messages.UpdateInstances.Definition, messages.InstanceUpdate{}, false},
	} {
		valueAgrees(t, tc.def, tc.v, tc.canTravel)
	}
	// A value of another type than the message's never passes.
	if codec.ValueOK(messages.SendCommand.Definition, false, messages.InstanceRef{InstanceID: 1}) {
		t.Error("an InstanceRef passed as the payload of send_command")
	}
	if codec.ValueOK(messages.UpdateInstances.Definition, false, messages.InstanceUpdate{Instances: []messages.HostedInstance{{ID: 1, Name: "a"}}}) {
		t.Error("a payload with a slice passed as a value: its memory would be shared")
	}
}

func TestResponseValueOK(t *testing.T) {
	if !codec.ValueOK(messages.SendCommand.Definition, true, messages.CommandResult{Output: "ok"}) {
		t.Error("a valid send_command response did not pass as a value")
	}
	if codec.ValueOK(messages.SendCommand.Definition, true, messages.Command{}) {
		t.Error("a value of the request's type passed as the response")
	}
	if codec.ValueOK(messages.ListSlaves.Definition, true, messages.SlaveList{}) {
		t.Error("a response with a slice passed as a value")
	}
}

// FuzzPayloadValueOK: the value check and the schema of the JSON form
// never disagree, on payloads with bounds, enums and optional fields.
func FuzzPayloadValueOK(f *testing.F) {
	f.Add(int64(7), "/help", "join", "alice", true)
	f.Add(int64(0), "", "leave", "", false)
	f.Add(int64(-1), "\xff", "x", strings.Repeat("é", 64), true)
	f.Fuzz(func(t *testing.T, id int64, text, kind, name string, banned bool) {
		// A string that is not UTF-8 changes on its way through JSON: such
		// a value goes as JSON.
		ok := func(s ...string) bool {
			for _, x := range s {
				if !utf8.ValidString(x) {
					return false
				}
			}
			return true
		}
		valueAgrees(t, messages.SendCommand.Definition, messages.Command{InstanceID: id, Command: text}, ok(text))
		valueAgrees(t, messages.PlayerEvent.Definition, messages.PlayerActivity{InstanceID: id, Type: kind, Name: name}, ok(kind, name))
		valueAgrees(t, messages.BanlistUpdate.Definition, messages.Ban{Name: name, Banned: banned, Reason: text}, ok(name, text))
		valueAgrees(t, messages.InstanceOutput.Definition, messages.OutputLine{InstanceID: id, Time: id, Level: kind, Message: text}, ok(kind, text))
	})
}

// BenchmarkPayloadValueOK: checking a typed event as a Go value, against
// checking its JSON form (the value is boxed once, as a link does).
func BenchmarkPayloadValueOK(b *testing.B) {
	line := messages.OutputLine{InstanceID: 101, Time: 1795822972042, Level: "info", Message: "a line of output from the game server"}
	def := messages.InstanceOutput.Definition
	b.Run("value", func(b *testing.B) {
		v := any(line)
		b.ReportAllocs()
		for b.Loop() {
			if !codec.ValueOK(def, false, v) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		data, err := codec.Marshal(def, false, line)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := def.ValidatePayload(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// kinds has a field of every kind a value check reads from memory, at
// every size, nested, optional and ignored, each bounded: the compiled
// check must read each at its offset and size.
type kinds struct {
	I8   int8     `json:"i8" schema:"minimum=-3"`
	I16  int16    `json:"i16" schema:"maximum=300"`
	I32  int32    `json:"i32" schema:"enum=1|2|-70000"`
	I    int      `json:"i" schema:"minimum=0"`
	U8   uint8    `json:"u8" schema:"maximum=200"`
	U16  uint16   `json:"u16" schema:"minimum=2"`
	U32  uint32   `json:"u32,omitempty" schema:"maximum=70000"`
	U    uint     `json:"u" schema:"maximum=1000"`
	U64  uint64   `json:"u64"`
	B    bool     `json:"b" schema:"enum=true"`
	S    string   `json:"s,omitempty" schema:"minLength=2,maxLength=3"`
	Skip string   `json:"-"`
	In   kindsIn  `json:"in"`
	Opt  kindsOpt `json:"opt,omitempty"`
}

type kindsIn struct {
	Name string `json:"name" schema:"enum=x|yy"`
	N    int16  `json:"n" schema:"minimum=1"`
}

type kindsOpt struct {
	Flag bool  `json:"flag"`
	N    int64 `json:"n" schema:"maximum=9"`
}

var kindsEvent = messages.MustEvent[kinds](messages.Spec{Name: "test:kinds", Links: []messages.Direction{messages.SlaveToInstance}})

func TestValueKinds(t *testing.T) {
	good := kinds{I8: -3, I16: 300, I32: -70000, I: 0, U8: 200, U16: 2, U: 1000, U64: 1 << 62, B: true, S: "ab", Skip: "\xff",
		In: kindsIn{Name: "yy", N: 1}}
	def := kindsEvent.Definition
	if !codec.ValueOK(def, false, good) {
		t.Fatalf("%+v failed as a value", good)
	}
	for i, change := range []func(k *kinds){
		func(k *kinds) {},
		func(k *kinds) { k.I8 = -4 },
		func(k *kinds) { k.I8 = 127 },
		func(k *kinds) { k.I16 = 301 },
		func(k *kinds) { k.I16 = -32768 },
		func(k *kinds) { k.I32 = 3 },
		func(k *kinds) { k.I32 = 2 },
		func(k *kinds) { k.I = -1 },
		func(k *kinds) { k.U8 = 201 },
		func(k *kinds) { k.U16 = 1 },
		func(k *kinds) { k.U16 = 65535 },
		func(k *kinds) { k.U32 = 70001 },
		func(k *kinds) { k.U32 = 1 },
		func(k *kinds) { k.U = 1001 },
		func(k *kinds) { k.U64 = 1<<63 - 1 },
		func(k *kinds) { k.U64 = 1<<64 - 1 },
		func(k *kinds) { k.B = false },
		func(k *kinds) { k.S = "" },                     // omitted
		func(k *kinds) { k.S = "a" },                    // too short
		func(k *kinds) { k.S = "abcd" },                 // too long
		func(k *kinds) { k.S = "ééé" },                  // 3 code points, 6 bytes
		func(k *kinds) { k.S = "\xff\xfe" },             // not UTF-8: goes as JSON
		func(k *kinds) { k.In.Name = "y" },              // not in the enum
		func(k *kinds) { k.In.N = 0 },                   // nested bound
		func(k *kinds) { k.Opt = kindsOpt{N: 10} },      // present: its bound applies
		func(k *kinds) { k.Opt = kindsOpt{Flag: true} }, // present and valid
	} {
		k := good
		change(&k)
		// Not UTF-8, or a uint64 beyond int64 under the schema's minimum
		// (the check decides integers as int64): left to JSON.
		canTravel := utf8.ValidString(k.S) && k.U64 < 1<<63
		t.Run(fmt.Sprint(i), func(t *testing.T) { valueAgrees(t, def, k, canTravel) })
	}
}

// omitStruct has a struct field marked omitempty, which encoding/json
// writes all the same (it omits no struct): its zero value is checked.
type omitStruct struct {
	In kindsIn `json:"in,omitempty"`
}

var omitStructEvent = messages.MustEvent[omitStruct](messages.Spec{Name: "test:omit_struct", Links: []messages.Direction{messages.SlaveToInstance}})

func TestValueOmitEmptyStruct(t *testing.T) {
	for _, v := range []omitStruct{{}, {In: kindsIn{Name: "x", N: 1}}, {In: kindsIn{Name: "x"}}} {
		valueAgrees(t, omitStructEvent.Definition, v, true)
	}
}
