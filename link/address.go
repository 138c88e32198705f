package link

import (
	"fmt"
	"strconv"
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

// BroadcastID is the id of a broadcast address: every endpoint of a type.
// ValidID refuses it, so it never names one endpoint.
const BroadcastID = "*"

// SlaveAddress returns the address of slave id.
func SlaveAddress(id int64) Address {
	return Address{Type: messages.Slave, ID: strconv.FormatInt(id, 10)}
}

// InstanceAddress returns the address of instance id.
func InstanceAddress(id int64) Address {
	return Address{Type: messages.Instance, ID: strconv.FormatInt(id, 10)}
}

// ControlAddress returns the address of the controls of user.
func ControlAddress(user string) Address { return Address{Type: messages.Control, ID: user} }

// All returns the broadcast address of every endpoint of type t, such as
// All(messages.Instance): every instance of the cluster.
func All(t messages.Endpoint) Address { return Address{Type: t, ID: BroadcastID} }

// IsBroadcast reports whether a addresses every endpoint of its type.
func (a Address) IsBroadcast() bool { return a.ID == BroadcastID }

// Includes reports whether a message to a reaches b: a is b, or a
// broadcast to b's type.
func (a Address) Includes(b Address) bool {
	return a == b || a.IsBroadcast() && a.Type == b.Type
}

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

// ParseAddress parses the "type/id" form returned by String; "type/*" is
// the broadcast address All(type).
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
	if a.IsBroadcast() {
		return a, nil
	}
	return a, a.Validate()
}
