package fabric_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/linkfabric/linkfabric/fabric"
	"github.com/linkfabric/linkfabric/internal/testkit"
	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// takeoverBound is how soon a standby must be active once the active
// master stopped renewing its lease: the lease, the standby's poll, and
// slack for a loaded machine.
const takeoverBound = fabric.DefaultLease + 3*time.Second

// TestHelperMasterProcess is not a test: it is the master process that
// the failover tests start, kill and pause. It takes its configuration
// from the environment and runs until its standard input closes.
func TestHelperMasterProcess(t *testing.T) {
	if os.Getenv("LF_HELPER_MASTER") != "1" {
		return
	}
	serveFromEnv(fabric.LoadMasterConfig, func(ctx context.Context, cfg fabric.MasterConfig) (*fabric.Master, error) {
		return fabric.StartMaster(ctx, cfg, fabric.WithLogger(cfg.Log.NewLogger()))
	})
}

// masterProcess is a master in a child process.
type masterProcess struct {
	cmd    *exec.Cmd
	output *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startMasterProcess runs a master on the NATS server at url in a child
// process (this test binary running TestHelperMasterProcess), configured
// through the environment as an operator would.
func startMasterProcess(t *testing.T, url string) *masterProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMasterProcess$", "-test.count=1", "-test.timeout=120s")
	cmd.Env = append(os.Environ(),
		"LF_HELPER_MASTER=1",
		"FABRIC_NATS_URL="+url,
		"FABRIC_HEARTBEAT_INTERVAL="+heartbeat.String(),
		"FABRIC_PEER_TIMEOUT="+peerTimeout.String(),
		"FABRIC_SESSION_TIMEOUT="+testTiming().SessionTimeout.String(),
		"FABRIC_REQUEST_TIMEOUT="+reqTimeout.String(),
		"FABRIC_LOG_LEVEL=info",
	)
	p := &masterProcess{cmd: cmd, output: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the master process: %v", err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Signal(syscall.SIGCONT)
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("master process output:\n%s", p.output.String())
		}
	})
	return p
}

// waitLog waits until the process has logged a line that contains all of
// parts.
func (p *masterProcess) waitLog(t *testing.T, timeout time.Duration, parts ...string) {
	t.Helper()
	testkit.Eventually(t, timeout, fmt.Sprintf("the master process logs %q", parts), func() error {
		for _, line := range strings.Split(p.output.String(), "\n") {
			if !slices.ContainsFunc(parts, func(part string) bool { return !strings.Contains(line, part) }) {
				return nil
			}
		}
		return errors.New("not yet")
	})
}

// signal sends sig to the process; for SIGSTOP, it returns once the
// process has stopped, as /proc tells, so that nothing the test sends
// afterwards is handled before the pause.
func (p *masterProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	if sig != syscall.SIGSTOP {
		return
	}
	testkit.Eventually(t, waitLong, "the master process stopped", func() error {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			return nil // no /proc: the signal is on its way
		}
		if _, after, _ := strings.Cut(string(stat), ") "); !strings.HasPrefix(after, "T") {
			return errors.New("still running")
		}
		return nil
	})
}

// termOf reads the term in a master session, "m<term>x<random>".
func termOf(session string) uint64 {
	rest, ok := strings.CutPrefix(session, "m")
	if !ok {
		return 0
	}
	n, _, _ := strings.Cut(rest, "x")
	term, _ := strconv.ParseUint(n, 10, 64)
	return term
}

// wiretap records the term of every message any master publishes on the
// fabric's subjects (lf.master.0.>), in the order the broker delivers
// them, and counts those of a term older than one already seen: a master
// acting after its term ended.
type wiretap struct {
	mu      sync.Mutex
	highest uint64
	late    []string // subjects of messages from an ended term
	seen    map[uint64]int
}

