package fabric

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/linkfabric/linkfabric/link"
	"github.com/linkfabric/linkfabric/messages"
)

// How a program instance answers send_command: it writes the command and a
// newline to the program's standard input, then takes as the answer the
// lines the program prints (standard output and standard error) from then
// until it has been quiet for replyQuiet, waiting at most replyFirst for
// the first line and replyTotal in all. A program's output carries no
// marker of which input it answers, so this is a guess that holds for a
// program that answers each line promptly and prints little else: the
// lines are in the instance's output whatever the answer holds.
const (
	replyFirst = 2 * time.Second
	replyQuiet = 250 * time.Millisecond
	replyTotal = 5 * time.Second
	// maxReplyLines bounds an answer; further lines are in the output only.
	maxReplyLines = 1000
	// maxLineBytes bounds one line of output: the rest of a longer line is
	// cut, and the line says so.
	maxLineBytes = 8192
	// drainBound bounds how long, after a program exited, its output is
	// read for what it printed last; its process group has been killed, so
	// only a process that left the group can keep a pipe open longer.
	drainBound = 2 * time.Second
	// stdinBound bounds a write to the program's standard input: a program
	// that does not read it fills the pipe.
	stdinBound = 5 * time.Second
)

// programInstance is an instance that runs a program (messages.Program) on
// its slave, in a process group of its own: start_instance starts it,
// stop_instance sends the group SIGTERM and, after the slave's stop
// timeout, SIGKILL; every line it prints is an instance_output (standard
// output at level info, standard error at warn); send_command writes a
// line to its standard input (see replyFirst). An exit that nobody asked
// for is reported as instance_stopped, with the exit status in an
// instance_output line at level error. The slave checks its allow-list
// before it makes one.
type programInstance struct {
	id          int64
	name        string
	program     messages.Program
	stopTimeout time.Duration
	log         *slog.Logger
	l           *link.Link

	// life ends when Close begins: it bounds what the goroutines send.
	life    context.Context
	endLife context.CancelFunc
	// routines are the goroutines of the running program: its waiter and
	// the readers of its standard output and error. Close waits for them.
	routines routines

	mu     sync.Mutex
	proc   *process // nil while no program runs
	closed bool

	// commands lets one command at a time wait for its answer, so that
	// answers do not mix.
	commands sync.Mutex
}

// process is one run of the program.
type process struct {
	cmd   *exec.Cmd
	stdin *os.File
	// exited is closed once the exit has been reported and the instance
	// may start the program again.
	exited chan struct{}
	// Under the instance's mu:
	stopping bool        // its exit was asked for
	reply    chan string // the lines for the command waiting for its answer
}

func newProgramInstance(id int64, name string, program messages.Program, stopTimeout time.Duration, log *slog.Logger) *programInstance {
	p := &programInstance{id: id, name: name, program: program, stopTimeout: stopTimeout, log: log}
	p.life, p.endLife = context.WithCancel(context.Background())
	return p
}

func (p *programInstance) Attach(l *link.Link) {
	p.l = l
	link.HandleRequest(l, messages.StartInstance, p.start)
	link.HandleRequest(l, messages.StopInstance, p.stop)
	link.HandleRequest(l, messages.SendCommand, p.command)
	link.HandleEvent(l, messages.BanlistUpdate, func(context.Context, messages.Ban) error { return nil })
}

func (p *programInstance) print(ctx context.Context, level, text string) error {
	return link.Emit(ctx, p.l, messages.InstanceOutput, messages.OutputLine{
		InstanceID: p.id, Time: time.Now().UnixMilli(), Level: level, Message: text,
	})
}

func (p *programInstance) notRunning() error {
	return notRunning(p.id, p.name)
}

