package nats_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	lfnats "github.com/linkfabric/linkfabric/connector/nats"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/link/linktest"
	"github.com/linkfabric/linkfabric/messages"
)

// tickLog records the ticks a link received, in order.
type tickLog struct {
	mu   sync.Mutex
	seqs []int
}

func (l *tickLog) add(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seqs = append(l.seqs, n)
}

func (l *tickLog) snapshot() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.seqs...)
}

// recordTicks is a link setup that records the ticks the link receives.
func recordTicks(got *tickLog) func(*link.Link) {
	return func(l *link.Link) {
		link.HandleEvent(l, linktest.Tick, func(_ context.Context, ev linktest.TickEvent) error {
			got.add(ev.Seq)
			return nil
		})
	}
}

// exactlyOnceInOrder reports the first way got is not 0, 1, ..., n-1.
func exactlyOnceInOrder(t *testing.T, got []int, n int) {
	t.Helper()
	if len(got) != n {
		t.Errorf("%d events arrived, want %d", len(got), n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("event %d is %d: lost, duplicated or out of order (around %v)", i, v, got[max(0, i-3):min(len(got), i+3)])
		}
	}
}

// Events sent while the broker goes away and comes back all arrive,
// once each, in order: the ones NATS dropped are sent again.
func TestEventsSurviveBrokerRestart(t *testing.T) {
	s1 := runServer(t, 0, nil)
	p := port(t, s1)
	var got tickLog
	acc := newAcceptor(t, recordTicks(&got))
	connect(t, s1, masterAddr, acc.option())
	slave := connect(t, s1, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	acc.next(t)

	const n = 3000
	sent := make(chan error, 1)
	restartAt := make(chan struct{})
	go func() {
		ctx := testkit.Ctx(t, time.Minute)
		for i := range n {
			if i == n/3 {
				close(restartAt)
			}
			if err := link.Emit(ctx, a, linktest.Tick, linktest.TickEvent{Seq: i}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	<-restartAt
	s1.Shutdown()
	s1.WaitForShutdown()
	runServer(t, p, nil)
	testkit.NoErr(t, testkit.Recv(t, sent, time.Minute, "every event sent"), "emit")
	testkit.WaitFor(t, 30*time.Second, "every event to arrive", func() bool { return len(got.snapshot()) >= n })
	exactlyOnceInOrder(t, got.snapshot(), n)
}

// A request whose response the broker lost (the requester was cut off
// while the handler ran) still ends with its response, and its handler
// runs once: the request is sent again and answered from memory.
func TestRequestSurvivesBrokerRestart(t *testing.T) {
	s1 := runServer(t, 0, nil)
	p := port(t, s1)
	var runs atomic.Int32
	started, release := make(chan struct{}, 1), make(chan struct{})
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Hold, func(ctx context.Context, _ messages.Empty) (messages.Empty, error) {
			runs.Add(1)
			started <- struct{}{}
			select {
			case <-release:
				return messages.Empty{}, nil
			case <-ctx.Done():
				return messages.Empty{}, ctx.Err()
			}
		})
	})
	connect(t, s1, masterAddr, acc.option())
	slave := connect(t, s1, slaveAddr)
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	acc.next(t)

	done := make(chan error, 1)
	go func() {
		_, err := link.Request(testkit.Ctx(t, time.Minute), a, linktest.Hold, messages.Empty{})
		done <- err
	}()
	testkit.Recv(t, started, prompt, "the handler to start")
	s1.Shutdown()
	s1.WaitForShutdown()
	close(release) // the response goes nowhere: the broker is down
	runServer(t, p, nil)
	testkit.NoErr(t, testkit.Recv(t, done, 30*time.Second, "the request to end"), "the request across the restart")
	if n := runs.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want once", n)
	}
}

