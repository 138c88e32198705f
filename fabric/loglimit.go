package fabric

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A peer can make an endpoint log: every message it gets wrong is worth a
// warning. The limiter keeps a flood of them from flooding the log too:
// each warning or error line, told apart by its level and message (the
// constant text, never the attributes a peer fills in), may appear
// logBurst times at once and then once per logEvery; the next line
// that passes says how many were suppressed meanwhile.
const (
	logBurst = 5
	logEvery = 10 * time.Second
	// logKeys bounds what the limiter remembers; past it, keys that have
	// been quiet for a while are forgotten.
	logKeys = 1024
)

// limitLogs returns l with its warnings and errors rate-limited per line.
func limitLogs(l *slog.Logger) *slog.Logger {
	return slog.New(&limitHandler{next: l.Handler(), lim: &logLimiter{keys: map[string]*logBucket{}}})
}

// limitHandler is a slog.Handler that passes on what its limiter allows.
type limitHandler struct {
	next slog.Handler
	lim  *logLimiter // shared by every handler made WithAttrs or WithGroup
}

func (h *limitHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *limitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	ok, suppressed := h.lim.allow(r.Level.String()+" "+r.Message, r.Time)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *limitHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &limitHandler{next: h.next.WithAttrs(attrs), lim: h.lim}
}

func (h *limitHandler) WithGroup(name string) slog.Handler {
	return &limitHandler{next: h.next.WithGroup(name), lim: h.lim}
}

// logLimiter is a token bucket per key. It is safe for concurrent use.
type logLimiter struct {
	mu   sync.Mutex
	keys map[string]*logBucket
}

type logBucket struct {
	tokens     float64
	at         time.Time // when tokens was last brought up to date
	suppressed int
}

// allow reports whether a line of key may be logged at now, and how many
// of key's lines were suppressed since the last one that was.
func (l *logLimiter) allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.keys[key]
	if b == nil {
		if len(l.keys) >= logKeys {
			l.forget(now)
		}
		b = &logBucket{tokens: logBurst, at: now}
		l.keys[key] = b
	}
	b.tokens = min(logBurst, b.tokens+float64(now.Sub(b.at))/float64(logEvery))
	b.at = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

// forget drops the keys whose buckets have refilled (nothing to report),
// or, if none has, every key: a limiter must not grow without bound.
func (l *logLimiter) forget(now time.Time) {
	for k, b := range l.keys {
		if b.suppressed == 0 && b.tokens+float64(now.Sub(b.at))/float64(logEvery) >= logBurst {
			delete(l.keys, k)
		}
	}
	if len(l.keys) >= logKeys {
		clear(l.keys)
	}
}
