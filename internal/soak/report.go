package soak

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a soak counted: per link and sender incarnation, the
// events sent and received; per request type, how the requests ended and
// how often their handlers ran; and whether the master's view of the
// cluster is right. OK is true when nothing was lost, duplicated,
// reordered, left unended or run twice, and the view is right; Problems
// says what is wrong otherwise.
type Report struct {
	// Duration is how long traffic ran, over every phase.
	Duration time.Duration   `json:"duration_ns"`
	Links    []LinkReport    `json:"links"`
	Requests []RequestReport `json:"requests"`
	View     ViewReport      `json:"view"`
	OK       bool            `json:"ok"`
	Problems []string        `json:"problems,omitempty"`
}

// LinkReport counts one stream of numbered events: those one incarnation
// of a sender sent on one link.
type LinkReport struct {
	// Link is the link, in the direction of travel: "instance 101 ->
	// master", "master -> slave 1"; or, for broadcasts, what one receiver
	// was owed of one sender's: "instance 101 => instance 202 (run 1,
	// master 2)" (the receiver's incarnation, and the master's the
	// broadcasts were sent under).
	Link string `json:"link"`
	// Incarnation is the sender's: 1 for the process the soak started, 2
	// after its first restart, ...
	Incarnation int64 `json:"incarnation"`
	// Sent counts sends that returned nil: each must arrive once.
	Sent uint64 `json:"sent"`
	// SendErrors counts sends that returned an error, by error code: those
	// need not arrive.
	SendErrors map[string]uint64 `json:"send_errors,omitempty"`
	// Received counts the distinct events that arrived.
	Received uint64 `json:"received"`
	// Missing counts events sent (nil) that never arrived; MissingSeqs
	// lists the first of them (up to 10), by sequence number.
	Missing     uint64  `json:"missing"`
	MissingSeqs []int64 `json:"missing_seqs,omitempty"`
	// Duplicated counts arrivals of an event that had arrived before;
	// DuplicatedSeqs lists the first of those events (up to 10).
	Duplicated     uint64  `json:"duplicated"`
	DuplicatedSeqs []int64 `json:"duplicated_seqs,omitempty"`
	// OutOfOrder counts events that arrived after one sent later.
	OutOfOrder uint64 `json:"out_of_order"`
	// Unexpected counts events that arrived though their send failed, or
	// that were never sent: not wrong in itself (a send can fail after the
	// event left), but worth knowing.
	Unexpected uint64 `json:"unexpected"`
}

// Clean reports whether the stream lost, duplicated and reordered nothing.
func (r LinkReport) Clean() bool { return r.Missing == 0 && r.Duplicated == 0 && r.OutOfOrder == 0 }

// RequestReport counts the requests of one message type.
type RequestReport struct {
	// Message is the request's type: soak:ask or soak:tell.
	Message string `json:"message"`
	// Path is the way it travels, requester first.
	Path string `json:"path"`
	// Started counts requests sent; Ended those whose requester saw them
	// end (each once); OK those that ended with the right response.
	Started uint64 `json:"started"`
	Ended   uint64 `json:"ended"`
	OK      uint64 `json:"ok"`
	// Errors counts requests that ended with an error, by code.
	Errors map[string]uint64 `json:"errors,omitempty"`
	// Unended counts requests started that never ended.
	Unended uint64 `json:"unended"`
	// EndedTwice counts requests that ended more than once.
	EndedTwice uint64 `json:"ended_twice"`
	// HandlerRuns counts handler runs; DoubleRuns the requests whose
	// handler ran more than once.
	HandlerRuns uint64 `json:"handler_runs"`
	DoubleRuns  uint64 `json:"double_runs"`
	// WrongAnswers counts requests that ended with a response but whose
	// handler never ran, or whose response was another request's.
	WrongAnswers uint64 `json:"wrong_answers"`
}

// Clean reports whether every request ended once, with its own answer if
// any, and no handler ran twice.
func (r RequestReport) Clean() bool {
	return r.Unended == 0 && r.EndedTwice == 0 && r.DoubleRuns == 0 && r.WrongAnswers == 0
}

// ViewReport is the master's view of the cluster, checked against what
// the soak runs: every slave connected with its instances, every instance
// running on its slave.
type ViewReport struct {
	OK               bool     `json:"ok"`
	SlavesConnected  int      `json:"slaves_connected"`
	Slaves           int      `json:"slaves"`
	InstancesRunning int      `json:"instances_running"`
	Instances        int      `json:"instances"`
	Problems         []string `json:"problems,omitempty"`
}

var requestPaths = map[string]string{
	AskRequest.Name():  "control -> master -> slave -> instance",
	TellRequest.Name(): "instance -> slave -> master",
}

