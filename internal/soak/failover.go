package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
)

// The faults a soak with Config.Masters makes itself (MakeFault).
const (
	KillActive     = "SIGKILL the active master"
	PauseActive    = "SIGSTOP the active master past its lease, then SIGCONT"
	RestartStandby = "restart the standby"
)

// Faults lists the faults MakeFault makes, in the order `fabric soak
// --failover` makes them.
var Faults = []string{KillActive, PauseActive, RestartStandby}

// settleWatch is how long requests are watched after the masters are
// settled again: a lease that lapses takes that long to show.
func (s *Soak) settleWatch() time.Duration {
	if s.cfg.Lease > 0 {
		return s.cfg.Lease
	}
	return fabric.DefaultLease
}

// FaultResult says how the cluster came through one fault.
type FaultResult struct {
	Fault string `json:"fault"`
	// Recovery is how long after the fault a control's requests (soak:ask,
	// control -> master -> slave -> instance, one after the other) succeed
	// again for good: the first success after the last failure, watched
	// until the masters are settled and a lease more.
	Recovery time.Duration `json:"recovery_ns"`
	// TermBefore and TermAfter are the active master's terms.
	TermBefore uint64 `json:"term_before"`
	TermAfter  uint64 `json:"term_after"`
	// Acknowledged counts the changes of state the master had
	// acknowledged before the fault; Missing lists those of all the
	// changes acknowledged so far that the active master lacks after it.
	Acknowledged int      `json:"acknowledged"`
	Missing      []string `json:"missing,omitempty"`
}

// BreakFunc makes a fault, given who was active and who stood by just
// before, and returns how to heal it: heal runs once a request has
// succeeded again, and returns when the soak has its masters back (one
// active, the others standing by).
type BreakFunc func(ctx context.Context, st MasterState) (heal func(context.Context) error, err error)

// MakeFault makes one of the faults of Faults (see RunFault).
func (s *Soak) MakeFault(ctx context.Context, name string) (FaultResult, error) {
	var brk BreakFunc
	switch name {
	case KillActive:
		brk = func(ctx context.Context, st MasterState) (func(context.Context) error, error) {
			if err := s.Kill(st.Active); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error {
				if _, err := s.StartMasterProcess(); err != nil {
					return err
				}
				_, err := s.WaitMasters(ctx, st.Active, len(st.Standbys))
				return err
			}, nil
		}
	case PauseActive:
		brk = func(ctx context.Context, st MasterState) (func(context.Context) error, error) {
			if err := s.Pause(st.Active); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error {
				// Another has taken over; the paused master wakes up to find
				// its term over, and stands by.
				if _, err := s.WaitMasters(ctx, st.Active, len(st.Standbys)-1); err != nil {
					return err
				}
				if err := s.Resume(st.Active); err != nil {
					return err
				}
				for {
					now, err := s.WaitMasters(ctx, st.Active, len(st.Standbys))
					if err != nil {
						return err
					}
					if slices.Contains(now.Standbys, st.Active) {
						return nil
					}
					select {
					case <-ctx.Done():
						return fmt.Errorf("soak: the woken master does not stand by: %w", ctx.Err())
					case <-time.After(50 * time.Millisecond):
					}
				}
			}, nil
		}
	case RestartStandby:
		brk = func(ctx context.Context, st MasterState) (func(context.Context) error, error) {
			if len(st.Standbys) == 0 {
				return nil, errors.New("soak: no standby to restart")
			}
			if err := s.Stop(ctx, st.Standbys[0]); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error {
				if _, err := s.StartMasterProcess(); err != nil {
					return err
				}
				_, err := s.WaitMasters(ctx, nil, len(st.Standbys))
				return err
			}, nil
		}
	default:
		return FaultResult{}, fmt.Errorf("soak: no fault %q", name)
	}
	return s.RunFault(ctx, name, brk)
}

// RunFault makes a fault with brk under the soak's traffic: it waits for
// the masters to be settled (one active, Config.Masters-1 standing by),
// checks that the active master holds every change it acknowledged,
// breaks, measures how soon a control's request succeeds again, heals,
// and checks the state again.
func (s *Soak) RunFault(ctx context.Context, name string, brk BreakFunc) (FaultResult, error) {
	r := FaultResult{Fault: name}
	st, err := s.WaitMasters(ctx, nil, s.cfg.Masters-1)
	if err != nil {
		return r, err
	}
	r.TermBefore = st.Term
	before, err := s.CheckState(ctx)
	if err != nil {
		return r, fmt.Errorf("soak: the state before %q: %w", name, err)
	}
	if len(before.Missing) > 0 {
		return r, fmt.Errorf("soak: before %q, the master lacks acknowledged changes: %q", name, before.Missing)
	}
	r.Acknowledged = before.Acknowledged
	heal, err := brk(ctx, st)
	if err != nil {
		return r, fmt.Errorf("soak: %s: %w", name, err)
	}
	// Requests may go on succeeding for a while after a fault (a master
	// on a killed node reconnects at once; its lease lapses later if
	// JetStream lost its leader there): what counts is when they succeed
	// for good, after the last failure, until a while after the masters
	// are settled again.
	p := s.startProbe(time.Now())
	err = p.answered(ctx)
	if err == nil {
		err = heal(ctx)
	}
	if err == nil {
		select {
		case <-ctx.Done():
		case <-time.After(s.settleWatch()):
		}
		err = p.answered(ctx)
	}
	r.Recovery = p.end()
	if err != nil {
		return r, fmt.Errorf("soak: %s: %w", name, err)
	}
	after, err := s.CheckState(ctx)
	if err != nil {
		return r, fmt.Errorf("soak: the state after %q: %w", name, err)
	}
	r.Missing = after.Missing
	if st, err := s.Masters(ctx); err == nil {
		r.TermAfter = st.Term
	}
	return r, nil
}

