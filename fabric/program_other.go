//go:build !unix

package fabric

import (
	"os"
	"syscall"
)

// processGroup: without Unix process groups, a program is a process of
// its own.
func processGroup() *syscall.SysProcAttr { return nil }

// signalGroup kills p: there is no signal to ask it to exit, nor a group
// to signal.
func signalGroup(p *os.Process, _ bool) { _ = p.Kill() }
