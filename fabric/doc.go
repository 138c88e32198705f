// Package fabric runs the endpoints of a cluster over NATS: the master,
// slaves with their instances, and controls.
//
// # The endpoints
//
//   - Master (StartMaster) keeps the cluster's view: the slaves, the
//     instances, which slave hosts which, the bans. What must outlive it
//     is written to a JetStream key-value bucket before a request that
//     changed it is answered. Of the masters started on the same NATS
//     servers and subject prefix, one is active; the others stand by and
//     take over when its lease lapses.
//   - Slave (StartSlave) registers with the master, hosts instances, and
//     joins each running instance with an in-process link
//     (connector/virtual); it forwards what the master sends an instance
//     and what an instance sends the master.
//   - Instance is what an application runs as one instance (a game
//     server); a slave makes them with an InstanceFactory
//     (WithInstanceFactory; SimulatedInstances by default), except an
//     instance created with a program (messages.Program), which runs that
//     program in a process of its own if the slave's allow-list
//     (SlaveConfig.AllowPrograms) names it.
//   - Control (DialControl) is a client of the master, as a user whose
//     permissions the master checks (Grants): tools send it requests on
//     Control.Link, follow instance output (Control.Follow, FollowSince),
//     and subscribe to updates (Control.SubscribeSlaves,
//     SubscribeInstances, SubscribeUpdates), which go on, each once and
//     in order, across the master's restarts and failovers.
//
// # How they find each other
//
// Every endpoint connects to the same NATS servers (NATSConfig) under the
// same subject prefix, and has an address (link.Address): the master is
// master/0, slave N is slave/N, a control is control/<user>. A slave or
// control dials the master's address; the master accepts the links peers
// open. Every message names its sender and receiver in its subject
// (connector/nats), so the broker can enforce who speaks as whom (fabric
// nats-config). Without a NATS URL, a master embeds a NATS server
// (StartBroker does the same for a program of its own), and endpoints in
// the same process reach it in-process (WithLocalBroker).
//
// # What an embedder does
//
// Define the plugin's messages once (messages.NewRequest,
// messages.NewEvent) in a messages.Plugin, and start every endpoint of the
// cluster with it (WithPlugins). Attach handlers with WithHandlers, for
// each type of peer whose messages an endpoint handles: what arrives at
// its destination needs a handler, and the fabric forwards and broadcasts
// the rest as the definitions say. Send with the link package
// (link.Request, link.Emit) on an endpoint's links: Control.Link,
// Master.SlaveLink, or the link a handler is attached to. Configuration
// is a plain struct per endpoint (DefaultMasterConfig, LoadMasterConfig
// from the environment, and so on); Close stops an endpoint gracefully,
// waiting for what it started. The Example runs a master and a control on
// an embedded broker, with a request of a plugin's. A plugin's data that
// controls follow is an update event (messages.Updates) the master makes
// subscribable (WithSubscribable) and publishes changes of (Publish).
package fabric
