package testkit

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// ProcessAlive reports whether process pid runs (a zombie does not), from
// /proc.
func ProcessAlive(t testing.TB, pid int) bool {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if os.IsNotExist(err) {
		return false
	}
	NoErr(t, err, "read the process's state")
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z")
}
