package delivery_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

// A head survives the wire: what AppendHead writes, ParseHead reads back,
// and the payload after it is the event's own.
func TestHeadRoundTrip(t *testing.T) {
	long := make([]delivery.Fence, delivery.MaxFence)
	for i := range long {
		long[i] = delivery.Fence{Key: strings.Repeat("x", 60) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Seq: 18446744073709551615}
	}
	for _, tc := range []struct {
		name string
		head delivery.Head
		line string
	}{
		{"the first event", delivery.Head{Seq: 1, Floor: 1}, "1 1\n"},
		{"with an origin", delivery.Head{Seq: 7, Floor: 3, Origin: "instance/101"}, "7 3 instance/101\n"},
		{"a broadcast sent again on a link", delivery.Head{Seq: 9, Floor: 9, All: true}, "*9 9\n"},
		{"a link event after a broadcast", delivery.Head{Seq: 5, Floor: 2, After: 12}, "5 2 a=12\n"},
		{"a broadcast with a fence", delivery.Head{Seq: 4, Floor: 1, Origin: "slave/1", Fence: []delivery.Fence{{Key: "1", Seq: 40}, {Key: "slave_2-b", Seq: 7}}}, "4 1 slave/1 f=1:40,slave_2-b:7\n"},
		{"an incomplete fence", delivery.Head{Seq: 4, Floor: 1, Fence: []delivery.Fence{{Key: "1", Seq: 40}}, More: true}, "4 1 f=1:40,+\n"},
		{"the longest head", delivery.Head{Seq: 18446744073709551615, Floor: 18446744073709551615, All: true, Origin: "instance/" + strings.Repeat("i", 64), After: 18446744073709551615, Fence: long, More: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := delivery.AppendHead(nil, tc.head)
			if tc.line != "" && string(b) != tc.line {
				t.Errorf("AppendHead wrote %q, want %q", b, tc.line)
			}
			if len(b) > delivery.MaxHeadLen {
				t.Errorf("the head is %d bytes, more than MaxHeadLen %d", len(b), delivery.MaxHeadLen)
			}
			h, payload, err := delivery.ParseHead(append(b, `{"n":1}`...))
			if err != nil {
				t.Fatalf("ParseHead(%q): %v", b, err)
			}
			if !reflect.DeepEqual(h, tc.head) {
				t.Errorf("ParseHead gave %+v, want %+v", h, tc.head)
			}
			if string(payload) != `{"n":1}` {
				t.Errorf("payload %q", payload)
			}
		})
	}
}

// What a reader of the protocol before the ordering extension wrote, a
// reader of this one reads; and a token of a later extension does not
// stop it.
func TestHeadTolerance(t *testing.T) {
	for _, tc := range []struct {
		line string
		want delivery.Head
	}{
		{"12 3 instance/4\n", delivery.Head{Seq: 12, Floor: 3, Origin: "instance/4"}},
		{"*2 1\n", delivery.Head{Seq: 2, Floor: 1, All: true}},
		{"5 5 a=3 zz=whatever\n", delivery.Head{Seq: 5, Floor: 5, After: 3}},
		{"5 5 instance/4 later=1,2,3 f=7:1\n", delivery.Head{Seq: 5, Floor: 5, Origin: "instance/4", Fence: []delivery.Fence{{Key: "7", Seq: 1}}}},
	} {
		h, _, err := delivery.ParseHead([]byte(tc.line + "{}"))
		if err != nil || !reflect.DeepEqual(h, tc.want) {
			t.Errorf("ParseHead(%q) = %+v, %v; want %+v", tc.line, h, err, tc.want)
		}
	}
}

// A malformed head is refused, whole: nothing of it is taken.
func TestHeadRefused(t *testing.T) {
	for _, line := range []string{
		"",       // no line
		"{}",     // no head
		"0 1\n",  // numbers start at 1
		"1 0\n",  //
		"3 4\n",  // a floor above the event
		"01 1\n", // leading zero
		"1 1 \n", // an empty token
		"1  1\n", //
		"-1 1\n", //
		"18446744073709551616 1\n",
		"1 1 instance\n",       // not an endpoint
		"1 1 a=1 instance/4\n", // the origin comes first
		"1 1 instance/4 slave/2\n",
		"1 1 a=0\n",         // nothing to wait for is said by saying nothing
		"1 1 a=1 a=2\n",     // twice
		"1 1 f=\n",          // an empty fence
		"1 1 f=1:0\n",       //
		"1 1 f=1\n",         //
		"1 1 f=1:2,1:3\n",   // a receiver twice
		"1 1 f=+,1:2\n",     // '+' ends the list
		"1 1 f=a b:2\n",     //
		"1 1 f=a.b:2\n",     // not an endpoint id
		"1 1 f=1:2 f=2:3\n", //
		"1 1 X=1\n",         // names are lower case
		"1 1 x=\n",          //
		"*\n",               //
		"**1 1\n",           //
	} {
		if h, p, err := delivery.ParseHead([]byte(line)); !errors.Is(err, delivery.ErrHead) {
			t.Errorf("ParseHead(%q) = %+v, %q, %v; want ErrHead", line, h, p, err)
		}
	}
	tooMany := "1 1 f="
	for i := range delivery.MaxFence + 1 {
		tooMany += string(rune('a'+i%26)) + string(rune('a'+i/26)) + ":1,"
	}
	if _, _, err := delivery.ParseHead([]byte(strings.TrimSuffix(tooMany, ",") + "\n")); err == nil {
		t.Errorf("a fence of %d receivers taken; at most %d", delivery.MaxFence+1, delivery.MaxFence)
	}
	if _, _, err := delivery.ParseHead(append(bytes.Repeat([]byte("1"), delivery.MaxHeadLen), '\n')); err == nil {
		t.Error("a line longer than MaxHeadLen taken")
	}
}

// ParseHead never panics, and takes only what it could write again: a
// head it accepts, written back and read again, is the same.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{"1 1\n{}", "*3 2 instance/7 a=4 f=1:2,b:3,+\n", "5 5 x=y\n", "1 1 f=+\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, payload, err := delivery.ParseHead(data)
		if err != nil {
			return
		}
		again, p2, err := delivery.ParseHead(append(delivery.AppendHead(nil, h), payload...))
		if err != nil || !reflect.DeepEqual(again, h) || !bytes.Equal(p2, payload) {
			t.Fatalf("%q: read %+v, written and read again %+v, %v", data, h, again, err)
		}
	})
}
