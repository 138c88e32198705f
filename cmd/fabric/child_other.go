//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing here: the child's standard input closing is
// its only sign that the parent has gone.
func dieWithParent(*exec.Cmd) {}
