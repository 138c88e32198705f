#!/usr/bin/env bash
# cluster.sh runs a three-node NATS cluster on 127.0.0.1 from the node
# configs in deploy/nats, with the nats-server version that go.mod pins,
# for trying Linkfabric on a cluster and for tests that break one.
#
# Usage: deploy/cluster.sh COMMAND [ARGS]
#
#   start [DIR]          build nats-server if needed, start the three nodes
#                        with their files in DIR, wait until every node
#                        accepts clients, routes to the other two and has
#                        JetStream ready, and print FABRIC_NATS_URL=...
#                        (the three client URLs)
#   stop [DIR]           stop the nodes: SIGTERM, then SIGKILL if one is
#                        still running after LF_CLUSTER_STOP_TIMEOUT
#   status [DIR]         one line per node and the FABRIC_NATS_URL line;
#                        exit status 1 unless all three are up and routed
#   wait [DIR]           wait until every node that runs and is not frozen
#                        accepts clients and routes to the others that are
#   restart-node N [DIR] stop node N (1-3) if it runs, start it again, and
#                        wait until it has rejoined
#   kill-node N [DIR]    SIGKILL node N and wait until it is gone
#   freeze-node N [DIR]  SIGSTOP node N: it holds its connections but
#                        answers nothing, like a hung machine
#   thaw-node N [DIR]    SIGCONT node N
#   build                build nats-server if needed; print its path
#
# DIR defaults to $LF_CLUSTER_DIR, or .cluster in the repository (ignored
# by git). It holds conf/ (the configs the nodes run), node1..node3/ (each
# node's pid file, logs and JetStream store) and cluster.env (the ports,
# for later commands).
#
# Environment. start reads the ports, files and binary, and later commands
# use what it recorded; the timeouts apply to every command. Variables that
# the configs read as $NAME (passwords) must be set for start and
# restart-node alike.
#
#   LF_CLUSTER_CLIENT_PORT  first client port, 4222: nodes use 4222-4224
#   LF_CLUSTER_ROUTE_PORT   first cluster (route) port, 6222: 6222-6224
#   LF_CLUSTER_HTTP_PORT    first monitoring port, 8222: 8222-8224
#   LF_CLUSTER_AUTH_FILE    the nodes' auth.conf (such as the output of
#                           `fabric nats-config`); default deploy/nats/auth.conf
#   LF_CLUSTER_TLS_FILE     a tls.conf (see deploy/nats/tls.conf.example)
#                           the nodes include; default none (no TLS)
#   LF_CLUSTER_TIMEOUT      seconds to wait for the cluster to form, 30
#                           (start, wait, restart-node)
#   LF_CLUSTER_STOP_TIMEOUT seconds to wait after SIGTERM, 10
#   LF_CLUSTER_BIN          where nats-server is built, bin/ in the repository
#   LF_NATS_SERVER          a nats-server binary to use instead of building
#   LF_CLUSTER_WATCH_PID    if set, the cluster is stopped when that process
#                           ends (tests pass their own pid, so a test that
#                           dies does not leave nodes behind)
#
# The listen addresses, server names, timings and the rest come from
# deploy/nats/node*.conf; the ports and routes are given to nats-server on
# its command line, which overrides the files.
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_SRC=$REPO/deploy/nats
NATS_MODULE=github.com/nats-io/nats-server/v2
NODES=(1 2 3)

die() {
	echo "cluster.sh: $*" >&2
	exit 1
}

say() {
	echo "cluster.sh: $*" >&2
}

# usage STATUS: the usage (the comment at the top), then exit STATUS.
usage() {
	sed -n '/^# Usage:/,/^# its command line/p' "$SELF" | sed 's/^# \{0,1\}//'
	exit "$1"
}

# uint NAME VALUE: VALUE must be a positive integer.
uint() {
	[[ $2 =~ ^[1-9][0-9]{0,5}$ ]] || die "$1=$2: want a positive integer"
}

# port NAME VALUE: VALUE must be a port with room for three nodes.
port() {
	if ! [[ $2 =~ ^[1-9][0-9]{0,4}$ ]] || (($2 > 65533)); then
		die "$1=$2: want a port between 1 and 65533"
	fi
}

# ---- nats-server ---------------------------------------------------------

