package fabric

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkfabric/linkfabric/messages"
)

// One master of a cluster is active; the others stand by. The active one
// holds the lease: the key "active" of the lease bucket (LeaseBucket),
// whose TTL is the lease, so the server removes it when it is not
// renewed. A master that finds the key absent creates it (a create fails
// if the key exists, so one master wins), then begins a new term (see
// store.claim). The active master renews the key every quarter of the
// lease with an update conditional on its revision, which fails if the
// key expired in between, whoever created it since.
//
// The active master acts only while its lease certainly holds by its own
// monotonic clock: until the send time of its last successful renewal,
// plus the lease, minus a quarter of it. The server cannot have removed
// the key before then, so no standby can have taken over; past it, the
// master's gate closes (lfnats.WithGate) and it neither handles nor sends
// anything, so a master that was paused (SIGSTOP, a long pause, a
// partition) never acts as master again once a standby may have taken
// over; if its next renewal fails, it steps down.
//
// Standbys keep a key of their own there, "standby.<id>", renewed like
// the lease, so the active master can say who stands by.

// Keys of the lease bucket.
const (
	keyActive     = "active"
	prefixStandby = "standby."
)

// errLeaseLost: the lease expired, and may be another master's now.
var errLeaseLost = errors.New("the lease has lapsed")

// memberRecord is a master's entry in the lease bucket.
type memberRecord struct {
	V       int       `json:"v"`
	ID      string    `json:"id"`   // unique per process
	Name    string    `json:"name"` // for people: host and pid
	Version string    `json:"version,omitempty"`
	Since   time.Time `json:"since"`
	Term    uint64    `json:"term,omitempty"` // the active master's, once claimed
}

// lease is one master process's use of the lease bucket. Its methods are
// safe for concurrent use.
type lease struct {
	kv      jetstream.KeyValue
	ttl     time.Duration
	timeout time.Duration // bounds each operation
	origin  time.Time     // monotonic reference for until
	until   atomic.Int64  // a time.Duration since origin

	mu   sync.Mutex
	self memberRecord
	rev  uint64 // the active key's revision while this master holds it
}

// openLease opens (or creates) the lease bucket for prefix with TTL ttl,
// for the master self. An existing bucket with another TTL is refused:
// every master of a cluster must agree on the lease.
func openLease(ctx context.Context, js jetstream.JetStream, prefix string, replicas int, ttl time.Duration, self memberRecord) (*lease, error) {
	kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      LeaseBucket(prefix),
		Description: "Linkfabric masters of prefix " + prefix + ": the active master's lease, the standbys' presence",
		History:     1,
		TTL:         ttl,
		Replicas:    replicas,
	}, true)
	if err != nil {
		return nil, err
	}
	self.V, self.Since = stateVersion, time.Now().UTC()
	return &lease{kv: kv, ttl: ttl, timeout: ttl / 4, origin: time.Now(), self: self}, nil
}

// renewEvery is how often the active master renews its lease, and a
// standby its presence.
func (l *lease) renewEvery() time.Duration { return l.ttl / 4 }

// pollEvery is how often a standby tries to take the lease.
func (l *lease) pollEvery() time.Duration { return min(l.ttl/10, 250*time.Millisecond) }

// valid reports whether the lease certainly holds now. It is cheap and
// does not block: the Node's gate calls it on every message.
func (l *lease) valid() bool { return time.Since(l.origin) < time.Duration(l.until.Load()) }

// extend makes the lease valid until a quarter of it before it can
// expire at the server, counting from sent, when the write that created
// or renewed it was sent.
func (l *lease) extend(sent time.Time) {
	l.until.Store(int64(sent.Sub(l.origin) + l.ttl - l.ttl/4))
}

func (l *lease) encodeLocked() []byte {
	data, _ := json.Marshal(l.self)
	return data
}

