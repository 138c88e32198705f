package fabric

import (
	"fmt"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The master keeps at most outputKept lines, and outputKeptBytes bytes,
// of an instance's output, the latest, in order; since returns those at
// or after a time.
func TestOutputBufferBounds(t *testing.T) {
	var b outputBuffer
	for i := range 3 * outputKept {
		b.add(bufferedLine{time: int64(i), msg: &link.Envelope{Data: []byte(fmt.Sprint(i))}})
	}
	if len(b.lines) != outputKept || b.lines[0].time != 2*outputKept || b.lines[len(b.lines)-1].time != 3*outputKept-1 {
		t.Fatalf("kept %d lines, from %d to %d; want the last %d", len(b.lines), b.lines[0].time, b.lines[len(b.lines)-1].time, outputKept)
	}
	if got := b.since(3*outputKept - 3); len(got) != 3 || string(got[0].Data) != fmt.Sprint(3*outputKept-3) {
		t.Errorf("since the third last: %d lines", len(got))
	}
	big := strings.Repeat("x", outputKeptBytes/4)
	for i := range 10 {
		b.add(bufferedLine{time: int64(10000 + i), msg: &link.Envelope{Data: []byte(big)}})
	}
	if b.bytes > outputKeptBytes || len(b.lines) != 4 || b.lines[3].time != 10009 {
		t.Errorf("with large lines: %d lines, %d bytes; want the last 4, at most %d bytes", len(b.lines), b.bytes, outputKeptBytes)
	}
}

// masterTerm reads the term of a master session, "m<term>x<random>", and
// nothing else.
func TestMasterTerm(t *testing.T) {
	other := link.Address{Type: messages.Slave, ID: "1"}
	for _, tc := range []struct {
		peer    link.Address
		session string
		want    uint64
	}{
		{link.MasterAddress, "m7x5cedbc89", 7},
		{link.MasterAddress, "m123456789x0", 123456789},
		{link.MasterAddress, "2fd807bfadc265c5", 0}, // an older master's random session
		{link.MasterAddress, "m7", 0},
		{link.MasterAddress, "mxabc", 0},
		{link.MasterAddress, "m-1xab", 0},
		{other, "m7x5cedbc89", 0}, // only the master has terms
	} {
		if got := masterTerm(tc.peer, tc.session); got != tc.want {
			t.Errorf("masterTerm(%s, %q) = %d, want %d", tc.peer, tc.session, got, tc.want)
		}
	}
}
