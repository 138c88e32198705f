package delivery_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/connector/nats/internal/delivery"
)

// The simulation: a master and one to three slaves, each a process that
// may restart, driving the state machines over a simulated broker that
// drops, duplicates, reorders, delays and stalls messages, and cuts
// processes off; with simulated time, seeded, so that every schedule
// replays exactly. It checks the promises of docs/reliability.md as
// messages are delivered and once everything has settled (see deliver,
// ended and check).
//
//	go test ./connector/nats/internal/delivery -run TestSimulation                      # 10,000 schedules
//	go test ./connector/nats/internal/delivery -run TestSimulation -schedules=200000    # a soak
//	go test ./connector/nats/internal/delivery -run TestSimulation -v -seed=N           # one, with a trace

var (
	seedFlag      = flag.Int64("seed", -1, "TestSimulation: replay this one schedule, with a trace")
	schedulesFlag = flag.Int("schedules", 0, "TestSimulation: how many schedules to run (default 10000, or $DELIVERY_SIM_SCHEDULES)")
	kindsFlag     = flag.Bool("sim.kinds", false, "TestSimulation: log how many schedules broke each kind of promise")
	closeOrder    = flag.String("sim.close", "stream", `TestSimulation: how a closing process stops: "stream" (the receiver stops before the link), or "link" (the link stops taking events first, as connector/nats does)`)
)

const (
	simSessionTimeout = 2 * time.Second
	simPingTimeout    = 300 * time.Millisecond // the master's wait for an old session's answer before replacing it
	simHeartbeat      = 200 * time.Millisecond
	simRegisterRetry  = 100 * time.Millisecond
	simTrafficEnd     = 3 * time.Second
	simFaultEnd       = 3500 * time.Millisecond
	simMaxEnd         = simFaultEnd + 30*time.Second // time enough to settle after the faults
)

func TestSimulation(t *testing.T) {
	if *seedFlag >= 0 {
		s := newSim(*seedFlag)
		s.trace = func(format string, args ...any) {
			t.Logf("%8.3fs "+format, append([]any{s.elapsed().Seconds()}, args...)...)
		}
		s.run()
		t.Logf("seed %d: %s", *seedFlag, s.summary())
		for _, v := range s.violations {
			t.Error(v)
		}
		return
	}
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("DELIVERY_SIM_SCHEDULES")); err == nil && v > 0 {
		n = v
	}
	if *schedulesFlag > 0 {
		n = *schedulesFlag
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		failed   []int64
		firstErr = map[int64][]string{}
		kinds    = map[string][]int64{}
		totals   simTotals
		wg       sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seed := next.Add(1) - 1
				if seed >= int64(n) {
					return
				}
				s := newSim(seed)
				s.run()
				mu.Lock()
				totals.add(s)
				if len(s.violations) > 0 {
					seen := map[string]bool{}
					for _, v := range s.violations {
						k := violationKind(v)
						if !seen[k] {
							seen[k] = true
							kinds[k] = append(kinds[k], seed)
						}
					}
					failed = append(failed, seed)
					if len(firstErr) < 5 {
						firstErr[seed] = s.violations
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d schedules: %s", n, totals)
	if *kindsFlag {
		for k, seeds := range kinds {
			slices.Sort(seeds)
			t.Logf("%5d schedules: %s (seeds %v)", len(seeds), k, seeds[:min(len(seeds), 8)])
		}
	}
	for seed, vs := range firstErr {
		t.Errorf("seed %d: %d violations, the first: %s\n\treplay: go test ./connector/nats/internal/delivery -run TestSimulation -v -seed=%d", seed, len(vs), vs[0], seed)
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d schedules broke a promise", len(failed), n)
	}
}

// violationKind is a violation without its numbers and names.
func violationKind(v string) string {
	_, v, _ = strings.Cut(v, ": ")
	return strings.Join(strings.FieldsFunc(v, func(r rune) bool { return r >= '0' && r <= '9' || r == '#' }), "N")
}

// simTotals counts what the schedules did, for the log.
type simTotals struct {
	schedules, events, broadcasts, requests, delivered, dupsAllowed, givenUp int
	restarts, crashes, masterRestarts, expiries, disconnects, adopted        int
	simulated                                                                time.Duration
}

func (t *simTotals) add(s *sim) {
	t.schedules++
	t.events += s.stats.events
	t.broadcasts += s.stats.broadcasts
	t.requests += len(s.reqs)
	t.delivered += s.stats.delivered
	t.dupsAllowed += s.stats.dupsAllowed
	t.givenUp += s.stats.givenUp
	t.restarts += s.stats.restarts
	t.crashes += s.stats.crashes
	t.masterRestarts += s.stats.masterRestarts
	t.expiries += s.stats.expiries
	t.disconnects += s.stats.disconnects
	t.adopted += s.stats.adopted
	t.simulated += s.elapsed()
}

func (t simTotals) String() string {
	return fmt.Sprintf("%d events and %d broadcasts sent, %d delivered (%d again to a receiver's next session, its acknowledgement lost, %d given up with an ended session), %d requests; %d slave restarts (%d crashes), %d master restarts, %d session expiries, %d disconnects, %d adoptions; %s simulated",
		t.events, t.broadcasts, t.delivered, t.dupsAllowed, t.givenUp, t.requests, t.restarts, t.crashes, t.masterRestarts, t.expiries, t.disconnects, t.adopted, t.simulated.Round(time.Second))
}

// --- the world ---

type sim struct {
	rng   *rand.Rand
	start time.Time
	now   time.Time
	tasks taskHeap
	order uint64 // tie-break of tasks at one instant
	trace func(format string, args ...any)

	// The network's faults, drawn per schedule.
	drop, dup, stall, reorder float64
	latency, jitter           time.Duration
	path                      map[[2]*proc]time.Time // when the last message on each path arrives

	master     *proc // the current master process
	slots      []*slot
	nextKey    int
	nextPlink  uint64
	linkFirst  bool // -sim.close=link
	quietSince time.Time
	planned    int  // tasks other than ticks to come
	quiet      bool // it settled

	msgs       []*sentMsg
	reqs       []*sentReq
	stamp      map[string]int      // per logical sender
	masterFrom map[string]*sentMsg // the last message the master delivered, per sender
	violations []string
	stats      struct {
		events, broadcasts, delivered, dupsAllowed, givenUp               int
		restarts, crashes, masterRestarts, expiries, disconnects, adopted int
	}
}

// slot is a slave id: one process after another.
type slot struct {
	name       string
	proc       *proc  // the current process
	masterLink *plink // the master's link to it, the latest registered
	pending    *plink // a registration the master is completing
	lastFrom   map[string]*sentMsg
}

type proc struct {
	s         *sim
	name      string
	slot      *slot // nil for the master
	alive     bool
	connected bool
	key       string // the master's session
	sender    *delivery.Sender[int]
	links     []*plink
	bids      map[uint64]int // the master's broadcast numbers, to message ids
	stopping  bool           // closing: the application sends nothing more
	appClosed bool           // the application takes no more deliveries

	master      *plink // a slave's registered link to the master
	registering *plink
	lastMaster  *plink // a slave's previous link, for adoption
}

type linkState uint8

const (
	open linkState = iota
	parked
	closed
)

// plink is one end of a link: its Sender link, Receiver, requests and
// served memory.
type plink struct {
	id        uint64
	owner     *proc
	peer      *proc
	twin      *plink
	key       string // the owner's session for the link
	out       *delivery.OutLink[int]
	in        *delivery.Receiver[int]
	reqs      *delivery.Requests[int]
	served    *delivery.Served[response]
	ids       map[uint64]int // the out link's numbers, to message ids
	acked     uint64
	backed    uint64
	lastHeard time.Time
	opened    time.Time
	state     linkState
	lostAt    time.Time
	adopted   bool
	last      []delivery.Ack // the receiver's last acknowledgements, once it stopped
}

// response is a handler's response: the request it answers.
type response struct {
	req int
}

// sentMsg is an event or broadcast the application sent.
type sentMsg struct {
	id        int
	at        time.Time
	bcast     bool
	from      string // the logical sender: "master" or a slot
	to        string // the slot of a link event
	stamp     int
	proc      *proc
	owed      []string   // a broadcast's receivers when sent
	delivered []received // the links it came on, with their slots
	ackedBy   []*plink   // the receiving links the sender has the acknowledgement of
	givenUp   []string   // the slots it was given up for
}

// received is a message delivered on link l, of slot.
type received struct {
	slot string
	l    *plink
}

// deliveredTo returns the links m was delivered on to slot, in order.
func (m *sentMsg) deliveredTo(slot string) []*plink {
	var out []*plink
	for _, d := range m.delivered {
		if d.slot == slot {
			out = append(out, d.l)
		}
	}
	return out
}

func (m *sentMsg) reached(slot string) bool {
	for _, d := range m.delivered {
		if d.slot == slot {
			return true
		}
	}
	return false
}

// giveUp records that m is given up for slot, if it has not reached it.
func (m *sentMsg) giveUp(s *sim, slot string) {
	if !m.reached(slot) && !contains(m.givenUp, slot) {
		m.givenUp = append(m.givenUp, slot)
		s.stats.givenUp++
	}
}

// sentReq is a request the application sent.
type sentReq struct {
	id       int
	deadline time.Time
	ends     int // how many times the table ended it
	runs     int // how many times its handler ran
}

// --- tasks ---

// task is what happens at a time: a message arrives, a process ticks,
// or do.
type task struct {
	at     time.Duration // since the start
	order  uint64
	arrive *packet
	tick   *proc
	do     func()
}

// taskHeap orders tasks by time, then by when they were planned.
type taskHeap []task

func (h taskHeap) less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].order < h[j].order
}

