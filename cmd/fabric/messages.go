package main

import (
	"encoding/json"
	"strings"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/messages"
)

const messagesLong = `List the message catalog: every message's name, kind, links, forwarding
and permission. With --json, each message's payload JSON Schemas too.
`

// catalogEntry is one message in fabric messages --json.
type catalogEntry struct {
	Name           string          `json:"name"`
	Kind           string          `json:"kind"`
	Description    string          `json:"description,omitempty"`
	Links          []string        `json:"links"`
	ForwardTo      string          `json:"forward_to,omitempty"`
	BroadcastTo    string          `json:"broadcast_to,omitempty"`
	Permission     string          `json:"permission,omitempty"`
	Schema         json.RawMessage `json:"schema"`
	ResponseSchema json.RawMessage `json:"response_schema,omitempty"`
}

func (a *app) messagesCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "messages",
		Short: "List the message catalog",
		Long:  messagesLong,
		Args:  argsBetween(0, 0, ""),
		RunE:  a.do(func(*cobra.Command, []string) error { return a.messages(asJSON) }),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, with the payload schemas")
	return cmd
}

func (a *app) messages(asJSON bool) error {
	catalog, err := messages.NewCatalog()
	if err != nil {
		return err
	}
	var entries []catalogEntry
	for _, d := range catalog.All() {
		e := catalogEntry{Name: d.Name(), Kind: d.Kind().String(), Description: d.Description(), Permission: d.Permission(), Schema: d.PayloadSchema().JSON()}
		for _, l := range d.Links() {
			e.Links = append(e.Links, l.String())
		}
		if d.ForwardTo() != 0 {
			e.ForwardTo = d.ForwardTo().String()
		}
		if d.BroadcastTo() != 0 {
			e.BroadcastTo = d.BroadcastTo().String()
		}
		if r := d.ResponseSchema(); r != nil {
			e.ResponseSchema = r.JSON()
		}
		entries = append(entries, e)
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	var rows [][]string
	for _, e := range entries {
		route := "-"
		switch {
		case e.ForwardTo != "" && e.BroadcastTo != "":
			route = "forward " + e.ForwardTo + ", broadcast " + e.BroadcastTo
		case e.ForwardTo != "":
			route = "forward " + e.ForwardTo
		case e.BroadcastTo != "":
			route = "broadcast " + e.BroadcastTo
		}
		perm := e.Permission
		if perm == "" {
			perm = "-"
		}
		rows = append(rows, []string{e.Name, e.Kind, strings.Join(e.Links, ","), route, perm})
	}
	return table(a.stdout, "NAME\tKIND\tLINKS\tROUTING\tPERMISSION", rows)
}
