//go:build unix

package fabric

import (
	"os"
	"syscall"
)

// processGroup puts a program in a process group of its own, so that
// stopping it stops the processes it started too.
func processGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// signalGroup sends the process group that p leads SIGTERM, or SIGKILL if
// kill is set. A group that has gone is no error.
func signalGroup(p *os.Process, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-p.Pid, sig)
}
