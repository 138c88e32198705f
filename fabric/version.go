package fabric

import "runtime/debug"

// Commit returns the source revision the running program was built from,
// as the Go toolchain stamped it (a build inside a git checkout), with
// "+modified" if the tree had uncommitted changes; "unknown" where nothing
// was stamped, as under go run.
func Commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, modified := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case modified:
		return rev + "+modified"
	}
	return rev
}