func (h *taskHeap) push(t task) {
	*h = append(*h, t)
	for i := len(*h) - 1; i > 0; {
		up := (i - 1) / 2
		if !h.less(i, up) {
			break
		}
		(*h)[i], (*h)[up] = (*h)[up], (*h)[i]
		i = up
	}
}

func (h *taskHeap) pop() task {
	old := *h
	t := old[0]
	n := len(old) - 1
	old[0] = old[n]
	old[n] = task{}
	*h = old[:n]
	for i := 0; ; {
		l, r, min := 2*i+1, 2*i+2, i
		if l < n && h.less(l, min) {
			min = l
		}
		if r < n && h.less(r, min) {
			min = r
		}
		if min == i {
			break
		}
		(*h)[i], (*h)[min] = (*h)[min], (*h)[i]
		i = min
	}
	return t
}

func (s *sim) at(at time.Time, do func()) { s.push(task{at: at.Sub(s.start), do: do}) }

func (s *sim) push(t task) {
	if t.tick == nil {
		s.planned++
	}
	s.order++
	t.order = s.order
	s.tasks.push(t)
}

func (s *sim) after(d time.Duration, do func()) { s.at(s.now.Add(d), do) }

func (s *sim) elapsed() time.Duration { return s.now.Sub(s.start) }

// tracef traces, when replaying one schedule. The hot paths test s.trace
// first: the arguments cost even when no one traces.
func (s *sim) tracef(format string, args ...any) {
	if s.trace != nil {
		s.trace(format, args...)
	}
}

func (s *sim) violate(format string, args ...any) {
	v := fmt.Sprintf("%.3fs: ", s.elapsed().Seconds()) + fmt.Sprintf(format, args...)
	s.tracef("VIOLATION %s", v)
	if len(s.violations) < 50 {
		s.violations = append(s.violations, v)
	}
}

func (s *sim) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

func (s *sim) newKey() string {
	s.nextKey++
	return fmt.Sprintf("k%d", s.nextKey)
}

// --- the schedule ---

