package link_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
)

// Many goroutines sending requests at once each get the response to their
// own request, in both directions of one link.
func TestConcurrentRequests(t *testing.T) {
	const (
		goroutines = 64
		requests   = 200
	)
	toInstance, toSlave := newPair(t, slaveAddr, instanceAddr, nil, nil)
	link.HandleRequest(toSlave, testEcho, echoHandler)
	link.HandleRequest(toInstance, testEcho, echoHandler)
	start(t, toSlave, testEcho)
	start(t, toInstance, testEcho)

	ctx := testkit.Ctx(t, 60*time.Second)
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		from := toInstance
		if g%4 == 3 { // a quarter of them ask the other way
			from = toSlave
		}
		wg.Go(func() {
			for i := range requests {
				req := echoReq{N: g*requests + i, Text: fmt.Sprintf("g%d-r%d", g, i)}
				resp, err := link.Request(ctx, from, testEcho, req)
				if err != nil {
					errs <- fmt.Errorf("goroutine %d request %d: %w", g, i, err)
					return
				}
				if resp != echoResp(req) {
					errs <- fmt.Errorf("goroutine %d request %d: got %+v, want %+v", g, i, resp, req)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, l := range []*link.Link{toInstance, toSlave} {
		s := l.Stats()
		equal(t, s.Pending, 0, l.String()+": pending requests")
		equal(t, s.Late, 0, l.String()+": late responses")
		equal(t, s.Invalid, 0, l.String()+": invalid messages")
	}
	// A responder counts its response once Send returns, which may be just
	// after the requester has it.
	testkit.WaitFor(t, 5*time.Second, "both sides to count every request and response", func() bool {
		return toInstance.Stats().Sent+toSlave.Stats().Sent == 2*goroutines*requests
	})
}