func (p *programInstance) start(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
	// Spawned under mu, with closed checked: Close sees either no program
	// or this one.
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		return messages.Empty{}, link.Errorf(CodeSlaveShuttingDown, "instance %d (%s) was not started: its slave is shutting down", p.id, p.name)
	case p.proc != nil:
		p.mu.Unlock()
		return messages.Empty{}, link.Errorf(CodeConflict, "instance %d (%s) is already running", p.id, p.name)
	}
	proc, stdout, stderr, err := p.spawn()
	if err != nil {
		p.mu.Unlock()
		return messages.Empty{}, link.Errorf(CodeProgramFailed, "instance %d (%s): %s did not start: %v", p.id, p.name, p.program.Command, err)
	}
	p.proc = proc
	p.mu.Unlock()
	_ = p.print(ctx, "info", fmt.Sprintf("started %s (pid %d)", p.program.Command, proc.cmd.Process.Pid))
	err = link.Emit(ctx, p.l, messages.InstanceStarted, messages.InstanceRef{InstanceID: p.id})
	// What it printed meanwhile waits in the pipes: its lines come after
	// instance_started.
	read := make(chan struct{}, 2) // a token from each reader as it ends
	for _, r := range []struct {
		f     *os.File
		level string
	}{{stdout, "info"}, {stderr, "warn"}} {
		if !p.routines.start(func() { p.read(proc, r.f, r.level); read <- struct{}{} }) {
			_ = r.f.Close()
			read <- struct{}{}
		}
	}
	if !p.routines.start(func() { p.wait(proc, read, stdout, stderr) }) {
		// Close has waited for the goroutines already, and nothing else
		// waits for this program: end it here.
		signalGroup(proc.cmd.Process, true)
		_ = proc.cmd.Wait()
		close(proc.exited)
	}
	return messages.Empty{}, err
}

// spawn starts the program in a process group of its own, and returns it
// with the read ends of its standard output and error.
func (p *programInstance) spawn() (*process, *os.File, *os.File, error) {
	if p.program.Dir != "" {
		// Else exec says the program is missing.
		if _, err := os.Stat(p.program.Dir); err != nil {
			return nil, nil, nil, fmt.Errorf("its working directory: %w", err)
		}
	}
	cmd := exec.Command(p.program.Command, p.program.Args...)
	cmd.Dir = p.program.Dir
	cmd.Env = programEnviron(os.Environ())
	cmd.SysProcAttr = processGroup()
	var files []*os.File // every end of the pipes, closed on failure
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err1 := pipe()
	outR, outW, err2 := pipe()
	errR, errW, err3 := pipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		closeAll(files)
		return nil, nil, nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll(files)
		return nil, nil, nil, err
	}
	// The program holds its ends now.
	closeAll([]*os.File{inR, outW, errW})
	return &process{cmd: cmd, stdin: inW, exited: make(chan struct{})}, outR, errR, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// programEnviron is the environment a program gets: the slave's, without
// the FABRIC_* variables, which hold the slave's NATS credentials.
func programEnviron(environ []string) []string {
	return slices.DeleteFunc(slices.Clone(environ), func(kv string) bool { return strings.HasPrefix(kv, "FABRIC_") })
}

// read makes each line of f an instance_output at level, until f ends,
// and passes it to the command waiting for its answer, if any.
func (p *programInstance) read(proc *process, f *os.File, level string) {
	defer func() { _ = f.Close() }()
	br := bufio.NewReaderSize(f, maxLineBytes)
	for {
		line, err := br.ReadSlice('\n')
		text := strings.ToValidUTF8(strings.TrimRight(string(line), "\r\n"), "\uFFFD")
		if errors.Is(err, bufio.ErrBufferFull) {
			// text is valid UTF-8: cut it at the start of a character.
			if n := maxLineBytes - 64; len(text) > n {
				for n > 0 && !utf8.RuneStart(text[n]) {
					n--
				}
				text = text[:n]
			}
			text += fmt.Sprintf(" [line cut at %d bytes]", maxLineBytes)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n') // the rest of the line
			}
		}
		if len(line) > 0 {
			p.output(proc, level, text)
		}
		if err != nil {
			return
		}
	}
}

