package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// The two-process scenario: what a control in one process pays to reach a
// master in another, as `fabric ctl` does, against raw nats.go in the same
// shape. Each side's server is a child process that embeds its NATS server
// and answers on a connection inside that process; the requester connects
// to it over loopback TCP from the bench's process.

// Child makes the command of a child process the two-process scenario
// starts: ChildMaster for a `fabric master` with its embedded NATS server,
// ChildRaw for one that runs ServeRaw. The child must print, on a line of
// its standard output, "NATS at " and the URL to connect to, and stop when
// it gets SIGTERM (or its standard input closes).
type Child func(ctx context.Context, kind ChildKind) *exec.Cmd

// ChildKind says which child process Child makes.
type ChildKind int

// The children of the two-process scenario.
const (
	ChildMaster ChildKind = iota + 1 // fabric master, embedded NATS
	ChildRaw                         // ServeRaw
)

// rawSubject is what ServeRaw answers.
const rawSubject = "bench.echo"

// ServeRaw is the raw baseline's child: it embeds a NATS server on a loopback
// port, as the master does, answers requests on bench.echo with their
// payload from a nats.go connection inside the process (in-process, as a
// master connects to the broker it embeds), prints "raw NATS responder
// running; NATS at URL" to out, and runs until ctx ends or stdin closes.
func ServeRaw(ctx context.Context, stdin io.Reader, out io.Writer) error {
	b, err := fabric.StartBroker("127.0.0.1:0", "")
	if err != nil {
		return err
	}
	defer b.Close()
	nc, err := natsgo.Connect(b.ClientURL(), natsgo.InProcessServer(b.Server()))
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := nc.Subscribe(rawSubject, func(m *natsgo.Msg) { _ = m.Respond(m.Data) }); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "raw NATS responder running; NATS at %s\n", b.ClientURL())
	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(gone)
	}()
	select {
	case <-ctx.Done():
	case <-gone:
	}
	return nil
}

// child is a running child process and the URL of its NATS server.
type child struct {
	cmd   *exec.Cmd
	stdin io.Closer
	url   string
}

// startChild starts the child kind and waits, at most a minute, for its
// URL.
func startChild(ctx context.Context, newCmd Child, kind ChildKind) (*child, error) {
	cmd := newCmd(ctx, kind)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, url, ok := strings.Cut(sc.Text(), "NATS at "); ok {
				urls <- strings.TrimSpace(url)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(urls)
	}()
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case url, ok := <-urls:
		if ok {
			c.url = url
			return c, nil
		}
		c.stop()
		return nil, fmt.Errorf("%s ended without saying where its NATS server is: %s", cmd.Path, strings.TrimSpace(stderr.String()))
	case <-t.C:
		err = errors.New("timed out")
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.stop()
	return nil, fmt.Errorf("%s did not say where its NATS server is: %w", cmd.Path, err)
}

// stop asks the child to stop, kills it after ten seconds, and waits.
func (c *child) stop() {
	_ = c.stdin.Close()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = c.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

func runTwoProcesses(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Child == nil {
		return nil, nil // go test's binary cannot be a child; fabric bench's can
	}
	master, err := startChild(ctx, cfg.Child, ChildMaster)
	if err != nil {
		return nil, err
	}
	defer master.stop()
	raw, err := startChild(ctx, cfg.Child, ChildRaw)
	if err != nil {
		return nil, err
	}
	defer raw.stop()

	requester, err := natsgo.Connect(raw.url)
	if err != nil {
		return nil, err
	}
	defer requester.Close()
	body := []byte("{}") // ping's payload
	rawReq := func(int) error {
		_, err := requester.Request(rawSubject, body, 10*time.Second)
		return err
	}
	ccfg := fabric.ControlConfig{NATS: natsConfig(master.url), User: "bench", Timing: timing(), Log: logConfig}
	ctl, err := fabric.DialControl(ctx, ccfg, fabric.WithLogger(cfg.Log))
	if err != nil {
		return nil, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ctl.Close(cctx)
	}()
	l := ctl.Link()
	ping := func(int) error {
		_, err := link.Request(ctx, l, messages.Ping, messages.Empty{})
		return err
	}
	for i := range 200 { // warm up connections, buffers and the scheduler
		for _, f := range []func(int) error{rawReq, ping} {
			if err := f(i); err != nil {
				return nil, err
			}
		}
	}
	var seq [2]latencies
	var parWall [2]time.Duration
	for range rounds {
		for i, f := range []func(int) error{rawReq, ping} {
			lat, _, err := timeRequests(cfg.Requests/rounds, 1, f)
			if err != nil {
				return nil, err
			}
			seq[i] = append(seq[i], lat...)
		}
		for i, f := range []func(int) error{rawReq, ping} {
			_, wall, err := timeRequests(cfg.ParallelRequests/rounds, cfg.Parallel, f)
			if err != nil {
				return nil, err
			}
			parWall[i] += wall
		}
	}
	n := float64(cfg.ParallelRequests / rounds * rounds)
	seqName := "two processes: ping, sequential (baseline: raw nats.go, same shape)"
	parName := fmt.Sprintf("two processes: ping, %d in flight", cfg.Parallel)
	note := "the control (or a raw requester) in the bench's process, over loopback TCP; the master (or a raw responder) in a child process with its embedded NATS server, connected to it in-process"
	r := compare(seqName, "p50 latency", "µs", micros(seq[0].percentile(50)), micros(seq[1].percentile(50)), 1.25, true)
	r.Note = note
	return []Result{
		r,
		compare(seqName, "p99 latency", "µs", micros(seq[0].percentile(99)), micros(seq[1].percentile(99)), 0, true),
		compare(parName, "throughput", "req/s", n/parWall[0].Seconds(), n/parWall[1].Seconds(), 0.8, false),
	}, nil
}
