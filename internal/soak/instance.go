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

// startTraffic starts sending soak:up and soak:tell (and, the first
// instance of each slave, soak:all), unless the soak's traffic has stopped.
func (in *instance) startTraffic() {
	s := in.s
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
		return
	default:
	}
	in.loop(s.cfg.UpRate, in.up)
	if in.id%100 == 1 {
		in.loop(s.cfg.AllRate, in.all)
	}
	in.loop(s.cfg.TellRate, in.tell)
	in.loop(s.cfg.OutRate, in.out)
}

// loop calls send at rate per second, with the numbers 1, 2, ... and a
// context bounded by the request timeout, until this incarnation's
// traffic or the soak's stops. s.mu must be held.
func (in *instance) loop(rate float64, send func(ctx context.Context, seq int64)) {
	if every(rate) == 0 {
		return
	}
	s := in.s
	s.traffic.Add(1)
	in.wg.Add(1)
	go func() {
		defer s.traffic.Done()
		defer in.wg.Done()
		tick := time.NewTicker(every(rate))
		defer tick.Stop()
		stopped := s.trafficStopped()
		for seq := int64(1); in.waitTick(tick, stopped); seq++ {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.RequestTimeout)
			send(ctx, seq)
			cancel()
		}
	}()
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

// up sends soak:up seq.
func (in *instance) up(ctx context.Context, seq int64) {
	err := link.Emit(ctx, in.l, UpEvent, Up{InstanceID: in.id, Inc: in.inc, Seq: seq})
	in.s.t.sent(streamKey{link: fmt.Sprintf("instance %d -> master", in.id), inc: in.inc}, seq, err)
}

// all broadcasts soak:all seq.
func (in *instance) all(ctx context.Context, seq int64) {
	s := in.s
	s.mu.Lock()
	epoch := s.masterInc
	s.mu.Unlock()
	err := link.Emit(ctx, in.l, AllEvent, All{InstanceID: in.id, Inc: in.inc, Epoch: epoch, Seq: seq})
	s.t.cast(castKey{sender: in.id, inc: in.inc, epoch: epoch}, seq, err)
}

// out prints line seq of this incarnation's output, which the master
// relays to the control.
func (in *instance) out(ctx context.Context, seq int64) {
	err := link.Emit(ctx, in.l, messages.InstanceOutput, messages.OutputLine{
		InstanceID: in.id, Time: time.Now().UnixMilli(), Level: "info", Message: fmt.Sprintf("%s%d %d", outPrefix, in.inc, seq)})
	in.s.t.sent(outputStream(in.id, in.inc), seq, err)
}

// outPrefix starts every line a soak instance prints.
const outPrefix = "soak-out "

// outputStream names instance id's output, as the control follows it.
func outputStream(id, inc int64) streamKey {
	return streamKey{link: fmt.Sprintf("instance %d output -> control", id), inc: inc}
}

// tell sends one soak:tell and waits for its answer.
func (in *instance) tell(ctx context.Context, _ int64) {
	s := in.s
	id := s.nextID.Add(1)
	s.t.started(TellRequest.Name(), id)
	resp, err := link.Request(ctx, in.l, TellRequest, Tell{InstanceID: in.id, ID: id})
	s.t.ended(TellRequest.Name(), id, err, err == nil && resp.ID == id)
}
