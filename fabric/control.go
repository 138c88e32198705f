package fabric

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Control is a control client, the side of the fabric that tools use: it
// connects to the master as a user, sends requests, and follows instance
// output.
//
//	ctl, err := fabric.DialControl(ctx, cfg)
//	defer ctl.Close(ctx)
//	slaves, err := link.Request(ctx, ctl.Link(), messages.ListSlaves, messages.Empty{})
//
// A control stays with the cluster's active master until Close: when its
// link to the master ends (the master restarted, another took over, or it
// was silent for the session timeout), the requests pending on it end with
// session_lost and the control dials the master again at once; what it
// follows it follows on the new link too, and the master relays first the
// lines it missed meanwhile (the master keeps the latest of each
// instance's, and the slaves keep what they send while there is no
// master).
type Control struct {
	cfg      ControlConfig
	log      *slog.Logger
	self     link.Address
	catalog  *messages.Catalog
	node     transport
	output   func(messages.OutputLine)
	handlers handlerSet
	plugins  []string // the names of its plugins, told to the master

	stop     chan struct{}
	stopOnce sync.Once
	// routines are the goroutines the control starts: keep, and refollow
	// after each new link. Close waits for them.
	routines routines

	mu        sync.Mutex
	l         *link.Link
	following []int64 // nil: not following
	followAt  int64   // when Follow was called, Unix milliseconds
	seen      map[int64]*recentLines
	// Until dedupeUntil, lines the control has seen already (relayed by
	// the previous master and again by the next) are dropped.
	dedupeUntil time.Time
	subs        map[string]*Subscription // by update event
}

// recentLines is what a control has seen of one instance's output lately.
type recentLines struct {
	last int64 // the time of the latest line, Unix milliseconds
	keys []lineKey
	set  map[lineKey]int
}

type lineKey struct {
	time    int64
	level   string
	message string
}

// recentKept is how many lines of each instance a control remembers to
// tell the ones a new master relays again.
const recentKept = 256

func (r *recentLines) add(k lineKey) {
	r.last = max(r.last, k.time)
	r.keys = append(r.keys, k)
	r.set[k]++
	if len(r.keys) > recentKept {
		old := r.keys[0]
		r.keys = r.keys[1:]
		if r.set[old]--; r.set[old] <= 0 {
			delete(r.set, old)
		}
	}
}

// dedupeWindow is how long after moving to another master a control drops
// output lines it has seen already.
const dedupeWindow = 30 * time.Second

// DialControl connects a control to the master. It does not wait for the
// master to answer; the first request does. Until Close, the control pings
// the master every heartbeat interval, so that the master keeps it, and
// dials it again whenever its link ends.
func DialControl(ctx context.Context, cfg ControlConfig, opts ...Option) (*Control, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	catalog, err := messages.NewCatalog(o.plugins...)
	if err != nil {
		return nil, err
	}
	self := link.Address{Type: messages.Control, ID: cfg.User}
	c := &Control{
		cfg: cfg, log: o.logger.With("endpoint", self.String()), self: self, catalog: catalog,
		output: o.output, handlers: o.handlers, plugins: pluginNames(o.plugins), stop: make(chan struct{}), seen: map[int64]*recentLines{},
		subs: map[string]*Subscription{},
	}
	url := cfg.NATS.URL
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	// A control is a tool someone waits on: if NATS cannot be reached in
	// a few seconds, say so, rather than queue requests for later. A
	// master of an older term than one heard from is ignored (see Master).
	node, err := connect(ctx, self, cfg.NATS, url, c.log, role{connectWait: 3 * time.Second, epoch: masterTerm, local: o.broker})
	if err != nil {
		return nil, err
	}
	c.node = node
	if !c.node.Connected() {
		why := c.node.ConnectError()
		_ = c.node.Close()
		return nil, link.Errorf(link.CodeNotConnected, "cannot reach NATS at %s: %v", url, why)
	}
	if c.l, err = c.dial(); err != nil {
		_ = c.node.Close()
		return nil, err
	}
	// The master closes the link of a control it has not heard from for
	// the session timeout (a killed process); a live control, idle or not,
	// proves itself with heartbeats.
	c.routines.start(c.keep)
	return c, nil
}