func newSim(seed int64) *sim {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &sim{rng: rng, start: start, now: start, stamp: map[string]int{}, masterFrom: map[string]*sentMsg{}, linkFirst: *closeOrder == "link"}
	pick := func(xs ...float64) float64 { return xs[rng.IntN(len(xs))] }
	s.drop = pick(0, 0, 0.01, 0.05, 0.15, 0.3)
	s.dup = pick(0, 0, 0.01, 0.05)
	s.stall = pick(0, 0, 0.002, 0.01)
	s.reorder = pick(0, 0, 0.01, 0.1)
	s.path = map[[2]*proc]time.Time{}
	s.latency = s.dur(200*time.Microsecond, 3*time.Millisecond)
	s.jitter = []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}[rng.IntN(4)]

	s.master = s.newMaster()
	for i := range 1 + rng.IntN(3) {
		sl := &slot{name: fmt.Sprintf("slave%d", i+1), lastFrom: map[string]*sentMsg{}}
		s.slots = append(s.slots, sl)
		s.newSlave(sl, 0)
	}
	s.plan()
	return s
}

// plan draws the application's traffic and the faults.
func (s *sim) plan() {
	rng := s.rng
	traffic := func(n int, do func()) {
		for range n {
			s.at(s.start.Add(s.dur(50*time.Millisecond, simTrafficEnd)), do)
		}
	}
	for _, sl := range s.slots {
		traffic(10+rng.IntN(60), func() { s.masterEvent(sl) })
		traffic(5+rng.IntN(40), func() { s.slaveEvent(sl) })
		traffic(rng.IntN(10), func() { s.request(s.master, sl) })
		traffic(rng.IntN(10), func() { s.request(sl.proc, sl) })
	}
	traffic(5+rng.IntN(30), func() { s.broadcast() })

	fault := func(n int, do func()) {
		for range n {
			s.at(s.start.Add(s.dur(100*time.Millisecond, simFaultEnd)), do)
		}
	}
	fault(rng.IntN(3), func() { // a process cut off from the broker, for a while or past the session
		procs := []*proc{s.master}
		for _, sl := range s.slots {
			procs = append(procs, sl.proc)
		}
		p := procs[rng.IntN(len(procs))]
		d := s.dur(50*time.Millisecond, 1500*time.Millisecond)
		if rng.IntN(4) == 0 {
			d = s.dur(simSessionTimeout+500*time.Millisecond, 2*simSessionTimeout)
		}
		s.disconnect(p, d)
	})
	fault(rng.IntN(3), func() { s.restartSlave(s.slots[rng.IntN(len(s.slots))], rng.IntN(3) == 0) })
	if rng.IntN(6) == 0 {
		fault(1, func() { s.restartMaster(rng.IntN(2) == 0) })
	}
}

func (s *sim) run() {
	for len(s.tasks) > 0 {
		t := s.tasks.pop()
		if t.at > simMaxEnd {
			break
		}
		s.now = s.start.Add(t.at)
		switch {
		case t.arrive != nil:
			s.planned--
			s.arrive(t.arrive)
		case t.tick != nil:
			s.tick(t.tick)
			if s.settled() {
				s.quiet = true
				s.check()
				return
			}
		default:
			s.planned--
			t.do()
		}
	}
	s.check()
}

// settled reports whether the faults are over, nothing is on its way or
// planned, nothing is pending, and it has stayed so for a tick: from
// then on nothing happens but ticks.
func (s *sim) settled() bool {
	if s.now.Sub(s.start) < simFaultEnd || s.planned > 0 || s.busy() {
		s.quietSince = time.Time{}
		return false
	}
	if s.quietSince.IsZero() {
		s.quietSince = s.now
	}
	return s.now.Sub(s.quietSince) > delivery.TickEvery
}

// busy reports whether anything is unacknowledged, unanswered, or a slave
// is not registered.
func (s *sim) busy() bool {
	for _, p := range s.procs() {
		if !p.alive {
			continue
		}
		if p.sender.Broadcasts() > 0 {
			return true
		}
		for _, l := range p.links {
			if l.state == open && (l.out.Unacked() > 0 || l.reqs.Len() > 0) {
				return true
			}
		}
		if p.slot != nil && p.master == nil {
			return true
		}
	}
	return false
}

func (s *sim) procs() []*proc {
	ps := []*proc{s.master}
	for _, sl := range s.slots {
		ps = append(ps, sl.proc)
	}
	return ps
}

func (s *sim) summary() string {
	return fmt.Sprintf("drop %.2f dup %.2f stall %.3f reorder %.2f latency %s jitter %s, %d slaves; %d events, %d broadcasts, %d requests; %d restarts, %d master restarts, %d expiries, %d disconnects; ended at %s",
		s.drop, s.dup, s.stall, s.reorder, s.latency, s.jitter, len(s.slots), s.stats.events, s.stats.broadcasts, len(s.reqs),
		s.stats.restarts, s.stats.masterRestarts, s.stats.expiries, s.stats.disconnects, s.elapsed())
}

// --- processes ---

// id is the process's endpoint id, as fences name it.
func (p *proc) id() string {
	if p.slot == nil {
		return "0"
	}
	return p.slot.name
}

func (s *sim) newProc(name string, sl *slot) *proc {
	p := &proc{s: s, name: name, slot: sl, alive: true, connected: true, sender: delivery.NewSender[int](1000), bids: map[uint64]int{}}
	s.push(task{at: s.elapsed() + s.dur(0, delivery.TickEvery), tick: p})
	return p
}

func (s *sim) newMaster() *proc {
	p := s.newProc(fmt.Sprintf("master#%d", s.stats.masterRestarts), nil)
	p.key = s.newKey()
	s.tracef("%s starts, session %s", p.name, p.key)
	return p
}

func (s *sim) newSlave(sl *slot, n int) {
	p := s.newProc(fmt.Sprintf("%s#%d", sl.name, n), sl)
	sl.proc = p
	s.tracef("%s starts", p.name)
	s.register(p)
}

