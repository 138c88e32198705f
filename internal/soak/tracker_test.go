package soak

import (
	"errors"
	"testing"
)

// A receiver of broadcasts is owed what was broadcast from the first it
// received: up to the last one sent while its run and the master's epoch
// last, up to the last it received once either has ended.
func TestBroadcastsOwed(t *testing.T) {
	tr := newTracker()
	sender := castKey{sender: 101, inc: 1, epoch: 1}
	for seq := int64(1); seq <= 10; seq++ {
		var err error
		if seq == 7 {
			err = errors.New("refused") // owed to no one
		}
		tr.cast(sender, seq, err)
	}
	current := castReceiver{castKey: sender, receiver: 201, run: 2}
	ended := castReceiver{castKey: sender, receiver: 102, run: 1}
	for _, seq := range []int64{3, 4, 6, 8} { // 5 lost, 9 and 10 lost
		tr.castReceived(current, seq)
	}
	for _, seq := range []int64{1, 2, 3} { // the rest was sent as it ended
		tr.castReceived(ended, seq)
	}
	links, _ := tr.report(now{epoch: 1, runs: map[int64]int64{201: 2, 102: 2}})
	got := map[string]LinkReport{}
	for _, l := range links {
		got[l.Link] = l
	}
	c := got["instance 101 => instance 201 (run 2, master 1)"]
	if c.Sent != 7 || c.Received != 4 || c.Missing != 3 || len(c.MissingSeqs) != 3 || c.MissingSeqs[0] != 5 || c.MissingSeqs[2] != 10 {
		t.Errorf("the current run: %+v, want 7 owed (3 to 10 but 7), 4 received, 5, 9 and 10 missing", c)
	}
	e := got["instance 101 => instance 102 (run 1, master 1)"]
	if e.Sent != 3 || e.Missing != 0 {
		t.Errorf("the ended run: %+v, want 3 owed, none missing", e)
	}
	links, _ = tr.report(now{epoch: 2, runs: map[int64]int64{201: 2, 102: 2}})
	for _, l := range links {
		if l.Link == c.Link && (l.Missing != 1 || l.MissingSeqs[0] != 5) {
			t.Errorf("after the master's restart, %s: %+v, want 5 missing and no more: the rest went to no slave", l.Link, l)
		}
	}
	if what, _ := tr.outstanding(now{epoch: 1, runs: map[int64]int64{201: 2}}); what == "" {
		t.Error("outstanding: nothing, want the current run's missing broadcasts")
	}
}