// dial makes and starts a new link to the master.
func (c *Control) dial() (*link.Link, error) {
	conn, err := c.node.Dial(link.MasterAddress)
	if err != nil {
		return nil, err
	}
	l, err := link.New(conn, c.self, link.MasterAddress, c.catalog,
		link.WithLogger(c.log), link.WithRequestTimeout(c.cfg.Timing.RequestTimeout))
	if err != nil {
		return nil, err
	}
	link.HandleEvent(l, messages.InstanceOutput, func(_ context.Context, line messages.OutputLine) error {
		c.received(line)
		return nil
	})
	c.handlers.attach(l)
	// Update events go to their subscription (Subscribe...), if any; so
	// do plugin events for controls that no one here handles (a plugin's
	// update event), or they are let go. On the receiving goroutine, so
	// that the updates the master sends before it answers a subscribe
	// are passed on before the subscribe returns.
	for _, def := range c.catalog.On(messages.Direction{Source: messages.Master, Target: messages.Control}) {
		if !l.Handles(def) && def.Kind() == messages.KindEvent {
			l.HandleEventJSON(def, func(_ context.Context, ev *link.Envelope) error { return c.receivedUpdates(ev) }, link.NonBlocking())
		}
	}
	if err := l.Start(); err != nil {
		return nil, err
	}
	if len(c.plugins) > 0 {
		// Before anything is addressed to it: the master sends a control
		// the messages of the plugins it has said it has, and no others.
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timing.RequestTimeout)
		defer cancel()
		if _, err := link.Request(ctx, l, messages.SetPlugins, messages.PluginList{Plugins: c.plugins}); err != nil {
			_ = l.Close()
			return nil, err
		}
	}
	return l, nil
}

// Address returns the control's address.
func (c *Control) Address() link.Address { return c.self }

func (c *Control) sendRequest(ctx context.Context, req *link.Envelope) ([]byte, error) {
	return c.Link().ForwardRequest(ctx, req)
}

func (c *Control) sendEvent(ctx context.Context, ev *link.Envelope) error {
	return c.Link().ForwardEvent(ctx, ev)
}

// received passes a relayed output line on, unless it is one the control
// has seen already from the master before.
func (c *Control) received(line messages.OutputLine) {
	k := lineKey{time: line.Time, level: line.Level, message: line.Message}
	c.mu.Lock()
	r := c.seen[line.InstanceID]
	if r == nil {
		r = &recentLines{set: map[lineKey]int{}}
		c.seen[line.InstanceID] = r
	}
	if time.Now().Before(c.dedupeUntil) && r.set[k] > 0 {
		c.mu.Unlock()
		return
	}
	r.add(k)
	c.mu.Unlock()
	if c.output != nil {
		c.output(line)
	}
}

// Link returns the control's current link to the master, for
// link.Request. After the link ends, the control dials again, and Link
// returns the new one.
func (c *Control) Link() *link.Link {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.l
}

// Follow asks the master to relay the output of the given instances (none
// to stop), which arrives at the WithOutputHandler function. Each call
// replaces the set the control follows; an id that names no instance
// fails it with instance_not_found, and the set stays as it was. The
// control follows them on every link it dials afterwards, until the next
// call.
func (c *Control) Follow(ctx context.Context, instanceIDs ...int64) error {
	return c.FollowSince(ctx, time.Time{}, instanceIDs...)
}

// FollowSince is Follow, and asks the master first for the lines of
// each instance printed after since that it still keeps (its latest
// 1,000 lines of each, 1 MiB at most); the zero time asks for none.
func (c *Control) FollowSince(ctx context.Context, since time.Time, instanceIDs ...int64) error {
	now := time.Now().UnixMilli()
	req := messages.OutputSubscriptions{InstanceIDs: instanceIDs}
	if !since.IsZero() {
		req.SinceMS = max(0, since.UnixMilli())
		now = req.SinceMS
	}
	c.mu.Lock()
	prev, prevAt := c.following, c.followAt
	c.following, c.followAt = slices.Clone(instanceIDs), now
	if c.following == nil {
		c.following = []int64{}
	}
	l := c.l
	c.mu.Unlock()
	_, err := link.Request(ctx, l, messages.SetInstanceOutputSubscriptions, req)
	if err != nil {
		c.mu.Lock()
		if c.l == l {
			c.following, c.followAt = prev, prevAt
		}
		c.mu.Unlock()
	}
	return err
}

// refollow asks the master of l for what the control follows, and for the
// lines of it the control has not seen, until it answers or l ends.
func (c *Control) refollow(l *link.Link) {
	backoff := 100 * time.Millisecond
	for {
		c.mu.Lock()
		ids, at := c.following, c.followAt
		req := messages.OutputSubscriptions{InstanceIDs: ids}
		for _, id := range ids {
			since := at
			if r := c.seen[id]; r != nil && r.last > 0 {
				since = r.last
			}
			req.Since = append(req.Since, messages.OutputCursor{InstanceID: id, Time: since})
		}
		c.dedupeUntil = time.Now().Add(dedupeWindow)
		c.mu.Unlock()
		if ids == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timing.RequestTimeout)
		_, err := link.Request(ctx, l, messages.SetInstanceOutputSubscriptions, req)
		cancel()
		if err == nil {
			c.log.Info("following output again, on the master's new link", "instances", ids)
			return
		}
		if errors.Is(err, &link.Error{Code: CodeInstanceNotFound}) && c.forgetDeleted(l, ids) {
			// The master refuses ids that name no instance: one followed
			// was deleted meanwhile. Follow the others.
			continue
		}
		c.log.Debug("could not follow output on the new link yet", "error", err)
		if !c.pause(l, &backoff) {
			return
		}
	}
}

