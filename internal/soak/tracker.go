package soak

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/linkfabric/linkfabric/link"
)

// streamKey names one numbered stream of events: a link, in the direction
// of travel ("instance 101 -> master"), and the incarnation of its sender
// (1 for the first process, 2 after a restart, ...).
type streamKey struct {
	link string
	inc  int64
}

// stream is what is known of one stream: which numbers were sent (the send
// returned nil), which failed to send, and what arrived in which order.
type stream struct {
	sent     []bool  // by seq-1: the send returned nil
	failed   []bool  // by seq-1: the send returned an error
	received []uint8 // by seq-1: how often it arrived (saturates)
	last     int64   // the last seq received
	sentN    uint64
	failedN  uint64
	distinct uint64
	dups     uint64
	disorder uint64
	// sendErrors counts failed sends by error code.
	sendErrors map[string]uint64
}

func grow[T any](s []T, n int64) []T {
	if int64(len(s)) < n {
		s = append(s, make([]T, n-int64(len(s)))...)
	}
	return s
}

// request is one request the soak started.
type request struct {
	started bool
	ended   int // how often its requester saw it end: must be 1
	ok      bool
	code    string
	runs    int // how often a handler ran for it: at most 1
	answer  bool
}

// kindCounts is what is known of the requests of one message type.
type kindCounts struct {
	byID map[int64]*request
}

// castKey names the broadcasts of one incarnation of an instance sent
// while the master was in one incarnation, its epoch.
type castKey struct{ sender, inc, epoch int64 }

// castReceiver names what one incarnation (run) of an instance received
// of them.
type castReceiver struct {
	castKey
	receiver, run int64
}

// now is what runs at a moment: the master's incarnation and each
// instance's.
type now struct {
	epoch int64
	runs  map[int64]int64
}

// tracker records everything the soak sends and receives. It is safe for
// concurrent use.
type tracker struct {
	mu       sync.Mutex
	streams  map[streamKey]*stream
	casts    map[castKey]*stream // what was broadcast: only sent and failed
	castRecv map[streamKey]castReceiver
	requests map[string]*kindCounts
	changed  chan struct{} // closed at every change; Quiesce waits on it
}

func newTracker() *tracker {
	return &tracker{
		streams:  map[streamKey]*stream{},
		casts:    map[castKey]*stream{},
		castRecv: map[streamKey]castReceiver{},
		requests: map[string]*kindCounts{},
		changed:  make(chan struct{}),
	}
}

// notifyLocked wakes whoever waits for a change. t.mu must be held.
func (t *tracker) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *tracker) streamLocked(k streamKey) *stream {
	s := t.streams[k]
	if s == nil {
		s = &stream{sendErrors: map[string]uint64{}}
		t.streams[k] = s
	}
	return s
}

// sent records the outcome of sending event seq of a stream.
func (t *tracker) sent(k streamKey, seq int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streamLocked(k).record(seq, err)
	t.notifyLocked()
}

// cast records the outcome of broadcasting seq.
func (t *tracker) cast(k castKey, seq int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.casts[k]
	if s == nil {
		s = &stream{sendErrors: map[string]uint64{}}
		t.casts[k] = s
	}
	s.record(seq, err)
	t.notifyLocked()
}

// record counts the outcome of sending seq.
func (s *stream) record(seq int64, err error) {
	if err == nil {
		s.sent = grow(s.sent, seq)
		s.sent[seq-1] = true
		s.sentN++
	} else {
		s.failed = grow(s.failed, seq)
		s.failed[seq-1] = true
		s.failedN++
		s.sendErrors[codeOf(err)]++
	}
}

// received records the arrival of event seq of a stream.
func (t *tracker) received(k streamKey, seq int64) {
	if seq < 1 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.receivedLocked(k, seq)
}

// castReceived records the arrival of broadcast seq.
func (t *tracker) castReceived(r castReceiver, seq int64) {
	if seq < 1 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := streamKey{link: fmt.Sprintf("instance %d => instance %d (run %d, master %d)", r.sender, r.receiver, r.run, r.epoch), inc: r.inc}
	t.castRecv[k] = r
	t.receivedLocked(k, seq)
}

