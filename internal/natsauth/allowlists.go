package natsauth

import (
	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// What a broker should let each endpoint do. Every subject names its
// sender first and its receiver second (connector/nats), so one allow-list
// per identity is enough for the broker to enforce who speaks as whom and
// who reads what:
//
//	master 0    publish   <p>.master.0.<peerType>.*.>   for each peer type it has links with
//	            publish   <p>._inbox.<peerType>.*.>     for each peer type that sends it requests
//	            subscribe <p>.*.*.master.0.>, <p>.*.*.master._all.>, <p>._inbox.master.0.>
//	slave N     publish   <p>.slave.N.master.0.>
//	            publish   <p>.slave.N.slave.*.>         only if the catalog has messages from slave to slave
//	            subscribe <p>.*.*.slave.N.>, <p>.*.*.slave._all.>, <p>._inbox.slave.N.>
//	control U   publish   <p>.control.U.master.0.>
//	            subscribe <p>.*.*.control.U.>, <p>.*.*.control._all.>, <p>._inbox.control.U.>
//	instance    nothing: instances never touch the broker
//
// Publishing covers the endpoint's requests and events, its broadcasts,
// the responses it sends on the reply subjects its peers chose and its
// close notices (lfnats.PeerSubjects). The master may also answer a plain
// NATS client that acts as a slave or a control on that identity's inbox
// (lfnats.InboxPrefix): no one needs allow_responses. Subscribing covers
// exactly what a Node subscribes to (lfnats.Subscriptions) and its own
// inbox. No identity may subscribe to _INBOX.> or to another identity's
// subjects, so no one reads another's traffic or replies. Which types talk
// to which is the catalog's to say, and is what this file adds to the
// connector's subject scheme.

// AllowLists returns the subjects that the NATS user of the endpoint self
// may publish and subscribe to, in a cluster whose subjects start with
// prefix and whose messages catalog describes. The peer types come from
// the catalog: self has a link with every endpoint type that the catalog
// has messages for in either direction, except instances, which a slave
// carries in-process. The master's id is 0, so a link to the master is
// published as <p>.<self>.master.0.>; links to other types name any id.
//
// An instance, or an address of no known type, gets nil lists: it must
// not connect at all.
func AllowLists(catalog *messages.Catalog, prefix string, self link.Address) (publish, subscribe []string) {
	if !self.Type.Valid() || self.Type == messages.Instance {
		return nil, nil
	}
	peers := Peers(catalog, self.Type)
	for _, peer := range peers {
		id := "*"
		if peer == messages.Master {
			id = link.MasterAddress.ID
		}
		publish = append(publish, lfnats.PeerSubjects(prefix, self, peer, id))
	}
	for _, peer := range peers {
		// The master answers plain clients on their inboxes; a slave's
		// direct links are between fabric slaves only.
		if peer != messages.Master && peer != self.Type && sendsRequests(catalog, peer, self.Type) {
			publish = append(publish, lfnats.InboxPrefix(prefix, link.Address{Type: peer, ID: "*"})+".>")
		}
	}
	subscribe = append(lfnats.Subscriptions(prefix, self), lfnats.InboxPrefix(prefix, self)+".>")
	return publish, subscribe
}

// Peers returns the endpoint types that an endpoint of type self exchanges
// messages with over NATS, according to catalog, in the order of
// messages.Endpoints: every type with messages in the catalog from self to
// it or from it to self, except instances (their links never leave a
// slave's process) and self's own type, but for slaves: two slaves link
// directly when the catalog has messages from slave to slave.
func Peers(catalog *messages.Catalog, self messages.Endpoint) []messages.Endpoint {
	if self == messages.Instance {
		return nil
	}
	var out []messages.Endpoint
	for _, peer := range messages.Endpoints() {
		if peer == self && peer != messages.Slave || peer == messages.Instance {
			continue
		}
		if len(catalog.On(messages.Direction{Source: self, Target: peer})) > 0 ||
			len(catalog.On(messages.Direction{Source: peer, Target: self})) > 0 {
			out = append(out, peer)
		}
	}
	return out
}

// sendsRequests reports whether the catalog has requests from one endpoint
// type to another.
func sendsRequests(catalog *messages.Catalog, from, to messages.Endpoint) bool {
	for _, d := range catalog.On(messages.Direction{Source: from, Target: to}) {
		if d.Kind() == messages.KindRequest {
			return true
		}
	}
	return false
}
