package fabric

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/linkfabric/linkfabric/messages"
)

// The master keeps what it is told that must outlive it in a JetStream
// key-value bucket, the state bucket (StateBucket): one key per
// instance, slave and ban, a counter of instance ids, and the term. Each
// value is JSON with a schema version, "v". The active master writes a
// change before it answers the request that made it, and reads the whole
// bucket when its term begins.
//
// Only the master of the current term writes. Every write is conditional
// on the bucket's last sequence being the one this master wrote last (a
// JetStream expected-last-sequence publish), so a master whose term has
// ended cannot write: the next term began with a write of its own. A
// write whose outcome is unknown (no acknowledgement in time) ends the
// term, since this master no longer knows what the bucket holds; the next
// term, this process's or another's, reads it afresh.

// stateVersion is the schema version of the values the master writes,
// but for an instance that runs a program (programVersion). A master
// refuses to start on a bucket with values of a later version than
// readVersion.
const stateVersion = 1

// programVersion is the schema version of an instance record with a
// program: a master of an earlier version would read it as a simulated
// instance and drop its program on its next write, so it refuses the
// bucket instead. Records without a program stay at stateVersion, which
// such a master reads.
const programVersion = 2

// readVersion is the latest schema version this master reads.
const readVersion = programVersion

// Keys of the state bucket.
const (
	keyTerm        = "term"
	keyNextID      = "counter.instance"
	keyStamps      = "counter.stamp"
	prefixInstance = "instance."
	prefixGone     = "gone.instance."
	prefixSlave    = "slave."
	prefixBan      = "ban."
)

// StateBucket returns the name of the JetStream key-value bucket that
// holds the master's state for a subject prefix: the prefix with dots as
// underscores, then "_master" (lf_master for lf). The nats CLI reads and
// backs it up (README.md).
func StateBucket(prefix string) string { return bucketBase(prefix) + "_master" }

// LeaseBucket returns the name of the bucket that holds the active
// master's lease and the standbys' presence: StateBucket(prefix) and
// "_lease".
func LeaseBucket(prefix string) string { return StateBucket(prefix) + "_lease" }

func bucketBase(prefix string) string { return strings.ReplaceAll(prefix, ".", "_") }

// Errors of the state store.
var (
	// errFenced: another master has written since this one last did: its
	// term has begun, and this one's has ended. Nothing was written.
	errFenced = errors.New("another master has taken over the state")
	// errUnknown: the write may or may not have been stored.
	errUnknown = errors.New("the state store did not confirm the write")
)

