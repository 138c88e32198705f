package fabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// metrics are an endpoint's Prometheus metrics. It is the link.Observer of
// every link the endpoint makes.
type metrics struct {
	reg      *prometheus.Registry
	messages *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	// Label lookups hash every label; the hot path looks counters up here.
	counters sync.Map // counterKey -> prometheus.Counter
}

type counterKey struct {
	dir  messages.Direction
	kind link.Kind
	typ  string
	sent bool
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "linkfabric_messages_total",
			Help: "Messages sent and received, by direction, link, kind and message type.",
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
	}
	m.reg.MustRegister(m.messages, m.errors, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) count(dir messages.Direction, msg *link.Message, sent bool) {
	k := counterKey{dir: dir, kind: msg.Kind, typ: msg.Type, sent: sent}
	c, ok := m.counters.Load(k)
	if !ok {
		direction := "received"
		if sent {
			direction = "sent"
		}
		c, _ = m.counters.LoadOrStore(k, m.messages.WithLabelValues(direction, dir.String(), msg.Kind.String(), msg.Type))
	}
	c.(prometheus.Counter).Inc()
}

// Sent implements link.Observer.
func (m *metrics) Sent(dir messages.Direction, msg *link.Message) { m.count(dir, msg, true) }

// Received implements link.Observer.
func (m *metrics) Received(dir messages.Direction, msg *link.Message) { m.count(dir, msg, false) }

// RequestEnded implements link.Observer.
func (m *metrics) RequestEnded(msgType string, err error, took time.Duration) {
	m.latency.WithLabelValues(msgType).Observe(took.Seconds())
	if err != nil {
		code := "canceled"
		var le *link.Error
		if errors.As(err, &le) {
			code = string(le.Code)
		}
		m.errors.WithLabelValues(msgType, code).Inc()
	}
}

// gauge registers a gauge computed when scraped.
func (m *metrics) gauge(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// serve serves the metrics on addr at /metrics until Shutdown. The
// server's Addr is the address it listens on.
func (m *metrics) serve(addr string, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fabric: metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	srv := &http.Server{Addr: ln.Addr().String(), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "error", err)
		}
	}()
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
