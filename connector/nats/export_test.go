package nats

// Remembered counts the requests n's connectors remember taking, so that
// tests can see the responder's memory follow the requests in flight.
func (n *Node) Remembered() int {
	n.mu.Lock()
	conns := make([]*Conn, 0, len(n.byID))
	for _, c := range n.byID {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	total := 0
	for _, c := range conns {
		c.mu.Lock()
		for _, t := range c.served {
			total += len(t.byID)
		}
		c.mu.Unlock()
	}
	return total
}

// BroadcastReceivers counts the receivers n's broadcasts wait for.
func (n *Node) BroadcastReceivers() int {
	n.bmu.Lock()
	defer n.bmu.Unlock()
	total := 0
	for _, bs := range n.bcast {
		total += len(bs.receiver)
	}
	return total
}

// BroadcastsUnacked counts the broadcasts n keeps for want of
// acknowledgements.
func (n *Node) BroadcastsUnacked() int { return n.broadcastsUnacked() }

// ProbeWindow is how many unacknowledged events a round of the resend
// timer sends a silent peer.
const ProbeWindow = probeWindow