// Stored values.
type (
	termRecord struct {
		V      int       `json:"v"`
		Term   uint64    `json:"term"`
		Holder string    `json:"holder"` // the master process that began it
		At     time.Time `json:"at"`
	}
	counterRecord struct {
		V    int   `json:"v"`
		Last int64 `json:"last"` // the highest instance id ever given out
	}
	instanceRecord struct {
		V       int               `json:"v"`
		ID      int64             `json:"id"`
		Name    string            `json:"name"`
		SlaveID int64             `json:"slave_id,omitempty"` // 0: not assigned
		Program *messages.Program `json:"program,omitempty"`  // nil: the slave's default kind
	}
	slaveRecord struct {
		V    int    `json:"v"`
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	// stampRecord bounds the update stamps a term hands out
	// (subscriptions.go): every stamp of the terms that wrote it is at
	// most Reserved, so the next term starts above it.
	stampRecord struct {
		V        int   `json:"v"`
		Reserved int64 `json:"reserved"` // Unix milliseconds
	}
	// goneRecord is an instance deleted for good, so that a control that
	// subscribed to instance_updates hears of the deletion from a later
	// term too.
	goneRecord struct {
		V       int       `json:"v"`
		ID      int64     `json:"id"`
		Name    string    `json:"name"`
		SlaveID int64     `json:"slave_id,omitempty"`
		At      time.Time `json:"at"`
	}
	banRecord struct {
		V      int    `json:"v"`
		Name   string `json:"name"`
		Reason string `json:"reason,omitempty"`
	}
)

// snapshot is the state bucket's content when a term begins.
type snapshot struct {
	term      uint64
	lastID    int64
	instances map[int64]instanceRecord
	slaves    map[int64]slaveRecord
	bans      map[string]messages.Ban
	gone      map[int64]goneRecord // deleted instances
	reserved  int64                // the highest update stamp any term may have handed out
}

// newInstanceRecord returns the record of an instance, at the schema
// version its content needs.
func newInstanceRecord(id int64, name string, slaveID int64, program *messages.Program) instanceRecord {
	v := stateVersion
	if program != nil {
		v = programVersion
	}
	return instanceRecord{V: v, ID: id, Name: name, SlaveID: slaveID, Program: program}
}

func instanceKey(id int64) string { return prefixInstance + strconv.FormatInt(id, 10) }
func slaveKey(id int64) string    { return prefixSlave + strconv.FormatInt(id, 10) }
func goneKey(id int64) string     { return prefixGone + strconv.FormatInt(id, 10) }

// banKey names a player's ban: player names may hold characters keys may
// not, so the name is base64url-encoded.
func banKey(name string) string {
	return prefixBan + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// writePatience bounds a write to the state bucket, its attempts
// included: longer than a JetStream leader election on a cluster (4 to 9
// s in nats-server), so that a write made while a node that led the
// bucket fails is stored once another leads it, rather than left unknown.
const writePatience = 15 * time.Second

// store is the state bucket, as one master process uses it. Its methods
// are safe for concurrent use; writes are serialized.
type store struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	stream  string        // the bucket's stream
	subject string        // "$KV.<bucket>."
	timeout time.Duration // bounds each attempt

	mu   sync.Mutex
	term uint64 // the term this master holds; 0 when none
	last uint64 // the stream's last sequence, as this master wrote it
}

// openStore opens the state bucket for prefix, creating it with replicas
// copies if it does not exist, or raising its replicas if it has fewer.
// timeout bounds each operation.
func openStore(ctx context.Context, js jetstream.JetStream, prefix string, replicas int, timeout time.Duration) (*store, error) {
	bucket := StateBucket(prefix)
	cfg := jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Linkfabric master state, prefix " + prefix + " (instances, slaves, bans, ids, term)",
		History:     1,
		Replicas:    replicas,
	}
	kv, err := openBucket(ctx, js, cfg, false)
	if err != nil {
		return nil, err
	}
	return &store{js: js, kv: kv, stream: "KV_" + bucket, subject: "$KV." + bucket + ".", timeout: timeout}, nil
}

// openBucket creates a bucket, or opens the existing one; with
// sameTTL, an existing bucket with another TTL is refused.
func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, sameTTL bool) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, fmt.Errorf("fabric: JetStream bucket %s: %w", cfg.Bucket, err)
	}
	kv, err = js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("fabric: JetStream bucket %s: %w", cfg.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("fabric: JetStream bucket %s: %w", cfg.Bucket, err)
	}
	if sameTTL && st.TTL() != cfg.TTL {
		return nil, fmt.Errorf("%w: FABRIC_MASTER_LEASE=%s, but the masters of this cluster use %s (the TTL of the bucket %s): give every master the same lease, or delete the bucket while no master runs (nats kv del %s)",
			ErrConfig, cfg.TTL, st.TTL(), cfg.Bucket, cfg.Bucket)
	}
	if info := st.(*jetstream.KeyValueBucketStatus).StreamInfo(); info.Config.Replicas < cfg.Replicas {
		if kv, err = js.UpdateKeyValue(ctx, cfg); err != nil {
			return nil, fmt.Errorf("fabric: JetStream bucket %s: raise its replicas to %d: %w", cfg.Bucket, cfg.Replicas, err)
		}
	}
	return kv, nil
}

