// Package soak runs a soak test of the fabric: a master, slaves hosting
// instances, and a control, all in this process, exchanging a steady,
// bounded stream of numbered events and requests in both directions
// through the NATS servers it is given, while faults are made, and
// counting what arrives.
//
// The soak has a plugin of its own (Plugin), on a subject prefix of its
// own (DefaultPrefix, "lfsoak"), so it never touches a production
// cluster's subjects:
//
//	soak:up    event    instance -> slave -> master   each instance, UpRate a second
//	soak:down  event    master -> slave               on each slave link, DownRate a second
//	soak:all   event    instance -> every other instance, from each slave's first instance, AllRate a second
//	soak:ask   request  control -> master -> slave -> instance, answered by the instance
//	soak:tell  request  instance -> slave -> master, answered by the master
//
// Every event carries its sender's incarnation and a sequence number;
// a broadcast also the master's incarnation it was sent under, since what
// is broadcast while the master restarts reaches only the slaves linked to
// it by then. An
// event counts as sent when the send returned nil; its receiver records
// every number that arrives, per link and sender incarnation (a restarted
// master or slave starts its numbers again). Every request carries an id
// unique in the soak: the requester records how it ended, the handler
// that answers it records that it ran.
//
// A Report then says, per link and incarnation, what was sent, received,
// lost, duplicated and reordered; per request type, how many started,
// ended with a response or an error (by code), never ended, ended twice
// or were handled twice; and whether the master's view of the cluster is
// right (every slave connected, every instance running). The fabric
// promises that, across broker disconnects, node failures and restarts
// shorter than the session timeout, nothing is lost, duplicated or
// reordered, every request ends once, and no handler runs twice.
//
//	s, err := soak.Start(ctx, soak.Config{NATS: fabric.NATSConfig{URL: urls}})
//	... make faults: s.RestartMaster(ctx), s.RestartSlave(ctx, 1), kill a node ...
//	err = s.Quiesce(ctx)  // stop the traffic, wait for what is in flight
//	r := s.Report()       // r.OK, r.Problems, r.WriteText(os.Stdout)
//	s.Close(ctx)
//
// `fabric soak` runs one against an operator's cluster.
package soak