// receivedLocked records the arrival of event seq of a stream. t.mu must
// be held.
func (t *tracker) receivedLocked(k streamKey, seq int64) {
	s := t.streamLocked(k)
	s.received = grow(s.received, seq)
	switch n := s.received[seq-1]; {
	case n > 0:
		s.dups++
	case seq < s.last:
		s.disorder++
	}
	if s.received[seq-1] == 0 {
		s.distinct++
	}
	if s.received[seq-1] < 255 {
		s.received[seq-1]++
	}
	s.last = max(s.last, seq)
	t.notifyLocked()
}

func (t *tracker) kindLocked(kind string) *kindCounts {
	k := t.requests[kind]
	if k == nil {
		k = &kindCounts{byID: map[int64]*request{}}
		t.requests[kind] = k
	}
	return k
}

func (t *tracker) reqLocked(kind string, id int64) *request {
	k := t.kindLocked(kind)
	r := k.byID[id]
	if r == nil {
		r = &request{}
		k.byID[id] = r
	}
	return r
}

// started records that request id of kind was sent.
func (t *tracker) started(kind string, id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reqLocked(kind, id).started = true
	t.notifyLocked()
}

// ended records how request id ended for its requester; answered says the
// response carried the request's own id.
func (t *tracker) ended(kind string, id int64, err error, answered bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.reqLocked(kind, id)
	r.ended++
	if r.ended == 1 {
		r.ok, r.answer = err == nil, answered
		if err != nil {
			r.code = codeOf(err)
		}
	}
	t.notifyLocked()
}

// ran records that a handler ran for request id of kind.
func (t *tracker) ran(kind string, id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reqLocked(kind, id).runs++
	t.notifyLocked()
}

// owedLocked sets what each receiver of broadcasts is owed: what was
// broadcast (the send returned nil) from the first it received, which
// depends on when it and its slave's link started, up to the last one
// broadcast; or, for an instance's run that has ended or an epoch the
// master has left, up to the last it received, since the broadcasts
// that were sent as it ended (or as the master restarted) are owed to no
// one. t.mu must be held.
func (t *tracker) owedLocked(at now) {
	for k, r := range t.castRecv {
		s, sender := t.streams[k], t.casts[r.castKey]
		first := int64(slices.IndexFunc(s.received, func(n uint8) bool { return n > 0 }) + 1)
		hi := s.last
		if at.epoch == r.epoch && at.runs[r.receiver] == r.run && sender != nil {
			hi = max(hi, int64(len(sender.sent)))
		}
		s.sent, s.sentN = make([]bool, hi), 0
		for seq := first; sender != nil && seq <= hi && seq <= int64(len(sender.sent)); seq++ {
			if sender.sent[seq-1] {
				s.sent[seq-1] = true
				s.sentN++
			}
		}
	}
}

// outstanding describes what has been sent and not yet received, and what
// was started and has not ended; "" when nothing is outstanding.
func (t *tracker) outstanding(at now) (string, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.owedLocked(at)
	var parts []string
	for _, k := range t.sortedKeysLocked() {
		s := t.streams[k]
		missing := 0
		for i, ok := range s.sent {
			if ok && (i >= len(s.received) || s.received[i] == 0) {
				missing++
			}
		}
		if missing > 0 {
			parts = append(parts, fmt.Sprintf("%s #%d: %d events not received", k.link, k.inc, missing))
		}
	}
	for _, kind := range sortedStrings(mapKeys(t.requests)) {
		open := 0
		for _, r := range t.requests[kind].byID {
			if r.started && r.ended == 0 {
				open++
			}
		}
		if open > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d requests not ended", kind, open))
		}
	}
	return strings.Join(parts, "; "), t.changed
}

func (t *tracker) sortedKeysLocked() []streamKey {
	keys := mapKeys(t.streams)
	slices.SortFunc(keys, func(a, b streamKey) int {
		if c := compareLinks(a.link, b.link); c != 0 {
			return c
		}
		return int(a.inc - b.inc)
	})
	return keys
}

// compareLinks orders link names with the numbers in them compared as
// numbers, so that "instance 1001" comes after "instance 201".
func compareLinks(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

// digits returns how many decimal digits s starts with.
func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

func mapKeys[K comparable, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// codeOf returns the error code of err: its *link.Error's, or "other".
func codeOf(err error) string {
	var le *link.Error
	if errors.As(err, &le) {
		return string(le.Code)
	}
	return "other"
}

func sortedStrings(s []string) []string {
	slices.Sort(s)
	return s
}
