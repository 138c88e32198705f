package fabric_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
)

// decodeInstanceID is what the fabric's routing used to do, and what
// fabric.InstanceID must agree with: decode the whole payload.
func decodeInstanceID(data []byte) (int64, bool) {
	var p struct {
		InstanceID *int64 `json:"instance_id"`
	}
	if err := json.Unmarshal(data, &p); err != nil || p.InstanceID == nil {
		return 0, false
	}
	return *p.InstanceID, true
}

var instanceIDCases = []struct {
	name string
	data string
	want int64
	bad  bool // no instance_id can be read: an error
}{
	{"plain", `{"instance_id":7,"command":"/players"}`, 7, false},
	{"last field", `{"command":"x","instance_id":42}`, 42, false},
	{"spaces", " \n{ \"instance_id\" :\t-3 }\r\n", -3, false},
	{"largest", `{"instance_id":9223372036854775807}`, 9223372036854775807, false},
	{"smallest", `{"instance_id":-9223372036854775808}`, -9223372036854775808, false},
	{"too large", `{"instance_id":9223372036854775808}`, 0, true},
	{"fraction", `{"instance_id":7.0}`, 0, true},
	{"exponent", `{"instance_id":7e0}`, 0, true},
	{"string", `{"instance_id":"7"}`, 0, true},
	{"null", `{"instance_id":null}`, 0, true},
	{"missing", `{"command":"x"}`, 0, true},
	{"not an object", `[{"instance_id":7}]`, 0, true},
	{"empty object", `{}`, 0, true},
	{"nested object holds the key", `{"data":{"instance_id":1},"instance_id":2}`, 2, false},
	{"only nested", `{"data":{"instance_id":1}}`, 0, true},
	{"in an array", `{"list":[{"instance_id":1},"instance_id"],"instance_id":3}`, 3, false},
	{"in a string", `{"command":"\"instance_id\":9","instance_id":4}`, 4, false},
	{"string with brackets", `{"a":"}{][","instance_id":5}`, 5, false},
	{"escaped quote before", `{"a":"x\\\"}","instance_id":6}`, 6, false},
	{"key written with escapes", `{"instance\u005fid":8}`, 8, false},
	{"key in other case", `{"Instance_ID":9}`, 9, false},
	{"key with a long s", `{"in` + "\u017f" + `tance_id":10}`, 10, false},
	{"repeated: the last wins", `{"instance_id":1,"instance_id":11}`, 11, false},
	{"repeated: null after", `{"instance_id":1,"instance_id":null}`, 0, true},
	{"repeated: bad before good", `{"instance_id":"1","instance_id":12}`, 0, true},
	{"repeated: object before good", `{"instance_id":{"instance_id":1},"instance_id":13}`, 0, true},
	{"similar keys", `{"instance_idx":1,"xinstance_id":2,"instance_i":3,"instance_id":14}`, 14, false},
	{"trailing text", `{"instance_id":15} x`, 0, true},
	{"not JSON", `{"instance_id":`, 0, true},
	{"empty", ``, 0, true},
}

// The scanner reads the instance_id that decoding the payload would, and
// is not fooled by the key inside nested values or strings.
func TestInstanceID(t *testing.T) {
	for _, tc := range instanceIDCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fabric.InstanceID([]byte(tc.data))
			if tc.bad {
				if !errors.Is(err, link.ErrInvalidMessage) {
					t.Errorf("InstanceID(%s) = %d, %v; want an invalid_message error", tc.data, got, err)
				}
			} else if err != nil || got != tc.want {
				t.Errorf("InstanceID(%s) = %d, %v; want %d", tc.data, got, err, tc.want)
			}
			if want, ok := decodeInstanceID([]byte(tc.data)); ok == tc.bad || (ok && want != tc.want) {
				t.Errorf("the case disagrees with encoding/json, which reads %d, %t", want, ok)
			}
		})
	}
}

// On every JSON text the scanner agrees with encoding/json; on anything
// else it does not panic.
func FuzzInstanceID(f *testing.F) {
	for _, tc := range instanceIDCases {
		f.Add([]byte(tc.data))
	}
	f.Add([]byte(`{"instance_id":1,"x":[[[{"instance_id":2}]]],"y":"\\"}`))
	f.Add([]byte(`{"INSTANCE_ID":1,"instance_` + "\u212a" + `":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := fabric.InstanceID(data)
		if !json.Valid(data) {
			return
		}
		want, ok := decodeInstanceID(data)
		switch {
		case ok && (err != nil || got != want):
			t.Fatalf("InstanceID(%q) = %d, %v; encoding/json reads %d", data, got, err, want)
		case !ok && err == nil:
			t.Fatalf("InstanceID(%q) = %d; encoding/json reads none", data, got)
		}
	})
}

// BenchmarkInstanceID: reading the target instance of a forwarded payload,
// against decoding it with encoding/json (the baseline, what routing did
// before).
func BenchmarkInstanceID(b *testing.B) {
	data := []byte(`{"instance_id":1001,"data":"` + strings.Repeat("x", 100) + `","nested":{"instance_id":5,"list":[1,2,3]}}`)
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if id, ok := decodeInstanceID(data); !ok || id != 1001 {
				b.Fatal(id, ok)
			}
		}
	})
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if id, err := fabric.InstanceID(data); err != nil || id != 1001 {
				b.Fatal(id, err)
			}
		}
	})
}
