package check

import (
	"encoding/binary"
	"testing"
)

// plain8 agrees with the byte table for every byte value at every place in
// a word, whatever plain or awkward bytes sit around it (a byte that
// borrows, below or above it).
func TestPlain8(t *testing.T) {
	backgrounds := [][8]byte{
		{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'},
		{' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '}, // 0x20: the least plain byte
		{'~', '~', '~', '~', '~', '~', '~', '~'},
		{0x7f, '#', '!', '[', ']', '0', '}', '{'},
		{0, 0, 0, 0, 0, 0, 0, 0}, // borrows everywhere
		{'"', '\\', '"', '\\', '"', '\\', '"', '\\'},
	}
	for _, bg := range backgrounds {
		for i := range 8 {
			for c := range 256 {
				w := bg
				w[i] = byte(c)
				want := true
				for _, b := range w {
					want = want && plain[b]
				}
				if got := plain8(binary.LittleEndian.Uint64(w[:])); got != want {
					t.Fatalf("plain8(%q) = %v, want %v", w[:], got, want)
				}
			}
		}
	}
}

func FuzzPlain8(f *testing.F) {
	f.Add(uint64(0x6867666564636261))
	f.Fuzz(func(t *testing.T, w uint64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], w)
		want := true
		for _, c := range b {
			want = want && plain[c]
		}
		if got := plain8(w); got != want {
			t.Fatalf("plain8(%q) = %v, want %v", b[:], got, want)
		}
	})
}
