package fabric

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// Subscriptions, on the master (docs/protocol.md, Subscriptions).
//
// Each update event a control may subscribe to is a feed: every entry of
// its kind (a slave, an instance, a plugin's key) as it was last sent,
// with the stamp of that update. A change stamps the entry anew and
// queues it, under m.mu, on the outbox of every control subscribed; the
// goroutine that watches the control's link sends what its outbox holds,
// so that nothing is sent under m.mu and a control gets its updates in
// the order they were stamped. A subscribe queues, under m.mu too, the
// entries stamped after its since_ms, and is answered once they are sent.
//
// Stamps (updated_at_ms) are Unix milliseconds made strictly increasing:
// max(now, last+1). So that they keep increasing across terms, a term
// hands out stamps under a reservation it writes to the state bucket
// (counter.stamp), and the next term starts above the reservation it
// reads. The reservation is renewed when the stamps handed out come
// within half of it (only changes cost writes). A stamp handed out
// before the renewal lands may pass the reservation; it is then the
// clock's now, and the next term begins only once this term's lease has
// lapsed, so it is still below the next term's stamps unless the two
// masters' clocks disagree by more than the lease. A new term stamps
// every entry anew, since it cannot tell what its predecessor had sent:
// a control that subscribes again after a failover gets every entry
// once more, stamped above anything it saw.

// stampLead is how far ahead of the newest stamp a term reserves stamps
// in the state bucket; it writes a new reservation when the newest comes
// within half of it, which is a write every stampLead/2 at most, and
// none while nothing changes.
const stampLead = 10 * time.Second

// updatesPerEvent bounds the entries of one update event, to stay well
// within a NATS payload.
const updatesPerEvent = 500

// topic is an update event controls may subscribe to, and the permission
// a subscriber's user needs.
type topic struct {
	def        *messages.Definition
	permission string
	// asked is what a ControlAuthorizer is shown for a subscription: the
	// request that reads the same (list_slaves, list_instances), so that
	// an authorizer that refuses a user the list refuses its updates too;
	// a plugin's own update event.
	asked *messages.Definition
}

// subscribable is one topic a master option adds (WithSubscribable).
type subscribable struct {
	event      messages.Message
	permission string
}

// WithSubscribable makes a plugin's event an update event that controls
// may subscribe to (the subscribe request), as users holding permission
// (FABRIC_CONTROL_PERMISSIONS). The event must be defined as
// messages.MustEvent[messages.Updates[T]] on MasterToControl, in a plugin
// the master is started with; the master's plugin code publishes each
// change of its data with Publish (or PublishDeleted). Other endpoints
// ignore it.
func WithSubscribable(event messages.Message, permission string) Option {
	return func(o *options) error {
		if event == nil || permission == "" {
			return fmt.Errorf("fabric: WithSubscribable needs an event and a permission")
		}
		o.subscribable = append(o.subscribable, subscribable{event: event, permission: permission})
		return nil
	}
}

// buildTopics returns the master's topics: slave_updates and
// instance_updates, and the plugins' of opts, checked against catalog.
func buildTopics(catalog *messages.Catalog, opts []subscribable) (map[string]topic, error) {
	topics := map[string]topic{
		messages.SlaveUpdates.Name():    {def: messages.SlaveUpdates.Def(), permission: messages.ListSlaves.Def().Permission(), asked: messages.ListSlaves.Def()},
		messages.InstanceUpdates.Name(): {def: messages.InstanceUpdates.Def(), permission: messages.ListInstances.Def().Permission(), asked: messages.ListInstances.Def()},
	}
	for _, s := range opts {
		def := s.event.Def()
		switch {
		case !catalog.Contains(def):
			return nil, fmt.Errorf("%w: WithSubscribable: %s is not in the master's plugins (WithPlugins)", ErrConfig, def.Name())
		case def.Kind() != messages.KindEvent || !def.ValidOn(messages.MasterToControl):
			return nil, fmt.Errorf("%w: WithSubscribable: %s must be an event on %s", ErrConfig, def.Name(), messages.MasterToControl)
		case topics[def.Name()].def != nil:
			return nil, fmt.Errorf("%w: WithSubscribable: %s is subscribable already", ErrConfig, def.Name())
		}
		topics[def.Name()] = topic{def: def, permission: s.permission, asked: def}
	}
	return topics, nil
}

