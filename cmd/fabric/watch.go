package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/messages"
)

// A watch (ctl slave list --watch, ctl instance list --watch) prints the
// list, then each entry that changes as a line of the same columns: what
// a pipe reads line by line, and a terminal shows as a growing table. It
// subscribes to the master's update event, and so goes on across a
// master's restart and a failover, with no change lost or printed twice.

// watcher prints rows under a header, padded to the widths of the first
// table it printed.
type watcher struct {
	w      io.Writer
	json   bool
	mu     sync.Mutex // updates arrive on the control's goroutine
	live   bool       // the first table is printed
	first  [][]string // the rows of the first table, until then
	widths []int
}

// add prints row (or v, with --json) or keeps it for the first table.
func (w *watcher) add(row []string, v any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.json {
		_ = json.NewEncoder(w.w).Encode(v)
		return
	}
	if !w.live {
		w.first = append(w.first, row)
		return
	}
	w.print(row)
}

// begin prints the header and the first table; from then on each row is
// printed as it comes. Rows of one key (the first column) are the latest
// of each.
func (w *watcher) begin(header []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.live = true
	if w.json {
		return
	}
	var rows [][]string
	at := map[string]int{}
	for _, row := range w.first {
		if i, ok := at[row[0]]; ok {
			rows[i] = row
			continue
		}
		at[row[0]] = len(rows)
		rows = append(rows, row)
	}
	w.widths = make([]int, len(header))
	for _, row := range append([][]string{header}, rows...) {
		for i, cell := range row {
			w.widths[i] = max(w.widths[i], len(cell))
		}
	}
	w.print(header)
	for _, row := range rows {
		w.print(row)
	}
}

func (w *watcher) print(row []string) {
	var b strings.Builder
	for i, cell := range row {
		b.WriteString(cell)
		if i < len(row)-1 {
			b.WriteString(strings.Repeat(" ", max(0, w.widths[i]-len(cell))+2))
		}
	}
	fmt.Fprintln(w.w, b.String())
}

// watch runs subscribe, prints the first table, and waits for Ctrl-C or
// the subscription's end.
func (r *ctlRun) watch(ctx context.Context, header []string, subscribe func(*watcher) (*fabric.Subscription, error)) error {
	if err := r.dial(ctx, nil); err != nil {
		return err
	}
	defer r.close()
	w := &watcher{w: r.a.stdout, json: r.json}
	sub, err := subscribe(w)
	if err != nil {
		return r.noMaster(err)
	}
	w.begin(header)
	// Said on stderr, so that stdout holds the table and changes alone.
	fmt.Fprintln(r.a.stderr, "watching for changes (Ctrl-C to stop)")
	select {
	case <-ctx.Done(): // Ctrl-C: a normal end
		return nil
	case <-sub.Done():
		return sub.Err()
	}
}

func (r *ctlRun) watchSlaves(ctx context.Context) error {
	return r.watch(ctx, []string{"ID", "NAME", "CONNECTED", "INSTANCES"}, func(w *watcher) (*fabric.Subscription, error) {
		return r.ctl.SubscribeSlaves(ctx, 0, func(u messages.SlaveChange) {
			w.add([]string{strconv.FormatInt(u.ID, 10), u.Name, strconv.FormatBool(u.Connected), strconv.Itoa(u.Instances)}, u)
		})
	})
}

func (r *ctlRun) watchInstances(ctx context.Context) error {
	return r.watch(ctx, []string{"ID", "NAME", "SLAVE", "STATUS"}, func(w *watcher) (*fabric.Subscription, error) {
		return r.ctl.SubscribeInstances(ctx, 0, func(u messages.InstanceChange) {
			slave, status := "-", u.Status
			if u.SlaveID != 0 {
				slave = strconv.FormatInt(u.SlaveID, 10)
			}
			if u.IsDeleted {
				status = "deleted"
			}
			w.add([]string{strconv.FormatInt(u.ID, 10), u.Name, slave, status}, u)
		})
	})
}
