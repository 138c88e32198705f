package fabric_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// metricSample is one line of the Prometheus text format: name{labels} value.
type metricSample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	metricLine      = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	metricLabelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrapeMetrics gets the metrics served at addr and parses them.
func scrapeMetrics(t *testing.T, addr string) []metricSample {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET metrics: %s, Content-Type %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	var out []metricSample
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("metrics line %q is not name{labels} value", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s := metricSample{name: m[1], labels: map[string]string{}, value: v}
		for _, p := range metricLabelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[p[1]] = p[2]
		}
		out = append(out, s)
	}
	return out
}

// metricLabels makes a label set from "k=v" pairs.
func metricLabels(pairs ...string) map[string]string {
	out := map[string]string{}
	for _, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		out[k] = v
	}
	return out
}

// findMetric returns the value of the series name with exactly the labels.
func findMetric(samples []metricSample, name string, l map[string]string) (float64, bool) {
	for _, s := range samples {
		if s.name == name && maps.Equal(s.labels, l) {
			return s.value, true
		}
	}
	return 0, false
}

// wantMetric fails the test unless the series exists with value want.
func wantMetric(t *testing.T, samples []metricSample, name string, l map[string]string, want float64) {
	t.Helper()
	got, ok := findMetric(samples, name, l)
	if !ok {
		t.Errorf("no series %s%v; have %s", name, l, metricSeries(samples, name))
		return
	}
	if got != want {
		t.Errorf("%s%v = %v, want %v", name, l, got, want)
	}
}

// wantMetricAtLeast fails the test unless the series exists with a value of at
// least min.
func wantMetricAtLeast(t *testing.T, samples []metricSample, name string, l map[string]string, min float64) {
	t.Helper()
	got, ok := findMetric(samples, name, l)
	if !ok {
		t.Errorf("no series %s%v; have %s", name, l, metricSeries(samples, name))
		return
	}
	if got < min {
		t.Errorf("%s%v = %v, want at least %v", name, l, got, min)
	}
}

// wantNoMetric fails the test if any series name has the labels among its own.
func wantNoMetric(t *testing.T, samples []metricSample, name string, l map[string]string) {
	t.Helper()
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range l {
			match = match && s.labels[k] == v
		}
		if match {
			t.Errorf("unexpected series %s%v = %v", name, s.labels, s.value)
		}
	}
}

func metricSeries(samples []metricSample, name string) string {
	var out []string
	for _, s := range samples {
		if s.name == name {
			out = append(out, fmt.Sprintf("%v=%v", s.labels, s.value))
		}
	}
	return strings.Join(out, "\n  ")
}

// wantHistogram checks the histogram name{l}: its count is count, its
// +Inf bucket holds every observation, its buckets never decrease, and
// its sum is positive.
func wantHistogram(t *testing.T, samples []metricSample, name string, l map[string]string, count float64) {
	t.Helper()
	wantMetric(t, samples, name+"_count", l, count)
	inf := maps.Clone(l)
	inf["le"] = "+Inf"
	wantMetric(t, samples, name+"_bucket", inf, count)
	if sum, ok := findMetric(samples, name+"_sum", l); !ok || sum <= 0 {
		t.Errorf("%s_sum%v = %v (found %v), want > 0", name, l, sum, ok)
	}
	prev := -1.0
	n := 0
	for _, s := range samples {
		if s.name != name+"_bucket" {
			continue
		}
		rest := maps.Clone(s.labels)
		delete(rest, "le")
		if !maps.Equal(rest, l) {
			continue
		}
		n++
		if s.value < prev {
			t.Errorf("%s bucket le=%s = %v, below the previous bucket's %v", name, s.labels["le"], s.value, prev)
		}
		prev = s.value
	}
	if n < 2 {
		t.Errorf("%s%v has %d buckets", name, l, n)
	}
}

// waitGauge waits until the gauge name at addr has the value want.
func waitGauge(t *testing.T, addr, name string, want float64) {
	t.Helper()
	testkit.Eventually(t, waitLong, fmt.Sprintf("%s at %s = %v", name, addr, want), func() error {
		got, ok := findMetric(scrapeMetrics(t, addr), name, map[string]string{})
		if !ok || got != want {
			return fmt.Errorf("%s = %v (found %v)", name, got, ok)
		}
		return nil
	})
}

