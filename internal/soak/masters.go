package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// ServeMaster runs one master of a soak (Config.Masters) in this process,
// configured by cfg, until ctx ends, then closes it gracefully. It is
// what Config.MasterCommand runs: `fabric soak` runs itself with a hidden
// flag, the tests run their own binary.
func ServeMaster(ctx context.Context, cfg fabric.MasterConfig, log *slog.Logger) error {
	handlers := fabric.WithHandlers(messages.Slave, func(l *link.Link) {
		link.HandleEvent(l, UpEvent, func(context.Context, Up) error { return nil })
		link.HandleRequest(l, TellRequest, func(_ context.Context, r Tell) (Answer, error) { return Answer{ID: r.ID}, nil })
	})
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := fabric.StartMaster(startCtx, cfg, fabric.WithLogger(log), fabric.WithPlugins(Plugin), handlers)
	if err != nil {
		return err
	}
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return m.Close(cctx)
}

// masterProc is one master process of the soak.
type masterProc struct {
	n     int // its number, from 1, in the order started
	pid   int
	stdin io.Closer
	out   *tailBuffer
	done  chan struct{}
}

// signal sends sig to the process.
func (p *masterProc) signal(sig syscall.Signal) error { return syscall.Kill(p.pid, sig) }

// tailBuffer keeps the last bytes written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

const tailKept = 64 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - tailKept; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}

// masterEnv is the environment of a master process of the soak.
func (s *Soak) masterEnv() []string {
	n := s.cfg.natsFor(link.MasterAddress)
	tm := s.cfg.Timing
	env := []string{
		"FABRIC_NATS_URL=" + n.URL,
		"FABRIC_SUBJECT_PREFIX=" + n.Prefix,
		"FABRIC_NATS_PING_INTERVAL=" + n.PingInterval.String(),
		"FABRIC_REQUEST_TIMEOUT=" + tm.RequestTimeout.String(),
		"FABRIC_HEARTBEAT_INTERVAL=" + tm.HeartbeatInterval.String(),
		"FABRIC_PEER_TIMEOUT=" + tm.PeerTimeout.String(),
		"FABRIC_SESSION_TIMEOUT=" + tm.SessionTimeout.String(),
		"FABRIC_KV_REPLICAS=" + strconv.Itoa(max(s.cfg.KVReplicas, 1)),
		"FABRIC_CONTROL_PERMISSIONS=*=*",
		"FABRIC_LOG_LEVEL=info",
		"FABRIC_LOG_FORMAT=text",
	}
	if s.cfg.Lease > 0 {
		env = append(env, "FABRIC_MASTER_LEASE="+s.cfg.Lease.String())
	}
	for name, v := range map[string]string{
		"FABRIC_NATS_USER": n.User, "FABRIC_NATS_PASSWORD": n.Password, "FABRIC_NATS_TOKEN": n.Token,
		"FABRIC_NATS_NKEY_SEED_FILE": n.NKeySeedFile, "FABRIC_NATS_CREDS_FILE": n.CredsFile,
		"FABRIC_NATS_TLS_CA_FILE": n.TLSCAFile, "FABRIC_NATS_TLS_CERT_FILE": n.TLSCertFile, "FABRIC_NATS_TLS_KEY_FILE": n.TLSKeyFile,
	} {
		if v != "" {
			env = append(env, name+"="+v)
		}
	}
	return env
}

