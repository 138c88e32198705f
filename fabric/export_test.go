package fabric

import (
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// InstanceID exposes instanceID to the tests of package fabric_test.
var InstanceID = instanceID

// Goroutines returns how many goroutines the master and its current term
// have started and not yet ended (routines).
func (p *Master) Goroutines() int {
	n := p.routines.count()
	if m := p.current(); m != nil {
		n += m.routines.count()
	}
	return n
}

// Goroutines returns how many goroutines the slave has started and not
// yet ended.
func (s *Slave) Goroutines() int { return s.routines.count() }

// Goroutines returns how many goroutines the control has started and not
// yet ended.
func (c *Control) Goroutines() int { return c.routines.count() }

// ProgramGoroutines returns how many goroutines the slave's program
// instances have started and not yet ended.
func (s *Slave) ProgramGoroutines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, h := range s.instances {
		if p, ok := h.made.(*programInstance); ok {
			n += p.routines.count()
		}
	}
	return n
}

// HoldRegistrations makes the slave's next registrations call welcomed
// with their link once the master's welcome has arrived, before the slave
// applies it (welcomed may block, holding the registration there), and
// applied once it has. Call it before the registrations it is for.
func (s *Slave) HoldRegistrations(welcomed, applied func(*link.Link)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = &registrationHooks{welcomed: welcomed, applied: applied}
}

// Bans returns the bans the slave holds in force, sorted by player.
func (s *Slave) Bans() []messages.Ban { return s.banList() }

// SkipsControlOnClose reports whether the active master, stopping now,
// would close the link of the control session session without waiting
// for it (controlQuietLocked); false if it has no link to that session.
func (p *Master) SkipsControlOnClose(session string) bool {
	m := p.current()
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for l, st := range m.controls {
		if c, ok := st.conn.(interface{ PeerSession() string }); ok && c.PeerSession() == session {
			return m.controlQuietLocked(l, st, time.Now())
		}
	}
	return false
}
