package natscluster

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// modulePath is the module whose deploy/ this package runs.
const modulePath = "github.com/linkfabric/linkfabric"

// repoRoot finds the repository: up from this file's directory, or, in a
// binary built with -trimpath, up from the working directory (go test
// runs a test in its package's directory).
func repoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			if isRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("cannot find the %s repository (a go.mod for it, with deploy/cluster.sh) above %q", modulePath, starts)
}

func isRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); strings.HasPrefix(line, "module ") {
			if strings.TrimSpace(strings.TrimPrefix(line, "module ")) != modulePath {
				return false
			}
			_, err := os.Stat(filepath.Join(dir, "deploy", "cluster.sh"))
			return err == nil
		}
	}
	return false
}

// build is the nats-server binary of this process, built once.
var build struct {
	once sync.Once
	path string
	err  error
}

// serverBinary returns the nats-server to run: LF_NATS_SERVER if set,
// otherwise the one `cluster.sh build` keeps up to date in the user's
// cache directory (built from the version go.mod pins, renamed into place
// so that parallel test processes never run half a binary).
func serverBinary(root string) (string, error) {
	build.once.Do(func() {
		if p := os.Getenv("LF_NATS_SERVER"); p != "" {
			build.path = p
			return
		}
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = filepath.Join(os.TempDir(), "linkfabric-"+strconv.Itoa(os.Getuid()))
		}
		env := append(baseEnv(), "LF_CLUSTER_BIN="+filepath.Join(dir, "linkfabric", "bin"))
		out, err := runScript(filepath.Join(root, "deploy", "cluster.sh"), env, buildTimeout, "build")
		if err != nil {
			build.err = fmt.Errorf("building nats-server: %w\n%s", err, out)
			return
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		build.path = strings.TrimSpace(lines[len(lines)-1])
		if fi, err := os.Stat(build.path); err != nil || fi.IsDir() {
			build.err = fmt.Errorf("building nats-server: no binary at %q:\n%s", build.path, out)
		}
	})
	return build.path, build.err
}

// clusterPorts are the first ports of a cluster; node i uses the first
// port plus i-1 of each.
type clusterPorts struct {
	client, route, http int
}

var (
	portsMu sync.Mutex
	// handedOut holds every port given to a cluster of this process, so
	// that two clusters never share one, even while a node is down.
	handedOut = map[int]bool{}
)

// pickPorts picks three runs of three consecutive free loopback ports.
// It picks them below the kernel's ephemeral range where it can: the
// ports of outgoing connections come from that range, and one of them
// could otherwise take a killed node's port before the node restarts.
func pickPorts() (clusterPorts, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	lo, hi := portRange()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	var bases []int
	for attempt := 0; len(bases) < 3 && attempt < 200; attempt++ {
		base, err := candidate(lo, hi)
		if err != nil {
			return clusterPorts{}, err
		}
		ls, ok := listenRun(base)
		if !ok {
			continue
		}
		held = append(held, ls...)
		bases = append(bases, base)
	}
	if len(bases) < 3 {
		return clusterPorts{}, errors.New("cannot find free loopback ports for a cluster")
	}
	for _, b := range bases {
		for p := b; p < b+Nodes; p++ {
			handedOut[p] = true
		}
	}
	return clusterPorts{client: bases[0], route: bases[1], http: bases[2]}, nil
}

// candidate returns a first port to try: random in [lo, hi), or, with no
// such range, one the kernel picks.
func candidate(lo, hi int) (int, error) {
	if hi-lo >= 1000 {
		return lo + rand.IntN(hi-lo-Nodes), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// listenRun listens on base and the ports after it, one per node; ok is
// false, and nothing is held, unless every one is free.
func listenRun(base int) ([]net.Listener, bool) {
	var ls []net.Listener
	for p := base; p < base+Nodes; p++ {
		var l net.Listener
		var err error
		if !handedOut[p] && p <= 65535 {
			l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		}
		if handedOut[p] || p > 65535 || err != nil {
			for _, l := range ls {
				_ = l.Close()
			}
			return nil, false
		}
		ls = append(ls, l)
	}
	return ls, true
}

// portRange is where pickPorts looks: from 10000 up to the start of the
// kernel's ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range;
// elsewhere 20000 to 32768).
func portRange() (lo, hi int) {
	lo, hi = 20000, 32768
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return lo, hi
	}
	ephemeral, err := strconv.Atoi(f[0])
	if err != nil {
		return lo, hi
	}
	return 10000, ephemeral
}
