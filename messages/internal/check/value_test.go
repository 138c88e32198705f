package check

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// validUTF8 agrees with utf8.ValidString wherever the first byte that is
// not ASCII falls, in a word or in the tail, and whatever follows it.
func TestValidUTF8(t *testing.T) {
	for _, bad := range []string{"", "é", "\xff", "\xe2\x82", "€", "\xed\xa0\x80", "\U0001F600", "\xc0\xaf"} {
		for n := range 20 {
			for _, s := range []string{strings.Repeat("a", n) + bad, strings.Repeat("a", n) + bad + "tail-of-ascii!", bad + strings.Repeat("z", n)} {
				if got, want := validUTF8(s), utf8.ValidString(s); got != want {
					t.Errorf("validUTF8(%q) = %v, want %v", s, got, want)
				}
			}
		}
	}
}

func FuzzValidUTF8(f *testing.F) {
	f.Add("hello, world: plain ascii")
	f.Add("mixed é and \xff")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validUTF8(s), utf8.ValidString(s); got != want {
			t.Errorf("validUTF8(%q) = %v, want %v", s, got, want)
		}
	})
}
