package main

import (
	"context"
	"errors"
	"fmt"
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
	m := st.Master
	master := m.Version
	if m.Commit != "" {
		master += ", commit " + short(m.Commit)
	}
	fmt.Fprintf(w, "master     %s, up %s\n", master, ago(time.Duration(m.UptimeMS)*time.Millisecond))
	// A standby master is another issue's; its line is kept here.
	fmt.Fprintf(w, "standby    none (standby masters are not supported yet)\n")
	connected := 0
	for _, s := range st.Slaves {
		if s.Connected {
			connected++
		}
	}
	fmt.Fprintf(w, "slaves     %d of %d connected\n", connected, len(st.Slaves))
	fmt.Fprintf(w, "instances  %s\n", instanceCounts(st.Instances))
	if len(st.Slaves) > 0 {
		fmt.Fprintln(w)
		var rows [][]string
		for _, s := range st.Slaves {
			version := s.Version
			if version == "" {
				version = "-"
			}
			rows = append(rows, []string{strconv.FormatInt(s.ID, 10), s.Name, version, strconv.FormatBool(s.Connected), seen(s.SilentMS), strconv.Itoa(s.Instances)})
		}
		if err := table(w, "ID\tNAME\tVERSION\tCONNECTED\tLAST SEEN\tINSTANCES", rows); err != nil {
			return err
		}
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

// clusterProblems lists what an operator should look at: slaves that are
// not connected (and the instances whose state is unknown for it), and
// instances no slave hosts.
func clusterProblems(st messages.ClusterStatus) []string {
	problems := []string{}
	for _, s := range st.Slaves {
		if s.Connected {
			continue
		}
		p := fmt.Sprintf("slave %d (%s) is not connected; last seen %s", s.ID, s.Name, seen(s.SilentMS))
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

// seen says how long ago the master last heard from a slave.
func seen(silentMS int64) string {
	d := time.Duration(silentMS) * time.Millisecond
	if d < time.Second {
		return "just now"
	}
	return ago(d) + " ago"
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
