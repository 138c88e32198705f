package fabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Subscription is a control's subscription to an update event
// (slave_updates, instance_updates, or a plugin's): the master sends what
// changed since the time it named, then every change as it happens,
// until Close or the control's Close. The control subscribes again by
// itself on every link it dials afterwards (a master's restart, a
// failover to a standby), from the newest update it has seen, and drops
// what it has seen already: its function gets every update once, in the
// order the master made them.
type Subscription struct {
	c      *Control
	event  string
	handle func(item json.RawMessage) error // decodes one entry and calls the function

	deliverMu sync.Mutex // one delivery at a time, across links
	seen      atomic.Int64
	done      chan struct{}
	endOnce   sync.Once
	err       error // why it ended, if not by Close; set before done closes
}

// SubscribeSlaves subscribes to slave_updates (permission core.slave.list):
// fn is called with every slave updated after since (Unix milliseconds,
// an UpdatedAtMS seen before; 0 for every slave), oldest update first,
// then with each change as the master makes it. See Control.subscribe
// for when it returns and how fn is called.
func (c *Control) SubscribeSlaves(ctx context.Context, since int64, fn func(messages.SlaveChange)) (*Subscription, error) {
	return subscribeTo(ctx, c, messages.SlaveUpdates.Name(), since, fn)
}

// SubscribeInstances subscribes to instance_updates (permission
// core.instance.list), as SubscribeSlaves does to slave_updates; a
// deleted instance comes with IsDeleted set.
func (c *Control) SubscribeInstances(ctx context.Context, since int64, fn func(messages.InstanceChange)) (*Subscription, error) {
	return subscribeTo(ctx, c, messages.InstanceUpdates.Name(), since, fn)
}

// SubscribeUpdates subscribes c to a plugin's update event, which the
// master makes subscribable (WithSubscribable) and its plugin code
// publishes (Publish), as SubscribeSlaves does to slave_updates. A
// deleted key comes with IsDeleted set and no Value.
func SubscribeUpdates[T any](ctx context.Context, c *Control, event *messages.Event[messages.Updates[T]], since int64, fn func(messages.Update[T])) (*Subscription, error) {
	if !c.catalog.Contains(event) {
		return nil, link.Errorf(link.CodeInvalidMessage, "%s is not in the control's catalog (WithPlugins)", event.Name())
	}
	return subscribeTo(ctx, c, event.Name(), since, fn)
}

func subscribeTo[T any](ctx context.Context, c *Control, event string, since int64, fn func(T)) (*Subscription, error) {
	if fn == nil {
		return nil, errors.New("fabric: subscribe: nil function")
	}
	s := &Subscription{c: c, event: event, done: make(chan struct{}), handle: func(item json.RawMessage) error {
		var v T
		if err := json.Unmarshal(item, &v); err != nil {
			return err
		}
		fn(v)
		return nil
	}}
	s.seen.Store(since)
	return s, c.subscribe(ctx, s)
}

// subscribe asks the master of the current link for s's updates. It
// returns once the master has answered, which it does after sending the
// updates newer than since: by then they have been passed to the
// function, unless a fault of the broker held one back (it then follows,
// in order). The function runs on the goroutine that receives the
// control's messages, one update at a time: it must return quickly, and
// must not wait for the control.
//
// It fails, and nothing is subscribed, with permission_denied if the
// control's user may not read the event, and invalid_message if the
// master knows no such update event. A control subscribes to an event
// once at a time: a second subscription to it fails.
func (c *Control) subscribe(ctx context.Context, s *Subscription) error {
	c.mu.Lock()
	if c.subs[s.event] != nil {
		c.mu.Unlock()
		return fmt.Errorf("fabric: already subscribed to %s: close that subscription first", s.event)
	}
	c.subs[s.event] = s
	l := c.l
	c.mu.Unlock()
	_, err := link.Request(ctx, l, messages.Subscribe, messages.Subscription{Event: s.event, Subscribe: true, SinceMS: s.seen.Load()})
	if err != nil {
		c.forget(s)
		s.end(err)
		return err
	}
	return nil
}

