package soak

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Soak is a running soak: a master, slaves with instances and a control,
// in this process, exchanging numbered events and requests through NATS.
// Its methods are safe for concurrent use.
type Soak struct {
	cfg     Config
	t       *tracker
	nextID  atomic.Int64 // request ids, unique in the soak
	closed  chan struct{}
	traffic sync.WaitGroup // traffic loops and the requests they started
	begun   time.Time
	tap     *wiretap // with Masters: what the masters publish
	state   stateLog

	mu         sync.Mutex
	stopped    chan struct{} // closed when traffic stops for good
	stoppedAt  time.Time
	closing    bool
	master     *fabric.Master
	masterInc  int64
	masterStop chan struct{} // stops the current master's soak:down
	masterDone chan struct{} // closed when it has stopped
	slaves     map[int64]*fabric.Slave
	instInc    map[int64]int64
	control    *fabric.Control
	procs      []*masterProc // with Masters: by index, nil once gone
}

// Start starts a soak: the master, the slaves and their instances, and the
// control; it returns once every slave is registered and every instance
// runs, with traffic flowing, or with an error when ctx ends first.
func Start(ctx context.Context, cfg Config) (*Soak, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Soak{
		cfg:     cfg,
		t:       newTracker(),
		closed:  make(chan struct{}),
		stopped: make(chan struct{}),
		slaves:  map[int64]*fabric.Slave{},
		instInc: map[int64]int64{},
	}
	fail := func(err error) (*Soak, error) {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(cctx)
		return nil, err
	}
	if cfg.Masters > 0 {
		if err := s.startMasterProcs(ctx); err != nil {
			return fail(err)
		}
	} else if err := s.startMaster(ctx); err != nil {
		return fail(err)
	}
	for _, id := range s.SlaveIDs() {
		if err := s.startSlave(ctx, id); err != nil {
			return fail(err)
		}
	}
	ctl, err := s.dialControl(ctx)
	if err != nil {
		return fail(err)
	}
	s.mu.Lock()
	s.control = ctl
	s.mu.Unlock()
	if err := s.WaitView(ctx, func(v ViewReport) bool { return v.SlavesConnected == v.Slaves }); err != nil {
		return fail(err)
	}
	if every(cfg.OutRate) > 0 {
		if err := s.retry(ctx, "follow the instances' output", func(rctx context.Context) error {
			return ctl.Follow(rctx, s.allInstances()...)
		}); err != nil {
			return fail(err)
		}
	}
	for _, id := range s.SlaveIDs() {
		if err := s.startInstances(ctx, id); err != nil {
			return fail(err)
		}
	}
	s.begun = time.Now()
	if every(cfg.AskRate) > 0 {
		s.traffic.Add(1)
		go s.ask()
	}
	if every(cfg.StateRate) > 0 {
		s.traffic.Add(1)
		go s.changeState()
	}
	return s, nil
}

