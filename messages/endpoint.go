package messages

import (
	"fmt"
	"strings"
)

// Endpoint is the type of a party on a link: master, slave, instance or
// control. The zero value is no endpoint; it is what ForwardTo and
// BroadcastTo hold when a message is not forwarded or broadcast.
type Endpoint uint8

// The endpoint types of a cluster.
const (
	Master Endpoint = iota + 1
	Slave
	Instance
	Control
)

var endpointNames = [...]string{Master: "master", Slave: "slave", Instance: "instance", Control: "control"}

// Endpoints lists every endpoint type, in a fixed order.
func Endpoints() []Endpoint { return []Endpoint{Master, Slave, Instance, Control} }

// String returns the lower-case name used on the wire and in link names.
func (e Endpoint) String() string {
	if e >= Master && e <= Control {
		return endpointNames[e]
	}
	if e == 0 {
		return "none"
	}
	return fmt.Sprintf("Endpoint(%d)", uint8(e))
}

// Valid reports whether e is one of the four endpoint types.
func (e Endpoint) Valid() bool { return e >= Master && e <= Control }

// ParseEndpoint returns the endpoint type named s ("master", "slave",
// "instance" or "control").
func ParseEndpoint(s string) (Endpoint, error) {
	for _, e := range Endpoints() {
		if endpointNames[e] == s {
			return e, nil
		}
	}
	return 0, fmt.Errorf("messages: unknown endpoint type %q (want master, slave, instance or control)", s)
}

// Direction is one direction of a link: messages sent by Source and
// received by Target. It is written "source-target", as in "control-master".
type Direction struct {
	Source, Target Endpoint
}

// The directions a message may be declared valid on (Spec.Links). The
// first six are the links of a cluster: a control and the master, the
// master and each slave, a slave and each of its instances. The others
// join endpoint types that no fabric link joins, for programs of their
// own over the link package.
var (
	ControlToMaster = Direction{Source: Control, Target: Master}
	MasterToControl = Direction{Source: Master, Target: Control}
	MasterToSlave   = Direction{Source: Master, Target: Slave}
	SlaveToMaster   = Direction{Source: Slave, Target: Master}
	SlaveToInstance = Direction{Source: Slave, Target: Instance}
	InstanceToSlave = Direction{Source: Instance, Target: Slave}
	// SlaveToSlave is the direct link between two slaves, which carries
	// the addressed messages a slave sends another (Route).
	SlaveToSlave = Direction{Source: Slave, Target: Slave}

	MasterToInstance  = Direction{Source: Master, Target: Instance}
	InstanceToMaster  = Direction{Source: Instance, Target: Master}
	SlaveToControl    = Direction{Source: Slave, Target: Control}
	ControlToSlave    = Direction{Source: Control, Target: Slave}
	InstanceToControl = Direction{Source: Instance, Target: Control}
	ControlToInstance = Direction{Source: Control, Target: Instance}
)

// Valid reports whether d is one of the directions above: it joins two
// different endpoint types, or two slaves.
func (d Direction) Valid() bool {
	return d.Source.Valid() && d.Target.Valid() && (d.Source != d.Target || d.Source == Slave)
}

// String returns the "source-target" form.
func (d Direction) String() string { return d.Source.String() + "-" + d.Target.String() }

// Reverse returns the opposite direction of the same link.
func (d Direction) Reverse() Direction { return Direction{Source: d.Target, Target: d.Source} }

// ParseDirection parses the "source-target" form, such as "control-master",
// for directions written as text (configuration, command lines).
func ParseDirection(s string) (Direction, error) {
	src, dst, ok := strings.Cut(s, "-")
	if !ok {
		return Direction{}, fmt.Errorf("messages: link %q is not of the form source-target", s)
	}
	source, err := ParseEndpoint(src)
	if err != nil {
		return Direction{}, fmt.Errorf("messages: link %q: %w", s, err)
	}
	target, err := ParseEndpoint(dst)
	if err != nil {
		return Direction{}, fmt.Errorf("messages: link %q: %w", s, err)
	}
	if source == target && source != Slave {
		return Direction{}, fmt.Errorf("messages: link %q joins an endpoint type to itself", s)
	}
	return Direction{Source: source, Target: target}, nil
}