# server_path prints the nats-server binary to run, building it from the
# module go.mod pins unless an up-to-date build is already there.
server_path() {
	if [[ -n ${LF_NATS_SERVER:-} ]]; then
		[[ -f $LF_NATS_SERVER && -x $LF_NATS_SERVER ]] || die "LF_NATS_SERVER=$LF_NATS_SERVER: not an executable file"
		echo "$(cd "$(dirname "$LF_NATS_SERVER")" && pwd)/$(basename "$LF_NATS_SERVER")"
		return
	fi
	command -v go >/dev/null || die "go not found: install Go, or set LF_NATS_SERVER to a nats-server binary"
	local bin=${LF_CLUSTER_BIN:-$REPO/bin} want have tmp
	want=$(cd "$REPO" && go list -m -f '{{.Version}}' "$NATS_MODULE") || die "cannot read the $NATS_MODULE version from go.mod"
	mkdir -p "$bin"
	bin=$(cd "$bin" && pwd)
	if [[ -x $bin/nats-server ]]; then
		have=$("$bin/nats-server" --version 2>/dev/null || true)
		if [[ $have == "nats-server: $want" ]]; then
			echo "$bin/nats-server"
			return
		fi
	fi
	say "building nats-server $want into $bin (the first build takes a minute)"
	# Build under a temporary name and rename it into place, so that
	# concurrent builds (parallel test packages) never see half a binary.
	tmp=$bin/.nats-server.$$
	local limit=()
	if command -v timeout >/dev/null; then
		limit=(timeout 600)
	fi
	if ! (cd "$REPO" && ${limit[@]+"${limit[@]}"} go build -o "$tmp" "$NATS_MODULE") >&2; then
		rm -f "$tmp"
		die "building $NATS_MODULE $want failed"
	fi
	mv -f "$tmp" "$bin/nats-server"
	echo "$bin/nats-server"
}

# ---- the run directory ---------------------------------------------------

RUN=
CLIENT_PORT=
ROUTE_PORT=
HTTP_PORT=
SERVER=

# set_dir DIR [create]: the run directory, made absolute; start creates
# it, the other commands only look.
set_dir() {
	local dir=${1:-${LF_CLUSTER_DIR:-$REPO/.cluster}}
	[[ -n $dir ]] || die "empty run directory"
	if [[ ${2:-} == create ]]; then
		mkdir -p "$dir"
	fi
	if [[ -d $dir ]]; then
		RUN=$(cd "$dir" && pwd)
	else
		RUN=$dir
	fi
}

# load: the ports and binary that start recorded in the run directory.
load() {
	[[ -f $RUN/cluster.env ]] || die "no cluster in $RUN (run: $0 start $RUN)"
	# shellcheck source=/dev/null
	. "$RUN/cluster.env"
	[[ -n $CLIENT_PORT && -n $ROUTE_PORT && -n $HTTP_PORT && -n $SERVER ]] || die "$RUN/cluster.env is incomplete"
}

client_port() { echo $((CLIENT_PORT + $1 - 1)); }
route_port() { echo $((ROUTE_PORT + $1 - 1)); }
http_port() { echo $((HTTP_PORT + $1 - 1)); }

urls() {
	local n out=
	for n in "${NODES[@]}"; do
		out=${out:+$out,}nats://127.0.0.1:$(client_port "$n")
	done
	echo "$out"
}

node_no() {
	[[ ${1:-} =~ ^[123]$ ]] || die "node: want 1, 2 or 3, not '${1:-}'"
}

# ---- processes -----------------------------------------------------------

# pid_of N: node N's pid, from the file this script keeps. Not from the
# server's own pid_file: the server rewrites that one as it starts, and a
# read between its truncation and its write would find a running node dead.
pid_of() {
	local f=$RUN/node$1/cluster.pid
	[[ -f $f ]] && tr -dc '0-9' <"$f"
	return 0
}

# is_server PID: the process exists, is not a zombie, and runs $SERVER
# (pids are reused; this script never signals a stranger).
is_server() {
	local pid=$1 state cmd
	if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
		return 1
	fi
	if [[ -r /proc/$pid/stat ]]; then
		state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1) || return 1
		[[ $state != Z && $state != X ]] || return 1
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	elif command -v ps >/dev/null; then
		cmd=$(ps -o command= -p "$pid" 2>/dev/null) || return 1
	else
		return 0
	fi
	[[ $cmd == "$SERVER "* ]]
}

alive() {
	is_server "$(pid_of "$1")"
}

frozen() {
	[[ -f $RUN/node$1/frozen ]]
}

# check_conf N: nats-server accepts node N's config (as nats-server -t).
check_conf() {
	local out
	out=$("$SERVER" -t -c "$RUN/conf/node$1.conf" 2>&1) || die "$RUN/conf/node$1.conf: $out"
}