func (s *sim) newPlink(owner *proc, key string) *plink {
	s.nextPlink++
	return &plink{id: s.nextPlink, owner: owner, key: key, in: delivery.NewReceiver[int](owner.id()), reqs: delivery.NewRequests[int](0),
		served: delivery.NewServed[response](), ids: map[uint64]int{}, lastHeard: s.now, opened: s.now}
}

// tick is a process's ticker.
func (s *sim) tick(p *proc) {
	if !p.alive {
		return
	}
	defer s.push(task{at: s.elapsed() + delivery.TickEvery, tick: p})
	s.publish(p, p.sender.Tick(s.now))
	for _, l := range p.links {
		if l.state != open {
			continue
		}
		for _, a := range l.in.Tick(s.now) {
			s.sendAck(l, a)
		}
		asks, ended := l.reqs.Tick(s.now)
		for _, a := range asks {
			s.sendAsk(l, a)
		}
		for _, e := range ended {
			s.ended(e.Req, e.Err)
		}
		l.served.Sweep(s.now)
	}
	for _, l := range p.links {
		if l.state != closed && s.now.Sub(l.lastHeard) > simSessionTimeout {
			s.expire(l)
		}
	}
	if (s.now.Sub(s.start)/delivery.TickEvery)%(simHeartbeat/delivery.TickEvery) == 0 {
		for _, l := range p.links {
			if l.state == open && l.twin != nil {
				s.send(&packet{kind: pHeartbeat, from: l, to: l.twin})
			}
		}
	}
	if p.slot != nil && p.master == nil && p.registering == nil && !p.stopping {
		s.register(p)
	}
}

// --- the network ---

type pkind uint8

const (
	pEvent pkind = iota + 1
	pBroadcast
	pAck
	pRequest
	pResponse
	pClose
	pHeartbeat
	pRegister
	pRegistered
	pStale
)

type packet struct {
	kind      pkind
	from      *plink // nil for a published broadcast
	master    *proc  // the publisher of a broadcast
	to        *plink
	head      delivery.Head
	ev        int
	ack       delivery.Ack
	wire      uint64
	low       uint64
	budget    time.Duration
	requester delivery.Requester
	resp      response
}

// send publishes pk: lost, copied, delayed, stalled as the schedule says.
func (s *sim) send(pk *packet) {
	from := pk.master
	if pk.from != nil {
		from = pk.from.owner
	}
	if !from.alive || !from.connected {
		return
	}
	var to *proc
	if pk.to != nil {
		to = pk.to.owner
	}
	// The faults end at simFaultEnd: from then on, everything must
	// settle.
	faulty := s.now.Sub(s.start) < simFaultEnd
	copies := 1
	if faulty && s.rng.Float64() < s.dup {
		copies = 2
	}
	for range copies {
		if faulty && s.rng.Float64() < s.drop {
			continue
		}
		at := s.now.Add(s.latency)
		if s.jitter > 0 {
			at = at.Add(time.Duration(s.rng.Int64N(int64(s.jitter))))
		}
		switch {
		case faulty && s.rng.Float64() < s.stall:
			// Held up on a frozen node: it comes much later, after what
			// was sent after it.
			at = at.Add(s.dur(300*time.Millisecond, 3*time.Second))
		case faulty && s.rng.Float64() < s.reorder:
			// Another route (a failover): it may pass what went before.
		default:
			// NATS keeps one publisher's order to one subscriber.
			path := [2]*proc{from, to}
			if last := s.path[path]; at.Before(last) {
				at = last
			}
			s.path[path] = at
		}
		s.push(task{at: at.Sub(s.start), arrive: pk})
	}
}

// arrive hands pk to its link, if the process is there to take it.
func (s *sim) arrive(pk *packet) {
	if pk.kind == pBroadcast {
		for _, sl := range s.slots {
			p := sl.proc
			if !p.alive || !p.connected {
				continue
			}
			for _, l := range p.links {
				if l.peer == pk.master && l.state == open {
					s.receive(l, pk)
				}
			}
		}
		return
	}
	to := pk.to
	p := to.owner
	if !p.alive || !p.connected {
		if pk.kind == pRequest && !s.anyoneFor(p) {
			s.noResponders(pk)
		}
		if !p.alive && p.slot == nil && s.master.alive && s.master.connected && pk.from.owner.alive {
			// The master is unique: another session can only be its own
			// earlier run, and it says so.
			s.after(s.latency, func() { s.arrive(&packet{kind: pStale, to: pk.from}) })
		}
		return
	}
	if to.state == closed || (to.state == parked && pk.kind != pAck) {
		return // a link that has ended: its late messages are dropped
	}
	s.receive(to, pk)
}

// anyoneFor reports whether a process of p's endpoint subscribes.
func (s *sim) anyoneFor(p *proc) bool {
	cur := s.master
	if p.slot != nil {
		cur = p.slot.proc
	}
	return cur.alive && cur.connected
}

// noResponders delivers NATS's no-responders status to the requester.
func (s *sim) noResponders(pk *packet) {
	l := pk.from
	if !l.owner.alive || !l.owner.connected || l.state != open {
		return
	}
	s.after(s.latency, func() {
		if l.state != open || !l.owner.alive {
			return
		}
		if e, ok := l.reqs.NoResponders(pk.wire, s.now); ok {
			s.ended(e.Req, e.Err)
		}
		if at, ok := l.reqs.NextRetry(); ok {
			s.at(at, func() {
				if l.state == open && l.owner.alive {
					asks, ended := l.reqs.Tick(s.now)
					for _, a := range asks {
						s.sendAsk(l, a)
					}
					for _, e := range ended {
						s.ended(e.Req, e.Err)
					}
				}
			})
		}
	})
}

