package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// unknownType is the type label of every message whose type is not in the
// catalog: names a peer makes up never become series of their own.
const unknownType = "unknown"

// maxCodes bounds the distinct error codes each endpoint labels series
// with; codes past it share the label "other". Codes come from peers (a
// forwarded request fails with the code its handler chose), so a peer must
// not be able to add series without end.
const maxCodes = 64

// metrics are an endpoint's Prometheus metrics. It is the
// link.HandlerObserver of every link the endpoint makes. The same name
// means the same on the master and on a slave; what only one of them
// knows has a name of its own.
type metrics struct {
	reg      *prometheus.Registry
	messages *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	handled  *prometheus.HistogramVec
	failed   *prometheus.CounterVec

	// The series of each message type, by type name (every type of the
	// catalog, and unknownType): the map is built with the metrics and
	// never changed, so the hot path reads it without a lock, and finds a
	// series by index rather than by hashing its labels. A type's table is
	// made the first time the type is counted.
	types map[string]*lazySeries[*typeSeries]

	mu    sync.Mutex
	codes map[string]bool // the error codes labels have used

	// ready, if set, says why the endpoint is not ready to serve (nil: it
	// is), for /readyz.
	ready func() error
}

// typeSeries are one message type's series, each made the first time it
// is used (a series shows in /metrics from then on, not before).
type typeSeries struct {
	typ      string
	messages [nEndpoints][nEndpoints][nKinds][2]lazySeries[prometheus.Counter] // by source-1, target-1, kind-1, sent
	latency  lazySeries[prometheus.Observer]
	handled  [nKinds]lazySeries[prometheus.Observer] // by kind-1
}

// The sizes of typeSeries' arrays: endpoint types and kinds count from 1.
const (
	nEndpoints = int(messages.Control)
	nKinds     = int(messages.KindResponse)
)

// lazySeries is a series (or a table of them) made on first use. Two
// goroutines that both make a series get the same one from its vector, so
// a lost race costs nothing; a table made twice loses only series
// pointers that the vector still holds.
type lazySeries[T any] struct{ p atomic.Pointer[T] }

func (l *lazySeries[T]) get(make func() T) T {
	if p := l.p.Load(); p != nil {
		return *p
	}
	v := make()
	l.p.Store(&v)
	return v
}

func newMetrics(catalog *messages.Catalog) *metrics {
	m := &metrics{
		reg:   prometheus.NewRegistry(),
		codes: map[string]bool{},
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkfabric_messages_total",
			Help: "Messages sent and received, by direction, link, kind and message type (unknown for a type not in the catalog).",
		}, []string{"direction", "link", "kind", "type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkfabric_request_errors_total",
			Help: "Requests this endpoint sent that ended in an error, by message type and error code.",
		}, []string{"type", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "linkfabric_request_duration_seconds",
			Help:    "How long requests this endpoint sent took to end, by message type.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs to 26s
		}, []string{"type"}),
		handled: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "linkfabric_handler_duration_seconds",
			Help:    "How long this endpoint's handlers of received requests and events ran, by kind and message type.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"kind", "type"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkfabric_handler_errors_total",
			Help: "Handlers of received requests and events that returned an error, by kind, message type and error code.",
		}, []string{"kind", "type", "code"}),
	}
	m.types = map[string]*lazySeries[*typeSeries]{unknownType: {}}
	for _, d := range catalog.All() {
		m.types[d.Name()] = &lazySeries[*typeSeries]{}
	}
	m.reg.MustRegister(m.messages, m.errors, m.latency, m.handled, m.failed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// series is the series of message type t: its own if the catalog has t,
// else those of unknownType.
func (m *metrics) series(t string) *typeSeries {
	ts, ok := m.types[t]
	if !ok {
		t, ts = unknownType, m.types[unknownType]
	}
	return ts.get(func() *typeSeries { return &typeSeries{typ: t} })
}

// codeLabel is the code of err, bounded by maxCodes.
func (m *metrics) codeLabel(err error) string {
	code := "canceled"
	var le *link.Error
	if errors.As(err, &le) {
		code = string(le.Code)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.codes[code] {
		if len(m.codes) >= maxCodes {
			return "other"
		}
		m.codes[code] = true
	}
	return code
}

func (m *metrics) count(dir messages.Direction, msg *link.Envelope, sent bool) {
	if dir.Source < 1 || int(dir.Source) > nEndpoints || dir.Target < 1 || int(dir.Target) > nEndpoints || msg.Kind < 1 || int(msg.Kind) > nKinds {
		return // not a direction or kind a link has
	}
	ts := m.series(msg.Type)
	s := 0
	if sent {
		s = 1
	}
	ts.messages[dir.Source-1][dir.Target-1][msg.Kind-1][s].get(func() prometheus.Counter {
		direction := "received"
		if sent {
			direction = "sent"
		}
		return m.messages.WithLabelValues(direction, dir.String(), msg.Kind.String(), ts.typ)
	}).Inc()
}

// Sent implements link.Observer.
func (m *metrics) Sent(dir messages.Direction, msg *link.Envelope) { m.count(dir, msg, true) }

// Received implements link.Observer.
func (m *metrics) Received(dir messages.Direction, msg *link.Envelope) { m.count(dir, msg, false) }

// RequestEnded implements link.Observer.
func (m *metrics) RequestEnded(msgType string, err error, took time.Duration) {
	ts := m.series(msgType)
	ts.latency.get(func() prometheus.Observer { return m.latency.WithLabelValues(ts.typ) }).Observe(took.Seconds())
	if err != nil {
		m.errors.WithLabelValues(ts.typ, m.codeLabel(err)).Inc()
	}
}

// HandlerEnded implements link.HandlerObserver.
func (m *metrics) HandlerEnded(kind messages.Kind, msgType string, err error, took time.Duration) {
	ts := m.series(msgType)
	if kind >= 1 && int(kind) <= nKinds {
		ts.handled[kind-1].get(func() prometheus.Observer { return m.handled.WithLabelValues(kind.String(), ts.typ) }).Observe(took.Seconds())
	}
	if err != nil {
		m.failed.WithLabelValues(kind.String(), ts.typ, m.codeLabel(err)).Inc()
	}
}

// gauge registers a gauge computed when scraped.
func (m *metrics) gauge(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// serve serves, on addr until Shutdown, the metrics at /metrics, /healthz
// (200 while the process serves at all) and /readyz (200 while m.ready
// finds nothing wrong, else 503 and why). The server's Addr is the address
// it listens on. A taken address is a configuration error. The server's
// goroutine is one of group's, and ends once stopServing has shut it down.
func (m *metrics) serve(addr string, log *slog.Logger, group *routines) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: FABRIC_METRICS_ADDR=%q: address already in use: another process listens there; pick a free port", ErrConfig, addr)
		}
		return nil, fmt.Errorf("fabric: metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if m.ready != nil {
			if err := m.ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "not ready:", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Addr: ln.Addr().String(), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if !group.start(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "error", err)
		}
	}) {
		_ = ln.Close()
		return nil, errors.New("fabric: metrics: the endpoint is closing")
	}
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return srv, nil
}

// stopServing shuts a metrics server down, if there is one.
func stopServing(ctx context.Context, srv *http.Server) error {
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}