// feed is what the term has sent of one topic: each entry as last sent.
type feed struct {
	name    string
	entries map[string]*feedEntry
	deleted int // entries that are deletions
}

type feedEntry struct {
	stamp   int64
	deleted bool
	view    any             // what the entry's update says, stamp aside, to tell a change (comparable)
	item    json.RawMessage // the entry as sent, stamp included
}

// stamper hands out a term's update stamps. Its fields are guarded by
// the term's m.mu, but reserved, which the term's keepStamps goroutine
// writes.
type stamper struct {
	last     int64
	mu       sync.Mutex
	reserved int64
	nudge    chan struct{} // wakes keepStamps
}

func (s *stamper) next() int64 {
	s.last = max(time.Now().UnixMilli(), s.last+1)
	s.mu.Lock()
	low := s.reserved-s.last < stampLead.Milliseconds()/2
	s.mu.Unlock()
	if low {
		select {
		case s.nudge <- struct{}{}:
		default:
		}
	}
	return s.last
}

// reservation returns the reservation to write now, and whether the one
// written is too close to last, the newest stamp. Only stamps handed out
// bring it closer: a term where nothing changes writes nothing.
func (s *stamper) reservation(last int64) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(time.Now().UnixMilli(), last) + stampLead.Milliseconds(), s.reserved-last < stampLead.Milliseconds()/2
}

func (s *stamper) reservedUpTo(r int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved = max(s.reserved, r)
}

// reserveStamps writes a reservation of stamps if the one written is
// too close, as the master of this term.
func (m *activeMaster) reserveStamps(ctx context.Context) error {
	m.mu.Lock()
	last := m.stamps.last
	m.mu.Unlock()
	want, needed := m.stamps.reservation(last)
	if !needed {
		return nil
	}
	if err := m.store.put(ctx, m.term, keyStamps, stampRecord{V: stateVersion, Reserved: want}); err != nil {
		return m.stateErr(err)
	}
	m.stamps.reservedUpTo(want)
	return nil
}

// keepStamps keeps the stamp reservation ahead of the stamps handed out,
// until the term ends.
func (m *activeMaster) keepStamps() {
	t := time.NewTicker(stampLead / 4)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.lost:
			return
		case <-t.C:
		case <-m.stamps.nudge:
		}
		if err := m.reserveStamps(context.Background()); err != nil {
			m.log.Warn("could not reserve update stamps in the state bucket", "error", err)
		}
	}
}

// initFeeds makes the term's feeds from the state it read: every
// instance and slave, and every instance deleted for good, stamped anew,
// above the reservation of the terms before. It runs before the term
// serves, so no one is subscribed yet.
func (m *activeMaster) initFeeds(snap snapshot) {
	m.stamps = stamper{last: snap.reserved, reserved: snap.reserved, nudge: make(chan struct{}, 1)}
	m.feeds = map[string]*feed{}
	for name := range m.topics {
		m.feeds[name] = &feed{name: name, entries: map[string]*feedEntry{}}
	}
	f := m.feeds[messages.InstanceUpdates.Name()]
	for _, id := range slices.Sorted(maps.Keys(snap.gone)) {
		g := snap.gone[id]
		v := messages.InstanceChange{ID: g.ID, Name: g.Name, SlaveID: g.SlaveID, Status: messages.StatusUnknown}
		m.setEntryLocked(f, strconv.FormatInt(id, 10), v, true)
	}
	m.reconcileLocked()
}

// setEntryLocked stamps an entry of f anew with view (the update's
// fields but its stamp, comparable), and returns the update as sent.
func (m *activeMaster) setEntryLocked(f *feed, key string, view any, deleted bool) json.RawMessage {
	stamp := messages.UpdateStamp{UpdatedAtMS: m.stamps.next(), IsDeleted: deleted}
	var item any
	switch v := view.(type) {
	case messages.SlaveChange:
		v.UpdateStamp = stamp
		item = v
	case messages.InstanceChange:
		v.UpdateStamp = stamp
		item = v
	case json.RawMessage: // a plugin's value, or nil when deleted
		var value json.RawMessage
		if !deleted {
			value = v
		}
		item = struct {
			Key   string          `json:"key"`
			Value json.RawMessage `json:"value,omitempty"`
			messages.UpdateStamp
		}{key, value, stamp}
		view = string(v) // comparable
	}
	data, err := json.Marshal(item)
	if err != nil {
		panic(fmt.Sprintf("fabric: an update of %s does not encode: %v", f.name, err)) // the fabric's own types, checked values
	}
	if e := f.entries[key]; e != nil && e.deleted {
		f.deleted--
	}
	if deleted {
		f.deleted++
	}
	f.entries[key] = &feedEntry{stamp: stamp.UpdatedAtMS, deleted: deleted, view: view, item: data}
	return data
}