// retry calls f with a request timeout until it succeeds or ctx ends.
func (s *Soak) retry(ctx context.Context, what string, f func(context.Context) error) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Timing.RequestTimeout)
		err := f(rctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("soak: %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// output counts a line of output the control was relayed.
func (s *Soak) output(line messages.OutputLine) {
	var inc, seq int64
	if _, err := fmt.Sscanf(strings.TrimPrefix(line.Message, outPrefix), "%d %d", &inc, &seq); err != nil || !strings.HasPrefix(line.Message, outPrefix) {
		return
	}
	s.t.received(outputStream(line.InstanceID, inc), seq)
}

// SlaveIDs returns the ids of the soak's slaves: 1 to Config.Slaves.
func (s *Soak) SlaveIDs() []int64 {
	ids := make([]int64, s.cfg.Slaves)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	return ids
}

// InstanceIDs returns the ids of the instances slave id hosts.
func (s *Soak) InstanceIDs(slaveID int64) []int64 {
	ids := make([]int64, s.cfg.Instances)
	for i := range ids {
		ids[i] = slaveID*100 + int64(i+1)
	}
	return ids
}

func (s *Soak) allInstances() []int64 {
	var ids []int64
	for _, sid := range s.SlaveIDs() {
		ids = append(ids, s.InstanceIDs(sid)...)
	}
	return ids
}

// Master returns the running master.
func (s *Soak) Master() *fabric.Master {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.master
}

// Slave returns slave id's running process, or nil.
func (s *Soak) Slave(id int64) *fabric.Slave {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.slaves[id]
}

// MasterLink returns the link slave id registered on with the master, or
// nil: the one the master sends soak:down on.
func (s *Soak) MasterLink(slaveID int64) *link.Link {
	if m := s.Master(); m != nil {
		return m.SlaveLink(slaveID)
	}
	return nil
}

// trafficStopped returns the channel closed when traffic stops for good.
func (s *Soak) trafficStopped() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

func (s *Soak) masterConfig() fabric.MasterConfig {
	return fabric.MasterConfig{
		NATS:       s.cfg.natsFor(link.MasterAddress),
		Listen:     "127.0.0.1:0",
		KVReplicas: s.cfg.KVReplicas,
		Lease:      s.cfg.Lease,
		Grants:     fabric.AllGrants(),
		Timing:     s.cfg.Timing,
		Log:        fabric.LogConfig{Level: "info", Format: "text"},
	}
}

// startMaster starts the next incarnation of the master and its soak:down
// traffic.
func (s *Soak) startMaster(ctx context.Context) error {
	s.mu.Lock()
	s.masterInc++
	inc := s.masterInc
	s.mu.Unlock()
	handlers := fabric.WithHandlers(messages.Slave, func(l *link.Link) {
		link.HandleEvent(l, UpEvent, func(_ context.Context, u Up) error {
			s.t.received(streamKey{link: fmt.Sprintf("instance %d -> master", u.InstanceID), inc: u.Inc}, u.Seq)
			return nil
		})
		link.HandleRequest(l, TellRequest, func(_ context.Context, r Tell) (Answer, error) {
			s.t.ran(TellRequest.Name(), r.ID)
			return Answer{ID: r.ID}, nil
		})
	})
	m, err := fabric.StartMaster(ctx, s.masterConfig(), fabric.WithLogger(s.cfg.Logger.With("soak", "master")), fabric.WithPlugins(Plugin), handlers)
	if err != nil {
		return fmt.Errorf("soak: start the master: %w", err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.master, s.masterStop, s.masterDone = m, stop, done
	select {
	case <-s.stopped:
		close(done)
		return nil
	default:
	}
	if every(s.cfg.DownRate) == 0 {
		close(done)
		return nil
	}
	s.traffic.Add(1)
	go s.down(inc, stop, done)
	return nil
}

// down sends soak:down on each of the master's slave links, at DownRate,
// until stop or traffic stops. It sends on the link each slave registered
// on (Master.SlaveLink), not on every link the master makes: a link that
// has not registered yet may be refused, and the events a slave's
// previous session left unacknowledged go first on the one that has.
func (s *Soak) down(inc int64, stop <-chan struct{}, done chan<- struct{}) {
	defer s.traffic.Done()
	defer close(done)
	tick := time.NewTicker(every(s.cfg.DownRate))
	defer tick.Stop()
	seqs := map[int64]int64{}
	stopped := s.trafficStopped()
	for {
		select {
		case <-stop:
			return
		case <-stopped:
			return
		case <-tick.C:
		}
		for _, id := range s.SlaveIDs() {
			l := s.MasterLink(id)
			if l == nil || isDone(l) {
				continue
			}
			seqs[id]++
			seq := seqs[id]
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
			err := link.Emit(ctx, l, DownEvent, Down{SlaveID: id, Inc: inc, Seq: seq})
			cancel()
			s.t.sent(streamKey{link: fmt.Sprintf("master -> slave %d", id), inc: inc}, seq, err)
		}
	}
}

func isDone(l *link.Link) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// RestartMaster stops the master gracefully (its slaves and the control
// are told) and starts a new one with the same configuration: a new
// incarnation, whose soak:down numbers start again at 1. The slaves
// register with it on their own, and the control is dialed again; see
// WaitView.
func (s *Soak) RestartMaster(ctx context.Context) error {
	s.mu.Lock()
	m, stop, done := s.master, s.masterStop, s.masterDone
	s.mu.Unlock()
	close(stop)
	<-done
	if err := m.Close(ctx); err != nil {
		s.cfg.Logger.Warn("soak: the master did not close cleanly", "error", err)
	}
	return s.startMaster(ctx)
}

func (s *Soak) slaveConfig(id int64) fabric.SlaveConfig {
	var inst []messages.HostedInstance
	for _, iid := range s.InstanceIDs(id) {
		inst = append(inst, messages.HostedInstance{ID: iid, Name: fmt.Sprintf("soak-%d", iid)})
	}
	return fabric.SlaveConfig{
		NATS:      s.cfg.natsFor(link.Address{Type: messages.Slave, ID: strconv.FormatInt(id, 10)}),
		ID:        id,
		Instances: inst,
		Timing:    s.cfg.Timing,
		Log:       fabric.LogConfig{Level: "info", Format: "text"},
	}
}

// startSlave starts slave id's next process.
func (s *Soak) startSlave(ctx context.Context, id int64) error {
	handlers := fabric.WithHandlers(messages.Master, func(l *link.Link) {
		link.HandleEvent(l, DownEvent, func(_ context.Context, d Down) error {
			name := fmt.Sprintf("master -> slave %d", d.SlaveID)
			if d.SlaveID != id {
				name += fmt.Sprintf(" (delivered to slave %d)", id)
			}
			s.t.received(streamKey{link: name, inc: d.Inc}, d.Seq)
			return nil
		})
	})
	sl, err := fabric.StartSlave(ctx, s.slaveConfig(id), fabric.WithLogger(s.cfg.Logger.With("soak", fmt.Sprint("slave ", id))),
		fabric.WithPlugins(Plugin), fabric.WithInstanceFactory(s.newInstance), handlers)
	if err != nil {
		return fmt.Errorf("soak: start slave %d: %w", id, err)
	}
	s.mu.Lock()
	s.slaves[id] = sl
	s.mu.Unlock()
	return nil
}

// RestartSlave stops slave id gracefully (its instances stop with it) and
// starts a new process for it, whose instances are new incarnations; it
// returns once they run again, or ctx ends.
func (s *Soak) RestartSlave(ctx context.Context, id int64) error {
	s.mu.Lock()
	sl := s.slaves[id]
	delete(s.slaves, id)
	s.mu.Unlock()
	if sl == nil {
		return fmt.Errorf("soak: no slave %d", id)
	}
	if err := sl.Close(ctx); err != nil {
		s.cfg.Logger.Warn("soak: a slave did not close cleanly", "slave", id, "error", err)
	}
	if err := s.startSlave(ctx, id); err != nil {
		return err
	}
	return s.startInstances(ctx, id)
}

// startInstances has the control start every instance of slave id, and
// waits until each has started (or was running), or ctx ends.
func (s *Soak) startInstances(ctx context.Context, slaveID int64) error {
	for _, iid := range s.InstanceIDs(slaveID) {
		for {
			err := errors.New("no control")
			if ctl := s.currentControl(); ctl != nil {
				rctx, cancel := context.WithTimeout(ctx, s.cfg.Timing.RequestTimeout)
				_, err = link.Request(rctx, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: iid})
				cancel()
			}
			if err == nil || errors.Is(err, &link.Error{Code: fabric.CodeConflict}) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("soak: start instance %d: %w (last error: %v)", iid, ctx.Err(), err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func (s *Soak) dialControl(ctx context.Context) (*fabric.Control, error) {
	cfg := fabric.ControlConfig{
		NATS:   s.cfg.natsFor(link.Address{Type: messages.Control, ID: ControlUser}),
		User:   ControlUser,
		Timing: s.cfg.Timing,
		Log:    fabric.LogConfig{Level: "info", Format: "text"},
	}
	ctl, err := fabric.DialControl(ctx, cfg, fabric.WithLogger(s.cfg.Logger.With("soak", "control")), fabric.WithPlugins(Plugin), fabric.WithOutputHandler(s.output))
	if err != nil {
		return nil, fmt.Errorf("soak: dial the control: %w", err)
	}
	return ctl, nil
}

// currentControl returns the control, or nil before it is dialed. It
// dials the master again by itself whenever its link ends.
func (s *Soak) currentControl() *fabric.Control {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.control
}

// ask sends soak:ask to the instances in turn, at AskRate, at most
// AskConcurrency at a time, until traffic stops.
func (s *Soak) ask() {
	defer s.traffic.Done()
	tick := time.NewTicker(every(s.cfg.AskRate))
	defer tick.Stop()
	sem := make(chan struct{}, s.cfg.AskConcurrency)
	targets := s.allInstances()
	stopped := s.trafficStopped()
	for n := 0; ; {
		select {
		case <-stopped:
			return
		case <-tick.C:
		}
		ctl := s.currentControl()
		if ctl == nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // as many in flight as allowed
		}
		target := targets[n%len(targets)]
		n++
		s.traffic.Add(1)
		go func() {
			defer s.traffic.Done()
			defer func() { <-sem }()
			_ = s.askOne(ctl, target)
		}()
	}
}

// askOne sends one soak:ask to instance target, counted.
func (s *Soak) askOne(ctl *fabric.Control, target int64) error {
	id := s.nextID.Add(1)
	s.t.started(AskRequest.Name(), id)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
	defer cancel()
	resp, err := link.Request(ctx, ctl.Link(), AskRequest, Ask{InstanceID: target, ID: id})
	s.t.ended(AskRequest.Name(), id, err, err == nil && resp.ID == id)
	return err
}

// Ask sends one soak:ask to instance target, with ctx's deadline, and
// returns how it ended. It counts like the soak's own.
func (s *Soak) Ask(ctx context.Context, target int64) error {
	ctl := s.currentControl()
	if ctl == nil {
		return link.Errorf(link.CodeNotConnected, "soak: the control is not connected")
	}
	id := s.nextID.Add(1)
	s.t.started(AskRequest.Name(), id)
	resp, err := link.Request(ctx, ctl.Link(), AskRequest, Ask{InstanceID: target, ID: id})
	s.t.ended(AskRequest.Name(), id, err, err == nil && resp.ID == id)
	return err
}

// stopTraffic stops all traffic for good.
func (s *Soak) stopTraffic() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
	default:
		close(s.stopped)
		s.stoppedAt = time.Now()
	}
}

// Quiesce stops the traffic for good and waits until every event sent has
// arrived and every request started has ended, within ctx and
// Config.QuiesceTimeout. Its error says what is still outstanding.
func (s *Soak) Quiesce(ctx context.Context) error {
	s.stopTraffic()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QuiesceTimeout)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		s.traffic.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		what, _ := s.t.outstanding(s.now())
		return fmt.Errorf("soak: traffic did not stop within the bound: %s", what)
	}
	for {
		what, changed := s.t.outstanding(s.now())
		if what == "" {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("soak: not quiet within the bound: %s", what)
		}
	}
}

// View checks the master's view of the cluster against what the soak
// runs.
func (s *Soak) View() ViewReport {
	v := ViewReport{Slaves: s.cfg.Slaves, Instances: s.cfg.Slaves * s.cfg.Instances}
	slaves, instances, err := s.masterView()
	if err != nil {
		v.Problems = []string{err.Error()}
		return v
	}
	for _, id := range s.SlaveIDs() {
		i := slices.IndexFunc(slaves, func(si messages.SlaveInfo) bool { return si.ID == id })
		switch {
		case i < 0:
			v.Problems = append(v.Problems, fmt.Sprintf("slave %d unknown", id))
		case !slaves[i].Connected:
			v.Problems = append(v.Problems, fmt.Sprintf("slave %d not connected", id))
		default:
			v.SlavesConnected++
			if slaves[i].Instances != s.cfg.Instances {
				v.Problems = append(v.Problems, fmt.Sprintf("slave %d has %d instances, want %d", id, slaves[i].Instances, s.cfg.Instances))
			}
		}
	}
	for _, sid := range s.SlaveIDs() {
		for _, id := range s.InstanceIDs(sid) {
			i := slices.IndexFunc(instances, func(ii messages.InstanceInfo) bool { return ii.ID == id })
			switch {
			case i < 0:
				v.Problems = append(v.Problems, fmt.Sprintf("instance %d unknown", id))
			case instances[i].SlaveID != sid:
				v.Problems = append(v.Problems, fmt.Sprintf("instance %d on slave %d, want %d", id, instances[i].SlaveID, sid))
			case instances[i].Status != messages.StatusRunning:
				v.Problems = append(v.Problems, fmt.Sprintf("instance %d %s, want running", id, instances[i].Status))
			default:
				v.InstancesRunning++
			}
		}
	}
	v.OK = len(v.Problems) == 0
	return v
}

// masterView returns the master's view of the slaves and instances: the
// master's own, in this process, or what the control is told.
func (s *Soak) masterView() ([]messages.SlaveInfo, []messages.InstanceInfo, error) {
	if s.cfg.Masters == 0 {
		m := s.Master()
		if m == nil {
			return nil, nil, errors.New("no master")
		}
		return m.Slaves(), m.Instances(), nil
	}
	ctl := s.currentControl()
	if ctl == nil {
		return nil, nil, errors.New("no control")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
	defer cancel()
	sl, err := link.Request(ctx, ctl.Link(), messages.ListSlaves, messages.Empty{})
	if err != nil {
		return nil, nil, fmt.Errorf("list_slaves: %w", err)
	}
	il, err := link.Request(ctx, ctl.Link(), messages.ListInstances, messages.Empty{})
	if err != nil {
		return nil, nil, fmt.Errorf("list_instances: %w", err)
	}
	return sl.Slaves, il.Instances, nil
}

// WaitView waits until the master's view satisfies ok (nil: until it is
// right), or ctx ends; its error then says what is wrong.
func (s *Soak) WaitView(ctx context.Context, ok func(ViewReport) bool) error {
	if ok == nil {
		ok = func(v ViewReport) bool { return v.OK }
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		v := s.View()
		if ok(v) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("soak: the master's view: %s: %w", strings.Join(v.Problems, "; "), ctx.Err())
		case <-t.C:
		}
	}
}

// now returns the master's incarnation and every instance's.
func (s *Soak) now() now {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now{epoch: s.masterInc, runs: maps.Clone(s.instInc)}
}

// Report returns what the soak has counted so far, and the master's view
// now.
func (s *Soak) Report() Report {
	links, reqs := s.t.report(s.now())
	r := Report{Links: links, Requests: reqs, View: s.View()}
	s.mu.Lock()
	end := s.stoppedAt
	s.mu.Unlock()
	if end.IsZero() {
		end = time.Now()
	}
	if !s.begun.IsZero() {
		r.Duration = end.Sub(s.begun)
	}
	r.check()
	return r
}

// Close stops the traffic and every endpoint, gracefully within ctx.
func (s *Soak) Close(ctx context.Context) error {
	s.stopTraffic()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()
	close(s.closed)
	var errs []error
	s.mu.Lock()
	ctl, m := s.control, s.master
	var slaves []*fabric.Slave
	for _, id := range s.SlaveIDs() {
		if sl := s.slaves[id]; sl != nil {
			slaves = append(slaves, sl)
		}
	}
	s.mu.Unlock()
	if ctl != nil {
		errs = append(errs, ctl.Close(ctx))
	}
	for _, sl := range slaves {
		errs = append(errs, sl.Close(ctx))
	}
	if m != nil {
		errs = append(errs, m.Close(ctx))
	}
	errs = append(errs, s.stopMasterProcs(ctx))
	drained := make(chan struct{})
	go func() {
		s.traffic.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("soak: traffic still running: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// receivedTotal returns how many events have arrived, over every stream,
// and a channel closed at the next change.
func (t *tracker) receivedTotal() (uint64, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n uint64
	for _, s := range t.streams {
		n += s.distinct
	}
	return n, t.changed
}

// WaitTraffic waits until n more events have arrived than when it was
// called, or ctx ends: a measure of traffic that does not depend on the
// machine's speed.
func (s *Soak) WaitTraffic(ctx context.Context, n uint64) error {
	start, _ := s.t.receivedTotal()
	for {
		got, changed := s.t.receivedTotal()
		if got-start >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("soak: %d of %d events arrived: %w", got-start, n, ctx.Err())
		}
	}
}