// output passes on one line the program printed.
func (p *programInstance) output(proc *process, level, text string) {
	if err := p.print(p.life, level, text); err != nil {
		p.log.Debug("a line of the program's output not passed on", "instance", p.id, "error", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if proc.reply != nil {
		select {
		case proc.reply <- text:
		default: // the answer is full; the line is in the output
		}
	}
}

// wait waits for the program to exit, kills what it left in its process
// group, reads what it printed last, and reports the exit: as output, and
// as instance_stopped if nobody asked for it.
func (p *programInstance) wait(proc *process, read <-chan struct{}, stdout, stderr *os.File) {
	err := proc.cmd.Wait()
	signalGroup(proc.cmd.Process, true)
	_ = proc.stdin.Close()
	drain := time.NewTimer(drainBound)
	defer drain.Stop()
	for ended := 0; ended < 2; {
		select {
		case <-read:
			ended++
		case <-drain.C:
			// A process that left the group holds a pipe open: stop
			// reading, which ends the readers.
			_ = stdout.Close()
			_ = stderr.Close()
		}
	}
	status := proc.cmd.ProcessState.String()
	if proc.cmd.ProcessState == nil {
		status = err.Error()
	}
	p.mu.Lock()
	asked := proc.stopping
	p.mu.Unlock()
	if asked {
		_ = p.print(p.life, "info", fmt.Sprintf("%s exited (%s)", p.program.Command, status))
	} else {
		_ = p.print(p.life, "error", fmt.Sprintf("%s exited unexpectedly (%s)", p.program.Command, status))
		if err := link.Emit(p.life, p.l, messages.InstanceStopped, messages.InstanceRef{InstanceID: p.id}); err != nil {
			p.log.Warn("an instance's program exited, and its slave was not told", "instance", p.id, "error", err)
		}
	}
	p.mu.Lock()
	if p.proc == proc {
		p.proc = nil
	}
	p.mu.Unlock()
	close(proc.exited)
}

// halt asks the program to exit (SIGTERM to its process group) and kills
// the group if it has not within the stop timeout or before ctx ends; it
// returns once the exit has been reported.
func (p *programInstance) halt(ctx context.Context, proc *process) {
	signalGroup(proc.cmd.Process, false)
	t := time.NewTimer(p.stopTimeout)
	defer t.Stop()
	select {
	case <-proc.exited:
		return
	case <-t.C:
		_ = p.print(p.life, "warn", fmt.Sprintf("%s did not exit within %s of SIGTERM: killing it", p.program.Command, p.stopTimeout))
	case <-ctx.Done():
	}
	signalGroup(proc.cmd.Process, true)
	<-proc.exited // within drainBound of the kill
}

func (p *programInstance) stop(ctx context.Context, _ messages.InstanceRef) (messages.Empty, error) {
	p.mu.Lock()
	proc := p.proc
	if proc == nil {
		p.mu.Unlock()
		return messages.Empty{}, p.notRunning()
	}
	if proc.stopping {
		p.mu.Unlock()
		return messages.Empty{}, link.Errorf(CodeConflict, "instance %d (%s) is stopping already", p.id, p.name)
	}
	proc.stopping = true
	p.mu.Unlock()
	_ = p.print(ctx, "info", fmt.Sprintf("stopping %s (SIGTERM)", p.program.Command))
	p.halt(ctx, proc)
	// Not bounded by ctx, which may have ended the wait: the program has
	// exited, and the slave must hear it whatever the requester does.
	return messages.Empty{}, link.Emit(p.life, p.l, messages.InstanceStopped, messages.InstanceRef{InstanceID: p.id})
}

func (p *programInstance) command(ctx context.Context, c messages.Command) (messages.CommandResult, error) {
	if strings.ContainsAny(c.Command, "\r\n") {
		return messages.CommandResult{}, link.Errorf(CodeInvalidCommand, "a command for instance %d (%s) is one line: it holds a line break", p.id, p.name)
	}
	p.commands.Lock()
	defer p.commands.Unlock()
	p.mu.Lock()
	proc := p.proc
	if proc == nil || proc.stopping {
		p.mu.Unlock()
		return messages.CommandResult{}, p.notRunning()
	}
	reply := make(chan string, maxReplyLines)
	proc.reply = reply
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		proc.reply = nil
		p.mu.Unlock()
	}()
	_ = p.print(ctx, "info", "> "+c.Command)
	_ = proc.stdin.SetWriteDeadline(time.Now().Add(stdinBound))
	if _, err := io.WriteString(proc.stdin, c.Command+"\n"); err != nil {
		select {
		case <-proc.exited:
			return messages.CommandResult{}, p.notRunning()
		default:
		}
		return messages.CommandResult{}, link.Errorf(CodeProgramFailed, "instance %d (%s): the command was not written to %s's standard input: %v", p.id, p.name, p.program.Command, err)
	}
	var lines []string
	total := time.NewTimer(replyTotal)
	defer total.Stop()
	quiet := time.NewTimer(replyFirst)
	defer quiet.Stop()
	for len(lines) < maxReplyLines {
		select {
		case line := <-reply:
			lines = append(lines, line)
			quiet.Reset(replyQuiet)
			continue
		case <-quiet.C:
		case <-total.C:
		case <-proc.exited:
		case <-ctx.Done():
		}
		break
	}
	return messages.CommandResult{Output: strings.Join(lines, "\n")}, nil
}

// Close kills the program if it runs (SIGTERM, then SIGKILL after the
// stop timeout or when ctx ends) and waits for the instance's goroutines.
// The slave calls it once the instance's link has closed.
func (p *programInstance) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	proc := p.proc
	if proc != nil {
		proc.stopping = true
	}
	p.mu.Unlock()
	p.endLife() // the link has closed: nothing more is sent
	if proc != nil {
		p.halt(ctx, proc)
	}
	p.routines.stop()
	return nil
}
