package fabric

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Grants is the master's table of who may do what: which control users
// hold which permissions (messages.Definition.Permission), and so may send
// the requests and events that need them. It is immutable and safe for
// concurrent use. (What a NATS user may publish and subscribe to is the
// broker's business: see fabric nats-config.)
type Grants struct {
	grants map[string][]string // user ("*" for every user) -> patterns
}

var permPattern = regexp.MustCompile(`^(\*|[a-z][a-z0-9_]*([.:][a-z][a-z0-9_]*)*(\.\*)?)$`)

// ParseGrants parses "user=perm,perm;user=perm". A permission is a
// name such as core.instance.start, a prefix ending in ".*" such as
// core.instance.*, or "*" for all. The user "*" stands for every user.
func ParseGrants(s string) (Grants, error) {
	p := Grants{grants: map[string][]string{}}
	for entry := range strings.SplitSeq(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		user, perms, ok := strings.Cut(entry, "=")
		user = strings.TrimSpace(user)
		if !ok || (user != "*" && !link.ValidID(user)) {
			return p, fmt.Errorf("entry %q: want user=permission,permission", entry)
		}
		for perm := range strings.SplitSeq(perms, ",") {
			perm = strings.TrimSpace(perm)
			if perm == "" {
				continue
			}
			if !permPattern.MatchString(perm) {
				return p, fmt.Errorf("entry %q: %q is not a permission, a prefix ending in .* or *", entry, perm)
			}
			p.grants[user] = append(p.grants[user], perm)
		}
	}
	return p, nil
}

// Allows reports whether user holds permission.
func (p Grants) Allows(user, permission string) bool {
	if permission == messages.Unrestricted {
		return true
	}
	for _, who := range []string{user, "*"} {
		for _, g := range p.grants[who] {
			if g == "*" || g == permission {
				return true
			}
			if prefix, ok := strings.CutSuffix(g, "*"); ok && strings.HasPrefix(permission, prefix) {
				return true
			}
		}
	}
	return false
}

// Unknown returns the granted permissions that grant nothing in catalog,
// in the order they were given: a name no message needs, or a prefix
// ending in ".*" that no permission starts with. "*" is always known.
func (p Grants) Unknown(catalog *messages.Catalog) []string {
	var have []string
	for _, d := range catalog.All() {
		if perm := d.Permission(); perm != "" && perm != messages.Unrestricted {
			have = append(have, perm)
		}
	}
	var out []string
	for _, grants := range p.grants {
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

// ParseInstances parses "id:name,id:name", the instances a slave hosts from
// the start.
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