func (s *sim) receive(l *plink, pk *packet) {
	l.lastHeard = s.now
	p := l.owner
	switch pk.kind {
	case pEvent:
		if pk.head.All || pk.head.After != 0 {
			if s.trace != nil {
				s.tracef("%s: event %+v", p.name, pk.head)
			}
		}
		evs, acks := l.in.Event(pk.head, pk.ev, s.now)
		s.deliver(l, evs)
		for _, a := range acks {
			s.sendAck(l, a)
		}
	case pBroadcast:
		if s.trace != nil {
			s.tracef("%s: broadcast %+v", p.name, pk.head)
		}
		evs, acks := l.in.Broadcast(pk.head, pk.ev, s.now)
		s.deliver(l, evs)
		for _, a := range acks {
			s.sendAck(l, a)
		}
	case pAck:
		if pk.ack.All {
			s.publish(p, p.sender.AckedAll(l.out, pk.ack.UpTo, pk.ack.Gap, s.now))
			if s.trace != nil {
				s.tracef("%s acknowledges broadcasts %+v: %s", l.peer.name, pk.ack, delivery.SenderState(p.sender))
			}
			s.markAcked(l, l.out.BroadcastsAckedUpTo(), true)
		} else {
			s.publish(p, p.sender.Acked(l.out, pk.ack.UpTo, pk.ack.Gap, s.now))
			s.markAcked(l, l.out.AckedUpTo(), false)
		}
	case pRequest:
		s.serve(l, pk)
	case pResponse:
		if id, ok := l.reqs.End(pk.wire); ok {
			if pk.resp.req != id {
				s.violate("request %d was answered with the response to %d", id, pk.resp.req)
			}
			s.ended(id, nil)
		}
	case pClose:
		s.tracef("%s: its peer %s closed the link", p.name, l.peer.name)
		s.park(l)
	case pRegistered:
		s.registered(l, pk.from)
	case pStale:
		if p.master == l {
			s.tracef("%s: the master restarted", p.name)
			s.park(l)
		}
	}
}

// publish sends what a Sender returned.
func (s *sim) publish(p *proc, pubs []delivery.Publish[int]) {
	for _, pb := range pubs {
		if pb.Link == nil {
			s.send(&packet{kind: pBroadcast, master: p, head: pb.Head, ev: pb.Event})
			continue
		}
		l := s.linkOf(p, pb.Link)
		if s.trace != nil {
			s.tracef("%s publishes %+v on %s", p.name, pb.Head, l.key)
		}
		if !pb.Head.All {
			l.ids[pb.Head.Seq] = pb.Event
		}
		if l.twin != nil {
			s.send(&packet{kind: pEvent, from: l, to: l.twin, head: pb.Head, ev: pb.Event})
		}
	}
}

func (s *sim) linkOf(p *proc, out *delivery.OutLink[int]) *plink {
	for _, l := range p.links {
		if l.out == out {
			return l
		}
	}
	panic("a publish on a link the process does not have")
}

func (s *sim) sendAck(l *plink, a delivery.Ack) {
	if s.trace != nil {
		s.tracef("%s acknowledges %+v", l.owner.name, a)
	}
	if l.twin != nil {
		s.send(&packet{kind: pAck, from: l, to: l.twin, ack: a})
	}
}

// markAcked records which events the sender has taken this receiver's
// word for.
func (s *sim) markAcked(l *plink, upTo uint64, all bool) {
	if all {
		for seq := l.backed + 1; seq <= upTo; seq++ {
			if id, ok := l.owner.bids[seq]; ok {
				s.msgs[id].ackedBy = append(s.msgs[id].ackedBy, l.twin)
			}
		}
		l.backed = max(l.backed, upTo)
		return
	}
	for seq := l.acked + 1; seq <= upTo; seq++ {
		if id, ok := l.ids[seq]; ok {
			s.msgs[id].ackedBy = append(s.msgs[id].ackedBy, l.twin)
		}
	}
	l.acked = max(l.acked, upTo)
}

// --- the application ---

func (s *sim) newMsg(from *proc, to string, bcast bool) *sentMsg {
	logical := "master"
	if from.slot != nil {
		logical = from.slot.name
	}
	s.stamp[logical]++
	m := &sentMsg{id: len(s.msgs), at: s.now, bcast: bcast, from: logical, to: to, stamp: s.stamp[logical], proc: from}
	s.msgs = append(s.msgs, m)
	return m
}

// masterEvent sends an event on the link slave sl registered on, if any
// (as fabric.Master.SlaveLink).
func (s *sim) masterEvent(sl *slot) {
	p, l := s.master, sl.masterLink
	if !p.alive || p.stopping || l == nil || l.state != open || l.owner != p {
		return
	}
	s.sendEvent(p, l, sl.name)
}

func (s *sim) slaveEvent(sl *slot) {
	p := sl.proc
	if !p.alive || p.stopping || p.master == nil || p.master.state != open {
		return
	}
	s.sendEvent(p, p.master, "master")
}

func (s *sim) sendEvent(p *proc, l *plink, to string) {
	id := len(s.msgs)
	pubs, err := p.sender.Send(l.out, id, s.now)
	if err != nil {
		return // not sent: the application knows
	}
	m := s.newMsg(p, to, false)
	s.stats.events++
	if s.trace != nil {
		s.tracef("%s sends event %d (stamp %d) to %s", p.name, m.id, m.stamp, to)
	}
	s.publish(p, pubs)
}

func (s *sim) broadcast() {
	p := s.master
	if !p.alive || p.stopping {
		return
	}
	id := len(s.msgs)
	pubs, err := p.sender.Broadcast("slave", id, s.now)
	if err != nil {
		return
	}
	m := s.newMsg(p, "", true)
	m.owed = s.receiversOf(p)
	p.bids[pubs[0].Head.Seq] = id
	s.stats.broadcasts++
	if s.trace != nil {
		s.tracef("%s broadcasts %d (stamp %d, seq %d) owed by %v", p.name, id, m.stamp, pubs[0].Head.Seq, m.owed)
	}
	s.publish(p, pubs)
}

// masterSide returns the other end of a link l (the master's end of a
// slave's), or nil.
func (s *sim) masterSide(l *plink) *plink {
	if l.twin != nil {
		return l.twin
	}
	for _, ml := range l.peer.links {
		if ml.twin == l {
			return ml
		}
	}
	return nil
}

