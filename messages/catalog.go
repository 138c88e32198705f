package messages

import (
	"fmt"
	"slices"
	"strings"
)

// Plugin groups the messages of one plugin. Every name must carry the
// plugin's prefix: a plugin called "global_chat" defines "global_chat:chat".
type Plugin struct {
	Name     string
	Messages []Message
}

// Catalog lists every message a cluster knows: the core messages and those
// of its plugins. Links look messages up in it by name; docs and broker
// permissions are derived from it. A Catalog is immutable and safe for
// concurrent use.
type Catalog struct {
	byName map[string]*Definition
	sorted []*Definition
}

// NewCatalog returns a catalog of the core messages and those of plugins.
// A duplicate name or a plugin message without its plugin's prefix is an
// error that names the message and matches ErrDefinition.
func NewCatalog(plugins ...Plugin) (*Catalog, error) {
	c := &Catalog{byName: map[string]*Definition{}}
	add := func(m Message, plugin string) error {
		var d *Definition
		if m != nil {
			d = m.Def()
		}
		if d == nil {
			return fmt.Errorf("%w: plugin %q lists a nil message", ErrDefinition, plugin)
		}
		if d.Plugin() != plugin {
			if plugin == "" {
				return fmt.Errorf("%w: message %q: core messages have no plugin prefix", ErrDefinition, d.name)
			}
			return fmt.Errorf("%w: message %q: plugin %q's messages must be named %q", ErrDefinition, d.name, plugin, plugin+":type")
		}
		if _, dup := c.byName[d.name]; dup {
			return fmt.Errorf("%w: message %q is defined twice", ErrDefinition, d.name)
		}
		c.byName[d.name] = d
		return nil
	}
	for _, m := range coreMessages {
		if err := add(m, ""); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, p := range plugins {
		if err := checkName(p.Name); err != nil || strings.Contains(p.Name, ":") {
			return nil, fmt.Errorf("%w: plugin %q: the name must be snake_case", ErrDefinition, p.Name)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("%w: plugin %q is listed twice", ErrDefinition, p.Name)
		}
		seen[p.Name] = true
		for _, m := range p.Messages {
			if err := add(m, p.Name); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range c.byName {
		c.sorted = append(c.sorted, d)
	}
	slices.SortFunc(c.sorted, func(a, b *Definition) int { return strings.Compare(a.name, b.name) })
	return c, nil
}

// Lookup returns the message named name.
func (c *Catalog) Lookup(name string) (*Definition, bool) {
	d, ok := c.byName[name]
	return d, ok
}

// Contains reports whether m is the definition the catalog holds under its
// name (not merely another message with the same name).
func (c *Catalog) Contains(m Message) bool {
	if m == nil {
		return false
	}
	d := m.Def()
	return d != nil && c.byName[d.name] == d
}

// All returns every message, sorted by name. The slice is the caller's.
func (c *Catalog) All() []*Definition { return slices.Clone(c.sorted) }

// On returns the messages valid in direction dir, sorted by name.
func (c *Catalog) On(dir Direction) []*Definition {
	var out []*Definition
	for _, d := range c.sorted {
		if d.ValidOn(dir) {
			out = append(out, d)
		}
	}
	return out
}
