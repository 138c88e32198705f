package fabric

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogLimiter: a flood of one warning logs a burst, then nothing until
// the bucket refills; the next line says how many were left out. Other
// lines, and lines below warning, are not held back.
func TestLogLimiter(t *testing.T) {
	l := &logLimiter{keys: map[string]*logBucket{}}
	now := time.Unix(1000, 0)
	passed := 0
	for range 500 {
		if ok, _ := l.allow("WARN refused invalid request", now); ok {
			passed++
		}
	}
	if passed != logBurst {
		t.Errorf("%d of 500 lines passed at once, want %d", passed, logBurst)
	}
	if ok, _ := l.allow("WARN another line", now); !ok {
		t.Error("another line was held back by the first one's flood")
	}
	ok, suppressed := l.allow("WARN refused invalid request", now.Add(logEvery))
	if !ok || suppressed != 500-logBurst {
		t.Errorf("after %s: passed %v, suppressed %d, want true and %d", logEvery, ok, suppressed, 500-logBurst)
	}

	// The limiter forgets old keys rather than grow.
	for i := range 3 * logKeys {
		l.allow(fmt.Sprintf("WARN line %d", i), now.Add(time.Duration(i)*logEvery*logBurst))
	}
	if len(l.keys) > logKeys {
		t.Errorf("the limiter holds %d keys, want at most %d", len(l.keys), logKeys)
	}
}

func TestLimitLogs(t *testing.T) {
	var buf bytes.Buffer
	log := limitLogs(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))).With("endpoint", "master")
	for i := range 100 {
		log.Warn("refused invalid request", "type", fmt.Sprintf("made_up_%d", i))
		log.Info("instance running", "instance", i)
	}
	if n := strings.Count(buf.String(), "refused invalid request"); n != logBurst {
		t.Errorf("%d warnings logged, want %d:\n%s", n, logBurst, buf.String())
	}
	if n := strings.Count(buf.String(), "instance running"); n != 100 {
		t.Errorf("%d info lines logged, want all 100", n)
	}
}
