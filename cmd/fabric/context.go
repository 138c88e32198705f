package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
)

// A context names a cluster for fabric ctl: the FABRIC_* settings that
// reach it, kept in the user's configuration directory
// (os.UserConfigDir()/linkfabric), one file per context, so that an
// operator of several clusters need not export variables for each.

// contextSetting is one setting a context may hold: its flag on
// fabric context add, and the variable it stands for.
type contextSetting struct {
	flag, variable, about string
	secret                bool
}

var contextSettings = []contextSetting{
	{"server", "FABRIC_NATS_URL", "NATS servers, comma-separated", false},
	{"user", "FABRIC_CONTROL_USER", "the control's user name", false},
	{"prefix", "FABRIC_SUBJECT_PREFIX", "the cluster's subject prefix", false},
	{"nats-user", "FABRIC_NATS_USER", "NATS user name", false},
	{"nats-password", "FABRIC_NATS_PASSWORD", "NATS password (kept in the context's file, mode 0600)", true},
	{"token", "FABRIC_NATS_TOKEN", "NATS token (kept in the context's file, mode 0600)", true},
	{"nkey", "FABRIC_NATS_NKEY_SEED_FILE", "nkey seed file", false},
	{"creds", "FABRIC_NATS_CREDS_FILE", "NATS .creds file", false},
	{"tls-ca", "FABRIC_NATS_TLS_CA_FILE", "CA of the servers' certificates", false},
	{"tls-cert", "FABRIC_NATS_TLS_CERT_FILE", "client certificate", false},
	{"tls-key", "FABRIC_NATS_TLS_KEY_FILE", "client certificate's key", false},
}

// savedContext is a context's file.
type savedContext struct {
	Description string            `json:"description,omitempty"`
	Settings    map[string]string `json:"settings"` // variable -> value
}

// contextStore is the directory that holds the contexts.
type contextStore struct{ dir string }

// contextNameOK reports whether name can name a context (and a file).
func contextNameOK(name string) bool { return link.ValidID(name) }

// contexts returns the store in the user's configuration directory
// (os.UserConfigDir: $XDG_CONFIG_HOME, else ~/.config, on Linux).
func (a *app) contexts() (contextStore, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return contextStore{}, fmt.Errorf("contexts: %w", err)
	}
	return contextStore{filepath.Join(dir, "linkfabric")}, nil
}

func (s contextStore) path(name string) string {
	return filepath.Join(s.dir, "contexts", name+".json")
}

func (s contextStore) load(name string) (savedContext, error) {
	var c savedContext
	if !contextNameOK(name) {
		return c, usagef("context %q: a name is 1-64 letters, digits, '-' or '_'", name)
	}
	data, err := os.ReadFile(s.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return c, usagef("there is no context %q (fabric context ls lists them)", name)
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("context %q: %s: %w", name, s.path(name), err)
	}
	return c, nil
}

func (s contextStore) save(name string, c savedContext) error {
	if err := os.MkdirAll(filepath.Dir(s.path(name)), 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	// Written whole and renamed: a reader never sees half a context.
	tmp := s.path(name) + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path(name))
}

func (s contextStore) names() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "contexts"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && contextNameOK(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// selected returns the selected context's name, or "".
func (s contextStore) selected() (string, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, "context"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(data)), err
}

func (s contextStore) selectContext(name string) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if name == "" {
		err := os.Remove(filepath.Join(s.dir, "context"))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, "context"), []byte(name+"\n"), 0o600)
}

// controlEnviron is the environment fabric ctl loads its configuration
// from: the context's settings (named by --context, else FABRIC_CONTEXT,
// else the selected one), overridden by the process environment,
// overridden by --server. It returns the context used ("" for none).
func (a *app) controlEnviron(contextFlag, server string) ([]string, string, error) {
	name := contextFlag
	if name == "" {
		name = envOr(a.environ, "FABRIC_CONTEXT", "")
	}
	store, err := a.contexts()
	if err != nil {
		return nil, "", err
	}
	if name == "" {
		if name, err = store.selected(); err != nil {
			return nil, "", err
		}
	}
	var out []string
	if name != "" {
		c, err := store.load(name)
		if err != nil {
			return nil, "", err
		}
		for _, s := range contextSettings {
			if v, ok := c.Settings[s.variable]; ok {
				out = append(out, s.variable+"="+v)
			}
		}
	}
	out = append(out, a.environ...)
	if server != "" {
		out = append(out, "FABRIC_NATS_URL="+server)
	}
	return out, name, nil
}