// acquire takes the lease if no master holds it, and reports whether it
// did.
func (l *lease) acquire(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	// Active since now, if it wins.
	rec := l.self
	rec.Since, rec.Term = time.Now().UTC(), 0
	data, _ := json.Marshal(rec)
	sent := time.Now()
	rev, err := l.kv.Create(ctx, keyActive, data)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		// Ours, if an earlier try was stored without our hearing of it:
		// then write it again, to know from when it holds.
		e, gerr := getSoon(ctx, l.kv, keyActive)
		var cur memberRecord
		if gerr != nil || json.Unmarshal(e.Value(), &cur) != nil || cur.ID != l.self.ID {
			return false, nil
		}
		sent = time.Now()
		if rev, err = l.kv.Update(ctx, keyActive, data, e.Revision()); err != nil {
			return false, fmt.Errorf("fabric: take the lease: %w", err)
		}
	case err != nil:
		return false, fmt.Errorf("fabric: take the lease: %w", err)
	}
	l.self, l.rev = rec, rev
	l.extend(sent)
	return true, nil
}

// renew renews the lease, noting term in it. It returns errLeaseLost once
// the lease has certainly lapsed, and another error while it cannot tell
// (the gate closes on its own when the lease may have lapsed).
func (l *lease) renew(ctx context.Context, term uint64) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return errLeaseLost
	}
	l.self.Term = term
	sent := time.Now()
	rev, err := l.kv.Update(ctx, keyActive, l.encodeLocked(), l.rev)
	if err == nil {
		l.rev = rev
		l.extend(sent)
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("fabric: renew the lease: %w", err)
	}
	// Our previous renewal may have been stored without our hearing of
	// it: then the key is still ours, at a revision we do not know.
	if e, gerr := getSoon(ctx, l.kv, keyActive); gerr == nil {
		var cur memberRecord
		if json.Unmarshal(e.Value(), &cur) == nil && cur.ID == l.self.ID {
			l.rev = e.Revision()
			return fmt.Errorf("fabric: renew the lease: %w", err)
		}
	}
	l.rev = 0
	l.until.Store(0)
	return errLeaseLost
}

// release gives the lease up at once, so that a standby need not wait
// for it to expire. The lease is invalid from the call on.
func (l *lease) release(ctx context.Context) error {
	l.until.Store(0)
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return nil
	}
	rev := l.rev
	l.rev = 0
	return l.kv.Delete(ctx, keyActive, jetstream.LastRevision(rev))
}

// drop forgets the lease without a word to the server (it expires
// there): this master stands by from now on.
func (l *lease) drop() {
	l.until.Store(0)
	l.mu.Lock()
	l.rev = 0
	l.self.Since, l.self.Term = time.Now().UTC(), 0
	l.mu.Unlock()
}

// me returns this master's entry, as it is written to the bucket.
func (l *lease) me() memberRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.self
}

// standBy writes, or renews, this master's presence as a standby.
func (l *lease) standBy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	l.mu.Lock()
	data := l.encodeLocked()
	id := l.self.ID
	l.mu.Unlock()
	_, err := l.kv.Put(ctx, prefixStandby+id, data)
	return err
}

// leave removes this master's presence as a standby.
func (l *lease) leave(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	_ = l.kv.Purge(ctx, prefixStandby+l.self.ID)
}

// members returns the masters the bucket lists: the active one (nil if
// none) and the standbys, oldest first.
func (l *lease) members(ctx context.Context) (*memberRecord, []memberRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*l.timeout)
	defer cancel()
	keys, err := l.kv.ListKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	var active *memberRecord
	var standbys []memberRecord
	for _, k := range names {
		e, err := l.kv.Get(ctx, k)
		if err != nil {
			continue // expired meanwhile
		}
		var r memberRecord
		if json.Unmarshal(e.Value(), &r) != nil {
			continue
		}
		switch {
		case k == keyActive:
			active = &r
		case strings.HasPrefix(k, prefixStandby) && (active == nil || r.ID != active.ID):
			standbys = append(standbys, r)
		}
	}
	if active != nil {
		standbys = slices.DeleteFunc(standbys, func(r memberRecord) bool { return r.ID == active.ID })
	}
	slices.SortFunc(standbys, func(a, b memberRecord) int { return a.Since.Compare(b.Since) })
	return active, standbys, nil
}

// info returns r as get_cluster_status carries it.
func (r memberRecord) info() messages.MasterInfo {
	return messages.MasterInfo{ID: r.ID, Name: r.Name, Version: r.Version, Since: r.Since.UnixMilli(), Term: r.Term}
}