// getSoon reads key from kv, and tries again while nothing answers yet: a
// bucket just created, or whose leader is being elected, on a cluster may
// not serve reads (direct gets) on every node, and until then a read finds
// no responders, which says nothing of the key.
func getSoon(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	for {
		e, err := kv.Get(ctx, key)
		if !errors.Is(err, natsgo.ErrNoResponders) {
			return e, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// claim begins term+1 of the bucket for holder: it writes the term
// (conditional on the bucket's last sequence, so that a write of the
// previous term's master either came before, and is read below, or fails
// after), then reads the whole bucket.
func (s *store) claim(ctx context.Context, holder string) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.term, s.last = 0, 0
	for {
		info, err := s.info(ctx)
		if err != nil {
			return snapshot{}, err
		}
		var prev termRecord
		if e, err := getSoon(ctx, s.kv, keyTerm); err == nil {
			if err := decodeRecord(e, &prev.V, &prev); err != nil {
				return snapshot{}, err
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return snapshot{}, fmt.Errorf("fabric: read the term: %w", err)
		}
		next := termRecord{V: stateVersion, Term: prev.Term + 1, Holder: holder, At: time.Now().UTC()}
		seq, err := s.publish(ctx, keyTerm, next, info.State.LastSeq, false, randomHex(12))
		if errors.Is(err, errFenced) {
			continue // the previous master wrote meanwhile: read again
		}
		if err != nil {
			return snapshot{}, err
		}
		s.term, s.last = next.Term, seq
		break
	}
	snap, err := s.load(ctx)
	if err != nil {
		s.term, s.last = 0, 0
		return snapshot{}, err
	}
	snap.term = s.term
	return snap, nil
}

func (s *store) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return nil, fmt.Errorf("fabric: read the state bucket: %w", err)
	}
	return st.CachedInfo(), nil
}

// load reads every value of the bucket.
func (s *store) load(ctx context.Context) (snapshot, error) {
	snap := snapshot{instances: map[int64]instanceRecord{}, slaves: map[int64]slaveRecord{}, bans: map[string]messages.Ban{}, gone: map[int64]goneRecord{}}
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return snap, fmt.Errorf("fabric: read the state bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return snap, fmt.Errorf("fabric: read the state bucket: %w", ctx.Err())
		}
		if e == nil {
			// A deletion whose second write (the instance's key) was not
			// made: the instance is still there.
			for id := range snap.gone {
				if _, ok := snap.instances[id]; ok {
					delete(snap.gone, id)
				}
			}
			return snap, nil
		}
		switch key := e.Key(); {
		case key == keyTerm:
		case key == keyNextID:
			var r counterRecord
			if err := decodeRecord(e, &r.V, &r); err != nil {
				return snap, err
			}
			snap.lastID = r.Last
		case key == keyStamps:
			var r stampRecord
			if err := decodeRecord(e, &r.V, &r); err != nil {
				return snap, err
			}
			snap.reserved = r.Reserved
		case strings.HasPrefix(key, prefixGone):
			var r goneRecord
			if err := decodeRecord(e, &r.V, &r); err != nil {
				return snap, err
			}
			snap.gone[r.ID] = r
		case strings.HasPrefix(key, prefixInstance):
			var r instanceRecord
			if err := decodeRecord(e, &r.V, &r); err != nil {
				return snap, err
			}
			snap.instances[r.ID] = r
		case strings.HasPrefix(key, prefixSlave):
			var r slaveRecord
			if err := decodeRecord(e, &r.V, &r); err != nil {
				return snap, err
			}
			snap.slaves[r.ID] = r
		case strings.HasPrefix(key, prefixBan):
			var r banRecord
			if err := decodeRecord(e, &r.V, &r); err != nil {
				return snap, err
			}
			snap.bans[r.Name] = messages.Ban{Name: r.Name, Banned: true, Reason: r.Reason}
		}
		// Keys this version does not know are left alone: a later
		// version's, in a bucket whose values it wrote at a version this
		// one reads.
	}
}

