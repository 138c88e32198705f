package messages

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/messages/internal/check"
)

// fastSchemas are the schemas the fast path is checked against: every
// core message's, and hand-written ones that reach its corners.
func fastSchemas(t testing.TB) []*Schema {
	t.Helper()
	c, err := NewCatalog()
	if err != nil {
		t.Fatal(err)
	}
	var out []*Schema
	for _, d := range c.All() {
		out = append(out, d.PayloadSchema())
		if r := d.ResponseSchema(); r != nil {
			out = append(out, r)
		}
	}
	for _, doc := range []string{
		`{"type":"object","properties":{"n":{"type":"integer","enum":[1,2,-3]},"b":{"enum":[true]},"s":{"enum":["a","ü"]}}}`,
		`{"type":"object","properties":{"p":{"anyOf":[{"type":"string","enum":["x","y"]},{"type":"null"}]}},"required":["p"],"additionalProperties":false}`,
		`{"type":"array","items":{"type":"array","items":{"type":"integer","minimum":-5,"maximum":5},"minItems":1,"maxItems":3}}`,
		`{"type":"object","additionalProperties":{"type":["integer","null"]}}`,
		`{"type":"object","properties":{"a":{"type":"string","minLength":2,"maxLength":4}}}`,
		`{"type":["object","array","string","number","boolean","null"]}`,
		`{"type":"object","properties":{"at":{"type":"string","format":"date-time"},"blob":{"type":["string","null"],"contentEncoding":"base64"}}}`,
		`{"type":"number","minimum":0,"maximum":100}`,
		`true`,
		`{}`,
	} {
		s, err := compileSchema([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if s.fast == nil {
			t.Fatalf("the fast path refused %s", doc)
		}
		out = append(out, s)
	}
	return out
}

var fastSeeds = []string{
	`{}`, `{"instance_id":7}`, `{"instance_id":7.0}`, `{"instance_id":1e1}`, `{"instance_id":-0}`,
	`{"instance_id":0}`, `{"instance_id":"7"}`, `{"instance_id":7,"x":1}`, `{"instance_id":7,"instance_id":8}`,
	`{"instance_id":99999999999999999999}`, `{"instance_id":7} x`, ` {"instance_id" : 7 } `,
	`{"instance_id":101,"command":"/join \u00e9\ud83d\ude00"}`, `{"instance_id":101,"command":""}`,
	`{"instance_id":101,"command":"\ud800"}`, "{\"instance_id\":101,\"command\":\"\xff\"}",
	`{"instance_id":1,"time":1,"level":"warn","message":"m"}`, `{"instance_id":1,"time":1,"level":"loud","message":"m"}`,
	`{"slaves":[{"slave_id":1,"name":"a","connected":true,"instances":2}]}`, `{"slaves":null}`, `{"slaves":[]}`,
	`{"instances":[{"instance_id":1,"name":"n","status":"running"}]}`, `{"instances":[{"instance_id":1}]}`,
	`{"n":1,"b":true,"s":"ü"}`, `{"n":1.0}`, `{"n":"1"}`, `{"s":"\u00fc"}`, `{"p":null}`, `{"p":"x"}`, `{"p":"z"}`,
	`[[1,2],[5,-5]]`, `[[]]`, `[[6]]`, `[[1,2,3,4]]`, `{"k":null,"j":3}`, `{"k":"x"}`,
	`{"a":"ab"}`, `{"a":"a"}`, `{"a":"abcde"}`, `{"a":"\u0041\u0042"}`, `{"at":"2026-01-01T00:00:00Z"}`, `{"at":"yesterday"}`,
	`{"blob":"AAH/"}`, `{"blob":"***"}`, `50`, `-1`, `100.5`, `1e2`, `[1,]`, `{,}`, `{"a":}`, `nul`, `""`, ``, `[`, `{"a":[{"b":[{"c":[]}]}]}`,
	`{"name":"x","banned":true}`, `{"name":"x","banned":"yes"}`, `{"event":"drop"}`, `{"event":"gone"}`,
}

// The fast path and the library agree on every payload the fast path
// decides. It may leave a payload to the library; it may not differ.
func FuzzFastPathAgrees(f *testing.F) {
	schemas := fastSchemas(f)
	for i := range schemas {
		for _, seed := range fastSeeds {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		s := schemas[int(which)%len(schemas)]
		if s.fast == nil {
			return
		}
		fast := s.fast.Check(data)
		if fast == check.Undecided {
			return
		}
		lib := s.compiled.ValidateJSON(data).IsValid()
		if (fast == check.Valid) != lib {
			t.Fatalf("schema %s, payload %q: fast path says valid=%v, library says %v", s.raw, data, fast == check.Valid, lib)
		}
	})
}

// The fast path decides the payloads the fabric sends every day, rather
// than handing them to the library.
func TestFastPathDecidesCommonPayloads(t *testing.T) {
	tests := []struct {
		name string
		m    Message
		data string
		want check.Verdict
	}{
		{"start_instance", StartInstance, `{"instance_id":101}`, check.Valid},
		{"send_command", SendCommand, `{"instance_id":101,"command":"/join alice"}`, check.Valid},
		{"instance_output", InstanceOutput, `{"instance_id":101,"time":1795822972042,"level":"info","message":"> /say hello"}`, check.Valid},
		{"register_slave", RegisterSlave, `{"slave_id":1,"name":"slave-1","version":"0.1.0","instances":[{"instance_id":101,"name":"alpha","status":"stopped"}]}`, check.Valid},
		{"banlist_update", BanlistUpdate, `{"name":"bob","banned":true,"reason":"spam"}`, check.Valid},
		{"wrong type", StartInstance, `{"instance_id":"101"}`, check.Invalid},
		{"missing field", SendCommand, `{"instance_id":101}`, check.Invalid},
		{"extra field", StartInstance, `{"instance_id":101,"x":1}`, check.Invalid},
		{"below minimum", StartInstance, `{"instance_id":0}`, check.Invalid},
		{"enum", InstanceOutput, `{"instance_id":1,"time":1,"level":"loud","message":"m"}`, check.Invalid},
		{"malformed", StartInstance, `{"instance_id":`, check.Invalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.m.Def().PayloadSchema()
			if s.fast == nil {
				t.Fatalf("%s has no fast path", tc.name)
			}
			if got := s.fast.Check([]byte(tc.data)); got != tc.want {
				t.Errorf("fast path verdict %d; want %d", got, tc.want)
			}
		})
	}
}

func BenchmarkValidate(b *testing.B) {
	s := InstanceOutput.PayloadSchema()
	data := []byte(`{"instance_id":101,"time":1795822972042,"level":"info","message":"a line of output from the game server"}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Validate(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	long := []byte(`{"instance_id":101,"time":1795822972042,"level":"info","message":"` + strings.Repeat("a line of output from the game server; ", 8) + `"}`)
	b.Run("fast, a 300-byte string", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Validate(long); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !s.compiled.ValidateJSON(data).IsValid() {
				b.Fatal("invalid")
			}
		}
	})
}

// BenchmarkEncode: a typed event to its checked wire form.
func BenchmarkEncode(b *testing.B) {
	line := OutputLine{InstanceID: 101, Time: 1795822972042, Level: "info", Message: "a line of output from the game server"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := InstanceOutput.Encode(line); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode: a wire payload, checked and decoded into its Go type;
// encoding_json is the standard library's decoder on the same payload,
// unchecked, for comparison.
func BenchmarkDecode(b *testing.B) {
	data := []byte(`{"instance_id":101,"time":1795822972042,"level":"info","message":"a line of output from the game server"}`)
	b.Run("fabric", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := InstanceOutput.Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var line OutputLine
			if err := json.Unmarshal(data, &line); err != nil {
				b.Fatal(err)
			}
		}
	})
}