// A copy of a request (as a retransmission makes) is not handled again:
// it gets the response the first one got.
func TestRequestCopyAnsweredFromMemory(t *testing.T) {
	s := runServer(t, 0, nil)
	var runs atomic.Int32
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Echo, func(_ context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			runs.Add(1)
			return linktest.EchoResponse{N: r.N, Text: r.Text}, nil
		})
	})
	master := connect(t, s, masterAddr, acc.option())
	nc := plainClient(t, s)
	// A fabric requester's reply subject, which the plain client listens on.
	session := "abcdef0123456789"
	reply := "lf.master.0.slave.3._reply." + session + ".1.7.5000.7"
	sub, err := nc.SubscribeSync("lf.master.0.slave.3._reply." + session + ".>")
	testkit.NoErr(t, err, "subscribe")
	testkit.NoErr(t, nc.Flush(), "flush")
	req := &natsgo.Msg{Subject: "lf.slave.3.master.0.conformance:echo." + session + "." + master.Session(), Reply: reply, Data: []byte(`{"n":5,"text":"x"}`)}
	var first []byte
	for i := range 3 {
		testkit.NoErr(t, nc.PublishMsg(req), "publish")
		resp, err := sub.NextMsg(prompt)
		testkit.NoErr(t, err, "response")
		if resp.Header.Get("Lf-Error") != "" || !strings.Contains(string(resp.Data), `"n":5`) {
			t.Errorf("copy %d answered %s (%s)", i, resp.Data, resp.Header.Get("Lf-Error"))
		}
		if first == nil {
			first = resp.Data
		} else if string(resp.Data) != string(first) {
			t.Errorf("copy %d answered %s, the first %s", i, resp.Data, first)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the handler ran %d times for one request, want once", n)
	}
}

// An event that arrives twice (a resend after a lost acknowledgement) is
// delivered once; one that arrives ahead of a lost one waits for it.
func TestEventCopiesAndGaps(t *testing.T) {
	s := runServer(t, 0, nil)
	var got tickLog
	acc := newAcceptor(t, recordTicks(&got))
	master := connect(t, s, masterAddr, acc.option())
	nc := plainClient(t, s)
	session := "abcdef0123456789"
	acks, err := nc.SubscribeSync("lf.master.0.slave.3._ack.>")
	testkit.NoErr(t, err, "subscribe")
	testkit.NoErr(t, nc.Flush(), "flush")
	event := func(seq, floor, n int) {
		t.Helper()
		subject := "lf.slave.3.master.0.conformance:tick." + session + "." + master.Session()
		testkit.NoErr(t, nc.Publish(subject, []byte(itoa(seq)+" "+itoa(floor)+"\n"+`{"seq":`+itoa(n)+`}`)), "publish")
	}
	event(1, 1, 0)
	event(1, 1, 0) // a copy
	event(3, 1, 2) // ahead of 2: refused, and a gap reported
	gap, err := acks.NextMsg(prompt)
	testkit.NoErr(t, err, "the gap acknowledgement")
	if want := "lf.master.0.slave.3._ack." + master.Session() + "." + session + ".1.gap"; gap.Subject != want {
		t.Errorf("gap acknowledgement %q, want %q", gap.Subject, want)
	}
	event(2, 1, 1)
	event(3, 1, 2)
	testkit.WaitFor(t, prompt, "three events", func() bool { return len(got.snapshot()) >= 3 })
	exactlyOnceInOrder(t, got.snapshot(), 3)
	testkit.WaitFor(t, prompt, "the acknowledgement of all three", func() bool {
		m, err := acks.NextMsg(10 * time.Millisecond)
		return err == nil && m.Subject == "lf.master.0.slave.3._ack."+master.Session()+"."+session+".3"
	})
}

// Close waits for the peer to acknowledge the events sent, so that a
// process that exits gracefully loses none.
func TestCloseWaitsForAcknowledgements(t *testing.T) {
	s := runServer(t, 0, nil)
	var got tickLog
	acc := newAcceptor(t, recordTicks(&got))
	connect(t, s, masterAddr, acc.option())
	slave := connect(t, s, slaveAddr, lfnats.WithDrainTimeout(10*time.Second))
	a := dial(t, slave, masterAddr, nil)
	ping(t, a)
	acc.next(t)
	ctx := testkit.Ctx(t, 10*time.Second)
	for i := range 500 {
		testkit.NoErr(t, link.Emit(ctx, a, linktest.Tick, linktest.TickEvent{Seq: i}), "emit")
	}
	testkit.NoErr(t, slave.Close(), "close")
	testkit.WaitFor(t, prompt, "every event", func() bool { return len(got.snapshot()) >= 500 })
	exactlyOnceInOrder(t, got.snapshot(), 500)
}