# start_node N: runs node N in the background, in the run directory, so
# that the relative paths in its config land in RUN/nodeN.
start_node() {
	local n=$1 routes= m pid
	for m in "${NODES[@]}"; do
		routes=${routes:+$routes,}nats://127.0.0.1:$(route_port "$m")
	done
	mkdir -p "$RUN/node$n"
	rm -f "$RUN/node$n/frozen"
	# Output goes to a file, never to the caller's stdout or stderr: a
	# caller that reads them (a test) would otherwise wait for the node.
	(cd "$RUN" && exec "$SERVER" -c "$RUN/conf/node$n.conf" \
		-p "$(client_port "$n")" -m "$(http_port "$n")" \
		--cluster "nats://127.0.0.1:$(route_port "$n")" --routes "$routes") \
		</dev/null >>"$RUN/node$n/stdout.log" 2>&1 &
	pid=$!
	echo "$pid" >"$RUN/node$n/cluster.pid"
	# Until the subshell has exec'd, the pid is not yet the server's.
	local deadline=$((SECONDS + 5))
	while ! is_server "$pid" && kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
		sleep 0.01
	done
}

# signal_node N SIGNAL: sends SIGNAL to node N if it runs.
signal_node() {
	local pid
	pid=$(pid_of "$1")
	if is_server "$pid"; then
		kill -s "$2" "$pid" 2>/dev/null || true
	fi
}