func tapMasters(t *testing.T, url string) *wiretap {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w := &wiretap{seen: map[uint64]int{}}
	if _, err := nc.Subscribe("lf.master.0.>", func(m *natsgo.Msg) { w.record(m.Subject) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *wiretap) record(subject string) {
	toks := strings.Split(subject, ".")
	session := ""
	switch {
	case len(toks) > 5 && toks[5] == "_reply":
		if len(toks) == 12 {
			session = toks[11]
		}
	case len(toks) > 6:
		session = toks[6]
	}
	term := termOf(session)
	if term == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen[term]++
	if term < w.highest {
		w.late = append(w.late, subject)
	}
	w.highest = max(w.highest, term)
}

func (w *wiretap) report() (late []string, seen map[uint64]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[uint64]int{}
	for k, v := range w.seen {
		out[k] = v
	}
	return slices.Clone(w.late), out
}

// masterStatus asks the active master who is active and who stands by.
func masterStatus(t *testing.T, l *link.Link) messages.ClusterStatus {
	t.Helper()
	return request(t, l, messages.GetClusterStatus, messages.Empty{})
}

// A second master on the same broker and prefix stands by: it answers
// nothing, the active one lists it; when the active one stops, the
// standby takes over at once (the lease is handed over), in a new term,
// with the state the first one saved, and the controls move to it by
// themselves.
func TestStandbyTakesOverOnClose(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	m2 := startMaster(t, c.url, "*=*")
	if m2.Active() || m2.Slaves() != nil {
		t.Fatal("the second master is active")
	}
	if !c.master.Active() || c.master.Term() == 0 {
		t.Fatal("the first master is not active")
	}
	testkit.Eventually(t, waitLong, "the standby is listed", func() error {
		st := masterStatus(t, c.alice.Link())
		if st.Master.Term != c.master.Term() || len(st.Standbys) != 1 || st.Standbys[0].ID == st.Master.ID {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	psi := request(t, c.alice.Link(), messages.CreateInstance, messages.NewInstance{Name: "psi"}).InstanceID
	term := c.master.Term()

	closeMaster(t, c.master)
	if err := m2.WaitActive(testkit.Ctx(t, waitLong)); err != nil {
		t.Fatalf("the standby did not take over: %v", err)
	}
	if m2.Term() <= term {
		t.Errorf("the new master's term %d, want more than %d", m2.Term(), term)
	}
	waitSlaves(t, m2, reRegisterBound, 1, 2)
	testkit.Eventually(t, waitLong, "alice reaches the new master", func() error {
		list, err := requestErr(t, c.alice.Link(), messages.ListInstances, messages.Empty{})
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(list.Instances, func(i messages.InstanceInfo) bool { return i.ID == psi && i.Name == "psi" }) {
			return fmt.Errorf("instances %+v", list.Instances)
		}
		return nil
	})
	if st := masterStatus(t, c.alice.Link()); st.Master.Term != m2.Term() || len(st.Standbys) != 0 {
		t.Errorf("status after the takeover %+v", st)
	}
}

// A standby takes over within the lease (and its poll) of the active
// master's SIGKILL, with what it had saved; slaves and controls move to
// it by themselves.
func TestStandbyTakesOverAfterKill(t *testing.T) {
	b := startBroker(t)
	url := b.ClientURL()
	active := startMasterProcess(t, url)
	active.waitLog(t, 20*time.Second, "active master")
	standby := startMaster(t, url, "*=*")
	if standby.Active() {
		t.Fatal("the in-process master is active too")
	}
	startSlave(t, url, 1, "11:alpha")
	ctl, _ := dialControl(t, url, "alice")
	testkit.Eventually(t, waitLong, "the slave registered", func() error {
		res, err := requestErr(t, ctl.Link(), messages.ListSlaves, messages.Empty{})
		if err == nil && (len(res.Slaves) != 1 || !res.Slaves[0].Connected) {
			err = fmt.Errorf("slaves %+v", res.Slaves)
		}
		return err
	})
	psi := request(t, ctl.Link(), messages.CreateInstance, messages.NewInstance{Name: "psi"}).InstanceID

	active.signal(t, syscall.SIGKILL)
	killed := time.Now()
	if err := standby.WaitActive(testkit.Ctx(t, takeoverBound)); err != nil {
		t.Fatalf("the standby did not take over within %s: %v", takeoverBound, err)
	}
	testkit.Eventually(t, waitLong, "a request succeeds again", func() error {
		_, err := requestErr(t, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
		return err
	})
	t.Logf("took over %s after the kill; requests succeed again", time.Since(killed).Round(time.Millisecond))
	if got := instanceNames(t, ctl.Link()); got[psi] != "psi" || got[11] != "alpha" {
		t.Errorf("instances after the takeover: %v", got)
	}
}

// The worst case: the active master is paused (SIGSTOP) past its
// lease, a standby takes over, and the old master wakes up. It must never
// act as master again: no message of its term reaches the wire after the
// new term's, it answers nothing, and it stands by.
func TestPausedMasterNeverActsAgain(t *testing.T) {
	b := startBroker(t)
	url := b.ClientURL()
	tap := tapMasters(t, url)
	old := startMasterProcess(t, url)
	old.waitLog(t, 20*time.Second, "active master")
	standby := startMaster(t, url, "*=*")
	s := startSlave(t, url, 1, "11:alpha")
	ctl, _ := dialControl(t, url, "alice")
	waitOK := func(what string) {
		t.Helper()
		testkit.Eventually(t, takeoverBound+waitLong, what, func() error {
			_, err := requestErr(t, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
			if errors.Is(err, &link.Error{Code: fabric.CodeConflict}) {
				return nil // already running
			}
			return err
		})
	}
	waitOK("the first master answers")

	// Requests in flight when it froze: the old master has them, and must
	// not answer them once it wakes.
	old.signal(t, syscall.SIGSTOP)
	var pending sync.WaitGroup
	outcomes := make(chan error, 20)
	for i := range 20 {
		pending.Add(1)
		go func() {
			defer pending.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 4*takeoverBound)
			defer cancel()
			_, err := link.Request(ctx, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: fmt.Sprintf("/say pending %d", i)})
			outcomes <- err
		}()
	}
	if err := standby.WaitActive(testkit.Ctx(t, takeoverBound)); err != nil {
		t.Fatalf("the standby did not take over: %v", err)
	}
	waitOK("the new master answers")
	old.signal(t, syscall.SIGCONT)
	old.waitLog(t, waitLong, "stepping down")
	waitSlaves(t, standby, waitLong, 1)
	for range 10 {
		request(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/players"})
	}
	pending.Wait()
	close(outcomes)
	for err := range outcomes {
		// Each ends once: answered by the new master, or session_lost
		// (it may have run at the old one before it froze).
		if err != nil && !errors.Is(err, link.ErrSessionLost) {
			t.Errorf("a request pending at the paused master ended with %v", err)
		}
	}
	late, seen := tap.report()
	if len(late) > 0 {
		t.Errorf("%d messages from an ended term reached the wire, such as %q", len(late), late[0])
	}
	if len(seen) < 2 {
		t.Errorf("the wiretap saw the terms %v; want two", seen)
	}
	if !s.Connected() {
		t.Error("the slave is not registered")
	}
	testkit.Eventually(t, 3*takeoverBound, "the old master stands by", func() error {
		st := masterStatus(t, ctl.Link())
		if len(st.Standbys) != 1 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// The "failed, then ran": with the lone master paused for longer
// than the peer timeout and its lease, but shorter than the session
// timeout, requests sent meanwhile are not failed: they wait, and are
// answered (each run once) when it resumes, its term intact since no
// other master took over.
func TestRequestsOutlivePausedMaster(t *testing.T) {
	b := startBroker(t)
	url := b.ClientURL()
	m := startMasterProcess(t, url)
	m.waitLog(t, 20*time.Second, "active master")
	startSlave(t, url, 1, "11:alpha")
	ctl, out := dialControl(t, url, "alice")
	testkit.Eventually(t, 20*time.Second, "instance 11 started", func() error {
		_, err := requestErr(t, ctl.Link(), messages.StartInstance, messages.InstanceRef{InstanceID: 11})
		return err
	})
	if err := ctl.Follow(testkit.Ctx(t, waitLong), 11); err != nil {
		t.Fatal(err)
	}

	m.signal(t, syscall.SIGSTOP)
	paused := time.Now()
	results := make(chan error, 5)
	for i := range 5 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := link.Request(ctx, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: fmt.Sprintf("/say held %d", i)})
			results <- err
		}()
	}
	// Longer than the peer timeout and the lease, shorter than the
	// session timeout.
	pause := max(peerTimeout, fabric.DefaultLease) + time.Second
	<-time.After(pause - time.Since(paused))
	m.signal(t, syscall.SIGCONT)
	for range 5 {
		if err := testkit.Recv(t, results, 20*time.Second, "a held request to end"); err != nil {
			t.Errorf("a request sent while the master was paused for %s ended with %v; want its answer", pause, err)
		}
	}
	for i := range 5 {
		line := fmt.Sprintf("[server] held %d", i)
		testkit.Eventually(t, waitLong, "the output of held request", func() error { return out.has(11, line) })
		if n := strings.Count(strings.Join(out.of(11), "\n")+"\n", line+"\n"); n != 1 {
			t.Errorf("%q printed %d times, want once", line, n)
		}
	}
}

// The second report: a master that has just started answers as
// if it knew before its slaves have registered. Now it waits for them
// (a bounded time): right after it starts, list_slaves shows every slave
// connected and a command reaches an instance, and a ban reaches every
// instance.
func TestNewMasterWaitsForItsSlaves(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11, 21)
	closeMaster(t, c.master)
	m2 := startMaster(t, c.url, "*=*")
	ctl, _ := dialControl(t, c.url, "carol")
	slaves := request(t, ctl.Link(), messages.ListSlaves, messages.Empty{}).Slaves
	if len(slaves) != 2 || !slaves[0].Connected || !slaves[1].Connected {
		t.Errorf("list_slaves right after the start: %+v; want both connected", slaves)
	}
	request(t, ctl.Link(), messages.SetPlayerBanned, messages.Ban{Name: "eve", Banned: true, Reason: "r"})
	for _, id := range []int64{11, 21} {
		testkit.Eventually(t, waitLong, "the ban reaches the instance", func() error {
			res, err := requestErr(t, ctl.Link(), messages.SendCommand, messages.Command{InstanceID: id, Command: "/bans"})
			if err == nil && res.Output != "banned: eve" {
				err = fmt.Errorf("/bans = %q", res.Output)
			}
			return err
		})
	}
	waitSlaves(t, m2, waitLong, 1, 2)
}

// A ban broadcast by a new master while a slave's registration with it
// is under way is not undone by the registration's ban list (its
// welcome), which the master composed before the ban was saved, and which
// the slave may apply after the broadcast has arrived: the welcome and the
// broadcast reach the slave by different paths. The registration is held
// between its welcome and the welcome's application until the broadcast
// has reached the slave's link.
func TestBanDuringRegistrationKeptOverTheWelcome(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)
	held := make(chan *link.Link, 1)
	applied := make(chan struct{}, 1)
	release := make(chan struct{})
	c.slave1.HoldRegistrations(func(l *link.Link) {
		select {
		case held <- l:
		default: // a later registration (at the test's end): not held
		}
		<-release
	}, func(*link.Link) {
		select {
		case applied <- struct{}{}:
		default:
		}
	})
	closeMaster(t, c.master)
	startMaster(t, c.url, "*=*")
	l := testkit.Recv(t, held, waitLong, "slave 1's registration with the new master")
	ctl, _ := dialControl(t, c.url, "carol")
	before := l.Stats().Received
	request(t, ctl.Link(), messages.SetPlayerBanned, messages.Ban{Name: "eve", Banned: true, Reason: "r"})
	testkit.WaitFor(t, waitLong, "the ban reaches slave 1's new link", func() bool {
		st := l.Stats()
		return st.Received > before && (st.Handling > 0 || slices.ContainsFunc(c.slave1.Bans(), func(b messages.Ban) bool { return b.Name == "eve" }))
	})
	close(release)
	testkit.Recv(t, applied, waitLong, "slave 1 applying the welcome")
	testkit.Eventually(t, waitLong, "the ban reaches the instance", func() error {
		if bans := c.slave1.Bans(); len(bans) != 1 || bans[0].Name != "eve" {
			return fmt.Errorf("slave 1 holds bans %+v; want eve", bans)
		}
		if out := c.command(t, 11, "/bans"); out != "banned: eve" {
			return fmt.Errorf("/bans = %q", out)
		}
		return nil
	})
}

// The third report: a control that died without a word, while
// another process of the same user lives, does not hold up the master's
// graceful stop.
func TestCloseSkipsDeadControl(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	// A dead control of user alice: a session that sent one request and
	// vanished.
	nc, err := natsgo.Connect(c.url)
	if err != nil {
		t.Fatal(err)
	}
	const dead = "deadbeefdeadbeef"
	inbox := "lf.master.0.control.alice._reply." + dead + ".1.1.5000.1"
	sub, err := nc.SubscribeSync(inbox + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("lf.control.alice.master.0.ping."+dead, inbox, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(waitLong); err != nil {
		t.Fatalf("the master did not answer the soon-dead control: %v", err)
	}
	nc.Close()
	// Until the master finds it silent; alice lives on.
	testkit.WaitFor(t, waitLong, "the master to find the dead control silent", func() bool {
		return c.master.SkipsControlOnClose(dead)
	})
	request(t, c.alice.Link(), messages.Ping, messages.Empty{})

	// Draining the dead control would wait until the deadline (its
	// prepare_disconnect goes unanswered for the request timeout, longer
	// than this): Close must return before it.
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout/2)
	defer cancel()
	if err := c.master.Close(ctx); err != nil {
		t.Logf("Close: %v", err)
	}
	if ctx.Err() != nil {
		t.Errorf("the master's Close ran until its deadline (%s), waiting on a dead control", reqTimeout/2)
	}
}

// The fourth report: a follower is cut off by a master restart.
// Now it follows on by itself, and gets the lines printed while there was
// no master, each once, in order.
func TestFollowerCarriesOverMasterRestart(t *testing.T) {
	links := make(chan *link.Link, 4)
	factory := func(id int64, name string) fabric.Instance {
		return instanceFunc(func(l *link.Link) {
			fabric.SimulatedInstances(id, name).Attach(l)
			if id == 11 {
				links <- l
			}
		})
	}
	c := newCluster(t, clusterConfig{slaveOpts: []fabric.Option{fabric.WithInstanceFactory(factory)}})
	c.start(t, 11)
	inst := testkit.Recv(t, links, waitLong, "instance 11's link")
	if err := c.alice.Follow(testkit.Ctx(t, waitLong), 11); err != nil {
		t.Fatal(err)
	}
	say := func(text string) {
		t.Helper()
		if err := link.Emit(testkit.Ctx(t, waitLong), inst, messages.InstanceOutput,
			messages.OutputLine{InstanceID: 11, Time: time.Now().UnixMilli(), Level: "info", Message: text}); err != nil {
			t.Fatal(err)
		}
	}
	say("before")
	testkit.Eventually(t, waitLong, "the line before", func() error { return c.aliceOut.has(11, "before") })

	closeMaster(t, c.master)
	for i := range 5 {
		say(fmt.Sprintf("between %d", i))
	}
	m2 := startMaster(t, c.url, "*=*")
	waitSlaves(t, m2, reRegisterBound, 1, 2)
	testkit.Eventually(t, waitLong, "the lines printed while there was no master", func() error {
		return c.aliceOut.has(11, "between 4")
	})
	say("after")
	testkit.Eventually(t, waitLong, "the line after", func() error { return c.aliceOut.has(11, "after") })
	var got []string
	for _, l := range c.aliceOut.of(11) {
		if l == "before" || l == "after" || strings.HasPrefix(l, "between") {
			got = append(got, l)
		}
	}
	want := []string{"before", "between 0", "between 1", "between 2", "between 3", "between 4", "after"}
	if !slices.Equal(got, want) {
		t.Errorf("alice followed %q, want %q", got, want)
	}
}

// A control follows on with the next master what it followed, except an
// instance deleted meanwhile: the master refuses to follow what does not
// exist, and the control drops it rather than ask for ever, and follows
// the rest.
func TestFollowerForgetsDeletedInstance(t *testing.T) {
	c := newCluster(t, clusterConfig{})
	c.start(t, 11)
	if err := c.alice.Follow(testkit.Ctx(t, waitLong), 11, 21); err != nil {
		t.Fatal(err)
	}
	request(t, c.bob.Link(), messages.DeleteInstance, messages.InstanceRef{InstanceID: 21})

	closeMaster(t, c.master)
	m2 := startMaster(t, c.url, "*=*")
	waitSlaves(t, m2, reRegisterBound, 1, 2)
	testkit.Eventually(t, waitLong, "alice follows instance 11 on the new master", func() error {
		if _, err := requestErr(t, c.bob.Link(), messages.SendCommand, messages.Command{InstanceID: 11, Command: "/say after"}); err != nil {
			return err
		}
		return c.aliceOut.has(11, "[server] after")
	})
}
