package fabric

import "sync"

// routines counts the goroutines an endpoint starts, as nats-server's
// startGoRoutine does, so that closing the endpoint can wait for every one
// of them: a goroutine starts only while the group is open, and stop
// refuses new ones before it waits for those that run. The zero value is
// an open group. Each endpoint starts a fixed number of goroutines, and
// one per link at most: link handlers run on the link's own bounded pool.
// The one exception is a new master term's starting window, while which
// a request forwarded to an instance whose slave has not registered yet
// waits on a goroutine of its own (activeMaster.forwardRequest).
type routines struct {
	mu      sync.Mutex
	wg      sync.WaitGroup
	stopped bool
	running int
}

// start runs f on a new goroutine, counted until f returns, and reports
// true; once stop has been called it runs nothing and reports false.
func (r *routines) start(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.running++
	r.wg.Add(1)
	go func() {
		defer func() {
			r.mu.Lock()
			r.running--
			r.mu.Unlock()
			r.wg.Done()
		}()
		f()
	}()
	return true
}

// stop refuses new goroutines, then waits until those running have
// returned. It may be called more than once.
func (r *routines) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
}

// count returns how many of the group's goroutines are running.
func (r *routines) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}
