package fabric

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Grants is the master's table of who may do what: for each control user
// ("*": every user), the permissions it holds (messages.Definition's
// Permission), and so which requests and events it may send the master. A
// permission is a name such as core.instance.start, a prefix ending in
// ".*" such as core.instance.*, or "*" for all. The master keeps a copy of
// the table it is started with; the zero value grants nothing but what is
// messages.Unrestricted. (What a NATS user may publish and subscribe to is
// the broker's business: see fabric nats-config.)
type Grants map[string][]string

// AllGrants grants every permission to every user, as
// FABRIC_CONTROL_PERMISSIONS does by default.
func AllGrants() Grants { return Grants{"*": {"*"}} }

var permPattern = regexp.MustCompile(`^(\*|[a-z][a-z0-9_]*([.:][a-z][a-z0-9_]*)*(\.\*)?)$`)

// ParseGrants parses the text form of FABRIC_CONTROL_PERMISSIONS,
// "user=perm,perm;user=perm".
func ParseGrants(s string) (Grants, error) {
	g := Grants{}
	for entry := range strings.SplitSeq(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		user, perms, ok := strings.Cut(entry, "=")
		user = strings.TrimSpace(user)
		if !ok || !validGrantee(user) {
			return nil, fmt.Errorf("entry %q: want user=permission,permission", entry)
		}
		for perm := range strings.SplitSeq(perms, ",") {
			perm = strings.TrimSpace(perm)
			if perm == "" {
				continue
			}
			if !permPattern.MatchString(perm) {
				return nil, fmt.Errorf("entry %q: %q is not a permission, a prefix ending in .* or *", entry, perm)
			}
			g[user] = append(g[user], perm)
		}
	}
	return g, nil
}

func validGrantee(user string) bool { return user == "*" || link.ValidID(user) }

// Validate reports the first user or permission of g that is malformed.
func (g Grants) Validate() error {
	for _, user := range slices.Sorted(maps.Keys(g)) {
		if !validGrantee(user) {
			return fmt.Errorf("user %q: want 1-64 letters, digits, '-' or '_', or * for every user", user)
		}
		for _, perm := range g[user] {
			if !permPattern.MatchString(perm) {
				return fmt.Errorf("user %s: %q is not a permission, a prefix ending in .* or *", user, perm)
			}
		}
	}
	return nil
}

// String returns the text form, "user=perm,perm;user=perm", users sorted.
func (g Grants) String() string {
	var entries []string
	for _, user := range slices.Sorted(maps.Keys(g)) {
		entries = append(entries, user+"="+strings.Join(g[user], ","))
	}
	return strings.Join(entries, ";")
}

// clone returns a copy of g that shares nothing with it.
func (g Grants) clone() Grants {
	out := make(Grants, len(g))
	for user, perms := range g {
		out[user] = slices.Clone(perms)
	}
	return out
}

// Allows reports whether user holds permission.
func (g Grants) Allows(user, permission string) bool {
	if permission == messages.Unrestricted {
		return true
	}
	for _, who := range []string{user, "*"} {
		for _, p := range g[who] {
			if p == "*" || p == permission {
				return true
			}
			if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(permission, prefix) {
				return true
			}
		}
	}
	return false
}

// Unknown returns the granted permissions that grant nothing in catalog,
// in the order they were given: a name no message needs, or a prefix
// ending in ".*" that no permission starts with. "*" is always known.
func (g Grants) Unknown(catalog *messages.Catalog) []string {
	var have []string
	for _, d := range catalog.All() {
		if perm := d.Permission(); perm != "" && perm != messages.Unrestricted {
			have = append(have, perm)
		}
	}
	var out []string
	for _, grants := range g {
		for _, g := range grants {
			prefix, wild := strings.CutSuffix(g, "*")
			known := g == "*" || slices.ContainsFunc(have, func(perm string) bool {
				return perm == g || wild && strings.HasPrefix(perm, prefix)
			})
			if !known && !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	slices.Sort(out)
	return out
}

// unknownGrants is g.Unknown(catalog), less the permissions of the
// master's update events (topics), which a grant may name too.
func unknownGrants(g Grants, catalog *messages.Catalog, topics map[string]topic) []string {
	return slices.DeleteFunc(g.Unknown(catalog), func(grant string) bool {
		prefix, wild := strings.CutSuffix(grant, "*")
		for _, t := range topics {
			if t.permission == grant || wild && strings.HasPrefix(t.permission, prefix) {
				return true
			}
		}
		return false
	})
}

// ParseInstances parses the text form of FABRIC_SLAVE_INSTANCES,
// "id:name,id:name", the instances a slave hosts from the start.
func ParseInstances(s string) ([]messages.HostedInstance, error) {
	var out []messages.HostedInstance
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		idText, name, ok := strings.Cut(item, ":")
		id, err := strconv.ParseInt(strings.TrimSpace(idText), 10, 64)
		name = strings.TrimSpace(name)
		if !ok || err != nil || id < 1 || name == "" || len(name) > 128 {
			return nil, fmt.Errorf("%q: want id:name with a positive integer id, such as 101:alpha", item)
		}
		if slices.ContainsFunc(out, func(h messages.HostedInstance) bool { return h.ID == id }) {
			return nil, errors.New("instance " + idText + " is listed twice")
		}
		out = append(out, messages.HostedInstance{ID: id, Name: name, Status: messages.StatusStopped})
	}
	return out, nil
}

// validInstances reports the first instance of hosted that a slave cannot
// host: an id that is not positive or is listed twice, a name that is
// empty or longer than 128 bytes.
func validInstances(hosted []messages.HostedInstance) error {
	for i, h := range hosted {
		switch {
		case h.ID < 1:
			return fmt.Errorf("instance %d: want a positive id", h.ID)
		case h.Name == "" || len(h.Name) > 128:
			return fmt.Errorf("instance %d: want a name of 1 to 128 bytes", h.ID)
		case slices.ContainsFunc(hosted[:i], func(o messages.HostedInstance) bool { return o.ID == h.ID }):
			return fmt.Errorf("instance %d is listed twice", h.ID)
		}
	}
	return nil
}
