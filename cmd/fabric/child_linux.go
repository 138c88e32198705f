package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes cmd's process get SIGTERM when this one ends, so
// that a bench stopped by force leaves no child behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