func itoa(n int) string { return strconv.Itoa(n) }

// The responder forgets a request once the requester has its response
// (the requester's low mark has passed it), so its memory follows the
// requests in flight, not the request rate.
func TestRespondersMemoryFollowsRequestsInFlight(t *testing.T) {
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Echo, func(_ context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			return linktest.EchoResponse{N: r.N, Text: r.Text}, nil
		})
	})
	master := connect(t, s, masterAddr, acc.option())
	slave := connect(t, s, slaveAddr)
	l := dial(t, slave, masterAddr, nil)
	ping(t, l)
	acc.next(t)
	ctx := testkit.Ctx(t, time.Minute)
	const requests = 500
	for i := range requests {
		if _, err := link.Request(ctx, l, linktest.Echo, linktest.EchoRequest{N: i, Text: "x"}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// The last request's low mark is its own id: only it is remembered.
	if got := master.Remembered(); got > 1 {
		t.Errorf("after %d sequential requests the master remembers %d, want at most 1", requests, got)
	}
}

// A copy of a request below the requester's low mark (it has the response)
// is neither handled again nor answered.
func TestCopyBelowLowMarkIgnored(t *testing.T) {
	s := runServer(t, 0, nil)
	var runs atomic.Int32
	acc := newAcceptor(t, func(l *link.Link) {
		link.HandleRequest(l, linktest.Echo, func(_ context.Context, r linktest.EchoRequest) (linktest.EchoResponse, error) {
			runs.Add(1)
			return linktest.EchoResponse{N: r.N, Text: r.Text}, nil
		})
	})
	master := connect(t, s, masterAddr, acc.option())
	nc := plainClient(t, s)
	session := "abcdef0123456789"
	sub, err := nc.SubscribeSync("lf.master.0.slave.3._reply." + session + ".>")
	testkit.NoErr(t, err, "subscribe")
	testkit.NoErr(t, nc.Flush(), "flush")
	request := func(id, low int) *natsgo.Msg {
		return &natsgo.Msg{
			Subject: "lf.slave.3.master.0.conformance:echo." + session + "." + master.Session(),
			Reply:   "lf.master.0.slave.3._reply." + session + ".1." + itoa(id) + ".5000." + itoa(low),
			Data:    []byte(`{"n":` + itoa(id) + `,"text":"x"}`),
		}
	}
	for _, m := range []*natsgo.Msg{request(1, 1), request(2, 2)} {
		testkit.NoErr(t, nc.PublishMsg(m), "publish")
		_, err := sub.NextMsg(prompt)
		testkit.NoErr(t, err, "response")
	}
	testkit.NoErr(t, nc.PublishMsg(request(1, 1)), "publish a late copy of 1")
	testkit.NoErr(t, nc.PublishMsg(request(3, 3)), "publish 3")
	resp, err := sub.NextMsg(prompt)
	testkit.NoErr(t, err, "response")
	if !strings.Contains(string(resp.Data), `"n":3`) {
		t.Errorf("after a copy of 1, the next response is %s, want 3's", resp.Data)
	}
	if n := runs.Load(); n != 3 {
		t.Errorf("the handler ran %d times for requests 1, 2 and 3 and a copy of 1, want 3", n)
	}
	if got := master.Remembered(); got != 1 {
		t.Errorf("the master remembers %d requests, want 1 (request 3)", got)
	}
}

// Broadcasts published while the broker goes away and comes back reach
// every receiver once each, in order: one NATS message per receiver while
// nothing is lost, and what NATS dropped is published again.
func TestBroadcastsSurviveBrokerRestart(t *testing.T) {
	s1 := runServer(t, 0, nil)
	p := port(t, s1)
	master := connect(t, s1, masterAddr, newAcceptor(t, nil).option())
	const slaves = 2
	logs := make([]*tickLog, slaves)
	for i := range slaves {
		logs[i] = &tickLog{}
		got := logs[i]
		addr := link.Address{Type: messages.Slave, ID: strconv.Itoa(i + 1)}
		node := connect(t, s1, addr)
		l := dial(t, node, masterAddr, recordTicks(got))
		ping(t, l) // the master now has a link to it: a receiver
	}

	const n = 1500
	broadcast := func(i int) error {
		data, err := linktest.Tick.Encode(linktest.TickEvent{Seq: i})
		if err != nil {
			return err
		}
		ctx := testkit.Ctx(t, time.Minute)
		return master.Broadcast(ctx, link.Address{Type: messages.Slave, ID: lfnats.BroadcastID},
			&link.Envelope{Kind: messages.KindEvent, Type: linktest.Tick.Name(), Data: data})
	}
	for i := range n / 3 {
		testkit.NoErr(t, broadcast(i), "broadcast")
	}
	s1.Shutdown()
	s1.WaitForShutdown()
	for i := n / 3; i < 2*n/3; i++ {
		testkit.NoErr(t, broadcast(i), "broadcast while the broker is away")
	}
	runServer(t, p, nil)
	for i := 2 * n / 3; i < n; i++ {
		testkit.NoErr(t, broadcast(i), "broadcast")
	}
	for i, got := range logs {
		testkit.WaitFor(t, 30*time.Second, "every broadcast to reach slave "+strconv.Itoa(i+1), func() bool { return len(got.snapshot()) >= n })
		exactlyOnceInOrder(t, got.snapshot(), n)
	}
}

// A receiver that loses broadcasts while the others do not gets what it
// lacks on its own link: it still gets every broadcast once, in order,
// and the others get no copies.
func TestBroadcastsResentToTheReceiverThatLacksThem(t *testing.T) {
	s := runServer(t, 0, nil)
	master := connect(t, s, masterAddr, newAcceptor(t, nil).option())
	const slaves = 3
	logs := make([]*tickLog, slaves)
	nodes := make([]*lfnats.Node, slaves)
	for i := range slaves {
		logs[i] = &tickLog{}
		got := logs[i]
		addr := link.Address{Type: messages.Slave, ID: strconv.Itoa(i + 1)}
		nodes[i] = connect(t, s, addr)
		l := dial(t, nodes[i], masterAddr, recordTicks(got))
		ping(t, l)
	}
	const n = 600
	for i := range n {
		if i == n/3 {
			// Slave 1's connection drops: what is published until it is
			// back (and has subscribed again) passes it by.
			cid, err := nodes[0].NATS().GetClientID()
			testkit.NoErr(t, err, "client id")
			testkit.NoErr(t, s.DisconnectClientByID(cid), "disconnect slave 1")
		}
		data, err := linktest.Tick.Encode(linktest.TickEvent{Seq: i})
		testkit.NoErr(t, err, "encode")
		testkit.NoErr(t, master.Broadcast(testkit.Ctx(t, time.Minute), link.Address{Type: messages.Slave, ID: lfnats.BroadcastID},
			&link.Envelope{Kind: messages.KindEvent, Type: linktest.Tick.Name(), Data: data}), "broadcast")
	}
	for i, got := range logs {
		testkit.WaitFor(t, 30*time.Second, "every broadcast to reach slave "+strconv.Itoa(i+1), func() bool { return len(got.snapshot()) >= n })
		exactlyOnceInOrder(t, got.snapshot(), n)
	}
	// Slaves 2 and 3 got each broadcast once on their broadcast
	// subscriptions: nothing was published to all again.
	for _, i := range []int{1, 2} {
		cid, err := nodes[i].NATS().GetClientID()
		testkit.NoErr(t, err, "client id")
		cz, err := s.Connz(&server.ConnzOptions{CID: cid, SubscriptionsDetail: true})
		testkit.NoErr(t, err, "connz")
		for _, c := range cz.Conns {
			for _, sub := range c.SubsDetail {
				if strings.Contains(sub.Subject, "._all.") && sub.Msgs != n {
					t.Errorf("slave %d: %d messages on %s, want %d", i+1, sub.Msgs, sub.Subject, n)
				}
			}
		}
	}
}

// broadcastTicks broadcasts ticks from to to-1 to every slave.
func broadcastTicks(t *testing.T, master *lfnats.Node, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		data, err := linktest.Tick.Encode(linktest.TickEvent{Seq: i})
		testkit.NoErr(t, err, "encode")
		testkit.NoErr(t, master.Broadcast(testkit.Ctx(t, time.Minute), link.Address{Type: messages.Slave, ID: lfnats.BroadcastID},
			&link.Envelope{Kind: messages.KindEvent, Type: linktest.Tick.Name(), Data: data}), "broadcast")
	}
}

