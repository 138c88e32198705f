package link

import (
	"context"
	"testing"
	"time"
)

// A call's reused timer never carries a fire from its previous request
// into the next one. A program whose main module says go 1.22 or older
// runs with asynchronous timer channels, where a timer that fired keeps
// its value through Stop and Reset: a request answered just as its timer
// fired would leave the value for the next request on the pooled call,
// which would then time out at once.
func TestAttack4ReusedTimerNoStaleFire(t *testing.T) {
	t.Setenv("GODEBUG", "asynctimerchan=1")
	l := &Link{pending: map[uint64]*call{}}
	c := &call{wake: make(chan struct{}, 1)}
	first := &timeoutCtx{lazyDeadline{parent: context.Background(), deadline: time.Now().Add(time.Millisecond)}}
	c.until(first)
	// The response won the race: the requester took it, not the fire.
	for until := time.Now().Add(10 * time.Second); len(c.timer.C) == 0; {
		if time.Now().After(until) {
			t.Fatal("the timer did not fire into its channel (asynctimerchan=1 not in effect)")
		}
		time.Sleep(time.Millisecond)
	}
	l.pending[1], l.outbound = c, 1
	l.endCall(1, c)

	second := &timeoutCtx{lazyDeadline{parent: context.Background(), deadline: time.Now().Add(time.Hour)}}
	_, expired := c.until(second)
	select {
	case <-expired:
		t.Fatal("the next request on the call expired at once, by the previous request's timer")
	default:
	}
}