// decodeRecord decodes an entry's value into r, whose field V (at v)
// must then be a version this master reads.
func decodeRecord(e jetstream.KeyValueEntry, v *int, r any) error {
	if err := json.Unmarshal(e.Value(), r); err != nil {
		return fmt.Errorf("fabric: the state bucket's %s is not what a master writes: %w", e.Key(), err)
	}
	if *v < 1 || *v > readVersion {
		return fmt.Errorf("fabric: the state bucket's %s has schema version %d, and this master reads 1 to %d: run a master of the version that wrote it", e.Key(), *v, readVersion)
	}
	return nil
}

// resumable reports whether term may go on after its lease lapsed and
// was taken again by the same master: no other term has begun, since
// nothing has been written to the bucket since this master's last write.
func (s *store) resumable(ctx context.Context, term uint64) bool {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.term != term || s.term == 0 {
		return false
	}
	info, err := s.info(ctx)
	return err == nil && info.State.LastSeq == s.last
}

// put stores v at key, as the master of term.
func (s *store) put(ctx context.Context, term uint64, key string, v any) error {
	return s.write(ctx, term, key, v, false)
}

// del deletes key, as the master of term.
func (s *store) del(ctx context.Context, term uint64, key string) error {
	return s.write(ctx, term, key, nil, true)
}

func (s *store) write(ctx context.Context, term uint64, key string, v any, del bool) error {
	// The caller's deadline does not cut a write short: a write given up
	// while in flight would leave the master not knowing its state.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writePatience)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.term != term || s.term == 0 {
		return errFenced
	}
	// Each attempt carries the write's id and expects the same last
	// sequence: at most one of them is stored, and if one that went
	// unanswered was, the message after last is it.
	id := randomHex(12)
	unanswered := false
	for {
		actx, acancel := context.WithTimeout(ctx, s.timeout)
		seq, err := s.publish(actx, key, v, s.last, del, id)
		acancel()
		switch {
		case err == nil:
			s.last = seq
			return nil
		case errors.Is(err, errFenced) && unanswered && s.stored(ctx, s.last+1, id):
			s.last++
			return nil
		case errors.Is(err, errFenced):
			s.term, s.last = 0, 0 // this term is over for the store
			return err
		}
		unanswered = true
		select {
		case <-ctx.Done():
			// Unknown: this term is over for the store.
			s.term, s.last = 0, 0
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stored reports whether the message at seq is the write with id.
func (s *store) stored(ctx context.Context, seq uint64, id string) bool {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return false
	}
	m, err := st.GetMsg(ctx, seq)
	return err == nil && m.Header.Get(jetstream.MsgIDHeader) == id
}

// publish writes key (a value, or a delete marker) if the stream's last
// sequence is last, and returns the write's sequence. id identifies the
// write across attempts.
func (s *store) publish(ctx context.Context, key string, v any, last uint64, del bool, id string) (uint64, error) {
	msg := &natsgo.Msg{Subject: s.subject + key, Header: natsgo.Header{}}
	if del {
		msg.Header.Set("KV-Operation", "DEL")
	} else {
		data, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		msg.Data = data
	}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(last), jetstream.WithMsgID(id))
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return ack.Sequence, nil
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return 0, errFenced
	}
	return 0, fmt.Errorf("%w: %s: %w", errUnknown, key, err)
}

// JetStreamAllowList returns the subjects, beyond those of its links,
// that the master's NATS user must be allowed to publish for its use of
// JetStream under subject prefix: the JetStream API on its two buckets
// (create or open them, read keys, watch them), writes to their keys, and
// the flow control of the consumers that watch them. JetStream answers on
// the master's inbox, which the master may read already. Nothing else of
// JetStream is needed, nor any other bucket.
func JetStreamAllowList(prefix string) []string {
	out := []string{"$JS.API.INFO"}
	for _, b := range []string{StateBucket(prefix), LeaseBucket(prefix)} {
		s := "KV_" + b
		out = append(out,
			"$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.UPDATE."+s, "$JS.API.STREAM.INFO."+s,
			"$JS.API.STREAM.MSG.GET."+s, "$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.DELETE."+s+".>", "$JS.API.CONSUMER.INFO."+s+".>",
			"$JS.FC."+s+".>",
			"$KV."+b+".>",
		)
	}
	return out
}
