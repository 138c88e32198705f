package soak

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// instance is one incarnation of a soak instance: made each time its slave
// starts it. While it runs it sends soak:up and soak:tell (and, the first
// of its slave's, soak:all); it answers soak:ask and counts soak:all.
type instance struct {
	s    *Soak
	id   int64
	inc  int64
	l    *link.Link
	once sync.Once
	stop chan struct{} // stops this incarnation's traffic
	wg   sync.WaitGroup
	mu   sync.Mutex
	on   bool
}

// newInstance is the slaves' instance factory.
func (s *Soak) newInstance(id int64, _ string) fabric.Instance {
	s.mu.Lock()
	s.instInc[id]++
	inc := s.instInc[id]
	s.mu.Unlock()
	return &instance{s: s, id: id, inc: inc, stop: make(chan struct{})}
}

func (in *instance) Attach(l *link.Link) {
	in.l = l
	link.HandleRequest(l, messages.StartInstance, func(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
		in.mu.Lock()
		already := in.on
		in.on = true
		in.mu.Unlock()
		if already {
			return messages.Empty{}, link.Errorf(fabric.CodeConflict, "instance %d is running", in.id)
		}
		if err := link.Emit(ctx, l, messages.InstanceStarted, messages.InstanceRef{InstanceID: in.id}); err != nil {
			return messages.Empty{}, err
		}
		in.startTraffic()
		return messages.Empty{}, nil
	})
	link.HandleRequest(l, messages.StopInstance, func(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
		in.stopTraffic()
		return messages.Empty{}, link.Emit(ctx, l, messages.InstanceStopped, messages.InstanceRef{InstanceID: in.id})
	})
	link.HandleRequest(l, messages.SendCommand, func(context.Context, messages.Command) (messages.CommandResult, error) {
		return messages.CommandResult{Output: fmt.Sprintf("soak instance %d", in.id)}, nil
	})
	link.HandleEvent(l, messages.BanlistUpdate, func(context.Context, messages.Ban) error { return nil })
	link.HandleEvent(l, messages.MasterConnectionEvent, func(context.Context, messages.ConnectionEvent) error { return nil })
	// The slave is stopping: what the instance sends from now on could not
	// reach the master. It stops sending, and answers once its last
	// event has been handed over.
	link.HandleRequest(l, messages.PrepareMasterDisconnect, func(context.Context, messages.Empty) (messages.Empty, error) {
		in.stopTraffic()
		return messages.Empty{}, nil
	})
	link.HandleEvent(l, AllEvent, func(_ context.Context, a All) error {
		in.s.t.castReceived(castReceiver{castKey: castKey{sender: a.InstanceID, inc: a.Inc, epoch: a.Epoch}, receiver: in.id, run: in.inc}, a.Seq)
		return nil
	})
	link.HandleRequest(l, AskRequest, func(_ context.Context, a Ask) (Answer, error) {
		in.s.t.ran(AskRequest.Name(), a.ID)
		return Answer{ID: a.ID}, nil
	})
}

// startTraffic starts sending soak:up and soak:tell, unless the soak's
// traffic has stopped.
func (in *instance) startTraffic() {
	s := in.s
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
		return
	default:
	}
	if every(s.cfg.UpRate) > 0 {
		s.traffic.Add(1)
		in.wg.Add(1)
		go in.up()
	}
	if every(s.cfg.AllRate) > 0 && in.id%100 == 1 {
		s.traffic.Add(1)
		in.wg.Add(1)
		go in.all()
	}
	if every(s.cfg.TellRate) > 0 {
		s.traffic.Add(1)
		in.wg.Add(1)
		go in.tell()
	}
}

// stopTraffic stops this incarnation's traffic and waits until its last
// event has been handed over.
func (in *instance) stopTraffic() {
	in.once.Do(func() { close(in.stop) })
	in.wg.Wait()
}

// waitTick waits for the next tick; false means stop.
func (in *instance) waitTick(tick *time.Ticker, stopped <-chan struct{}) bool {
	select {
	case <-in.stop:
		return false
	case <-stopped:
		return false
	case <-in.l.Done():
		return false
	case <-tick.C:
		return true
	}
}

// up sends soak:up at UpRate.
func (in *instance) up() {
	s := in.s
	defer s.traffic.Done()
	defer in.wg.Done()
	tick := time.NewTicker(every(s.cfg.UpRate))
	defer tick.Stop()
	stopped := s.trafficStopped()
	key := streamKey{link: fmt.Sprintf("instance %d -> master", in.id), inc: in.inc}
	for seq := int64(1); in.waitTick(tick, stopped); seq++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
		err := link.Emit(ctx, in.l, UpEvent, Up{InstanceID: in.id, Inc: in.inc, Seq: seq})
		cancel()
		s.t.sent(key, seq, err)
	}
}

// all broadcasts soak:all at AllRate.
func (in *instance) all() {
	s := in.s
	defer s.traffic.Done()
	defer in.wg.Done()
	tick := time.NewTicker(every(s.cfg.AllRate))
	defer tick.Stop()
	stopped := s.trafficStopped()
	for seq := int64(1); in.waitTick(tick, stopped); seq++ {
		s.mu.Lock()
		epoch := s.masterInc
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
		err := link.Emit(ctx, in.l, AllEvent, All{InstanceID: in.id, Inc: in.inc, Epoch: epoch, Seq: seq})
		cancel()
		s.t.cast(castKey{sender: in.id, inc: in.inc, epoch: epoch}, seq, err)
	}
}

// tell sends soak:tell at TellRate, one at a time.
func (in *instance) tell() {
	s := in.s
	defer s.traffic.Done()
	defer in.wg.Done()
	tick := time.NewTicker(every(s.cfg.TellRate))
	defer tick.Stop()
	stopped := s.trafficStopped()
	for in.waitTick(tick, stopped) {
		id := s.nextID.Add(1)
		s.t.started(TellRequest.Name(), id)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
		resp, err := link.Request(ctx, in.l, TellRequest, Tell{InstanceID: in.id, ID: id})
		cancel()
		s.t.ended(TellRequest.Name(), id, err, err == nil && resp.ID == id)
	}
}
