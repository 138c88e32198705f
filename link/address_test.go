package link_test

import (
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Ids are subject tokens: letters, digits, '-' and '_', not starting with
// '_' or '-', 1 to 64 long.
func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"0", true}, {"alice", true}, {"Bob-2_x", true}, {strings.Repeat("a", 64), true},
		{"", false}, {strings.Repeat("a", 65), false}, {"_all", false}, {"-x", false},
		{"a.b", false}, {"a b", false}, {"a*", false}, {"a>", false}, {"é", false}, {"a/b", false},
	}
	for _, tc := range tests {
		if got := link.ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v; want %v", tc.id, got, tc.want)
		}
	}
}

// An address prints as type/id and parses back; bad ones are refused.
func TestParseAddress(t *testing.T) {
	a := link.Address{Type: messages.Slave, ID: "3"}
	if got, err := link.ParseAddress(a.String()); err != nil || got != a {
		t.Errorf("ParseAddress(%q) = %v, %v", a, got, err)
	}
	for _, bad := range []string{"slave", "slave/", "ghost/3", "slave/_all", "/3"} {
		if _, err := link.ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
}