// FailoverReport is what a soak with Config.Masters found: the soak's
// Report, each fault's result, what the active master holds of the
// changes it acknowledged, and whether a master acted after its term
// ended. OK holds the promise across changes of master
// (docs/reliability.md): nothing lost or out of order, a broadcast
// doubled at most once per change of master and nothing else doubled,
// every request ended once, no acknowledged change lost, no message from
// an ended term.
type FailoverReport struct {
	Report       Report        `json:"report"`
	Faults       []FaultResult `json:"faults"`
	State        StateReport   `json:"state"`
	LateMessages int           `json:"late_messages"`
	LateSubjects []string      `json:"late_subjects,omitempty"`
	OK           bool          `json:"ok"`
	Problems     []string      `json:"problems,omitempty"`
}

// NewFailoverReport checks r and the faults' results against the promise,
// and asks s for the state and the messages from ended terms.
func NewFailoverReport(r Report, faults []FaultResult, s *Soak) FailoverReport {
	fr := FailoverReport{Report: r, Faults: faults}
	fr.LateMessages, fr.LateSubjects = s.LateAnswers()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
	defer cancel()
	st, err := s.CheckState(ctx)
	fr.State = st
	if err != nil {
		fr.Problems = append(fr.Problems, fmt.Sprintf("could not check the state: %v", err))
	}
	var changes uint64
	for _, f := range faults {
		changes += f.TermAfter - f.TermBefore
		for _, m := range f.Missing {
			fr.Problems = append(fr.Problems, fmt.Sprintf("%s: acknowledged change lost: %s", f.Fault, m))
		}
	}
	for _, m := range st.Missing {
		fr.Problems = append(fr.Problems, "acknowledged change lost: "+m)
	}
	if fr.LateMessages > 0 {
		fr.Problems = append(fr.Problems, fmt.Sprintf("%d messages from masters whose term had ended, such as %q", fr.LateMessages, fr.LateSubjects))
	}
	for _, l := range r.Links {
		broadcast := strings.Contains(l.Link, " => ")
		switch {
		case l.Missing > 0 || l.OutOfOrder > 0:
			fr.Problems = append(fr.Problems, fmt.Sprintf("%s #%d: %d lost, %d out of order", l.Link, l.Incarnation, l.Missing, l.OutOfOrder))
		case !broadcast && l.Duplicated > 0, broadcast && l.Duplicated > changes:
			fr.Problems = append(fr.Problems, fmt.Sprintf("%s #%d: %d doubled across %d changes of master", l.Link, l.Incarnation, l.Duplicated, changes))
		}
	}
	for _, q := range r.Requests {
		if !q.Clean() {
			fr.Problems = append(fr.Problems, fmt.Sprintf("%s: %d unended, %d ended twice, %d run twice, %d wrong answers", q.Message, q.Unended, q.EndedTwice, q.DoubleRuns, q.WrongAnswers))
		}
	}
	if !r.View.OK {
		fr.Problems = append(fr.Problems, "the master's view: "+strings.Join(r.View.Problems, "; "))
	}
	fr.OK = len(fr.Problems) == 0
	return fr
}

// WriteText writes the report for people.
func (fr FailoverReport) WriteText(w io.Writer) error {
	// The counts, without the verdict of a soak without failover: across
	// changes of master, the promise below applies.
	counts := fr.Report
	counts.OK, counts.Problems = true, nil
	var b strings.Builder
	if err := counts.WriteText(&b); err != nil {
		return err
	}
	text, _, _ := strings.Cut(b.String(), "OK: nothing lost, duplicated or reordered")
	if _, err := io.WriteString(w, text); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nFAULT\tANSWERED AGAIN AFTER\tTERM\tACKNOWLEDGED BEFORE\tLOST")
	for _, f := range fr.Faults {
		fmt.Fprintf(tw, "%s\t%s\t%d -> %d\t%d\t%d\n", f.Fault, f.Recovery.Round(time.Millisecond), f.TermBefore, f.TermAfter, f.Acknowledged, len(f.Missing))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nSTATE  %d changes acknowledged, %d lost; %d requests for changes failed (made or not)\n", fr.State.Acknowledged, len(fr.State.Missing), fr.State.Failed)
	fmt.Fprintf(w, "ENDED TERMS  %d messages from masters whose term had ended\n", fr.LateMessages)
	fmt.Fprintln(w)
	return writeVerdict(w, fr.OK, "OK: nothing lost; broadcasts doubled at most once per change of master, nothing else doubled", fr.Problems)
}

// WriteJSON writes the report as JSON.
func (fr FailoverReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(fr)
}

// TimeFault makes a fault with fault (which returns once it is made, and
// healed if it heals itself, such as a graceful restart of the master) and
// returns how soon after it began a control's requests succeeded again for
// good: the first success after the last failure, watched until a lease
// after fault returned.
func (s *Soak) TimeFault(ctx context.Context, fault func(context.Context) error) (time.Duration, error) {
	p := s.startProbe(time.Now())
	err := fault(ctx)
	if err == nil {
		err = p.answered(ctx)
	}
	if err == nil {
		select {
		case <-ctx.Done():
		case <-time.After(s.settleWatch()):
		}
		err = p.answered(ctx)
	}
	return p.end(), err
}
