package messages_test

import (
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/messages"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    messages.Endpoint
		wantErr bool
	}{
		{name: "master", in: "master", want: messages.Master},
		{name: "slave", in: "slave", want: messages.Slave},
		{name: "instance", in: "instance", want: messages.Instance},
		{name: "control", in: "control", want: messages.Control},
		{name: "empty", in: "", wantErr: true},
		{name: "none", in: "none", wantErr: true},
		{name: "capitalised", in: "Master", wantErr: true},
		{name: "plural", in: "slaves", wantErr: true},
		{name: "padded", in: " master", wantErr: true},
		{name: "controller", in: "controller", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := messages.ParseEndpoint(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseEndpoint(%q) = %v; want an error", tc.in, got)
				}
				if !strings.Contains(err.Error(), `"`+tc.in+`"`) {
					t.Errorf("error %q does not quote the input", err)
				}
				if got != 0 {
					t.Errorf("ParseEndpoint(%q) returned %v with its error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseEndpoint(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if !got.Valid() {
				t.Errorf("%v.Valid() = false", got)
			}
		})
	}
}

func TestEndpointString(t *testing.T) {
	tests := []struct {
		name  string
		e     messages.Endpoint
		want  string
		valid bool
	}{
		{name: "master", e: messages.Master, want: "master", valid: true},
		{name: "slave", e: messages.Slave, want: "slave", valid: true},
		{name: "instance", e: messages.Instance, want: "instance", valid: true},
		{name: "control", e: messages.Control, want: "control", valid: true},
		{name: "zero", e: 0, want: "none"},
		{name: "out of range", e: 9, want: "Endpoint(9)"},
		{name: "max", e: 255, want: "Endpoint(255)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.e.String(); got != tc.want {
				t.Errorf("String() = %q; want %q", got, tc.want)
			}
			if got := tc.e.Valid(); got != tc.valid {
				t.Errorf("Valid() = %v; want %v", got, tc.valid)
			}
			if tc.valid {
				back, err := messages.ParseEndpoint(tc.e.String())
				if err != nil || back != tc.e {
					t.Errorf("ParseEndpoint(String()) = %v, %v", back, err)
				}
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	got := messages.Endpoints()
	want := []messages.Endpoint{messages.Master, messages.Slave, messages.Instance, messages.Control}
	if len(got) != len(want) {
		t.Fatalf("Endpoints() = %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Endpoints() = %v; want %v", got, want)
		}
	}
	got[0] = messages.Control
	if messages.Endpoints()[0] != messages.Master {
		t.Error("changing the slice Endpoints() returned changed the next one")
	}
}

// Every pair of distinct endpoint types is a direction whose string form
// parses back to it.
func TestDirectionRoundTrip(t *testing.T) {
	n := 0
	for _, src := range messages.Endpoints() {
		for _, dst := range messages.Endpoints() {
			if src == dst {
				continue
			}
			n++
			d := messages.Direction{Source: src, Target: dst}
			s := d.String()
			t.Run(s, func(t *testing.T) {
				if s != src.String()+"-"+dst.String() {
					t.Errorf("String() = %q", s)
				}
				back, err := messages.ParseDirection(s)
				if err != nil || back != d {
					t.Errorf("ParseDirection(%q) = %v, %v; want %v", s, back, err, d)
				}
				r := d.Reverse()
				if r.Source != dst || r.Target != src {
					t.Errorf("Reverse() = %v", r)
				}
				if r.Reverse() != d {
					t.Errorf("Reverse().Reverse() = %v; want %v", r.Reverse(), d)
				}
			})
		}
	}
	if n != 12 {
		t.Errorf("%d directions; want 12", n)
	}
}

func TestParseDirection(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    messages.Direction
		wantErr bool
	}{
		{name: "control-master", in: "control-master", want: messages.Direction{Source: messages.Control, Target: messages.Master}},
		{name: "slave-instance", in: "slave-instance", want: messages.Direction{Source: messages.Slave, Target: messages.Instance}},
		{name: "no dash", in: "control", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "same endpoint", in: "control-control", wantErr: true},
		{name: "unknown source", in: "foo-master", wantErr: true},
		{name: "unknown target", in: "master-foo", wantErr: true},
		{name: "missing source", in: "-master", wantErr: true},
		{name: "missing target", in: "master-", wantErr: true},
		{name: "three parts", in: "control-master-slave", wantErr: true},
		{name: "capitalised", in: "Control-Master", wantErr: true},
		{name: "spaces", in: "control - master", wantErr: true},
		{name: "arrow", in: "control->master", wantErr: true},
		{name: "underscore", in: "control_master", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := messages.ParseDirection(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseDirection(%q) = %v; want an error", tc.in, got)
				}
				if !strings.Contains(err.Error(), `"`+tc.in+`"`) {
					t.Errorf("error %q does not quote the input", err)
				}
				if got != (messages.Direction{}) {
					t.Errorf("ParseDirection(%q) returned %v with its error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseDirection(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

// Directions are comparable values, usable as map keys.
func TestDirectionAsKey(t *testing.T) {
	seen := map[messages.Direction]int{}
	for _, s := range []string{"control-master", "master-control", "control-master"} {
		d, err := messages.ParseDirection(s)
		if err != nil {
			t.Fatal(err)
		}
		seen[d]++
	}
	if len(seen) != 2 || seen[messages.Direction{Source: messages.Control, Target: messages.Master}] != 2 {
		t.Errorf("directions as keys: %v", seen)
	}
}