# wait_gone SECONDS N...: waits until none of the nodes runs; 1 if some
# still does after SECONDS.
wait_gone() {
	local deadline=$((SECONDS + $1)) n busy
	shift
	while :; do
		busy=
		for n in "$@"; do
			if alive "$n"; then busy=1; fi
		done
		[[ -z $busy ]] && return 0
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# stop_nodes N...: SIGTERM (and SIGCONT, for a frozen node), then SIGKILL
# after LF_CLUSTER_STOP_TIMEOUT.
stop_nodes() {
	local n grace=${LF_CLUSTER_STOP_TIMEOUT:-10}
	uint LF_CLUSTER_STOP_TIMEOUT "$grace"
	for n in "$@"; do
		signal_node "$n" TERM
		signal_node "$n" CONT
	done
	if ! wait_gone "$grace" "$@"; then
		for n in "$@"; do
			if alive "$n"; then
				say "node$n did not stop within ${grace}s of SIGTERM; sending SIGKILL"
				signal_node "$n" KILL
			fi
		done
		wait_gone 5 "$@" || die "a node survived SIGKILL"
	fi
	for n in "$@"; do
		rm -f "$RUN/node$n/frozen"
	done
}

# ---- probes --------------------------------------------------------------

# accepts PORT: a NATS server on 127.0.0.1:PORT greets a new connection
# with INFO within 2 seconds. Pure bash, so nothing else is needed.
accepts() (
	{ exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || exit 1
	IFS= read -r -t 2 line <&3 || exit 1
	[[ $line == INFO* ]]
)

# http_get PORT PATH: the body of a monitoring endpoint, each line within
# 2 seconds.
http_get() (
	{ exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || exit 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
	body= line=
	while IFS= read -r -t 2 line <&3 || [[ -n $line ]]; do
		line=${line%$'\r'}
		if [[ -n $body ]]; then
			printf '%s\n' "$line"
		elif [[ -z $line ]]; then
			body=1
		fi
		line=
	done
)

# peers N: how many other servers node N has routes to (the route pool
# makes several connections to each, so count distinct names).
peers() {
	local json
	json=$(http_get "$(http_port "$1")" /routez) || {
		echo -1
		return
	}
	printf '%s\n' "$json" | { grep -o '"remote_name": *"[^"]*"' || true; } | sort -u | wc -l | tr -d ' '
}

# js_current N: node N's JetStream runs and is current with the cluster's
# meta leader (the master's buckets can be created and written).
js_current() {
	local health jsz
	# Read whole, then match: grep -q would stop reading early, and the
	# writer's SIGPIPE fail the pipeline (pipefail).
	health=$(http_get "$(http_port "$1")" '/healthz?js-server-only=true') || return 1
	jsz=$(http_get "$(http_port "$1")" /jsz) || return 1
	[[ $health =~ \"status\":\ *\"ok\" && $jsz =~ \"leader\":\ *\"[^\"] ]]
}

# healthy: returns 1 (and says why in WHY) unless every node that runs and
# is not frozen accepts clients and routes to all the other such nodes, and
# to no others. A node in MUST_RUN that does not run sets FAILED.
MUST_RUN=
FAILED=
healthy() {
	local n up=() want got problem=
	FAILED=
	for n in "${NODES[@]}"; do
		if alive "$n"; then
			frozen "$n" || up+=("$n")
		elif [[ " $MUST_RUN " == *" $n "* ]]; then
			FAILED=$n
			return 1
		fi
	done
	((${#up[@]} > 0)) || {
		WHY="no node is running"
		return 1
	}
	want=$((${#up[@]} - 1))
	for n in "${up[@]}"; do
		if ! accepts "$(client_port "$n")"; then
			problem="node$n does not accept clients yet"
			break
		fi
		got=$(peers "$n")
		if [[ $got != "$want" ]]; then
			problem="node$n routes to $got of $want other nodes"
			break
		fi
		if ! js_current "$n"; then
			problem="node$n's JetStream has no meta leader yet"
			break
		fi
	done
	WHY=$problem
	[[ -z $problem ]]
}

# wait_healthy: polls healthy until LF_CLUSTER_TIMEOUT.
WHY=
wait_healthy() {
	local limit=${LF_CLUSTER_TIMEOUT:-30} deadline
	uint LF_CLUSTER_TIMEOUT "$limit"
	deadline=$((SECONDS + limit))
	while ! healthy; do
		if [[ -n $FAILED ]]; then
			say "node$FAILED exited:"
			logs "$FAILED"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			say "not ready within ${limit}s: $WHY"
			logs "${NODES[@]}"
			return 1
		fi
		sleep 0.1
	done
}

# logs N...: the last lines of the nodes' logs, on stderr.
logs() {
	local n f
	for n in "$@"; do
		for f in "$RUN/node$n/nats-server.log" "$RUN/node$n/stdout.log"; do
			if [[ -s $f ]]; then
				echo "--- $f (last lines)" >&2
				tail -n 8 "$f" >&2
			fi
		done
	done
}

# ---- commands ------------------------------------------------------------

cmd_start() {
	local n
	port LF_CLUSTER_CLIENT_PORT "${LF_CLUSTER_CLIENT_PORT:-4222}"
	port LF_CLUSTER_ROUTE_PORT "${LF_CLUSTER_ROUTE_PORT:-6222}"
	port LF_CLUSTER_HTTP_PORT "${LF_CLUSTER_HTTP_PORT:-8222}"
	set_dir "${1:-}" create
	if [[ -f $RUN/cluster.env ]]; then
		load
		for n in "${NODES[@]}"; do
			if alive "$n"; then
				die "node$n already runs in $RUN (pid $(pid_of "$n")); run: $0 stop $RUN"
			fi
		done
	fi
	CLIENT_PORT=${LF_CLUSTER_CLIENT_PORT:-4222}
	ROUTE_PORT=${LF_CLUSTER_ROUTE_PORT:-6222}
	HTTP_PORT=${LF_CLUSTER_HTTP_PORT:-8222}
	SERVER=$(server_path)

	# The nodes run copies of the configs, so that the run directory holds
	# what ran, and a test's auth.conf or tls.conf stays in its directory.
	rm -rf "$RUN/conf"
	mkdir -p "$RUN/conf"
	for n in "${NODES[@]}"; do
		cp "$CONF_SRC/node$n.conf" "$RUN/conf/"
		mkdir -p "$RUN/node$n"
		: >"$RUN/node$n/cluster.pid"
	done
	cp "${LF_CLUSTER_AUTH_FILE:-$CONF_SRC/auth.conf}" "$RUN/conf/auth.conf"
	if [[ -n ${LF_CLUSTER_TLS_FILE:-} ]]; then
		cp "$LF_CLUSTER_TLS_FILE" "$RUN/conf/tls.conf"
		for n in "${NODES[@]}"; do
			printf '\n# added by cluster.sh (LF_CLUSTER_TLS_FILE)\ninclude "tls.conf"\n' >>"$RUN/conf/node$n.conf"
		done
	fi
	for n in "${NODES[@]}"; do
		check_conf "$n"
	done
	{
		printf 'CLIENT_PORT=%q\n' "$CLIENT_PORT"
		printf 'ROUTE_PORT=%q\n' "$ROUTE_PORT"
		printf 'HTTP_PORT=%q\n' "$HTTP_PORT"
		printf 'SERVER=%q\n' "$SERVER"
	} >"$RUN/cluster.env"

	for n in "${NODES[@]}"; do
		start_node "$n"
	done
	MUST_RUN="${NODES[*]}"
	if ! wait_healthy; then
		stop_nodes "${NODES[@]}"
		die "the cluster did not start; files in $RUN"
	fi

	if [[ -n ${LF_CLUSTER_WATCH_PID:-} ]]; then
		uint LF_CLUSTER_WATCH_PID "$LF_CLUSTER_WATCH_PID"
		local watched=$LF_CLUSTER_WATCH_PID
		(
			while kill -0 "$watched" 2>/dev/null; do sleep 1; done
			LF_CLUSTER_FROM_WATCHDOG=1 "$SELF" stop "$RUN"
		) </dev/null >/dev/null 2>&1 &
		echo $! >"$RUN/watchdog.pid"
	fi

	for n in "${NODES[@]}"; do
		say "node$n: nats://127.0.0.1:$(client_port "$n") routes 127.0.0.1:$(route_port "$n") monitor http://127.0.0.1:$(http_port "$n") pid $(pid_of "$n")"
	done
	say "cluster running; files in $RUN; stop it with: $0 stop $RUN"
	echo "FABRIC_NATS_URL=$(urls)"
}

cmd_stop() {
	set_dir "${1:-}"
	if [[ ! -f $RUN/cluster.env ]]; then
		say "no cluster in $RUN"
		return 0
	fi
	load
	if [[ -z ${LF_CLUSTER_FROM_WATCHDOG:-} && -f $RUN/watchdog.pid ]]; then
		local w
		w=$(tr -dc '0-9' <"$RUN/watchdog.pid")
		if [[ -n $w ]]; then
			kill "$w" 2>/dev/null || true
		fi
	fi
	rm -f "$RUN/watchdog.pid"
	stop_nodes "${NODES[@]}"
	say "stopped the cluster in $RUN"
}

cmd_status() {
	set_dir "${1:-}"
	load
	local n state all=0 pid
	for n in "${NODES[@]}"; do
		pid=$(pid_of "$n")
		if ! alive "$n"; then
			state=down
			all=1
		elif frozen "$n"; then
			state="frozen, pid $pid"
			all=1
		elif ! accepts "$(client_port "$n")"; then
			state="not accepting clients, pid $pid"
			all=1
		else
			state="up, pid $pid, routes to $(peers "$n") other nodes"
			[[ $(peers "$n") == 2 ]] || all=1
		fi
		echo "node$n nats://127.0.0.1:$(client_port "$n") $state"
	done
	echo "FABRIC_NATS_URL=$(urls)"
	return $all
}

cmd_wait() {
	set_dir "${1:-}"
	load
	MUST_RUN=
	wait_healthy || die "the cluster in $RUN is not healthy"
}

cmd_restart_node() {
	node_no "${1:-}"
	set_dir "${2:-}"
	load
	check_conf "$1"
	stop_nodes "$1"
	start_node "$1"
	MUST_RUN=$1
	wait_healthy || die "node$1 did not rejoin"
	say "node$1 rejoined, pid $(pid_of "$1")"
}

cmd_kill_node() {
	node_no "${1:-}"
	set_dir "${2:-}"
	load
	alive "$1" || die "node$1 is not running"
	signal_node "$1" KILL
	wait_gone 5 "$1" || die "node$1 survived SIGKILL"
	rm -f "$RUN/node$1/frozen"
	say "killed node$1"
}

cmd_freeze_node() {
	node_no "${1:-}"
	set_dir "${2:-}"
	load
	alive "$1" || die "node$1 is not running"
	signal_node "$1" STOP
	touch "$RUN/node$1/frozen"
	say "froze node$1"
}

cmd_thaw_node() {
	node_no "${1:-}"
	set_dir "${2:-}"
	load
	alive "$1" || die "node$1 is not running"
	signal_node "$1" CONT
	rm -f "$RUN/node$1/frozen"
	say "thawed node$1"
}

main() {
	local cmd=${1:-}
	[[ $# -gt 0 ]] && shift
	case $cmd in
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status "$@" ;;
	wait) cmd_wait "$@" ;;
	restart-node) cmd_restart_node "$@" ;;
	kill-node) cmd_kill_node "$@" ;;
	freeze-node) cmd_freeze_node "$@" ;;
	thaw-node) cmd_thaw_node "$@" ;;
	build) server_path ;;
	-h | --help | help) usage 0 ;;
	"") usage 2 >&2 ;;
	*)
		echo "cluster.sh: unknown command '$cmd'" >&2
		usage 2 >&2
		;;
	esac
}

main "$@"