const contextLong = `Keep named clusters for fabric ctl, as the nats CLI does: each context
holds the settings that reach one cluster (servers, user, credentials), in
the user's configuration directory ($XDG_CONFIG_HOME/linkfabric, by default
~/.config/linkfabric), one file per context, readable by the user only.

fabric ctl takes each setting from, strongest first: flag > environment >
selected context > default. That is: its flags (--server, and --context to
pick a context for one command), the environment (FABRIC_* variables;
FABRIC_CONTEXT picks a context), the selected context, and the defaults
(nats://127.0.0.1:4222, user admin).`

func (a *app) contextCommand() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "context",
		Short: "Keep named clusters for fabric ctl: add, ls, select, rm, show",
		Long:  contextLong,
	})
	cmd.AddCommand(a.contextAdd(), a.contextList(), a.contextSelect(), a.contextRemove(), a.contextShow())
	return cmd
}

func (a *app) contextAdd() *cobra.Command {
	values := map[string]*string{}
	var description string
	var selectIt bool
	cmd := &cobra.Command{
		Use:   "add NAME [flags]",
		Short: "Add a context, or replace the one of that name",
		Long: `Add a context, or replace the one of that name. Each flag sets one
FABRIC_* variable for fabric ctl when the context is used; those left out
keep their defaults. The settings are checked as fabric ctl would check them.

Example:
  fabric context add prod --server nats://nats1.example:4222,nats://nats2.example:4222 \
      --user alice --nats-user control-alice --nats-password "$PW" --select`,
		Args: argsBetween(1, 1, "NAME"),
		RunE: a.do(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !contextNameOK(name) {
				return usagef("context add: %q: a name is 1-64 letters, digits, '-' or '_'", name)
			}
			c := savedContext{Description: description, Settings: map[string]string{}}
			var environ []string
			for _, s := range contextSettings {
				if v := *values[s.flag]; cmd.Flags().Changed(s.flag) {
					c.Settings[s.variable] = v
					environ = append(environ, s.variable+"="+v)
				}
			}
			if _, err := fabric.LoadControlConfig(environ); err != nil {
				return err
			}
			store, err := a.contexts()
			if err != nil {
				return err
			}
			if err := store.save(name, c); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "context %s saved in %s\n", name, store.path(name))
			if selectIt {
				if err := store.selectContext(name); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "context %s selected\n", name)
			}
			return nil
		}),
	}
	for _, s := range contextSettings {
		values[s.flag] = cmd.Flags().String(s.flag, "", s.about+" ("+s.variable+")")
	}
	cmd.Flags().StringVar(&description, "description", "", "what the context is for")
	cmd.Flags().BoolVar(&selectIt, "select", false, "select the context too")
	return cmd
}