// Event returns the update event s is subscribed to.
func (s *Subscription) Event() string { return s.event }

// Seen returns the stamp (UpdatedAtMS) of the newest update s has
// passed on, or the since it began with.
func (s *Subscription) Seen() int64 { return s.seen.Load() }

// Done is closed when the subscription has ended: Close, the control's
// Close, or a master that refused it when the control subscribed again
// (Err says why).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended, once Done is closed: nil after
// Close or the control's Close.
func (s *Subscription) Err() error {
	if s.ended() {
		return s.err
	}
	return nil
}

func (s *Subscription) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Subscription) end(err error) {
	s.endOnce.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Close unsubscribes: no update reaches the function once it has begun
// (except one being passed on as it is called), and the master stops
// sending them. It waits within ctx for the master's answer; an error
// says only that the master may still be sending updates, which the
// control drops.
func (s *Subscription) Close(ctx context.Context) error {
	if s.ended() {
		return nil
	}
	s.c.forget(s)
	s.end(nil)
	_, err := link.Request(ctx, s.c.Link(), messages.Subscribe, messages.Subscription{Event: s.event, Subscribe: false})
	if errors.Is(err, link.ErrSessionLost) {
		return nil // the link ended, and its subscriptions with it
	}
	return err
}

// forget drops s from what the control subscribes to.
func (c *Control) forget(s *Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.event] == s {
		delete(c.subs, s.event)
	}
}

// receivedUpdates passes an update event on to its subscription: each
// entry newer than what it has seen, in order.
func (c *Control) receivedUpdates(ev *link.Envelope) error {
	c.mu.Lock()
	s := c.subs[ev.Type]
	c.mu.Unlock()
	if s == nil {
		return nil // unsubscribed meanwhile
	}
	var payload struct {
		Updates []json.RawMessage `json:"updates"`
	}
	if err := json.Unmarshal(ev.Data, &payload); err != nil {
		return err
	}
	s.deliverMu.Lock()
	defer s.deliverMu.Unlock()
	for _, item := range payload.Updates {
		var stamp messages.UpdateStamp
		if err := json.Unmarshal(item, &stamp); err != nil {
			return err
		}
		if stamp.UpdatedAtMS <= s.seen.Load() || s.ended() {
			continue // seen already: sent again by a master after a re-dial
		}
		s.seen.Store(stamp.UpdatedAtMS)
		if err := s.handle(item); err != nil {
			return err
		}
	}
	return nil
}

// resubscribe subscribes again, on the new link l, to what the control
// subscribed to, each from the newest update it has seen, until the
// master answers or l ends. A subscription the master refuses (the
// user's permission was taken away, the event is unknown to it) ends,
// with that error.
func (c *Control) resubscribe(l *link.Link) {
	backoff := 100 * time.Millisecond
	for {
		c.mu.Lock()
		subs := slices.Collect(maps.Values(c.subs))
		c.mu.Unlock()
		var again []*Subscription
		for _, s := range subs {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timing.RequestTimeout)
			_, err := link.Request(ctx, l, messages.Subscribe, messages.Subscription{Event: s.event, Subscribe: true, SinceMS: s.seen.Load()})
			cancel()
			var le *link.Error
			switch {
			case err == nil:
			case errors.As(err, &le) && (le.Code == link.CodePermissionDenied || le.Code == link.CodeInvalidMessage):
				c.log.Warn("the master refused a subscription again; it has ended", "event", s.event, "error", err)
				c.forget(s)
				s.end(err)
			default:
				again = append(again, s)
				c.log.Debug("could not subscribe again on the new link yet", "event", s.event, "error", err)
			}
		}
		if len(again) == 0 {
			return
		}
		if !c.pause(l, &backoff) {
			return
		}
	}
}
