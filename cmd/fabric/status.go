package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// statusJSON is what fabric ctl status --json prints: the master's answer
// and the problems found in it.
type statusJSON struct {
	messages.ClusterStatus
	Problems []string `json:"problems"`
}

func (r *ctlRun) status(ctx context.Context, _ []string) error {
	st, err := call(ctx, r, messages.GetClusterStatus, messages.Empty{})
	if le := (*link.Error)(nil); errors.As(err, &le) && le.Code == link.CodeInvalidMessage && strings.Contains(le.Message, "unknown message type") {
		return link.Errorf(le.Code, "the master does not know get_cluster_status: it runs an older fabric than this one; fabric ctl slave list and instance list work with it")
	}
	if err != nil {
		return err
	}
	problems := clusterProblems(st)
	if r.json {
		return printJSON(r.a.stdout, statusJSON{st, problems})
	}
	w := r.a.stdout
	printSummary(w, st)
	if err := printTables(w, st); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(problems) == 0 {
		_, err := fmt.Fprintln(w, "problems: none")
		return err
	}
	fmt.Fprintln(w, "problems:")
	for _, p := range problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return nil
}

// printSummary prints the status's first lines: the active master, the
// standbys, and how many slaves and instances there are, by state.
func printSummary(w io.Writer, st messages.ClusterStatus) {
	m := st.Master
	master := m.Version
	if m.Commit != "" {
		master += ", commit " + short(m.Commit)
	}
	state := fmt.Sprintf("active in term %d", m.Term)
	if m.Starting {
		state += ", waiting for its slaves"
	}
	fmt.Fprintf(w, "master     %s, up %s, %s\n", master, ago(time.Duration(m.UptimeMS)*time.Millisecond), state)
	standbys := "none"
	switch n := len(st.Standbys); {
	case st.StandbysUnknown != "":
		standbys = "unknown: " + st.StandbysUnknown
	case n > 0:
		standbys = fmt.Sprintf("%d ready to take over", n)
	}
	fmt.Fprintf(w, "standbys   %s\n", standbys)
	connected := 0
	for _, s := range st.Slaves {
		if s.Connected {
			connected++
		}
	}
	fmt.Fprintf(w, "slaves     %d of %d connected\n", connected, len(st.Slaves))
	fmt.Fprintf(w, "instances  %s\n", instanceCounts(st.Instances))
}

// printTables prints the status's tables: the masters, and the slaves if
// there are any.
func printTables(w io.Writer, st messages.ClusterStatus) error {
	fmt.Fprintln(w)
	rows := [][]string{masterRow(st.Master.MasterInfo, "active")}
	for _, s := range st.Standbys {
		rows = append(rows, masterRow(s, "standby"))
	}
	if err := table(w, "MASTER\tNAME\tVERSION\tSTATE\tTERM\tSINCE", rows); err != nil {
		return err
	}
	if len(st.Slaves) > 0 {
		fmt.Fprintln(w)
		rows = nil
		for _, s := range st.Slaves {
			version := s.Version
			if version == "" {
				version = "-"
			}
			rows = append(rows, []string{strconv.FormatInt(s.ID, 10), s.Name, version, strconv.FormatBool(s.Connected), seen(s), strconv.Itoa(s.Instances)})
		}
		return table(w, "ID\tNAME\tVERSION\tCONNECTED\tLAST SEEN\tINSTANCES", rows)
	}
	return nil
}

// clusterProblems lists what an operator should look at: slaves that are
// not connected (and the instances whose state is unknown for it),
// instances no slave hosts, and standbys the master could not see.
func clusterProblems(st messages.ClusterStatus) []string {
	problems := []string{}
	if st.StandbysUnknown != "" {
		problems = append(problems, "the master could not tell which masters stand by: "+st.StandbysUnknown)
	}
	for _, s := range st.Slaves {
		if s.Connected {
			continue
		}
		p := fmt.Sprintf("slave %d (%s) is not connected; last seen %s", s.ID, s.Name, seen(s))
		if s.LastSeen == 0 {
			p = fmt.Sprintf("slave %d (%s) has not registered since this master became active", s.ID, s.Name)
		}
		var unknown []string
		for _, i := range st.Instances {
			if i.SlaveID == s.ID {
				unknown = append(unknown, strconv.FormatInt(i.ID, 10))
			}
		}
		if len(unknown) > 0 {
			p += fmt.Sprintf("; the state of its instance %s is unknown", list(unknown))
		}
		problems = append(problems, p)
	}
	var unassigned []string
	for _, i := range st.Instances {
		if i.Status == messages.StatusUnassigned {
			unassigned = append(unassigned, fmt.Sprintf("%d (%s)", i.ID, i.Name))
		}
	}
	if len(unassigned) > 0 {
		problems = append(problems, fmt.Sprintf("instance %s: not assigned to a slave (fabric ctl instance assign)", list(unassigned)))
	}
	return problems
}

// instanceCounts says how many instances there are, by status.
func instanceCounts(instances []messages.InstanceInfo) string {
	if len(instances) == 0 {
		return "none"
	}
	counts := map[string]int{}
	var order []string
	for _, i := range instances {
		if counts[i.Status] == 0 {
			order = append(order, i.Status)
		}
		counts[i.Status]++
	}
	statuses := []string{messages.StatusRunning, messages.StatusStarting, messages.StatusStopping, messages.StatusStopped, messages.StatusUnknown, messages.StatusUnassigned}
	slices.SortStableFunc(order, func(a, b string) int {
		ia, ib := slices.Index(statuses, a), slices.Index(statuses, b)
		if ia < 0 {
			ia = len(statuses)
		}
		if ib < 0 {
			ib = len(statuses)
		}
		return ia - ib
	})
	var parts []string
	for _, s := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
	}
	return fmt.Sprintf("%d: %s", len(instances), strings.Join(parts, ", "))
}

// list joins items, naming at most ten.
func list(items []string) string {
	if len(items) > 10 {
		return strings.Join(items[:10], ", ") + fmt.Sprintf(" and %d more", len(items)-10)
	}
	return strings.Join(items, ", ")
}

// seen says how long ago the master last heard from a slave: "-" for one
// that has not registered since this master became active.
func seen(s messages.SlaveStatus) string {
	if s.LastSeen == 0 {
		return "-"
	}
	d := time.Duration(s.SilentMS) * time.Millisecond
	if d < time.Second {
		return "just now"
	}
	return ago(d) + " ago"
}

// masterRow is a master process's row in the table of masters.
func masterRow(m messages.MasterInfo, state string) []string {
	version, term := m.Version, "-"
	if version == "" {
		version = "-"
	}
	if m.Term != 0 {
		term = strconv.FormatUint(m.Term, 10)
	}
	return []string{m.ID, m.Name, version, state, term, time.UnixMilli(m.Since).Format("2006-01-02T15:04:05")}
}

// ago rounds a duration for people: to the second under an hour, to the
// minute under two days, else in days.
func ago(d time.Duration) string {
	switch {
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// short is a commit's first 12 characters, and +modified if it says so.
func short(commit string) string {
	rev, modified, _ := strings.Cut(commit, "+")
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified != "" {
		rev += "+" + modified
	}
	return rev
}