func (a *app) contextList() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the contexts; * marks the selected one",
		Args:    argsBetween(0, 0, ""),
		RunE: a.do(func(*cobra.Command, []string) error {
			store, err := a.contexts()
			if err != nil {
				return err
			}
			names, err := store.names()
			if err != nil {
				return err
			}
			selected, err := store.selected()
			if err != nil {
				return err
			}
			type entry struct {
				Name        string `json:"name"`
				Selected    bool   `json:"selected"`
				Server      string `json:"server,omitempty"`
				User        string `json:"user,omitempty"`
				Description string `json:"description,omitempty"`
			}
			entries := []entry{}
			for _, n := range names {
				c, err := store.load(n)
				if err != nil {
					return err
				}
				entries = append(entries, entry{n, n == selected, c.Settings["FABRIC_NATS_URL"], c.Settings["FABRIC_CONTROL_USER"], c.Description})
			}
			if asJSON {
				return printJSON(a.stdout, entries)
			}
			if len(entries) == 0 {
				_, err := fmt.Fprintln(a.stdout, "no contexts (fabric context add NAME --server URL adds one)")
				return err
			}
			var rows [][]string
			for _, e := range entries {
				name := e.Name
				if e.Selected {
					name += " *"
				}
				rows = append(rows, []string{name, orDash(e.Server), orDash(e.User), orDash(e.Description)})
			}
			return table(a.stdout, "NAME\tSERVER\tUSER\tDESCRIPTION", rows)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *app) contextSelect() *cobra.Command {
	var none bool
	cmd := &cobra.Command{
		Use:   "select [NAME]",
		Short: "Select the context fabric ctl uses by default, or print the selected one",
		Args:  argsBetween(0, 1, "[NAME]"),
		RunE: a.do(func(_ *cobra.Command, args []string) error {
			store, err := a.contexts()
			if err != nil {
				return err
			}
			switch {
			case none:
				if len(args) > 0 {
					return usagef("context select: --none takes no NAME")
				}
				if err := store.selectContext(""); err != nil {
					return err
				}
				_, err = fmt.Fprintln(a.stdout, "no context selected")
				return err
			case len(args) == 0:
				name, err := store.selected()
				if err != nil {
					return err
				}
				if name == "" {
					name = "none"
				}
				_, err = fmt.Fprintln(a.stdout, name)
				return err
			}
			if _, err := store.load(args[0]); err != nil {
				return err
			}
			if err := store.selectContext(args[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "context %s selected\n", args[0])
			return err
		}),
	}
	cmd.Flags().BoolVar(&none, "none", false, "select no context")
	return cmd
}

func (a *app) contextRemove() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove a context",
		Args:    argsBetween(1, 1, "NAME"),
		RunE: a.do(func(_ *cobra.Command, args []string) error {
			store, err := a.contexts()
			if err != nil {
				return err
			}
			if _, err := store.load(args[0]); err != nil {
				return err
			}
			if err := os.Remove(store.path(args[0])); err != nil {
				return err
			}
			if sel, err := store.selected(); err == nil && sel == args[0] {
				if err := store.selectContext(""); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(a.stdout, "context %s removed\n", args[0])
			return err
		}),
	}
}

func (a *app) contextShow() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [NAME]",
		Short: "Show a context's settings (the selected one's by default); secrets are masked",
		Args:  argsBetween(0, 1, "[NAME]"),
		RunE: a.do(func(_ *cobra.Command, args []string) error {
			store, err := a.contexts()
			if err != nil {
				return err
			}
			name := ""
			if len(args) > 0 {
				name = args[0]
			} else if name, err = store.selected(); err != nil {
				return err
			} else if name == "" {
				return usagef("context show: no context is selected; name one")
			}
			c, err := store.load(name)
			if err != nil {
				return err
			}
			shown := map[string]string{}
			for _, s := range contextSettings {
				if v, ok := c.Settings[s.variable]; ok {
					if s.secret {
						v = "********"
					}
					shown[s.variable] = v
				}
			}
			if asJSON {
				return printJSON(a.stdout, map[string]any{"name": name, "description": c.Description, "file": store.path(name), "settings": shown})
			}
			fmt.Fprintf(a.stdout, "context %s (%s)\n", name, store.path(name))
			if c.Description != "" {
				fmt.Fprintf(a.stdout, "  %s\n", c.Description)
			}
			vars := make([]string, 0, len(shown))
			for v := range shown {
				vars = append(vars, v)
			}
			slices.SortFunc(vars, func(x, y string) int {
				return slices.IndexFunc(contextSettings, func(s contextSetting) bool { return s.variable == x }) -
					slices.IndexFunc(contextSettings, func(s contextSetting) bool { return s.variable == y })
			})
			for _, v := range vars {
				fmt.Fprintf(a.stdout, "  %s=%s\n", v, shown[v])
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