// tickingSlave links a slave to the master and records the ticks it gets.
func tickingSlave(t *testing.T, s *server.Server, id int) (*lfnats.Node, *tickLog) {
	t.Helper()
	got := &tickLog{}
	node := connect(t, s, link.Address{Type: messages.Slave, ID: strconv.Itoa(id)})
	l := dial(t, node, masterAddr, recordTicks(got))
	ping(t, l)
	return node, got
}

// A slave that links while another receiver still lacks earlier
// broadcasts (its process hangs: its link stays, its acknowledgements stop)
// gets every broadcast from when it linked, once each and in order, though
// the stream it joins starts before it: it may get older ones too.
func TestBroadcastsReachASlaveThatLinksWhileAnotherLags(t *testing.T) {
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, nil)
	master := connect(t, s, masterAddr, acc.option())
	stuck, _ := tickingSlave(t, s, 1)
	stuckLink := acc.next(t)
	// Enough others that what slave 2 lacks is sent to it alone.
	var others []*tickLog
	for id := 3; id <= 5; id++ {
		_, got := tickingSlave(t, s, id)
		acc.next(t)
		others = append(others, got)
	}
	stuck.NATS().Close() // the master hears nothing more from it, and keeps its link
	broadcastTicks(t, master, 0, 10)
	_, late := tickingSlave(t, s, 2)
	acc.next(t)
	broadcastTicks(t, master, 10, 20)
	for _, other := range others {
		testkit.WaitFor(t, 30*time.Second, "every broadcast to reach the others", func() bool { return len(other.snapshot()) >= 20 })
		exactlyOnceInOrder(t, other.snapshot(), 20)
	}
	testkit.WaitFor(t, 30*time.Second, "the broadcasts since it linked to reach slave 2", func() bool {
		got := late.snapshot()
		return len(got) > 0 && got[len(got)-1] == 19
	})
	got := late.snapshot()
	if len(got) < 10 {
		t.Fatalf("slave 2 got %v, want at least 10 to 19", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("slave 2 got %v: lost, duplicated or out of order", got)
		}
	}
	// The master gives up on the hung slave (as its peer timeout would
	// have it): nothing is kept for it any more.
	testkit.NoErr(t, stuckLink.Close(), "close the hung slave's link")
	testkit.WaitFor(t, 10*time.Second, "nothing kept", func() bool { return master.BroadcastsUnacked() == 0 })
}

