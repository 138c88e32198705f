package link

import (
	"fmt"
	"strings"

	"github.com/linkfabric/linkfabric/messages"
)

// Address names one endpoint: its type and its id among endpoints of that
// type, such as slave 3 or control alice. The master's id is "0".
type Address struct {
	Type messages.Endpoint
	ID   string
}

// MasterAddress is the address of the cluster's master.
var MasterAddress = Address{Type: messages.Master, ID: "0"}

// ValidID reports whether id may name an endpoint: 1 to 64 letters, digits,
// '-' or '_', starting with a letter or digit. Ids are used as they are in
// transport addresses (NATS subject tokens), so nothing else is allowed;
// names starting with '_' are left to the transport.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 || id[0] == '_' || id[0] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ { // every inbound message's sender is checked: no regexp
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// String returns "type/id", e.g. "slave/3".
func (a Address) String() string { return a.Type.String() + "/" + a.ID }

// IsZero reports whether a is the zero Address.
func (a Address) IsZero() bool { return a == Address{} }

// Validate reports whether a has a known type and a valid id.
func (a Address) Validate() error {
	if !a.Type.Valid() {
		return fmt.Errorf("link: address %s: unknown endpoint type", a)
	}
	if !ValidID(a.ID) {
		return fmt.Errorf("link: address %s: id must be 1-64 letters, digits, '-' or '_', starting with a letter or digit", a)
	}
	return nil
}

// ParseAddress parses the "type/id" form returned by String.
func ParseAddress(s string) (Address, error) {
	typ, id, ok := strings.Cut(s, "/")
	if !ok {
		return Address{}, fmt.Errorf("link: address %q is not of the form type/id", s)
	}
	e, err := messages.ParseEndpoint(typ)
	if err != nil {
		return Address{}, fmt.Errorf("link: address %q: %w", s, err)
	}
	a := Address{Type: e, ID: id}
	return a, a.Validate()
}