// receiversOf returns the slots the master's broadcasts are owed to now:
// those with a link the master has taken (open, or parked for the next
// process to adopt).
func (s *sim) receiversOf(p *proc) []string {
	var out []string
	for _, sl := range s.slots {
		if l := sl.masterLink; l != nil && l.owner == p && l.state != closed {
			out = append(out, sl.name)
		}
	}
	return out
}

// deliver hands events to the application of l's owner.
func (s *sim) deliver(l *plink, ids []int) {
	p := l.owner
	for _, id := range ids {
		m := s.msgs[id]
		if p.appClosed {
			s.tracef("%s: %d delivered to a closed link: dropped", p.name, id)
			continue
		}
		s.stats.delivered++
		recv := "master"
		if p.slot != nil {
			recv = p.slot.name
		}
		if !m.bcast && m.to != recv {
			s.violate("%s got event %d meant for %s", p.name, id, m.to)
		}
		unowed := m.bcast && !contains(m.owed, recv)
		if unowed {
			if ml := s.masterSide(l); ml == nil || m.at.Before(ml.opened) {
				s.violate("%s got broadcast %d, sent before it linked", p.name, id)
			}
			// Else the master had ended the session (it expired there
			// first): what it broadcast after is not owed, nor ordered.
		}
		prev := m.deliveredTo(recv)
		m.delivered = append(m.delivered, received{recv, l})
		if len(prev) > 0 {
			first := prev[0]
			switch {
			case contains(prev, l):
				s.violate("%s got %d twice in session %s", p.name, id, l.key)
			case contains(m.ackedBy, first):
				s.violate("%s got %d, which %s had handled in session %s and acknowledged", p.name, id, first.owner.name, first.key)
			default:
				s.stats.dupsAllowed++
				s.tracef("%s got %d again: %s had it in session %s, and its acknowledgement was lost", p.name, id, first.owner.name, first.key)
			}
			continue
		}
		if s.trace != nil {
			s.tracef("%s delivers %d (stamp %d from %s)", p.name, id, m.stamp, m.from)
		}
		if pe := s.masterSide(l); unowed || pe != nil && pe.state == closed && !pe.adopted {
			// Late mail of a session its sender has given up (it expired
			// there first): outside the promise, and not in its order.
			continue
		}
		slotLast := s.lastOf(recv)
		if last := slotLast[m.from]; last != nil && m.stamp <= last.stamp {
			s.violate("%s delivered %s %d (stamp %d from %s) after %s %d (stamp %d): out of order", p.name, m.kind(), id, m.stamp, m.from, last.kind(), last.id, last.stamp)
		} else {
			slotLast[m.from] = m
		}
	}
}

func (m *sentMsg) kind() string {
	if m.bcast {
		return "broadcast"
	}
	return "event"
}