// A slave whose link closes while the master broadcasts is not waited for:
// the master ends up with no receiver and nothing kept.
func TestBroadcastReceiverThatClosesIsForgotten(t *testing.T) {
	s := runServer(t, 0, nil)
	acc := newAcceptor(t, nil)
	master := connect(t, s, masterAddr, acc.option())
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		pace := time.NewTicker(100 * time.Microsecond)
		defer pace.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			data, _ := linktest.Tick.Encode(linktest.TickEvent{Seq: i})
			_ = master.Broadcast(context.Background(), link.Address{Type: messages.Slave, ID: lfnats.BroadcastID},
				&link.Envelope{Kind: messages.KindEvent, Type: linktest.Tick.Name(), Data: data})
		}
	}()
	node := connect(t, s, slaveAddr)
	for range 100 {
		l := dial(t, node, masterAddr, nil)
		ping(t, l)
		acc.next(t)
		testkit.NoErr(t, l.Close(), "close")
	}
	close(stop)
	<-done
	t.Logf("links closed")
	testkit.WaitFor(t, 30*time.Second, "the master to forget every closed receiver", func() bool {
		return master.BroadcastReceivers() == 0 && master.BroadcastsUnacked() == 0
	})
}

// A peer that has gone silent without closing its link (its process hangs)
// is sent again, on each round of the resend timer, only the first
// lfnats.ProbeWindow events it has not acknowledged: what the broker carries
// toward a peer that may not be there stays bounded, however many wait.
func TestSilentPeerProbedWithAWindow(t *testing.T) {
	s := runServer(t, 0, nil)
	master := connect(t, s, masterAddr, newAcceptor(t, nil).option())
	slave := connect(t, s, slaveAddr)
	l := dial(t, slave, masterAddr, nil)
	ping(t, l)
	observer := plainClient(t, s)
	var mu sync.Mutex
	var seqs []int
	_, err := observer.Subscribe("lf.slave.3.master.0.conformance:tick.>", func(m *natsgo.Msg) {
		head, _, _ := strings.Cut(string(m.Data), "\n")
		seq, _, _ := strings.Cut(strings.TrimPrefix(head, "*"), " ")
		n, err := strconv.Atoi(seq)
		if err != nil {
			t.Errorf("event head %q", head)
		}
		mu.Lock()
		seqs = append(seqs, n)
		mu.Unlock()
	})
	testkit.NoErr(t, err, "subscribe")
	testkit.NoErr(t, observer.Flush(), "flush")
	master.NATS().Close() // the master hangs: its link stays, it acknowledges nothing

	n := 3 * lfnats.ProbeWindow
	ctx := testkit.Ctx(t, time.Minute)
	for i := range n {
		testkit.NoErr(t, link.Emit(ctx, l, linktest.Tick, linktest.TickEvent{Seq: i}), "emit")
	}
	// Two full rounds of the resend timer. Under load a round can start
	// before every event was first sent: it resends the first of those
	// sent so far, so a round is 1..k, in order, for k at most a window.
	rounds := func() [][]int {
		seen := map[int]bool{}
		var rs [][]int
		for _, seq := range seqs {
			if !seen[seq] {
				seen[seq] = true
				continue
			}
			if seq == 1 || len(rs) == 0 {
				rs = append(rs, nil)
			}
			rs[len(rs)-1] = append(rs[len(rs)-1], seq)
		}
		return rs
	}
	full := func(rs [][]int) int {
		k := 0
		for _, r := range rs {
			if len(r) == lfnats.ProbeWindow {
				k++
			}
		}
		return k
	}
	testkit.WaitFor(t, 30*time.Second, "two full rounds of resends", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return full(rounds()) >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	for i, r := range rounds() {
		if len(r) > lfnats.ProbeWindow {
			t.Fatalf("round %d resent %d events, more than a window of %d", i, len(r), lfnats.ProbeWindow)
		}
		for j, seq := range r {
			if seq != j+1 {
				t.Fatalf("round %d resent number %d in place %d, want %d: a round sends the first %d unacknowledged, in order",
					i, seq, j, j+1, lfnats.ProbeWindow)
			}
		}
	}
}

// Events lost while only the receiver was cut off, with no more after them
// to reveal the gap, all arrive once and in order: the resend timer probes
// with a window, and each window acknowledged brings the next.
func TestQuietStreamRecoveredWindowByWindow(t *testing.T) {
	s := runServer(t, 0, nil)
	var got tickLog
	acc := newAcceptor(t, recordTicks(&got))
	master := connect(t, s, masterAddr, acc.option())
	slave := connect(t, s, slaveAddr)
	l := dial(t, slave, masterAddr, nil)
	ping(t, l)
	acc.next(t)

	cid, err := master.NATS().GetClientID()
	testkit.NoErr(t, err, "client id")
	testkit.NoErr(t, s.DisconnectClientByID(cid), "disconnect the master")
	n := 3 * lfnats.ProbeWindow
	ctx := testkit.Ctx(t, time.Minute)
	for i := range n {
		testkit.NoErr(t, link.Emit(ctx, l, linktest.Tick, linktest.TickEvent{Seq: i}), "emit")
	}
	testkit.WaitFor(t, 30*time.Second, "every event", func() bool { return len(got.snapshot()) >= n })
	exactlyOnceInOrder(t, got.snapshot(), n)
}

// When a peer's process dies and the next one links within the session
// timeout (WithSessionTimeout), the link of the next session, taken for
// the peer's with Adopt, gets what the ended one never acknowledged, once
// and first, in order, then what is sent on it: events, and broadcasts.
// Until Adopt it is not sent broadcasts of its own, which would tell it
// its stream starts after those the ended session lacked.
func TestAdoptTakesOverWhatTheEndedSessionLacked(t *testing.T) {
	s := runServer(t, 0, nil)
	type accepted struct {
		c *lfnats.Conn
		l *link.Link
	}
	acc := make(chan accepted, 4)
	master := connect(t, s, masterAddr, lfnats.WithSessionTimeout(time.Minute), lfnats.WithAccept(func(c *lfnats.Conn) error {
		l, err := newStartedLink(c, masterAddr, c.Peer(), nil)
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = l.Close() })
		acc <- accepted{c, l}
		return nil
	}))
	ctx := testkit.Ctx(t, time.Minute)
	emit := func(l *link.Link, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			testkit.NoErr(t, link.Emit(ctx, l, linktest.Tick, linktest.TickEvent{Seq: i}), "emit")
		}
	}
	const broadcasts = 1000 // the numbers of the broadcasts, apart from the events'
	broadcast := func(i int) {
		t.Helper()
		data, err := linktest.Tick.Encode(linktest.TickEvent{Seq: broadcasts + i})
		testkit.NoErr(t, err, "encode")
		testkit.NoErr(t, master.Broadcast(ctx, link.Address{Type: messages.Slave, ID: lfnats.BroadcastID},
			&link.Envelope{Kind: messages.KindEvent, Type: linktest.Tick.Name(), Data: data}), "broadcast")
	}
	var first, second tickLog
	old := connect(t, s, slaveAddr)
	ping(t, dial(t, old, masterAddr, recordTicks(&first)))
	was := testkit.Recv(t, acc, prompt, "the first session to be accepted")
	emit(was.l, 0, 100)
	testkit.NoErr(t, was.c.Flush(ctx), "the first hundred acknowledged")
	// The first process dies without a word: what the master sends it now
	// goes nowhere, and stays unacknowledged.
	old.NATS().Close()
	emit(was.l, 100, 200)
	broadcast(0)

	renewed := connect(t, s, slaveAddr)
	ping(t, dial(t, renewed, masterAddr, recordTicks(&second)))
	now := testkit.Recv(t, acc, prompt, "the second session to be accepted")
	broadcast(1) // the slave has two sessions: owed by the first only
	// The master takes the new session for the slave's, as the fabric's
	// does when the slave registers again: the first ends, and the new
	// one takes it over before anything is sent on it.
	testkit.NoErr(t, was.l.Close(), "end the first session")
	testkit.NoErr(t, now.c.Adopt(was.c), "take the first session over")
	emit(now.l, 200, 300)
	broadcast(2)
	split := func(got []int) (events, bcasts []int) {
		for _, v := range got {
			if v >= broadcasts {
				bcasts = append(bcasts, v-broadcasts)
			} else {
				events = append(events, v)
			}
		}
		return events, bcasts
	}
	testkit.WaitFor(t, 30*time.Second, "every event and broadcast at one process or the other", func() bool {
		return len(first.snapshot())+len(second.snapshot()) >= 303
	})
	if got := first.snapshot(); len(got) != 100 {
		t.Errorf("the first process got %d events, want the 100 acknowledged before it died", len(got))
	}
	events, bcasts := split(append(first.snapshot(), second.snapshot()...))
	exactlyOnceInOrder(t, events, 300)
	exactlyOnceInOrder(t, bcasts, 3)
}