// report builds the counts part of a Report.
func (t *tracker) report(at now) ([]LinkReport, []RequestReport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.owedLocked(at)
	var links []LinkReport
	for _, k := range t.sortedKeysLocked() {
		s := t.streams[k]
		r := LinkReport{Link: k.link, Incarnation: k.inc, Sent: s.sentN, Received: s.distinct, Duplicated: s.dups, OutOfOrder: s.disorder}
		if len(s.sendErrors) > 0 {
			r.SendErrors = maps.Clone(s.sendErrors)
		}
		for i, n := range s.received {
			if n > 0 && (i >= len(s.sent) || !s.sent[i]) {
				r.Unexpected++
			}
			if n > 1 && len(r.DuplicatedSeqs) < 10 {
				r.DuplicatedSeqs = append(r.DuplicatedSeqs, int64(i+1))
			}
		}
		for i, ok := range s.sent {
			if ok && (i >= len(s.received) || s.received[i] == 0) {
				r.Missing++
				if len(r.MissingSeqs) < 10 {
					r.MissingSeqs = append(r.MissingSeqs, int64(i+1))
				}
			}
		}
		links = append(links, r)
	}
	var reqs []RequestReport
	for _, kind := range sortedStrings(mapKeys(t.requests)) {
		r := RequestReport{Message: kind, Path: requestPaths[kind], Errors: map[string]uint64{}}
		for _, q := range t.requests[kind].byID {
			r.HandlerRuns += uint64(q.runs)
			if q.runs > 1 {
				r.DoubleRuns++
			}
			if !q.started {
				continue // a handler run for a request this soak did not start
			}
			r.Started++
			switch {
			case q.ended == 0:
				r.Unended++
				continue
			case q.ended > 1:
				r.EndedTwice++
			}
			r.Ended++
			if q.ok {
				r.OK++
				if q.runs == 0 || !q.answer {
					r.WrongAnswers++
				}
			} else {
				r.Errors[q.code]++
			}
		}
		if len(r.Errors) == 0 {
			r.Errors = nil
		}
		reqs = append(reqs, r)
	}
	return links, reqs
}

// check fills in OK and Problems.
func (r *Report) check() {
	r.Problems = nil
	for _, l := range r.Links {
		if l.Missing > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s #%d: %d of %d events lost (%s)", l.Link, l.Incarnation, l.Missing, l.Sent, seqList(l.MissingSeqs, l.Missing)))
		}
		if l.Duplicated > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s #%d: %d events duplicated (%s)", l.Link, l.Incarnation, l.Duplicated, seqList(l.DuplicatedSeqs, uint64(len(l.DuplicatedSeqs)))))
		}
		if l.OutOfOrder > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s #%d: %d events out of order", l.Link, l.Incarnation, l.OutOfOrder))
		}
	}
	for _, q := range r.Requests {
		if q.Unended > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %d requests never ended", q.Message, q.Unended))
		}
		if q.EndedTwice > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %d requests ended twice", q.Message, q.EndedTwice))
		}
		if q.DoubleRuns > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %d requests handled twice", q.Message, q.DoubleRuns))
		}
		if q.WrongAnswers > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %d requests answered without their handler running", q.Message, q.WrongAnswers))
		}
	}
	for _, p := range r.View.Problems {
		r.Problems = append(r.Problems, "view: "+p)
	}
	r.OK = len(r.Problems) == 0
}

// Totals sums the links' counts: events sent, received, missing,
// duplicated and out of order.
func (r Report) Totals() LinkReport {
	var t LinkReport
	t.Link = "all"
	for _, l := range r.Links {
		t.Sent += l.Sent
		t.Received += l.Received
		t.Missing += l.Missing
		t.Duplicated += l.Duplicated
		t.OutOfOrder += l.OutOfOrder
		t.Unexpected += l.Unexpected
		for code, n := range l.SendErrors {
			if t.SendErrors == nil {
				t.SendErrors = map[string]uint64{}
			}
			t.SendErrors[code] += n
		}
	}
	return t
}

// WriteText writes the report as tables for people.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "EVENTS\tINC\tSENT\tRECEIVED\tMISSING\tDUPLICATED\tOUT OF ORDER\tSEND ERRORS\n")
	for _, l := range append(slices.Clone(r.Links), r.Totals()) {
		inc := fmt.Sprint(l.Incarnation)
		if l.Link == "all" {
			inc = "-"
		}
		errs := codes(l.SendErrors)
		if l.Unexpected > 0 {
			errs += fmt.Sprintf(" (%d arrived anyway)", l.Unexpected)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", l.Link, inc, l.Sent, l.Received, l.Missing, l.Duplicated, l.OutOfOrder, errs)
	}
	if slices.ContainsFunc(r.Links, func(l LinkReport) bool { return strings.Contains(l.Link, " => ") }) {
		fmt.Fprintln(tw, "(a => b: the broadcasts of a that b is owed, for b's run and the master's incarnation; INC is a's)")
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "REQUESTS\tSTARTED\tENDED\tOK\tERRORS\tUNENDED\tENDED TWICE\tHANDLER RUNS\tRUN TWICE\n")
	for _, q := range r.Requests {
		fmt.Fprintf(tw, "%s (%s)\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\n", q.Message, q.Path, q.Started, q.Ended, q.OK, codes(q.Errors), q.Unended, q.EndedTwice, q.HandlerRuns, q.DoubleRuns)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "MASTER VIEW\t%d/%d slaves connected, %d/%d instances running\n", r.View.SlavesConnected, r.View.Slaves, r.View.InstancesRunning, r.View.Instances)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nran for %s\n", r.Duration.Round(time.Millisecond))
	return writeVerdict(w, r.OK, "OK: nothing lost, duplicated or reordered; every request ended once; the view is right", r.Problems)
}

// writeVerdict ends a report: the line that says it passed, or each
// problem.
func writeVerdict(w io.Writer, ok bool, okLine string, problems []string) error {
	if ok {
		_, err := fmt.Fprintln(w, okLine)
		return err
	}
	fmt.Fprintln(w, "FAILED:")
	for _, p := range problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return nil
}

// String returns the report as WriteText writes it.
func (r Report) String() string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

// WriteJSON writes the report as one indented JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// codes formats counts by code: "session_lost=3 timeout=1", or "-".
func codes(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range sortedStrings(mapKeys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// seqList formats the first missing sequence numbers: "seq 3, 7, 8 ...".
func seqList(seqs []int64, n uint64) string {
	parts := make([]string, len(seqs))
	for i, q := range seqs {
		parts[i] = fmt.Sprint(q)
	}
	out := "seq " + strings.Join(parts, ", ")
	if uint64(len(seqs)) < n {
		out += " ..."
	}
	return out
}