// TestMetrics starts a master and a slave that serve metrics, sends some
// requests that succeed and some that fail, and checks what each endpoint
// reports about what it sent, received and is waiting for.
func TestMetrics(t *testing.T) {
	b := startBroker(t)
	url := b.ClientURL()

	mcfg := fabric.MasterConfig{NATS: natsConfig(url), Listen: "127.0.0.1:0", Grants: fabric.AllGrants(), MetricsAddr: "127.0.0.1:0", Timing: testTiming(), Log: logConfig()}
	m, err := fabric.StartMaster(testkit.Ctx(t, waitLong), mcfg, fabric.WithLogger(testLogger()))
	if err != nil {
		t.Fatalf("StartMaster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = m.Close(ctx)
	})

	// Instance 11's commands: "/block" waits until released, "/fail"
	// fails with a code of its own.
	p := newProbes(nil)
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	p.setCommandHook(func(ctx context.Context, _ int64, c messages.Command) (messages.CommandResult, error) {
		switch c.Command {
		case "/block":
			blocked <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return messages.CommandResult{}, ctx.Err()
			}
		case "/fail":
			return messages.CommandResult{}, link.Errorf("probe_failed", "the probe fails as asked")
		}
		return messages.CommandResult{Output: "ok"}, nil
	})
	scfg := slaveConfig(url, 1, "11:alpha,12:beta")
	scfg.MetricsAddr = "127.0.0.1:0"
	s, err := fabric.StartSlave(testkit.Ctx(t, waitLong), scfg, fabric.WithLogger(testLogger()), fabric.WithInstanceFactory(p.factory))
	if err != nil {
		t.Fatalf("StartSlave: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := closeCtx()
		defer cancel()
		_ = s.Close(ctx)
	})
	waitSlaves(t, m, waitLong, 1)

	if m.MetricsAddr() == "" || m.MetricsAddr() == mcfg.MetricsAddr || s.MetricsAddr() == "" || s.MetricsAddr() == m.MetricsAddr() {
		t.Fatalf("MetricsAddr: master %q, slave %q", m.MetricsAddr(), s.MetricsAddr())
	}

	ctl, _ := dialControl(t, url, "alice")
	request(t, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
	waitStatus(t, ctl.Link(), 11, messages.StatusRunning)
	if out := request(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/hello"}).Output; out != "ok" {
		t.Fatalf("/hello: %q", out)
	}
	// Fails at the instance: every hop that sent it counts probe_failed.
	_, err = requestErr(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/fail"})
	testkit.WantCode(t, err, "probe_failed")
	// Fails at the slave, which sends nothing on: only the master counts it.
	_, err = requestErr(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 12, Command: "/players"})
	testkit.WantCode(t, err, fabric.CodeInstanceNotRunning)
	// Fails at the master, which sends nothing on: no one counts it.
	_, err = requestErr(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 99, Command: "/players"})
	testkit.WantCode(t, err, fabric.CodeInstanceNotFound)

	// A request in flight is pending at each endpoint that sent it on.
	done := make(chan error, 1)
	go func() {
		_, err := requestErr(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/block"})
		done <- err
	}()
	<-blocked
	waitGauge(t, m.MetricsAddr(), "linkfabric_requests_pending", 1)
	// The slave's heartbeat to the master may be in flight too.
	waitGauge(t, s.MetricsAddr(), "linkfabric_requests_pending", 1)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("/block: %v", err)
	}
	waitGauge(t, m.MetricsAddr(), "linkfabric_requests_pending", 0)
	waitGauge(t, s.MetricsAddr(), "linkfabric_requests_pending", 0)

	const messagesTotal = "linkfabric_messages_total"
	const errorsTotal = "linkfabric_request_errors_total"
	const duration = "linkfabric_request_duration_seconds"
	const handled = "linkfabric_handler_duration_seconds"
	const handlerErrors = "linkfabric_handler_errors_total"

	t.Run("master", func(t *testing.T) {
		ms := scrapeMetrics(t, m.MetricsAddr())
		wantMetric(t, ms, messagesTotal, metricLabels("direction=received", "link=control-master", "kind=request", "type=start_instance"), 1)
		wantMetric(t, ms, messagesTotal, metricLabels("direction=sent", "link=master-slave", "kind=request", "type=start_instance"), 1)
		wantMetric(t, ms, messagesTotal, metricLabels("direction=received", "link=slave-master", "kind=response", "type=start_instance"), 1)
		wantMetric(t, ms, messagesTotal, metricLabels("direction=sent", "link=master-control", "kind=response", "type=start_instance"), 1)
		// Five send_command arrived; four went on to the slave.
		wantMetric(t, ms, messagesTotal, metricLabels("direction=received", "link=control-master", "kind=request", "type=send_command"), 5)
		wantMetric(t, ms, messagesTotal, metricLabels("direction=sent", "link=master-slave", "kind=request", "type=send_command"), 4)
		wantMetric(t, ms, messagesTotal, metricLabels("direction=received", "link=slave-master", "kind=event", "type=instance_started"), 1)
		wantMetric(t, ms, messagesTotal, metricLabels("direction=received", "link=slave-master", "kind=request", "type=register_slave"), 1)
		// The slave's heartbeats.
		testkit.Eventually(t, waitLong, "the master counts the slave's pings", func() error {
			ping := metricLabels("direction=received", "link=slave-master", "kind=request", "type=ping")
			if n, _ := findMetric(scrapeMetrics(t, m.MetricsAddr()), messagesTotal, ping); n < 1 {
				return fmt.Errorf("%s%v = %v", messagesTotal, ping, n)
			}
			return nil
		})

		wantMetric(t, ms, errorsTotal, metricLabels("type=send_command", "code=probe_failed"), 1)
		wantMetric(t, ms, errorsTotal, metricLabels("type=send_command", "code=instance_not_running"), 1)
		wantNoMetric(t, ms, errorsTotal, metricLabels("code=instance_not_found"))
		wantNoMetric(t, ms, errorsTotal, metricLabels("type=start_instance"))

		wantHistogram(t, ms, duration, metricLabels("type=send_command"), 4)
		wantHistogram(t, ms, duration, metricLabels("type=start_instance"), 1)

		wantMetric(t, ms, "linkfabric_requests_pending", nil, 0)
		wantMetric(t, ms, "linkfabric_slaves_connected", nil, 1)
		wantMetric(t, ms, "linkfabric_controls_connected", nil, 1)
		wantMetric(t, ms, "linkfabric_cluster_instances", nil, 2)
		wantMetric(t, ms, "linkfabric_cluster_instances_running", nil, 1)
		// What only a slave knows is not reported under the same name.
		wantNoMetric(t, ms, "linkfabric_instances", nil)

		// The receiving side: the master's handlers of the five
		// send_command (it forwards them), and the errors they returned,
		// its own included.
		wantHistogram(t, ms, handled, metricLabels("kind=request", "type=send_command"), 5)
		wantMetric(t, ms, handlerErrors, metricLabels("kind=request", "type=send_command", "code=instance_not_found"), 1)
		wantMetric(t, ms, handlerErrors, metricLabels("kind=request", "type=send_command", "code=probe_failed"), 1)
		wantHistogram(t, ms, handled, metricLabels("kind=event", "type=instance_started"), 1)
		wantMetricAtLeast(t, ms, "go_goroutines", nil, 1)
	})

	t.Run("slave", func(t *testing.T) {
		ss := scrapeMetrics(t, s.MetricsAddr())
		wantMetric(t, ss, messagesTotal, metricLabels("direction=received", "link=master-slave", "kind=request", "type=start_instance"), 1)
		wantMetric(t, ss, messagesTotal, metricLabels("direction=sent", "link=slave-instance", "kind=request", "type=start_instance"), 1)
		wantMetric(t, ss, messagesTotal, metricLabels("direction=received", "link=master-slave", "kind=request", "type=send_command"), 4)
		wantMetric(t, ss, messagesTotal, metricLabels("direction=sent", "link=slave-instance", "kind=request", "type=send_command"), 3)
		wantMetric(t, ss, messagesTotal, metricLabels("direction=received", "link=instance-slave", "kind=event", "type=instance_started"), 1)
		wantMetric(t, ss, messagesTotal, metricLabels("direction=sent", "link=slave-master", "kind=event", "type=instance_started"), 1)
		wantMetric(t, ss, messagesTotal, metricLabels("direction=sent", "link=slave-master", "kind=request", "type=register_slave"), 1)

		wantMetric(t, ss, errorsTotal, metricLabels("type=send_command", "code=probe_failed"), 1)
		wantNoMetric(t, ss, errorsTotal, metricLabels("code=instance_not_running"))

		wantHistogram(t, ss, duration, metricLabels("type=send_command"), 3)
		wantHistogram(t, ss, duration, metricLabels("type=register_slave"), 1)

		wantHistogram(t, ss, handled, metricLabels("kind=request", "type=send_command"), 4)
		wantMetric(t, ss, handlerErrors, metricLabels("kind=request", "type=send_command", "code=instance_not_running"), 1)
		wantMetric(t, ss, handlerErrors, metricLabels("kind=request", "type=send_command", "code=probe_failed"), 1)

		wantMetric(t, ss, "linkfabric_master_connected", nil, 1)
		wantMetric(t, ss, "linkfabric_instances", nil, 2)
		wantMetric(t, ss, "linkfabric_instances_running", nil, 1)
		wantMetricAtLeast(t, ss, "go_goroutines", nil, 1)
	})

	t.Run("master gone", func(t *testing.T) {
		ctx, cancel := closeCtx()
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Fatalf("master Close: %v", err)
		}
		waitGauge(t, s.MetricsAddr(), "linkfabric_master_connected", 0)
		if resp, err := http.Get("http://" + m.MetricsAddr() + "/metrics"); err == nil {
			resp.Body.Close()
			t.Errorf("the closed master still serves metrics: %s", resp.Status)
		}
	})
}

// claimsRefused counts what peers claimed that is not true of them.
const claimsRefused = "linkfabric_claims_refused_total"