// forgetDeleted drops from what the control follows, if that is still
// ids, the instances the master of l does not know, and reports whether
// it dropped any.
func (c *Control) forgetDeleted(l *link.Link, ids []int64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timing.RequestTimeout)
	list, err := link.Request(ctx, l, messages.ListInstances, messages.Empty{})
	cancel()
	if err != nil {
		return false // asked again on the next try
	}
	known := map[int64]bool{}
	for _, i := range list.Instances {
		known[i.ID] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Equal(c.following, ids) {
		return true // Follow was called meanwhile: try what it set
	}
	var gone []int64
	c.following = slices.DeleteFunc(slices.Clone(ids), func(id int64) bool {
		if !known[id] {
			gone = append(gone, id)
		}
		return !known[id]
	})
	if len(gone) > 0 {
		c.log.Warn("no longer following instances that were deleted", "instances", gone)
	}
	return len(gone) > 0
}

// keep watches the current link with heartbeats and dials the master
// again when the link ends, until Close.
func (c *Control) keep() {
	backoff := 100 * time.Millisecond
	for {
		l := c.Link()
		began := time.Now()
		c.heartbeat(l)
		select {
		case <-c.stop:
			return
		default:
		}
		if time.Since(began) > c.cfg.Timing.HeartbeatInterval {
			backoff = 100 * time.Millisecond
		}
		next, err := c.dial()
		for err != nil {
			c.log.Warn("could not dial the master again", "error", err)
			select {
			case <-c.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, c.cfg.Timing.HeartbeatInterval)
			next, err = c.dial()
		}
		c.mu.Lock()
		c.l = next
		following := c.following != nil
		subscribed := len(c.subs) > 0
		c.mu.Unlock()
		c.log.Info("link to the master ended; dialed it again")
		if following {
			c.routines.start(func() { c.refollow(next) })
		}
		if subscribed {
			c.routines.start(func() { c.resubscribe(next) })
		}
		// A link that ends at once, again and again, is not dialed in a
		// busy loop.
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.Timing.HeartbeatInterval)
	}
}

// heartbeat pings the master on l every heartbeat interval until l ends
// or the control closes, so that the master keeps the link of a control
// that is idle. A master silent for the session timeout has ended the
// session for all the control can tell: the link is closed, and what is
// pending on it fails with session_lost. Within that time, requests wait
// for a master that is slow, or paused, to answer.
func (c *Control) heartbeat(l *link.Link) {
	t := time.NewTicker(c.cfg.Timing.HeartbeatInterval)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case <-l.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timing.HeartbeatInterval)
			_, err := link.Request(ctx, l, messages.Ping, messages.Empty{})
			cancel()
			if err == nil {
				lastOK = time.Now()
				continue
			}
			c.log.Debug("master did not answer a heartbeat", "error", err)
			if time.Since(lastOK) > c.cfg.Timing.SessionTimeout {
				c.log.Warn("master session over: no answer to heartbeats", "timeout", c.cfg.Timing.SessionTimeout)
				_ = l.Close()
				return
			}
		}
	}
}

// Done is closed when the control has been closed.
func (c *Control) Done() <-chan struct{} { return c.stop }

// Close disconnects gracefully (in-flight requests end, within ctx) and
// closes the NATS connection. The control dials no more.
func (c *Control) Close(ctx context.Context) error {
	c.stopOnce.Do(func() { close(c.stop) })
	c.mu.Lock()
	subs := slices.Collect(maps.Values(c.subs))
	clear(c.subs)
	c.mu.Unlock()
	for _, s := range subs {
		s.end(nil)
	}
	err := c.Link().Disconnect(ctx)
	c.routines.stop()
	if errors.Is(err, link.ErrSessionLost) {
		err = nil // the link had ended already
	}
	return errors.Join(err, c.node.Close())
}

// pause waits backoff before the next try on l, then doubles it, up to the
// heartbeat interval; it reports false if the control stopped or l ended
// meanwhile.
func (c *Control) pause(l *link.Link, backoff *time.Duration) bool {
	select {
	case <-c.stop:
		return false
	case <-l.Done():
		return false
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, c.cfg.Timing.HeartbeatInterval)
	return true
}
