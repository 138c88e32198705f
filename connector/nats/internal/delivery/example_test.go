package delivery_test

import (
	"fmt"
	"time"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

// One link and its broadcasts, the wire in between left out: the
// master's Sender numbers what it sends, slave 1's Receiver delivers it
// in order and acknowledges it, and the Sender lets go. Until slave 1 has
// acknowledged a broadcast, each is sent to it on its link too (the first
// says where its stream starts); it drops the copy it already has.
func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	master := delivery.NewSender[string](0)
	toSlave := master.Open("slave", "1")
	slave := delivery.NewReceiver[string]("1")

	// What the connector does with what the Sender returns: put it on
	// the wire (here, straight into the Receiver), and hand the link what
	// the Receiver delivers.
	publish := func(ps []delivery.Publish[string], err error) {
		for _, p := range ps {
			line := delivery.AppendHead(nil, p.Head)
			var evs []string
			if p.Link == nil {
				fmt.Printf("published to every slave: %s", line)
				evs, _ = slave.Broadcast(p.Head, p.Event, now)
			} else {
				fmt.Printf("on slave 1's link: %s", line)
				evs, _ = slave.Event(p.Head, p.Event, now)
			}
			for _, ev := range evs {
				fmt.Println("  slave 1 handles", ev)
			}
		}
	}
	publish(master.Broadcast("slave", "banlist_update", now))
	publish(master.Send(toSlave, "instance_output", now))
	publish(master.Broadcast("slave", "banlist_update again", now))

	// On its tick, the Receiver acknowledges what it delivered.
	now = now.Add(delivery.TickEvery)
	for _, a := range slave.Tick(now) {
		if a.All {
			master.AckedAll(toSlave, a.UpTo, a.Gap, now)
		} else {
			master.Acked(toSlave, a.UpTo, a.Gap, now)
		}
	}
	fmt.Println("kept:", toSlave.Unacked(), "events,", master.Broadcasts(), "broadcasts")
	// Output:
	// published to every slave: 1 1
	// on slave 1's link: *1 1
	//   slave 1 handles banlist_update
	// on slave 1's link: 1 1 a=1
	//   slave 1 handles instance_output
	// published to every slave: 2 1 f=1:1
	//   slave 1 handles banlist_update again
	// on slave 1's link: *2 1 f=1:1
	// kept: 0 events, 0 broadcasts
}