// startMasterProcs starts Config.Masters master processes, the first
// alone until it is active (so that the soak knows which is), and the
// wiretap that watches what masters publish.
func (s *Soak) startMasterProcs(ctx context.Context) error {
	tap, err := startWiretap(s.cfg.NATS, s.cfg.natsFor(link.MasterAddress).Prefix)
	if err != nil {
		return err
	}
	s.tap = tap
	s.mu.Lock()
	s.masterInc = 1 // one master, as far as what is owed is concerned
	s.mu.Unlock()
	for i := range s.cfg.Masters {
		p, err := s.StartMasterProcess()
		if err != nil {
			return err
		}
		if i == 0 {
			if err := waitLog(ctx, p, "active master"); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitLog waits until process p has logged what, or ctx ends.
func waitLog(ctx context.Context, p *masterProc, what string) error {
	for {
		if strings.Contains(p.out.String(), what) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("soak: master process %d exited: %s", p.n, lastLines(p.out.String(), 5))
		case <-ctx.Done():
			return fmt.Errorf("soak: master process %d did not log %q: %w; its output ends:\n%s", p.n, what, ctx.Err(), lastLines(p.out.String(), 5))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// StartMasterProcess starts one more master process (Config.Masters): it
// stands by if another is active. It returns its number.
func (s *Soak) StartMasterProcess() (*masterProc, error) {
	cmd := s.cfg.MasterCommand(s.masterEnv())
	out := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("soak: start a master process: %w", err)
	}
	s.mu.Lock()
	p := &masterProc{n: len(s.procs) + 1, pid: cmd.Process.Pid, stdin: stdin, out: out, done: make(chan struct{})}
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stopMasterProcs stops every master process, gracefully within ctx.
func (s *Soak) stopMasterProcs(ctx context.Context) error {
	s.mu.Lock()
	procs := append([]*masterProc(nil), s.procs...)
	s.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if p != nil {
			errs = append(errs, s.stop(ctx, p))
		}
	}
	if s.tap != nil {
		s.tap.close()
	}
	return errors.Join(errs...)
}

// stop stops p gracefully (its standard input closes; it closes its
// master), or kills it when ctx ends.
func (s *Soak) stop(ctx context.Context, p *masterProc) error {
	_ = p.signal(syscall.SIGCONT)
	_ = p.stdin.Close()
	_ = p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		_ = p.signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("soak: master process %d did not stop in time: %w", p.n, ctx.Err())
	}
}

// MasterState is who the active master says is active and stands by.
type MasterState struct {
	Active   *masterProc
	Term     uint64
	Standbys []*masterProc
	Starting bool
}

// ActiveNumber returns the active master process's number, or 0.
func (st MasterState) ActiveNumber() int {
	if st.Active == nil {
		return 0
	}
	return st.Active.n
}

// Masters asks the active master who is active and who stands by, by
// their processes.
func (s *Soak) Masters(ctx context.Context) (MasterState, error) {
	ctl := s.currentControl()
	if ctl == nil {
		return MasterState{}, errors.New("soak: no control")
	}
	st, err := link.Request(ctx, ctl.Link(), messages.GetClusterStatus, messages.Empty{})
	if err != nil {
		return MasterState{}, err
	}
	out := MasterState{Active: s.procOf(st.Master.Name), Term: st.Master.Term, Starting: st.Master.Starting}
	if out.Active == nil {
		return out, fmt.Errorf("soak: the active master %q is none of the soak's processes", st.Master.Name)
	}
	for _, sb := range st.Standbys {
		if p := s.procOf(sb.Name); p != nil {
			out.Standbys = append(out.Standbys, p)
		}
	}
	return out, nil
}

// procOf finds the process of a master named "host/pid".
func (s *Soak) procOf(name string) *masterProc {
	_, pidText, _ := strings.Cut(name, "/")
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p != nil && p.pid == pid {
			return p
		}
	}
	return nil
}

// WaitMasters waits until the active master is one of the soak's
// processes, other than not, with want standbys, and done starting.
func (s *Soak) WaitMasters(ctx context.Context, not *masterProc, want int) (MasterState, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, min(time.Second, s.cfg.Timing.RequestTimeout))
		st, err := s.Masters(rctx)
		cancel()
		if err == nil && st.Active != not && len(st.Standbys) == want && !st.Starting {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("soak: masters: %+v, %v: %w", st, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill kills master process p with SIGKILL and forgets it.
func (s *Soak) Kill(p *masterProc) error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	s.forget(p)
	return nil
}

// Pause stops master process p with SIGSTOP, and returns once it has
// stopped (where /proc tells); Resume continues it.
func (s *Soak) Pause(p *masterProc) error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
		if err != nil {
			return nil // no /proc: the signal is on its way
		}
		if _, after, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(after, "T") {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("soak: master process %d did not stop", p.n)
}

func (s *Soak) Resume(p *masterProc) error { return p.signal(syscall.SIGCONT) }

// Stop stops master process p gracefully, within ctx, and forgets it.
func (s *Soak) Stop(ctx context.Context, p *masterProc) error {
	err := s.stop(ctx, p)
	s.forget(p)
	return err
}

// Output returns the end of master process p's log.
func (p *masterProc) Output() string { return p.out.String() }

func (s *Soak) forget(p *masterProc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.procs {
		if q == p {
			s.procs[i] = nil
		}
	}
}

// probe sends soak:ask requests one after the other, each bounded to
// half a second, from a fault on, and notes when the last one failed.
type probe struct {
	since time.Time
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	failedAt time.Time // when the last failed request ended
	okAt     time.Time // when the first request after it succeeded
	lastErr  error
}

// startProbe starts probing how the cluster answers a control after a
// fault at since.
func (s *Soak) startProbe(since time.Time) *probe {
	p := &probe{since: since, stop: make(chan struct{}), done: make(chan struct{})}
	targets := s.allInstances()
	go func() {
		defer close(p.done)
		for n := 0; ; n++ {
			select {
			case <-p.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			err := s.Ask(ctx, targets[n%len(targets)])
			cancel()
			now := time.Now()
			p.mu.Lock()
			switch {
			case err != nil:
				p.failedAt, p.okAt, p.lastErr = now, time.Time{}, err
			case p.okAt.IsZero():
				p.okAt = now
			}
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return p
}

// answered waits until a request has succeeded since the last failure,
// or ctx ends.
func (p *probe) answered(ctx context.Context) error {
	for {
		p.mu.Lock()
		ok, err := !p.okAt.IsZero(), p.lastErr
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("soak: no request succeeded since the fault: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// end stops probing and returns how long after the fault requests
// succeeded again for good: the first success after the last failure.
func (p *probe) end() time.Duration {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.okAt.Sub(p.since)
}

// LateAnswers returns how many messages (and the first subjects) a
// master published, as the wiretap saw them, with a term older than one
// already seen: a master acting after its term ended. It needs Masters.
func (s *Soak) LateAnswers() (int, []string) {
	if s.tap == nil {
		return 0, nil
	}
	return s.tap.lateCount()
}

// wiretap watches every message masters publish on the soak's subjects
// and counts those of a term older than one seen before.
type wiretap struct {
	nc      *natsgo.Conn
	prefix  string // "<prefix>.master.0."
	mu      sync.Mutex
	highest uint64
	late    int
	first   []string
}

func startWiretap(cfg fabric.NATSConfig, prefix string) (*wiretap, error) {
	opts, err := cfg.Options()
	if err != nil {
		return nil, fmt.Errorf("soak: wiretap: %w", err)
	}
	opts = append(opts, natsgo.Name("linkfabric soak wiretap"), natsgo.MaxReconnects(-1))
	nc, err := natsgo.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("soak: wiretap: %w", err)
	}
	w := &wiretap{nc: nc, prefix: prefix + ".master.0."}
	if _, err := nc.Subscribe(prefix+".master.0.>", w.record); err != nil {
		nc.Close()
		return nil, fmt.Errorf("soak: wiretap: %w", err)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("soak: wiretap: %w", err)
	}
	return w, nil
}

func (w *wiretap) close() { w.nc.Close() }

// record notes the term of a message a master published: the sender's
// session is the token after the message type, or, in a reply subject,
// the last.
func (w *wiretap) record(m *natsgo.Msg) {
	tail, ok := strings.CutPrefix(m.Subject, w.prefix)
	if !ok {
		return
	}
	rest := strings.Split(tail, ".") // <dstType>.<dstId>.<kind>...
	session := ""
	switch {
	case len(rest) == 9 && rest[2] == "_reply":
		session = rest[8]
	case len(rest) > 3 && rest[2] != "_reply":
		session = rest[3]
	}
	rest2, ok := strings.CutPrefix(session, "m")
	if !ok {
		return
	}
	n, _, _ := strings.Cut(rest2, "x")
	term, err := strconv.ParseUint(n, 10, 64)
	if err != nil || term == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if term < w.highest {
		w.late++
		if len(w.first) < 5 {
			w.first = append(w.first, m.Subject)
		}
	}
	w.highest = max(w.highest, term)
}

func (w *wiretap) lateCount() (int, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.late, append([]string(nil), w.first...)
}
