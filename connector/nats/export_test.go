package nats

import "github.com/linkfabric/linkfabric/connector/nats/internal/delivery"

// Remembered counts the requests n's connectors remember taking, so that
// tests can see the responder's memory follow the requests in flight.
func (n *Node) Remembered() int {
	total := 0
	for _, c := range n.conns() {
		c.mu.Lock()
		k, _ := c.served.Len()
		c.mu.Unlock()
		total += k
	}
	return total
}

// BroadcastReceivers counts the receivers n's broadcasts wait for: its
// links to fabric peers, open or ended within the session timeout.
func (n *Node) BroadcastReceivers() int {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	return len(n.st.owner)
}

// BroadcastsUnacked counts the broadcasts n keeps for want of
// acknowledgements.
func (n *Node) BroadcastsUnacked() int {
	n.st.mu.Lock()
	defer n.st.mu.Unlock()
	return n.st.sender.Broadcasts()
}

// ProbeWindow is how many unacknowledged events a round of the resend
// timer sends a silent peer.
const ProbeWindow = delivery.ProbeWindow