// lastOf returns the last message delivered to recv, per logical sender.
func (s *sim) lastOf(recv string) map[string]*sentMsg {
	for _, sl := range s.slots {
		if sl.name == recv {
			return sl.lastFrom
		}
	}
	return s.masterFrom
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// --- requests ---

func (s *sim) request(from *proc, sl *slot) {
	var l *plink
	if from == s.master {
		l = sl.masterLink
		if l == nil || l.owner != from {
			return
		}
	} else {
		from = sl.proc
		l = from.master
	}
	if !from.alive || from.stopping || l == nil || l.state != open {
		return
	}
	id := len(s.reqs)
	deadline := s.now.Add(s.dur(300*time.Millisecond, 3*time.Second))
	a, err := l.reqs.Send(id, deadline, s.now)
	if err != nil {
		return
	}
	s.reqs = append(s.reqs, &sentReq{id: id, deadline: deadline})
	if s.trace != nil {
		s.tracef("%s asks %d (wire %d)", from.name, id, a.Wire)
	}
	s.sendAsk(l, a)
}

func (s *sim) sendAsk(l *plink, a delivery.Ask[int]) {
	if l.twin == nil {
		return
	}
	s.send(&packet{kind: pRequest, from: l, to: l.twin, wire: a.Wire, low: a.Low, budget: a.Budget, ev: a.Req,
		requester: delivery.Requester{Session: l.key, Conn: l.id}})
}

// serve is the responder's side: its served memory, then the handler,
// which takes a while.
func (s *sim) serve(l *plink, pk *packet) {
	verdict, resp := l.served.Take(pk.requester, pk.wire, pk.low, s.now.Add(pk.budget))
	switch verdict {
	case delivery.Answer:
		s.send(&packet{kind: pResponse, from: l, to: pk.from, wire: pk.wire, resp: resp})
	case delivery.Handle:
		r := s.reqs[pk.ev]
		r.runs++
		if r.runs > 1 {
			s.violate("the handler of request %d ran %d times", r.id, r.runs)
		}
		resp := response{req: r.id}
		s.after(s.dur(0, 1500*time.Millisecond), func() {
			if !l.owner.alive || l.state == closed {
				return
			}
			l.served.Answered(pk.requester, pk.wire, resp)
			s.send(&packet{kind: pResponse, from: l, to: pk.from, wire: pk.wire, resp: resp})
		})
	}
}

func (s *sim) ended(id int, err error) {
	r := s.reqs[id]
	r.ends++
	if r.ends > 1 {
		s.violate("request %d ended %d times (last with %v)", id, r.ends, err)
	}
	if errors.Is(err, delivery.ErrTimeout) && s.now.Before(r.deadline) {
		s.violate("request %d timed out at %s, before its deadline %s", id, s.now.Sub(s.start), r.deadline.Sub(s.start))
	}
	if err == nil && s.now.After(r.deadline.Add(delivery.TickEvery)) {
		// Answered after the link has given up is fine; here the table
		// has not given up in time.
		s.violate("request %d ended at %s, past its deadline %s", id, s.now.Sub(s.start), r.deadline.Sub(s.start))
	}
}

// --- links: registration, closing, adoption, expiry ---

// register starts a slave's registration: a new link (a new session).
func (s *sim) register(p *proc) {
	m := s.master
	if !m.alive {
		return
	}
	l := s.newPlink(p, s.newKey())
	l.peer = m
	l.out = p.sender.Open("master", m.id())
	p.links = append(p.links, l)
	p.registering = l
	s.tracef("%s registers with %s, session %s", p.name, m.name, l.key)
	var retry func()
	retry = func() {
		if p.registering != l || !p.alive {
			return
		}
		if !m.alive {
			s.close(l)
			p.registering = nil
			return
		}
		s.sendTo(l, m, &packet{kind: pRegister, from: l})
		s.after(simRegisterRetry, retry)
	}
	retry()
}

// sendTo sends pk to process m, which has no link for it yet.
func (s *sim) sendTo(from *plink, m *proc, pk *packet) {
	if !from.owner.alive || !from.owner.connected || s.now.Sub(s.start) < simFaultEnd && s.rng.Float64() < s.drop {
		return
	}
	s.after(s.latency+time.Duration(s.rng.Int64N(int64(s.jitter)+1)), func() {
		if m.alive && m.connected {
			s.receiveRegister(m, pk)
		}
	})
}

// receiveRegister is the master taking a registration: the new session
// replaces the slave's earlier one (after making sure it does not
// answer), and adopts what the earlier one never acknowledged.
func (s *sim) receiveRegister(m *proc, pk *packet) {
	sp := pk.from
	sl := sp.owner.slot
	if m.stopping {
		return // a master that is closing takes no new link
	}
	for _, l := range m.links {
		if l.twin == sp {
			s.send(&packet{kind: pRegistered, from: l, to: sp})
			return
		}
	}
	if sl.pending == sp {
		return
	}
	var complete func()
	complete = func() {
		if sl.pending == sp {
			sl.pending = nil
		}
		if !m.alive || m.stopping || !sp.owner.alive || sp.owner.registering != sp {
			return
		}
		for _, l := range m.links {
			if l.twin == sp {
				return // completed already
			}
		}
		old := sl.masterLink
		if old != nil && old.owner != m {
			old = nil
		}
		if old != nil && old.state == open {
			if sl.pending != nil {
				return // another registration is replacing it: retried
			}
			// Make sure the old session does not answer: it is replaced
			// only after a while.
			sl.pending = sp
			old.state = open
			s.after(simPingTimeout, func() {
				if old.state == open {
					s.park(old)
					old.lostAt = s.now
				}
				complete()
			})
			return
		}
		l := s.newPlink(m, sp.key)
		l.peer, l.twin = sp.owner, sp
		l.out = m.sender.Open("slave", sp.owner.id())
		m.links = append(m.links, l)
		if old != nil && old.state == parked && s.now.Sub(old.lostAt) <= simSessionTimeout {
			s.adopt(m, l, old)
		} else if old != nil && old.state == parked {
			s.close(old)
		}
		sl.masterLink = l
		s.tracef("%s: %s registered, session %s", m.name, sp.owner.name, sp.key)
		s.send(&packet{kind: pRegistered, from: l, to: sp})
	}
	complete()
}

// registered is the slave hearing that the master took its registration.
func (s *sim) registered(l *plink, ml *plink) {
	p := l.owner
	if p.registering != l {
		return
	}
	l.twin = ml
	p.registering, p.master = nil, l
	if old := p.lastMaster; old != nil && old.state == parked && s.now.Sub(old.lostAt) <= simSessionTimeout {
		s.adopt(p, l, old)
	} else if old != nil && old.state == parked {
		s.close(old)
	}
	p.lastMaster = nil
	s.tracef("%s registered", p.name)
}

func (s *sim) adopt(p *proc, l, old *plink) {
	s.stats.adopted++
	old.adopted = true
	s.tracef("%s: adopts %d events of %s into %s", p.name, old.out.Unacked(), old.key, l.key)
	pubs, _, err := p.sender.Adopt(l.out, old.out, s.now)
	if err != nil {
		s.violate("%s: adopt: %v", p.name, err)
	}
	s.publish(p, pubs)
	old.state = closed
	s.lastWord(old, old.in.Stop())
}

// lastWord publishes the last acknowledgements of a link that ended
// here, and keeps them to publish again when the connection comes back
// (it may have ended while cut off): so that the peer does not hand what
// this end had to its next session.
func (s *sim) lastWord(l *plink, acks []delivery.Ack) {
	if len(acks) > 0 {
		l.last = append([]delivery.Ack(nil), acks...)
	}
	for _, a := range l.last {
		s.sendAck(l, a)
	}
}

// park ends a link whose peer closed it or went away: requests fail, the
// receiver stops, and its unacknowledged events wait for the peer's next
// session to adopt them.
func (s *sim) park(l *plink) {
	if l.state != open {
		return
	}
	p := l.owner
	l.state, l.lostAt = parked, s.now
	p.sender.Park(l.out)
	s.lastWord(l, l.in.Stop())
	for _, e := range l.reqs.Close() {
		s.ended(e.Req, e.Err)
	}
	if p.master == l {
		p.master, p.lastMaster = nil, l
	}
	if p.registering == l {
		p.registering = nil
	}
}

// close ends a link for good: what it held is given up.
func (s *sim) close(l *plink) {
	if l.state == closed {
		return
	}
	s.park(l)
	l.state = closed
	s.giveUp(l)
	l.owner.sender.Close(l.out)
	if l.owner.lastMaster == l {
		l.owner.lastMaster = nil
	}
}

// giveUp marks what l held as given up with its session.
func (s *sim) giveUp(l *plink) {
	if l.adopted {
		return
	}
	from := l.out.AckedUpTo() + 1
	for seq := from; seq < from+uint64(l.out.Unacked()); seq++ {
		if id, ok := l.ids[seq]; ok {
			s.msgs[id].giveUp(s, s.msgs[id].to)
		}
	}
	if l.owner.slot == nil && l.peer != nil && l.peer.slot != nil {
		// The master's link to a slave: the broadcasts it was owed.
		name := l.peer.slot.name
		for _, m := range s.msgs {
			if m.bcast && m.proc == l.owner && contains(m.owed, name) {
				m.giveUp(s, name)
			}
		}
	}
}

// expire ends a link whose peer has been silent past the session timeout.
func (s *sim) expire(l *plink) {
	s.stats.expiries++
	s.tracef("%s: session %s with %s expired", l.owner.name, l.key, l.peer.name)
	s.close(l)
}

// --- faults ---

func (s *sim) disconnect(p *proc, d time.Duration) {
	if !p.alive || !p.connected {
		return
	}
	s.stats.disconnects++
	s.tracef("%s disconnected for %s", p.name, d)
	p.connected = false
	s.after(d, func() {
		if !p.alive {
			return
		}
		p.connected = true
		s.tracef("%s reconnected", p.name)
		for _, l := range p.links {
			if l.state != open {
				s.lastWord(l, nil)
			}
		}
		s.publish(p, p.sender.Resumed(s.now))
		for _, l := range p.links {
			if l.state == open {
				for _, a := range l.reqs.Resumed(s.now) {
					s.sendAsk(l, a)
				}
			}
		}
	})
}

// restartSlave stops sl's process, gracefully or not, and starts another.
func (s *sim) restartSlave(sl *slot, crash bool) {
	p := sl.proc
	if !p.alive || p.stopping {
		return
	}
	s.stats.restarts++
	next := func() {
		s.after(s.dur(0, 500*time.Millisecond), func() { s.newSlave(sl, s.stats.restarts) })
	}
	if crash {
		s.stats.crashes++
		s.crash(p)
		next()
		return
	}
	s.tracef("%s stops", p.name)
	p.stopping = true
	s.drain(p, s.now.Add(time.Second), func() {
		s.stop(p)
		next()
	})
}

// drain waits until p's peers have everything it sent, or until.
func (s *sim) drain(p *proc, until time.Time, then func()) {
	if s.now.Before(until) && (p.sender.Broadcasts() > 0 || s.unacked(p)) {
		s.after(delivery.TickEvery, func() { s.drain(p, until, then) })
		return
	}
	then()
}

func (s *sim) unacked(p *proc) bool {
	for _, l := range p.links {
		if l.state == open && l.out.Unacked() > 0 {
			return true
		}
	}
	return false
}

// stop closes a process gracefully: its receivers stop (their last
// acknowledgements go out), its peers are told, and it goes.
func (s *sim) stop(p *proc) {
	if !p.alive {
		return
	}
	finish := func() {
		p.appClosed = true
		for _, l := range p.links {
			if l.state != open {
				continue
			}
			for _, a := range l.in.Stop() {
				s.sendAck(l, a)
			}
			if l.twin != nil {
				s.send(&packet{kind: pClose, from: l, to: l.twin})
			}
		}
		s.tracef("%s stopped", p.name)
		s.after(s.dur(0, 100*time.Millisecond), func() { s.die(p) })
	}
	if s.linkFirst {
		// As connector/nats did: the link stops taking events, and a
		// moment later the connector acknowledges what it took.
		p.appClosed = true
		s.after(s.dur(0, 3*time.Millisecond), finish)
		return
	}
	finish()
}

func (s *sim) crash(p *proc) {
	s.tracef("%s crashes", p.name)
	s.die(p)
}

// die ends a process: its requests end with it, and what its peers have
// not acknowledged is gone with it (a graceful stop waited for them, for
// a while).
func (s *sim) die(p *proc) {
	if !p.alive {
		return
	}
	for _, l := range p.links {
		s.giveUp(l)
		for _, e := range l.reqs.Close() {
			s.ended(e.Req, e.Err)
		}
	}
	if p.slot == nil {
		for _, m := range s.msgs {
			if m.bcast && m.proc == p {
				for _, name := range m.owed {
					m.giveUp(s, name)
				}
			}
		}
	}
	p.alive = false
}

func (s *sim) restartMaster(crash bool) {
	p := s.master
	if !p.alive || p.stopping {
		return
	}
	s.stats.masterRestarts++
	next := func() {
		s.after(s.dur(0, 300*time.Millisecond), func() { s.master = s.newMaster() })
	}
	if crash {
		s.crash(p)
		next()
		return
	}
	s.tracef("%s stops", p.name)
	p.stopping = true
	s.drain(p, s.now.Add(time.Second), func() {
		s.stop(p)
		next()
	})
}

// --- the promises ---

// check holds the schedule to docs/reliability.md: every event and
// broadcast sent within a session that lasted reached its receiver
// (delivered twice only to a process that replaced one whose
// acknowledgement was lost, and in the order sent, both checked as they
// were delivered), and every request ended exactly once, its handler run
// at most once.
func (s *sim) check() {
	if !s.quiet {
		s.violate("not settled by %s: %s", simMaxEnd, s.pending())
	}
	for _, m := range s.msgs {
		if m.bcast {
			for _, name := range m.owed {
				if !m.reached(name) && !contains(m.givenUp, name) {
					s.violate("broadcast %d (stamp %d) never reached %s", m.id, m.stamp, name)
				}
			}
			continue
		}
		if !m.reached(m.to) && !contains(m.givenUp, m.to) {
			s.violate("event %d (stamp %d) from %s never reached %s", m.id, m.stamp, m.proc.name, m.to)
		}
	}
	for _, r := range s.reqs {
		if r.ends != 1 {
			s.violate("request %d ended %d times", r.id, r.ends)
		}
	}
}

func (s *sim) pending() string {
	var b strings.Builder
	for _, p := range s.procs() {
		fmt.Fprintf(&b, "%s alive=%v: %d broadcasts;", p.name, p.alive, p.sender.Broadcasts())
		for _, l := range p.links {
			if l.state == open {
				fmt.Fprintf(&b, " link %s: %d events, %d requests;", l.key, l.out.Unacked(), l.reqs.Len())
			}
		}
	}
	return b.String()
}