// reconcileLocked compares the master's view of slaves and instances
// with what their feeds last sent, stamps what changed (or is gone), and
// queues it for the controls subscribed. Every change of the view calls
// it, under m.mu; it is O(slaves+instances).
func (m *activeMaster) reconcileLocked() {
	if m.feeds == nil {
		return // checkWiring's probe
	}
	counts := map[int64]int{}
	for _, i := range m.instances {
		if i.slaveID != 0 {
			counts[i.slaveID]++
		}
	}
	// Compared in any order; what changed is stamped in id order.
	sf := m.feeds[messages.SlaveUpdates.Name()]
	changedSlaves := map[int64]messages.SlaveChange{}
	for id, s := range m.slaves {
		v := messages.SlaveChange{ID: s.id, Name: s.name, Connected: s.connected(), Instances: counts[s.id], Version: s.version}
		if e := sf.entries[strconv.FormatInt(id, 10)]; e == nil || e.deleted || e.view != v {
			changedSlaves[id] = v
		}
	}
	var slaves []json.RawMessage
	for _, id := range slices.Sorted(maps.Keys(changedSlaves)) {
		v := changedSlaves[id]
		if seen := m.slaves[id].lastSeen(); !seen.IsZero() {
			v.LastSeenMS = seen.UnixMilli()
		}
		key := strconv.FormatInt(id, 10)
		slaves = append(slaves, m.setEntryLocked(sf, key, v, false))
		sf.entries[key].view = changedSlaves[id] // compared without last_seen_ms
	}
	inf := m.feeds[messages.InstanceUpdates.Name()]
	changedInstances := map[int64]messages.InstanceChange{}
	for id, i := range m.instances {
		v := messages.InstanceChange{ID: i.id, Name: i.name, SlaveID: i.slaveID, Status: m.shownStatusLocked(i)}
		if e := inf.entries[strconv.FormatInt(id, 10)]; e == nil || e.deleted || e.view != v {
			changedInstances[id] = v
		}
	}
	var instances []json.RawMessage
	for _, id := range slices.Sorted(maps.Keys(changedInstances)) {
		instances = append(instances, m.setEntryLocked(inf, strconv.FormatInt(id, 10), changedInstances[id], false))
	}
	var gone []int64
	if live := len(inf.entries) - inf.deleted; live != len(m.instances) {
		for key, e := range inf.entries {
			id, _ := strconv.ParseInt(key, 10, 64)
			if !e.deleted && m.instances[id] == nil {
				gone = append(gone, id)
			}
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		key := strconv.FormatInt(id, 10)
		instances = append(instances, m.setEntryLocked(inf, key, inf.entries[key].view, true))
	}
	m.queueLocked(sf.name, slaves)
	m.queueLocked(inf.name, instances)
}

// queueLocked queues updates of topic, in events of at most
// updatesPerEvent, for every control subscribed to it.
func (m *activeMaster) queueLocked(name string, items []json.RawMessage) {
	if len(items) == 0 {
		return
	}
	var to []*controlState
	for _, st := range m.controls {
		if st.subs[name] {
			to = append(to, st)
		}
	}
	if len(to) == 0 {
		return
	}
	evs := updateEvents(name, items)
	for _, st := range to {
		st.out.push(evs...)
	}
}

// updateEvents makes the events that carry items, in order.
func updateEvents(name string, items []json.RawMessage) []*link.Envelope {
	var out []*link.Envelope
	for batch := range slices.Chunk(items, updatesPerEvent) {
		var b bytes.Buffer
		b.WriteString(`{"updates":[`)
		for i, item := range batch {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(item)
		}
		b.WriteString(`]}`)
		out = append(out, &link.Envelope{Kind: messages.KindEvent, Type: name, Data: b.Bytes(), Origin: link.MasterAddress})
	}
	return out
}

// subscribe handles a control's subscribe: it checks the event and the
// user's permission for it, and for a subscription queues the entries
// stamped after since_ms, then answers once they are sent.
func (m *activeMaster) subscribe(ctx context.Context, l *link.Link, st *controlState, r messages.Subscription) error {
	t, ok := m.topics[r.Event]
	if !ok {
		return link.Errorf(link.CodeInvalidMessage, "%q is not an update event one may subscribe to (slave_updates, instance_updates, or a plugin's)", r.Event)
	}
	if !m.perms.Allows(st.user, t.permission) {
		return link.Errorf(link.CodePermissionDenied, "user %s does not have permission %s, which %s needs", st.user, t.permission, r.Event)
	}
	if r.Subscribe && m.authorize != nil {
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := m.authorize(ctx, st.user, t.asked, &link.Envelope{Kind: messages.KindRequest, Type: messages.Subscribe.Name(), Data: data}); err != nil {
			return err
		}
	}
	if !r.Subscribe {
		m.mu.Lock()
		delete(st.subs, r.Event)
		st.out.drop(r.Event)
		m.mu.Unlock()
		return nil
	}
	// Like list_slaves, a new term answers once its slaves are back, so
	// that a control does not see every slave leave and come back.
	if err := m.awaitReady(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	f := m.feeds[r.Event]
	var entries []*feedEntry
	for _, e := range f.entries {
		// A control that has seen nothing has nothing to delete.
		if e.stamp > r.SinceMS && (r.SinceMS > 0 || !e.deleted) {
			entries = append(entries, e)
		}
	}
	slices.SortFunc(entries, func(a, b *feedEntry) int { return cmp.Compare(a.stamp, b.stamp) })
	items := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		items[i] = e.item
	}
	st.subs[r.Event] = true
	mark := st.out.push(updateEvents(r.Event, items)...)
	m.mu.Unlock()
	return st.out.wait(ctx, l, mark)
}

// publishPlugin records a change of a plugin's entry in the term's feed
// and queues it for the controls subscribed.
func (m *activeMaster) publishPlugin(name, key string, value json.RawMessage, deleted bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.feeds[name]
	if e := f.entries[key]; e != nil && e.deleted == deleted && (deleted || e.view == string(value)) {
		return // nothing changed
	}
	if deleted && f.entries[key] == nil {
		return // never was
	}
	m.queueLocked(name, []json.RawMessage{m.setEntryLocked(f, key, value, deleted)})
}

// outbox is what the master has queued for one control, sent in order
// by the goroutine that watches the control's link. Its lock is taken
// inside m.mu, and nothing is sent under it.
type outbox struct {
	mu     sync.Mutex
	q      []*link.Envelope
	queued uint64        // events ever queued
	sent   uint64        // events ever sent (or given up)
	wake   chan struct{} // the link's watcher has something to send
	moved  chan struct{} // closed, and replaced, when sent grows
}

func newOutbox() *outbox {
	return &outbox{wake: make(chan struct{}, 1), moved: make(chan struct{})}
}

// push queues evs and returns the count that, once sent, means they
// are.
func (o *outbox) push(evs ...*link.Envelope) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.q = append(o.q, evs...)
	o.queued += uint64(len(evs))
	if len(evs) > 0 {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
	return o.queued
}

// drop forgets the queued events of type name: their subscription ended.
func (o *outbox) drop(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(o.q)
	o.q = slices.DeleteFunc(o.q, func(ev *link.Envelope) bool { return ev.Type == name })
	o.sentLocked(n - len(o.q))
}

// sentLocked counts n more events sent (or given up), and wakes wait.
func (o *outbox) sentLocked(n int) {
	if n == 0 {
		return
	}
	o.sent += uint64(n)
	close(o.moved)
	o.moved = make(chan struct{})
}

// send sends on l what is queued, in order, until the queue is empty.
// A failed send is logged and the rest still tried: a link that ended
// fails them all at once.
func (o *outbox) send(m *activeMaster, l *link.Link) {
	for {
		o.mu.Lock()
		if len(o.q) == 0 {
			o.mu.Unlock()
			return
		}
		ev := o.q[0]
		o.q = o.q[1:]
		o.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timing.RequestTimeout)
		if err := l.ForwardEvent(ctx, ev); err != nil {
			m.log.Debug("update not sent to a control", "peer", l.Peer().String(), "event", ev.Type, "error", err)
		}
		cancel()
		o.mu.Lock()
		o.sentLocked(1)
		o.mu.Unlock()
	}
}

// wait waits until mark events have been sent, l ends, or ctx does.
func (o *outbox) wait(ctx context.Context, l *link.Link, mark uint64) error {
	for {
		o.mu.Lock()
		sent, moved := o.sent, o.moved
		o.mu.Unlock()
		if sent >= mark {
			return nil
		}
		select {
		case <-moved:
		case <-l.Done():
			return link.Errorf(link.CodeSessionLost, "the control's link ended")
		case <-ctx.Done():
			return link.Errorf(link.CodeTimeout, "the updates asked for were not all sent in time; they follow, in order")
		}
	}
}

// Publish records that the entry key of a plugin's update event
// (WithSubscribable) is now value, and sends it to the controls
// subscribed, unless it is what they were sent last. The master keeps the
// latest value of every key (and the deletion of each deleted one) for
// the controls that subscribe later, and, in this process, for its next
// term; a plugin whose data must survive the master process (a failover
// to a standby) keeps it itself, and its code in each master publishes
// it. It returns an error, and changes nothing, when value does not
// match the event's schema. It does not block on the network; safe for
// concurrent use.
func Publish[T any](p *Master, event *messages.Event[messages.Updates[T]], key string, value T) error {
	data, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("fabric: publish %s %q: %w", event.Name(), key, err)
	}
	check, err := json.Marshal(messages.Updates[json.RawMessage]{Updates: []messages.Update[json.RawMessage]{{Key: key, Value: (*json.RawMessage)(&data)}}})
	if err != nil {
		return err
	}
	if err := event.Def().ValidatePayload(check); err != nil {
		return fmt.Errorf("fabric: publish %s %q: %w", event.Name(), key, err)
	}
	return p.publish(event.Def(), key, data, false)
}

// PublishDeleted records that the entry key of a plugin's update event
// is gone, and sends its deletion to the controls subscribed, as Publish
// does a change. A key never published is ignored.
func PublishDeleted[T any](p *Master, event *messages.Event[messages.Updates[T]], key string) error {
	return p.publish(event.Def(), key, nil, true)
}

func (p *Master) publish(def *messages.Definition, key string, value json.RawMessage, deleted bool) error {
	t, ok := p.topics[def.Name()]
	if !ok || t.def != def || t.def.Plugin() == "" {
		return fmt.Errorf("fabric: publish: %s is not a plugin's subscribable event (WithSubscribable)", def.Name())
	}
	if key == "" || len(key) > 256 {
		return fmt.Errorf("fabric: publish %s: a key is 1 to 256 bytes, not %d", def.Name(), len(key))
	}
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	data := p.published[def.Name()]
	if data == nil {
		data = map[string]json.RawMessage{}
		p.published[def.Name()] = data
	}
	if deleted {
		if _, ok := data[key]; !ok {
			return nil
		}
		data[key] = nil
	} else {
		data[key] = value
	}
	if m := p.current(); m != nil {
		m.publishPlugin(def.Name(), key, value, deleted)
	}
	return nil
}

// adoptPublished gives term m what the plugins published in this
// process, as changes, and makes m current; under pubMu, so that a
// Publish meanwhile reaches m once.
func (p *Master) adoptPublished(m *activeMaster) {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(p.published)) {
		data := p.published[name]
		for _, key := range slices.Sorted(maps.Keys(data)) {
			if data[key] != nil {
				m.publishPlugin(name, key, data[key], false)
				continue
			}
			// Deleted: said again, for a control that missed it.
			m.mu.Lock()
			m.queueLocked(name, []json.RawMessage{m.setEntryLocked(m.feeds[name], key, json.RawMessage(nil), true)})
			m.mu.Unlock()
		}
	}
	p.setCurrent(m)
}
