#!/usr/bin/env bash
# testnet/scenarios.sh: scenarios run on a built topology, the checks they record, and
# the raftcast scaffold (start_rendezvous, start_node, wait_api, rc_raftcast). Source it
# after lib.sh. A scenario NAME is the function scenario_NAME (dashes become
# underscores); it records outcomes with rc_check and fails only on broken set-up.
#
# Checks are JSON objects, one a line, in $RC_DIR/checks.jsonl; rc_summary folds them
# into the run's one JSON document.

# shellcheck source-path=SCRIPTDIR disable=SC2034  # variables are used by the scripts that source this file
RC_CHECKS=$RC_DIR/checks.jsonl
RC_STARTED=$SECONDS

# rc_check NAME OK [JSON-FIELDS]: record one outcome. OK is 0 (passed) or anything else;
# JSON-FIELDS are extra members, e.g. '"packets":200,"expected":true'.
rc_check() {
	local name=$1 ok=false extra=${3:-}
	[[ $2 == 0 ]] && ok=true
	printf '{"name":"%s","ok":%s%s}\n' "$name" "$ok" "${extra:+,$extra}" >>"$RC_CHECKS"
	[[ $ok == true ]] || rc_log "check failed: $name ${extra}"
}

# rc_summary: print the run's JSON summary on stdout (and to $RC_JSON_OUT if set).
# Called after teardown; "clean" says no namespace of this run is left.
rc_summary() {
	local ok=true clean=true timed_out=false checks=() n_fail
	[[ -f $RC_CHECKS ]] && mapfile -t checks <"$RC_CHECKS"
	if compgen -G "/run/netns/$RC_ID-*" >/dev/null; then clean=false; fi
	[[ -f $RC_DIR/timed_out ]] && timed_out=true
	n_fail=$(grep -c '"ok":false' "$RC_CHECKS" 2>/dev/null || true)
	if [[ ${RC_EXIT:-1} != 0 || $clean != true || ${#checks[@]} -eq 0 || ${n_fail:-0} != 0 ]]; then
		ok=false
	fi
	local doc
	doc=$(
		printf '{"topology":"%s","scenario":"%s","run_id":"%s","run_dir":"%s",' \
			"${RC_TOPOLOGY:-}" "${RC_SCENARIO:-}" "$RC_ID" "$RC_DIR"
		printf '"ok":%s,"exit":%s,"timed_out":%s,"clean":%s,"seconds":%s,"failed":%s,"checks":[' \
			"$ok" "${RC_EXIT:-1}" "$timed_out" "$clean" "$((SECONDS - RC_STARTED))" "${n_fail:-0}"
		local i
		for i in "${!checks[@]}"; do
			((i == 0)) || printf ','
			printf '%s' "${checks[$i]}"
		done
		printf ']}\n'
	)
	printf '%s\n' "$doc"
	if [[ -n ${RC_JSON_OUT:-} ]]; then printf '%s\n' "$doc" >"$RC_JSON_OUT"; fi
	[[ $ok == true ]]
}

# rc_tools: the rcnet probe (testnet/tools/rcnet), built into the run directory unless
# RC_TOOLS names a directory that has it.
rc_tools() {
	if [[ -n ${RC_TOOLS:-} && -x $RC_TOOLS/rcnet ]]; then
		RCNET=$RC_TOOLS/rcnet
		return
	fi
	RCNET=$RC_DIR/bin/rcnet
	[[ -x $RCNET ]] && return
	command -v go >/dev/null || rc_die "go is needed to build testnet/tools/rcnet (or set RC_TOOLS)"
	(cd "$RC_ROOT" && go build -o "$RCNET" ./testnet/tools/rcnet) || rc_die "building rcnet"
}

# rc_json_num FIELD FILE: the first numeric member FIELD of the JSON in FILE (0 if none).
rc_json_num() {
	local v
	v=$(grep -o "\"$1\": *[-0-9.e+]*" "$2" 2>/dev/null | awk -F: 'NR==1 { gsub(/ /, "", $2); print $2 }') || true
	printf '%s\n' "${v:-0}"
}

# rc_ping SRC DST FAMILY: ICMP echo from host SRC to DST's address.
rc_ping() {
	local src=$1 dst=$2 fam=$3 addr out rc=0
	addr=$(rc_addr "$dst" "$fam")
	# Up to 10 tries for 2 replies: lossy links (--loss) must not fail a reachability check.
	out=$(rc_exec "$src" "$RCNET" ping -addr "$addr" -count 10 -replies 2 -timeout 1s 2>/dev/null) || rc=$?
	rc_check "ping$fam $src->$dst" "$rc" "\"addr\":\"$addr\",\"result\":${out:-null}"
}

RC_MC4=239.1.2.3
RC_MC6=ff05::1:3

# rc_mcast_round SENDER COUNT: every other host joins the IPv4 and the IPv6 group on its
# interface, SENDER primes the routes (5 datagrams to another port) then sends COUNT
# datagrams to each, and each receiver's count is checked: at least 90% where the receiver
# shares SENDER's multicast domain, less 4 times the configured loss percentage
# (a routed path crosses four lossy link ends), and none elsewhere.
rc_mcast_round() {
	local sender=$1 count=$2 dir h fam sseg rseg want ok got pids=() rx=() sp=()
	dir=$RC_DIR/mc/$sender
	mkdir -p "$dir"
	sseg=$(rc_segment_of "$sender")
	for h in $(rc_hosts); do
		[[ $h == "$sender" ]] && continue
		for fam in 4 6; do
			local g=$RC_MC4 port=5004
			[[ $fam == 6 ]] && g=$RC_MC6 port=5006
			rc_bg "$h" "mrecv$fam-from-$sender" "$RCNET" mrecv -group "$g" -port "$port" \
				-iface "$(rc_iface "$h")" -ready "$dir/$h.$fam.ready" -timeout 60s
			pids+=("$RC_PID")
			rx+=("$h:$fam")
		done
	done
	local r
	for r in "${rx[@]}"; do
		rc_wait_for 15 test -f "$dir/${r%%:*}.${r##*:}.ready" || rc_die "receiver $r did not join"
	done
	# Prime the routers: a router's smcrouted installs a (source, group) route when the
	# first datagram arrives, and under load the datagrams before that are lost. A few to
	# another port (nobody counts them) install it; the counted ones follow.
	for fam in 4 6; do
		local g=$RC_MC4
		[[ $fam == 6 ]] && g=$RC_MC6
		rc_exec "$sender" "$RCNET" msend -group "$g" -port 5010 -iface "$(rc_iface "$sender")" \
			-count 5 -rate 1mbit -ttl 8 >/dev/null 2>&1 || true
	done
	sleep 1
	for fam in 4 6; do
		local g=$RC_MC4 port=5004
		[[ $fam == 6 ]] && g=$RC_MC6 port=5006
		rc_bg "$sender" "msend$fam" "$RCNET" msend -group "$g" -port "$port" \
			-iface "$(rc_iface "$sender")" -count "$count" -rate 20mbit -ttl 8
		sp+=("$RC_PID")
	done
	for r in "${sp[@]}"; do rc_wait_pid "$r" 60 || rc_die "sender $sender failed"; done
	sleep 0.5
	rc_stop "${pids[@]}"
	for r in "${rx[@]}"; do
		h=${r%%:*} fam=${r##*:}
		rseg=$(rc_segment_of "$h")
		got=$(rc_json_num packets "$RC_DIR/logs/$h-mrecv$fam-from-$sender.log")
		if rc_same_mdomain "$sseg" "$rseg"; then
			want=true
			ok=$(awk -v g="$got" -v c="$count" -v l="${RC_DEFAULT_LOSS:-0}" -v w="${RC_WAN_LOSS:-0}" \
				'BEGIN { if (l < w) l = w; print (g >= c * (0.9 - 0.04 * l)) ? 0 : 1 }')
		else
			want=false
			ok=$((got == 0 ? 0 : 1))
		fi
		rc_check "mcast$fam $sender($sseg)->$h($rseg)" "$ok" \
			"\"expected\":$want,\"sent\":$count,\"packets\":$got"
	done
}

# net-check: unicast reachability across the router (IPv4, IPv6) and multicast delivery
# inside each segment, across the segments a router joins into one multicast domain,
# and its absence everywhere else.
scenario_net_check() {
	rc_tools
	local segs a b src dst fam
	mapfile -t segs < <(rc_segments)
	for a in "${segs[@]}"; do
		src=$(rc_seg_hosts "$a" | awk 'NR==1')
		[[ -n $src ]] || continue
		for b in "${segs[@]}"; do
			if [[ $a == "$b" ]]; then
				dst=$(rc_seg_hosts "$b" | sed -n 2p)
			else
				dst=$(rc_seg_hosts "$b" | awk 'NR==1')
			fi
			[[ -n $dst ]] || continue
			for fam in 4 6; do rc_ping "$src" "$dst" "$fam"; done
		done
	done
	for a in "${segs[@]}"; do
		src=$(rc_seg_hosts "$a" | awk 'NR==1')
		[[ -n $src ]] && rc_mcast_round "$src" "${RC_MC_COUNT:-200}"
	done
}

# mcast-goodput: RC_SENDER (default: h21 in paper, else the first host) sends RC_BYTES (64MiB) to one IPv4
# (RC_FAMILY=6: IPv6) group, paced at RC_SEND_RATE (default 0: as fast as its shaped link
# takes it); every host in its multicast domain counts what it receives. Each receiver's
# check carries its goodput (Mbit/s of UDP payload) and its losses; give --rate to shape
# the links (the issue asks for >= 95 Mbit/s on a 100 Mbit/s link).
scenario_mcast_goodput() {
	rc_tools
	local sender fam=${RC_FAMILY:-4} g=$RC_MC4 port=5008 h sseg dir pids=() rx=() send_pid
	[[ $fam == 6 ]] && g=$RC_MC6
	sender=${RC_SENDER:-}
	if [[ -z $sender && $RC_TOPOLOGY == paper ]]; then sender=h21; fi
	[[ -n $sender ]] || sender=$(rc_hosts | awk 'NR==1')
	[[ -n $(rc_q node "$sender" host) ]] || rc_die "no host $sender"
	sseg=$(rc_segment_of "$sender")
	dir=$RC_DIR/mc/goodput
	mkdir -p "$dir"
	for h in $(rc_hosts); do
		[[ $h == "$sender" ]] && continue
		rc_same_mdomain "$sseg" "$(rc_segment_of "$h")" || continue
		rc_bg "$h" goodput "$RCNET" mrecv -group "$g" -port "$port" -iface "$(rc_iface "$h")" \
			-ready "$dir/$h.ready" -idle 3s -timeout "${RC_TIMEOUT:-300}s"
		pids+=("$RC_PID")
		rx+=("$h")
	done
	((${#rx[@]})) || rc_die "no receiver shares $sender's multicast domain"
	for h in "${rx[@]}"; do rc_wait_for 15 test -f "$dir/$h.ready" || rc_die "$h did not join"; done
	rc_bg "$sender" goodput-send "$RCNET" msend -group "$g" -port "$port" \
		-iface "$(rc_iface "$sender")" -bytes "${RC_BYTES:-64MiB}" -rate "${RC_SEND_RATE:-0}"
	send_pid=$RC_PID
	# The watchdog bounds the run: this wait outlasts it (SECONDS ticks whole seconds, so a
	# bound equal to --timeout could end first and report a failed sender, not a timeout).
	rc_wait_pid "$send_pid" "$((${RC_TIMEOUT:-300} + 30))" || rc_die "sender failed (see its log)"
	local slog=$RC_DIR/logs/$sender-goodput-send.log sent
	sent=$(rc_json_num packets "$slog")
	rc_check "goodput send $sender" 0 "\"packets\":$sent,\"mbps\":$(rc_json_num mbps "$slog"),\"seconds\":$(rc_json_num seconds "$slog")"
	local p
	for p in "${pids[@]}"; do rc_wait_pid "$p" 30 || true; done
	rc_stop "${pids[@]}"
	for h in "${rx[@]}"; do
		local log=$RC_DIR/logs/$h-goodput.log got
		got=$(rc_json_num packets "$log")
		rc_check "goodput $sender->$h" "$((got > 0 ? 0 : 1))" \
			"\"family\":$fam,\"link_rate\":\"${RC_DEFAULT_RATE:-none}\",\"sent\":$sent,\"packets\":$got,\"lost\":$(rc_json_num lost "$log"),\"mbps\":$(rc_json_num mbps "$log"),\"seconds\":$(rc_json_num seconds "$log")"
	done
}

# rc_http_origin NODE DOCROOT [CONN_RATE]: nginx serving DOCROOT on NODE's IPv4 address,
# port 80, each connection limited to CONN_RATE bytes/s (nginx limit_rate, e.g. 3125k;
# 0 or none: unlimited). Sets RC_ORIGIN_URL (http://ADDR) and RC_ORIGIN_PID. To cap every
# client IP whatever its number of connections, use rc_cap_per_ip NODE RATE as well.
rc_http_origin() {
	local node=$1 docroot=$2 limit=${3:-0} root addr
	command -v nginx >/dev/null || rc_die "missing nginx (apt-get install nginx-light)"
	root=$RC_DIR/nginx-$node
	addr=$(rc_addr "$node" 4)
	mkdir -p "$root/logs" "$root/tmp"
	cat >"$root/nginx.conf" <<-EOF
		worker_processes 1;
		pid $root/nginx.pid;
		error_log $root/logs/error.log warn;
		user root;
		events { worker_connections 256; }
		http {
			access_log $root/logs/access.log;
			client_body_temp_path $root/tmp/body; proxy_temp_path $root/tmp/proxy;
			fastcgi_temp_path $root/tmp/fcgi; uwsgi_temp_path $root/tmp/uwsgi; scgi_temp_path $root/tmp/scgi;
			sendfile on;
			server {
				listen $addr:80;
				root $docroot;
				limit_rate $limit;
			}
		}
	EOF
	rc_bg "$node" nginx nginx -c "$root/nginx.conf" -p "$root" -g 'daemon off;'
	RC_ORIGIN_PID=$RC_PID
	RC_ORIGIN_URL=http://$addr
	rc_wait_for 10 rc_exec "$node" bash -c "echo >/dev/tcp/$addr/80" || rc_die "nginx in $node did not start"
}

# ---- raftcast scaffold (CLI per shared/CLI.md) ----------------------------------------
# Data dirs are $RC_DIR/data/NODE; client commands run inside the node's namespace
# because the daemon's API listens on that namespace's loopback.

# rc_raftcast_bin: RAFTCAST_BIN, else build ./cmd/raftcast into the run directory.
rc_raftcast_bin() {
	if [[ -n ${RAFTCAST_BIN:-} ]]; then
		[[ -x $RAFTCAST_BIN ]] || rc_die "RAFTCAST_BIN=$RAFTCAST_BIN is not executable"
		return
	fi
	RAFTCAST_BIN=$RC_DIR/bin/raftcast
	[[ -x $RAFTCAST_BIN ]] && return
	(cd "$RC_ROOT" && go build -o "$RAFTCAST_BIN" ./cmd/raftcast) || rc_die "building ./cmd/raftcast"
}

rc_data() { printf '%s/data/%s\n' "$RC_DIR" "$1"; }

# rc_raftcast NODE ARGS...: a raftcast client command against NODE's daemon.
rc_raftcast() {
	local node=$1
	shift
	rc_exec "$node" "$RAFTCAST_BIN" --data "$(rc_data "$node")" "$@"
}

# wait_api NODE [SECONDS]: wait until NODE's daemon wrote DIR/api (it is ready), failing
# early if the daemon exited.
wait_api() {
	local node=$1 secs=${2:-30} deadline pid
	deadline=$((SECONDS + secs))
	pid=$(rc_q pid "" | awk -v n="$node" '$3==n && $4 ~ /^raftcast/ {p=$2} END {print p}')
	until [[ -s $(rc_data "$node")/api ]]; do
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			rc_log "raftcast in $node exited; log: $RC_DIR/logs/$node-raftcast.log"
			return 1
		fi
		((SECONDS < deadline)) || return 124
		sleep 0.2
	done
}

# rc_daemon NODE ROLE ARGS...: start `raftcast ROLE` in NODE listening on its IPv4 and
# IPv6 addresses (TCP, port 0). Its log is logs/NODE-raftcast.log (RC_DAEMON_LABEL
# overrides the label; it must start with "raftcast" for wait_api and rc_node_pid).
# RC_CPUPROFILE=1: each daemon writes a CPU profile of its run to
# logs/NODE-LABEL-SECONDS.pprof when it stops (`go tool pprof BINARY FILE`).
rc_daemon() {
	local node=$1 role=$2 data
	shift 2
	rc_raftcast_bin
	data=$(rc_data "$node")
	mkdir -p "$data"
	if [[ -n ${RC_CPUPROFILE:-} ]]; then
		set -- "$@" --cpuprofile "$RC_DIR/logs/$node-${RC_DAEMON_LABEL:-raftcast}-$SECONDS.pprof"
	fi
	rc_bg "$node" "${RC_DAEMON_LABEL:-raftcast}" "$RAFTCAST_BIN" "$role" --data "$data" \
		--listen "/ip4/$(rc_addr "$node" 4)/tcp/0" --listen "/ip6/$(rc_addr "$node" 6)/tcp/0" "$@"
}

# start_rendezvous NODE [ARGS...]: start the rendezvous, wait for its API, and keep its
# IPv4 multiaddr (with /p2p/) in RC_BOOTSTRAP for the nodes started after it.
start_rendezvous() {
	local node=$1
	shift
	rc_daemon "$node" rendezvous "$@"
	wait_api "$node" 30 || rc_die "rendezvous in $node not ready"
	RC_BOOTSTRAP=$(rc_raftcast "$node" status --json |
		grep -o '/ip4/198\.18\.[0-9.]*/tcp/[0-9]*/p2p/[A-Za-z0-9]*' | awk 'NR==1')
	[[ -n $RC_BOOTSTRAP ]] || rc_die "no /ip4/198.18... address in $node's status"
	rc_log "rendezvous $node at $RC_BOOTSTRAP"
}

# start_node NODE [ARGS...]: start a node bootstrapping from the rendezvous, with
# multicast on its testnet interface.
start_node() {
	local node=$1
	shift
	local boot=()
	[[ -n ${RC_BOOTSTRAP:-} ]] && boot=(--bootstrap "$RC_BOOTSTRAP")
	rc_daemon "$node" node "${boot[@]}" --multicast-iface "$(rc_iface "$node")" --name "$node" "$@"
}

# raftcast-smoke: a rendezvous in the first host (rv in paper), a node in every other
# host; every daemon becomes ready and every node sees at least one connected peer.
# Scaffold for the lead's distribution and download scenarios; it needs ./cmd/raftcast.
scenario_raftcast_smoke() {
	local hosts rvh h rc
	mapfile -t hosts < <(rc_hosts)
	rvh=${hosts[0]}
	start_rendezvous "$rvh"
	for h in "${hosts[@]:1}"; do start_node "$h"; done
	rc_check_ready 30 "${hosts[@]:1}" || true
	for h in "${hosts[@]:1}"; do
		rc=1
		rc_wait_for 30 rc_peers_connected "$h" && rc=0
		rc_check "peers $h" "$rc"
	done
}

# rc_failover_batch SRC X Y N PREFIX STATE VERB: SRC sends PREFIX1..PREFIXN on the unicast
# pipe "jobs" while X's daemon is STATE (hung, dead; VERB names it in the check: frozen,
# killed); every message must reach the other listener Y, in order, and none reach X.
rc_failover_batch() {
	local src=$1 x=$2 y=$3 n=$4 p=$5 state=$6 verb=$7 want t0 rc=0 secs delivered
	want=$(seq 1 "$n" | sed "s/^/$p/")
	t0=$EPOCHREALTIME
	rc_pipe_send "$src" jobs unicast "$p" 1 "$n" || rc=1
	secs=$(rc_elapsed "$t0")
	delivered=${RC_DELIVERED:-0}
	rc_wait_for 30 rc_pipe_has "$n" jobs "$p" "$y" || true
	[[ $(rc_pipe_got "$y" jobs "$p") == "$want" && $delivered == "$n" && -z $(rc_pipe_got "$x" jobs "$p") ]] || rc=1
	rc_check "unicast failover from $state $x->$y" "$rc" "\"$verb\":\"$x\",\"sent\":$n,\"delivered\":$delivered,\"received\":$(rc_pipe_got "$y" jobs "$p" | wc -l),\"in_order\":$([[ $(rc_pipe_got "$y" jobs "$p") == "$want" ]] && echo true || echo false),\"send_seconds\":$secs"
}

# rc_join NODE GROUP ARGS...: `group join GROUP ARGS --timeout 60s --json` on NODE, checked
# (the join asks the overlay again until its timeout while the group's advertisement is
# still on its way, since main's 8f35df9).
rc_join() {
	local node=$1 group=$2 rc=0
	shift 2
	rc_raftcast "$node" group join "$group" "$@" --timeout 60s --json \
		>"$RC_DIR/logs/$node-group.json" 2>"$RC_DIR/logs/$node-group.err" || rc=$?
	rc_check "group join $node" "$rc"
}

rc_peers_connected() {
	local out
	out=$(rc_raftcast "$1" peers --json) && [[ $out =~ \"connected\":\ *true ]]
}

# The distribution and download scenarios live in their own file.
# shellcheck source=dist.sh
source "$RC_TESTNET/dist.sh"

# rc_json_str FIELD FILE: a string member of the JSON in FILE (empty if none).
rc_json_str() {
	grep -o "\"$1\": *\"[^\"]*\"" "$2" 2>/dev/null | awk -F'"' 'NR==1 {print $4}' || true
}

# rc_raftcast_net NODES...: rendezvous in rv (or the first of NODES), a node in every
# other one, all ready. Leaves the rendezvous host in RC_RV.
rc_raftcast_net() {
	local h rc
	RC_RV=$1
	if [[ -n $(rc_q node rv host) ]]; then RC_RV=rv; fi
	start_rendezvous "$RC_RV"
	local nodes=()
	for h in "$@"; do [[ $h == "$RC_RV" ]] || nodes+=("$h"); done
	for h in "${nodes[@]}"; do start_node "$h"; done
	rc_check_ready 30 "${nodes[@]}" || rc_die "a node is not ready"
}

# download: cooperative HTTP download. An nginx origin in the last host of the last
# segment (RC_ORIGIN overrides) caps every client IP at RC_IP_RATE (25mbit); a group
# "coop" of every node; the first member (RC_REQUESTER) downloads through the group.
# Checks: the copy is byte-identical, with its seconds; then curl from the requester alone
# through the same cap, and the speed-up (curl seconds / download seconds; the goal is
# >= 0.85 x members). Ran end to end against a raftcast built from the shared work tree.
scenario_download() {
	local hosts origin req h rc file others=()
	rc_raftcast_bin
	mapfile -t hosts < <(rc_hosts)
	origin=${RC_ORIGIN:-${hosts[-1]}}
	for h in "${hosts[@]}"; do [[ $h == "$origin" ]] || others+=("$h"); done
	rc_raftcast_net "${others[@]}"
	file=$RC_DIR/origin/file.bin
	mkdir -p "$(dirname "$file")"
	head -c "$(awk -v s="${RC_BYTES:-16MiB}" 'BEGIN { n = s + 0; u = substr(s, length(n "") + 1)
		printf "%d", n * ((u == "GiB") ? 2^30 : (u == "MiB") ? 2^20 : (u == "KiB") ? 2^10 : 1) }')" \
		/dev/urandom >"$file"
	rc_http_origin "$origin" "$(dirname "$file")" 0
	rc_cap_per_ip "$origin" "${RC_IP_RATE:-25mbit}"
	local members=()
	for h in "${others[@]}"; do [[ $h == "$RC_RV" ]] || members+=("$h"); done
	req=${RC_REQUESTER:-${members[0]}}
	rc=0
	rc_raftcast "$req" group create coop --json >"$RC_DIR/logs/$req-group-create.json" || rc=$?
	rc_check "group create on $req" "$rc"
	for h in "${members[@]}"; do
		[[ $h == "$req" ]] && continue
		rc_join "$h" coop
	done
	rc=0
	mkdir -p "$RC_DIR/out/$req"
	rc_raftcast "$req" download "$RC_ORIGIN_URL/file.bin" --out "$RC_DIR/out/$req/file.bin" \
		--group coop --sha256 "$(sha256sum "$file" | awk '{print $1}')" --timeout 600s --json \
		>"$RC_DIR/logs/$req-download.json" || rc=$?
	if [[ $rc == 0 ]] && ! cmp -s "$file" "$RC_DIR/out/$req/file.bin"; then rc=1; fi
	local secs
	secs=$(rc_json_num seconds "$RC_DIR/logs/$req-download.json")
	rc_check "download on $req" "$rc" "\"seconds\":$secs,\"members\":${#members[@]},\"ip_rate\":\"${RC_IP_RATE:-25mbit}\""
	# Baseline: the requester alone with curl through the same per-IP cap.
	if command -v curl >/dev/null; then
		local t0 t1 curl_secs
		t0=$(date +%s.%N)
		rc=0
		rc_exec "$req" curl -sS -o "$RC_DIR/out/$req/curl.bin" "$RC_ORIGIN_URL/file.bin" || rc=$?
		t1=$(date +%s.%N)
		if [[ $rc == 0 ]] && ! cmp -s "$file" "$RC_DIR/out/$req/curl.bin"; then rc=1; fi
		curl_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
		rc_check "curl on $req" "$rc" "\"seconds\":$curl_secs,\"speedup\":$(awk -v c="$curl_secs" -v d="$secs" 'BEGIN { printf "%.3f", (d > 0) ? c / d : 0 }')"
	fi
}

# rc_sshd_hosts: sshd in every host, listening on its testnet address (keys, config and PID
# in $RC_DIR/ssh; /run/sshd made only if missing and removed at teardown), and a hosts file
# for testnet/remote in $RC_DIR/ssh/hosts naming them all (the first host first).
rc_sshd_hosts() {
	local sd h hosts addr
	for h in /usr/sbin/sshd ssh-keygen ssh scp; do
		command -v "$h" >/dev/null || rc_die "the remote scenarios need $h (apt-get install openssh-server openssh-client)"
	done
	sd=$RC_DIR/ssh
	mkdir -p "$sd"
	chmod 700 "$sd"
	ssh-keygen -q -t ed25519 -N '' -f "$sd/host_key"
	ssh-keygen -q -t ed25519 -N '' -f "$sd/id"
	cp "$sd/id.pub" "$sd/authorized_keys"
	# sshd insists on its privilege-separation directory; make it only if missing.
	if [[ ! -d /run/sshd ]]; then
		mkdir -m 755 /run/sshd
		rc_record rmdir /run/sshd
	fi
	mapfile -t hosts < <(rc_hosts)
	: >"$sd/hosts"
	for h in "${hosts[@]}"; do
		addr=$(rc_addr "$h" 4)
		cat >"$sd/sshd-$h.conf" <<-EOF
			ListenAddress $addr
			Port 22
			HostKey $sd/host_key
			PidFile $sd/sshd-$h.pid
			AuthorizedKeysFile $sd/authorized_keys
			PermitRootLogin prohibit-password
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			UsePAM no
			StrictModes no
			Subsystem sftp /usr/lib/openssh/sftp-server
		EOF
		if [[ -f $HOME/.bashrc && ${RC_SSH_KEEP_RC:-0} != 1 ]] && command -v unshare >/dev/null; then
			# Every ssh session runs the login shell, which sources ~/.bashrc: root's here runs
			# `pyenv init`, 2-4 s a session under load. sshd gets its own mount namespace with an
			# empty file over it (nothing changes outside; RC_SSH_KEEP_RC=1 keeps it).
			: >"$sd/empty.rc"
			# shellcheck disable=SC2016  # the inner shell expands its arguments
			rc_bg "$h" sshd unshare -m sh -c 'mount --bind "$1" "$2" && exec /usr/sbin/sshd -D -e -f "$3"' - \
				"$sd/empty.rc" "$HOME/.bashrc" "$sd/sshd-$h.conf"
		else
			rc_bg "$h" sshd /usr/sbin/sshd -D -e -f "$sd/sshd-$h.conf"
		fi
		echo "$h root@$addr $addr $(rc_iface "$h")" >>"$sd/hosts"
	done
	for h in "${hosts[@]}"; do
		addr=$(rc_addr "$h" 4)
		rc_wait_for 15 rc_exec "${hosts[0]}" bash -c "echo >/dev/tcp/$addr/22" || rc_die "sshd on $h not up"
	done
}

# rc_remote_run ARGS...: run testnet/remote from the first host against every host's sshd
# (rc_sshd_hosts first), exactly as it would drive real machines, and check that its own
# summary is ok; the summary is embedded in the check, its run directory is
# $RC_DIR/remote/ID r.
rc_remote_run() {
	local sd=$RC_DIR/ssh first rc=0 secs=${RC_REMOTE_TIMEOUT:-200}
	first=$(rc_hosts | awk 'NR==1')
	# In the background and recorded, so that a teardown (timeout, Ctrl-C) first lets it
	# clean up its hosts while their sshd still runs (rc_remote_stop).
	# shellcheck disable=SC2016  # the inner shell expands its arguments
	rc_bg "$first" remote sh -c 'out=$1; shift; exec "$@" >"$out"' - "$RC_DIR/remote.json" \
		env RAFTCAST_BIN="$RAFTCAST_BIN" RC_TOOLS="${RC_TOOLS:-}" RC_BASE="$RC_DIR/remote" \
		"$RC_TESTNET/remote" "$sd/hosts" --id "${RC_ID}r" --timeout "$secs" \
		--ssh-opt "-i $sd/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null" "$@"
	RC_REMOTE_PID=$RC_PID
	RC_PRE_TEARDOWN=rc_remote_stop
	rc_wait_pid "$RC_REMOTE_PID" "$((secs + 60))" || rc=$?
	# Trust the summary too, not only the exit status.
	grep -q '^{"topology":"remote".*"ok":true' "$RC_DIR/remote.json" 2>/dev/null || { [[ $rc != 0 ]] || rc=1; }
	rc_check "remote run" "$rc" "\"summary\":$(cat "$RC_DIR/remote.json" 2>/dev/null || echo null)"
}

# rc_remote_stop: TERM a testnet/remote still running and give it a minute to clean up.
rc_remote_stop() {
	[[ -n ${RC_REMOTE_PID:-} ]] && kill -0 "$RC_REMOTE_PID" 2>/dev/null || return 0
	rc_log "stopping testnet/remote (PID $RC_REMOTE_PID) so that it cleans up its hosts"
	kill -TERM "$RC_REMOTE_PID" 2>/dev/null || true
	rc_wait_pid "$RC_REMOTE_PID" 60 || true
	rc_check "remote run (stopped)" 1 "\"summary\":$(cat "$RC_DIR/remote.json" 2>/dev/null || echo null)"
}

# remote-smoke: proves testnet/remote (the real-hosts mode) on namespaces: every host runs
# sshd; the first host drives `testnet/remote` over ssh to the others and itself. Check: the
# remote run's own summary is ok.
scenario_remote_smoke() {
	rc_raftcast_bin
	rc_sshd_hosts
	rc_remote_run
}

# remote-dist: the same with `testnet/remote --scenario distribution,download` (RC_REMOTE_SCENARIO
# overrides): on the hosts' daemons, one group; the first node shares a file of --bytes
# (8MiB) that every other node gets; then an `rcnet serve` origin on the first host (the
# rendezvous), capped per client IP at RC_IP_RATE (25mbit), and a cooperative download by the
# first node through the group, then a one-connection fetch for the speed-up. lan --hosts 4.
# RC_REMOTE_BIN_DIR: a directory holding raftcast and rcnet, used in place (--bin-dir).
scenario_remote_dist() {
	rc_raftcast_bin
	rc_tools
	rc_sshd_hosts
	local more=()
	[[ -n ${RC_REMOTE_BIN_DIR:-} ]] && more=(--bin-dir "$RC_REMOTE_BIN_DIR")
	RC_TOOLS=$(dirname "$RCNET") rc_remote_run --scenario "${RC_REMOTE_SCENARIO:-distribution,download}" \
		--bytes "${RC_BYTES:-8MiB}" --ip-rate "${RC_IP_RATE:-25mbit}" "${more[@]}"
}

# ---- groups, pipes, faults ---------------------------------------------------------------
# Helpers shared by the scenarios below. raftcast prints indented JSON; rc_flat makes it one
# line so that grep can pick members out of it.

# rc_flat: stdin's JSON on one line, without blanks outside strings that matter here.
rc_flat() { tr -d ' \n\t'; }

# rc_fstr FIELD JSON / rc_fnum FIELD JSON: the first string / number member FIELD of a
# flattened JSON document (empty / 0 if none).
rc_fstr() { grep -o "\"$1\":\"[^\"]*\"" <<<"$2" | awk -F'"' 'NR==1 {print $4}' || true; }
rc_fnum() {
	local v
	v=$(grep -o "\"$1\":[-0-9.e+]*" <<<"$2" | awk -F: 'NR==1 {print $2}') || true
	printf '%s\n' "${v:-0}"
}

# rc_node_pid NODE: the PID of NODE's raftcast daemon (the last one started there).
rc_node_pid() { rc_q pid "" | awk -v n="$1" '$3==n && $4 ~ /^raftcast/ {p=$2} END {print p}'; }

# rc_kill_node NODE: SIGKILL NODE's daemon by its PID and reap it.
rc_kill_node() {
	local pid
	pid=$(rc_node_pid "$1")
	[[ -n $pid ]] || rc_die "no daemon PID recorded for $1"
	kill -KILL "$pid" 2>/dev/null || rc_die "daemon of $1 (PID $pid) was not running"
	rc_wait_pid "$pid" 10 || true
	rc_log "killed $1's daemon (PID $pid)"
}

# rc_restart_node NODE [ARGS...]: start NODE's node daemon again on its data dir after it was
# killed (the killed daemon's api file is stale: removed first, so wait_api waits for the new
# one). Its log is logs/NODE-raftcast-rN.log.
rc_restart_node() {
	local node=$1 n
	shift
	rm -f "$(rc_data "$node")/api"
	n=$(rc_q pid "" | awk -v n="$node" '$3==n && $4 ~ /^raftcast/' | wc -l)
	RC_DAEMON_LABEL=raftcast-r$n start_node "$node" "$@"
}

# rc_peer_of NODE: NODE's peer ID (from its daemon's status).
rc_peer_of() { rc_fstr peer_id "$(rc_raftcast "$1" status --json | rc_flat)"; }

# rc_gstat NODE GROUP: NODE's view of GROUP (`group status --json`), flattened, in RC_GS;
# false when the command fails.
rc_gstat() {
	local out
	out=$(rc_raftcast "$1" group status "$2" --json 2>/dev/null) || { RC_GS=; return 1; }
	RC_GS=$(rc_flat <<<"$out")
}

# rc_nmatch PATTERN STRING: how many times the (awk) PATTERN occurs in STRING.
rc_nmatch() { awk -v p="$1" '{ n += gsub(p, "") } END { print n + 0 }' <<<"$2"; }

# rc_gagree GROUP MEMBERS NODE...: true when every NODE reports the same non-empty leader and
# term and MEMBERS members; the agreed leader and term are left in RC_G_LEADER and RC_G_TERM.
# With RC_G_VOTERS set, each must also count that many voters. RC_G_SEEN holds what each
# node reported last ("h3:leader=h4,term=3,state=follower,members=3,voters=3 h4:..."), for
# the check when they do not agree.
rc_gagree() {
	local group=$1 want=$2 h leader='' term='' ok=0 l t n v
	shift 2
	RC_G_SEEN=
	for h in "$@"; do
		if ! rc_gstat "$h" "$group"; then
			RC_G_SEEN+="$h:status-failed "
			ok=1
			continue
		fi
		l=$(rc_fstr leader "$RC_GS")
		t=$(rc_fnum term "$RC_GS")
		n=$(rc_nmatch '"peer_id"' "$RC_GS")
		v=$(rc_nmatch '"voter":true' "$RC_GS")
		RC_G_SEEN+="$h:leader=$(rc_host_of "$l"),term=$t,state=$(rc_fstr state "$RC_GS"),members=$n,voters=$v "
		[[ -n $l && $n == "$want" ]] || ok=1
		[[ -z ${RC_G_VOTERS:-} || $v == "$RC_G_VOTERS" ]] || ok=1
		if [[ -z $leader ]]; then
			leader=$l term=$t
		elif [[ $l != "$leader" || $t != "$term" ]]; then
			ok=1
		fi
	done
	((ok == 0)) || return 1
	RC_G_LEADER=$leader RC_G_TERM=$term
}

# rc_host_of PEER_ID: the host whose daemon has PEER_ID (from RC_PEER), or the ID itself.
declare -gA RC_PEER=()
rc_host_of() {
	local h
	for h in "${!RC_PEER[@]}"; do
		[[ ${RC_PEER[$h]} == "$1" ]] && { printf '%s\n' "$h"; return; }
	done
	printf '%s\n' "$1"
}

# rc_elapsed T0: seconds since $EPOCHREALTIME T0, to the millisecond.
rc_elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

# rc_nodes_net: the rendezvous (rv, else the first host) and a node in every other host,
# all ready; RC_NODES gets the node hosts and RC_PEER their peer IDs.
rc_nodes_net() {
	local hosts h
	mapfile -t hosts < <(rc_hosts)
	rc_raftcast_net "${hosts[@]}"
	RC_NODES=()
	for h in "${hosts[@]}"; do
		[[ $h == "$RC_RV" ]] && continue
		RC_NODES+=("$h")
		RC_PEER[$h]=$(rc_peer_of "$h")
	done
}

# groups: RC_GROUP_SIZE nodes (default: every host but the rendezvous, at least 3) form group
# "tg" with a secret and agree on its leader (the creator); the leader's daemon is SIGKILLed
# by its PID; the others must agree on a new leader with a higher term (failover_seconds:
# from the kill until every survivor reports it, polled); the killed node restarts on its
# data dir and must come back as a follower of the new leader with the same peer ID and
# every member, and the whole group must agree again. `testnet/run lan --hosts 4 --scenario
# groups`; on paper the members sit in all three segments, across the router.
scenario_groups() {
	local members h rc t0 secs want leader lhost term0 newleader term1 survivors=()
	rc_raftcast_bin
	rc_nodes_net
	members=("${RC_NODES[@]:0:${RC_GROUP_SIZE:-${#RC_NODES[@]}}}")
	want=${#members[@]}
	((want >= 3)) || rc_die "groups needs 3 nodes or more besides the rendezvous (e.g. lan --hosts 4)"
	t0=$EPOCHREALTIME
	rc=0
	rc_raftcast "${members[0]}" group create tg --secret tn-secret --json >"$RC_DIR/logs/${members[0]}-group.json" || rc=$?
	rc_check "group create ${members[0]}" "$rc"
	((rc == 0)) || return 0
	for h in "${members[@]:1}"; do
		rc_join "$h" tg --secret tn-secret
	done
	rc=0
	# Formed means every member is in, agreed, and the joiners promoted to voters (they join
	# as non-voters; killing the leader before that leaves no quorum): peergroup keeps an odd
	# number of voters, at most 5.
	local voters=$((want < 5 ? want : 5))
	((voters % 2 == 1)) || voters=$((voters - 1))
	RC_G_LEADER='' RC_G_TERM=0
	RC_G_VOTERS=$voters rc_wait_for "${RC_GROUP_WAIT:-60}" rc_gagree tg "$want" "${members[@]}" || rc=1
	leader=${RC_G_LEADER:-} term0=${RC_G_TERM:-0}
	lhost=$(rc_host_of "$leader")
	rc_check "group formed" "$rc" "\"seen\":\"${RC_G_SEEN% }\",\"members\":$want,\"voters\":$voters,\"seconds\":$(rc_elapsed "$t0"),\"leader\":\"$lhost\",\"term\":$term0,\"leader_is_creator\":$([[ $lhost == "${members[0]}" ]] && echo true || echo false)"
	((rc == 0)) || return 0

	# Kill the leader; the survivors must agree on another leader with a higher term.
	for h in "${members[@]}"; do [[ $h == "$lhost" ]] || survivors+=("$h"); done
	t0=$EPOCHREALTIME
	rc_kill_node "$lhost"
	# shellcheck disable=SC2317  # called through rc_wait_for
	rc_new_leader() { rc_gagree tg "$want" "${survivors[@]}" && [[ $RC_G_LEADER != "$leader" ]] && ((RC_G_TERM > term0)); }
	rc=0
	RC_G_LEADER='' RC_G_TERM=0
	rc_wait_for "${RC_FAILOVER_WAIT:-60}" rc_new_leader || rc=1
	secs=$(rc_elapsed "$t0")
	newleader=$(rc_host_of "${RC_G_LEADER:-}") term1=${RC_G_TERM:-0}
	rc_check "failover" "$rc" "\"killed\":\"$lhost\",\"new_leader\":\"$newleader\",\"failover_seconds\":$secs,\"term_before\":$term0,\"term_after\":$term1,\"survivors\":${#survivors[@]},\"seen\":\"${RC_G_SEEN% }\""
	((rc == 0)) || return 0

	# Restart the killed node on its data dir: a follower of the new leader, same identity.
	t0=$EPOCHREALTIME
	rc_restart_node "$lhost"
	rc=0
	wait_api "$lhost" 60 || rc=$?
	rc_check "restart $lhost" "$rc"
	((rc == 0)) || return 0
	local pid_after
	pid_after=$(rc_peer_of "$lhost")
	# Back as a follower of the leader every member agrees on (the new leader, unless a
	# loaded machine moved the leadership meanwhile), at the new term or later.
	# shellcheck disable=SC2317  # called through rc_wait_for
	rc_rejoined() {
		rc_gagree tg "$want" "${members[@]}" || return 1
		local e=" $RC_G_SEEN"
		e=${e#*" $lhost:"}
		[[ ${e%% *} == *",state=follower,"* ]] && ((RC_G_TERM >= term1))
	}
	rc=0
	RC_G_LEADER='' RC_G_TERM=0
	rc_wait_for "${RC_REJOIN_WAIT:-60}" rc_rejoined || rc=1
	[[ $pid_after == "${RC_PEER[$lhost]}" ]] || rc=1
	rc_check "rejoined as follower $lhost" "$rc" "\"seconds\":$(rc_elapsed "$t0"),\"leader\":\"$(rc_host_of "${RC_G_LEADER:-}")\",\"term\":${RC_G_TERM:-0},\"same_peer_id\":$([[ $pid_after == "${RC_PEER[$lhost]}" ]] && echo true || echo false),\"seen\":\"${RC_G_SEEN% }\""
	rc=0
	RC_G_LEADER='' RC_G_TERM=0
	rc_wait_for 30 rc_gagree tg "$want" "${members[@]}" || rc=1
	rc_check "group agrees" "$rc" "\"seen\":\"${RC_G_SEEN% }\",\"leader\":\"$(rc_host_of "${RC_G_LEADER:-}")\",\"term\":${RC_G_TERM:-0},\"members\":$want"
}

# rc_pipe_listener NODE NAME KIND: bind pipe NAME (KIND unicast or propagate) on NODE with the
# rcnet pipe listener (each message as a JSON line with its carrier, in
# logs/NODE-pipe-NAME.log); waits until the daemon bound it. PID in RC_PID.
rc_pipe_listener() {
	local node=$1 name=$2 kind=$3 ready
	ready=$RC_DIR/pipes/$node-$name.ready
	mkdir -p "$RC_DIR/pipes"
	rc_bg "$node" "pipe-$name" "$RCNET" pipelisten -data "$(rc_data "$node")" -name "$name" -kind "$kind" \
		-ready "$ready" -timeout "${RC_TIMEOUT:-300}s"
	rc_wait_for 30 test -f "$ready" || rc_die "pipe $name not bound on $node (log: $RC_DIR/logs/$node-pipe-$name.log)"
}

# rc_pipe_got NODE NAME PREFIX: the data of the messages NODE's listener of NAME received
# whose data is PREFIX followed by digits, one a line, in arrival order.
rc_pipe_got() {
	grep -o "\"data\":\"$3[0-9]*\"" "$RC_DIR/logs/$1-pipe-$2.log" 2>/dev/null | cut -d'"' -f4 || true
}

# rc_pipe_carrier NODE NAME PREFIX CARRIER: how many of those came by CARRIER.
rc_pipe_carrier() {
	grep "\"data\":\"$3[0-9]*\"" "$RC_DIR/logs/$1-pipe-$2.log" 2>/dev/null | grep -c "\"carrier\":\"$4\"" || true
}

# rc_pipe_send NODE NAME KIND PREFIX FIRST LAST: send PREFIXFIRST..PREFIXLAST, one message a
# line of stdin, with `raftcast pipe send`; the count the sender reports delivered in
# RC_DELIVERED; fails when the command fails.
rc_pipe_send() {
	local node=$1 name=$2 kind=$3 p=$4 out
	out=$(seq "$5" "$6" | sed "s/^/$p/" | ip netns exec "$(rc_ns "$node")" "$RAFTCAST_BIN" \
		--data "$(rc_data "$node")" pipe send "$name" --kind "$kind" --timeout 60s --json \
		2>>"$RC_DIR/logs/$node-pipe-send.log") || return 1
	RC_DELIVERED=$(rc_fnum delivered "$(rc_flat <<<"$out")")
}

# rc_pipe_has N NAME PREFIX NODE...: true when the NODEs' listeners of NAME hold N messages
# PREFIX<digits> or more between them.
rc_pipe_has() {
	local n=$1 name=$2 p=$3 h got=0
	shift 3
	for h in "$@"; do got=$((got + $(rc_pipe_got "$h" "$name" "$p" | wc -l))); done
	((got >= n))
}

# rc_pipe_all NAME PREFIX N NODE...: true when every NODE's listener has N distinct messages
# PREFIX1..PREFIXN.
rc_pipe_all() {
	local name=$1 p=$2 n=$3 h
	shift 3
	for h in "$@"; do
		(($(rc_pipe_got "$h" "$name" "$p" | sort -u | wc -l) >= n)) || return 1
	done
}

# pipes: propagate and unicast pipes between node daemons (the rendezvous takes no part).
# The sender is h21 on paper (else the first node); every other node listens.
# - propagate "news": after warm-up messages reach every listener, the sender sends
#   RC_PIPE_COUNT (20) numbered messages; every listener must get each exactly once. Each
#   listener's check counts them per carrier: a listener in the sender's multicast domain
#   must get some by native multicast; one outside it (segment 1 on paper, across the
#   router) none by multicast, all by gossipsub.
# - unicast "jobs": two listeners (the first two nodes besides the sender); a batch goes to
#   exactly one of them, in order; that one's daemon is SIGKILLed; the next batch must all
#   reach the other, in order (the sender fails over from the dead binding).
scenario_pipes() {
	local src h rc n=${RC_PIPE_COUNT:-20} listeners=() pids=() t0
	rc_tools
	rc_raftcast_bin
	rc_nodes_net
	src=${RC_NODES[0]}
	[[ " ${RC_NODES[*]} " == *" h21 "* ]] && src=h21
	for h in "${RC_NODES[@]}"; do [[ $h == "$src" ]] || listeners+=("$h"); done
	((${#listeners[@]} >= 2)) || rc_die "pipes needs 3 nodes or more besides the rendezvous (e.g. lan --hosts 4)"
	sleep "${RC_BEACON_WAIT:-3}" # multicast beacons: every node learns its domain

	# Propagate.
	for h in "${listeners[@]}"; do
		rc_pipe_listener "$h" news propagate
		pids+=("$RC_PID")
	done
	local i=0
	t0=$EPOCHREALTIME
	until rc_pipe_all news w 1 "${listeners[@]}"; do
		i=$((i + 1))
		((i <= 60)) || break
		rc_pipe_send "$src" news propagate w "$i" "$i" || true
		sleep 0.5
	done
	rc=0
	rc_pipe_all news w 1 "${listeners[@]}" || rc=1
	rc_check "propagate warm-up" "$rc" "\"messages\":$i,\"seconds\":$(rc_elapsed "$t0")"
	t0=$EPOCHREALTIME
	rc=0
	rc_pipe_send "$src" news propagate m 1 "$n" || rc=1
	rc_check "propagate send $src" "$rc" "\"sent\":$n,\"delivered\":${RC_DELIVERED:-0}"
	rc_wait_for 60 rc_pipe_all news m "$n" "${listeners[@]}" || true
	local secs
	secs=$(rc_elapsed "$t0")
	sleep 1 # late duplicates, if any, would show now
	rc_stop "${pids[@]}"
	local sseg lseg got uniq mc gs st same
	sseg=$(rc_segment_of "$src")
	for h in "${listeners[@]}"; do
		lseg=$(rc_segment_of "$h")
		got=$(rc_pipe_got "$h" news m | wc -l)
		uniq=$(rc_pipe_got "$h" news m | sort -u | wc -l)
		mc=$(rc_pipe_carrier "$h" news m multicast)
		gs=$(rc_pipe_carrier "$h" news m gossipsub)
		st=$(rc_pipe_carrier "$h" news m stream)
		rc=0
		((uniq == n && got == n)) || rc=1
		if rc_same_mdomain "$sseg" "$lseg"; then
			same=true
			((mc > 0)) || rc=1
		else
			same=false
			((mc == 0)) || rc=1
		fi
		rc_check "propagate $src->$h" "$rc" "\"segment\":\"$lseg\",\"same_domain\":$same,\"sent\":$n,\"received\":$got,\"distinct\":$uniq,\"multicast\":$mc,\"gossipsub\":$gs,\"stream\":$st,\"seconds\":$secs"
	done

	# Unicast: delivery to one listener, then failover to the other.
	local a=${listeners[0]} b=${listeners[1]} x y pa pb want
	rc_pipe_listener "$a" jobs unicast
	pa=$RC_PID
	rc_pipe_listener "$b" jobs unicast
	pb=$RC_PID
	sleep "${RC_BIND_WAIT:-2}" # both bindings published
	want=$(seq 1 "$n" | sed 's/^/u/')
	rc=0
	rc_pipe_send "$src" jobs unicast u 1 "$n" || rc=1
	local delivered=${RC_DELIVERED:-0}
	rc_wait_for 30 rc_pipe_has "$n" jobs u "$a" "$b" || true
	x=$a y=$b
	if [[ $(rc_pipe_got "$b" jobs u) == "$want" ]]; then x=$b y=$a; fi
	[[ $(rc_pipe_got "$x" jobs u) == "$want" && -z $(rc_pipe_got "$y" jobs u) && $delivered == "$n" ]] || rc=1
	rc_check "unicast $src->$x" "$rc" "\"sent\":$n,\"delivered\":$delivered,\"received\":$(rc_pipe_got "$x" jobs u | wc -l),\"other_listener\":\"$y\",\"other_received\":$(rc_pipe_got "$y" jobs u | wc -l),\"in_order\":$([[ $(rc_pipe_got "$x" jobs u) == "$want" ]] && echo true || echo false)"
	# A hung listener: X's daemon is frozen (SIGSTOP), so a stream to it opens but never
	# answers; the batch must reach Y all the same, in order (after the sender's handshake
	# timeout if it tried X first).
	local xpid
	xpid=$(rc_node_pid "$x")
	kill -STOP "$xpid"
	rc_log "froze $x's daemon (PID $xpid)"
	rc_failover_batch "$src" "$x" "$y" "$n" f hung frozen
	# A dead listener: X's daemon is killed (its binding stays advertised); the next batch
	# must reach Y, in order.
	rc_kill_node "$x"
	rc_failover_batch "$src" "$x" "$y" "$n" g dead killed
	rc_stop "$pa" "$pb"
}

# rc_done_bytes NODE: done_bytes of NODE's first transfer (`transfers --json`; 0 if none).
rc_done_bytes() {
	local out
	out=$(rc_raftcast "$1" transfers --json 2>/dev/null) || { echo 0; return; }
	rc_fnum done_bytes "$(rc_flat <<<"$out")"
}

# rc_mbit RATE: a tc rate (30mbit, 1gbit, 500kbit) in Mbit/s.
rc_mbit() {
	awk -v r="$1" 'BEGIN { n = r + 0; u = tolower(substr(r, length(n "") + 1))
		m = (u == "gbit") ? 1000 : (u == "mbit") ? 1 : (u == "kbit") ? 0.001 : 0.000001; print n * m }'
}

# rc_fault_start RVH NODE...: every link shaped to --rate, else to RC_FAULT_RATE (30mbit) at
# run time (the rate in RC_FAULT_LINKRATE); a rendezvous on RVH and a node on each NODE, each
# ready.
rc_fault_start() {
	local rvh=$1 h rc
	shift
	RC_FAULT_LINKRATE=${RC_DEFAULT_RATE:-}
	if [[ -z $RC_FAULT_LINKRATE ]]; then
		RC_FAULT_LINKRATE=${RC_FAULT_RATE:-30mbit}
		rc_links_shape "$RC_FAULT_LINKRATE"
	fi
	start_rendezvous "$rvh"
	for h in "$@"; do start_node "$h"; done
	rc_check_ready 60 "$@" || rc_die "a node is not ready"
}

# rc_check_ready SECONDS NODE...: wait up to SECONDS for each node's API, one "ready NODE"
# check each; fails if any is not ready.
rc_check_ready() {
	local secs=$1 h rc bad=0
	shift
	for h in "$@"; do
		rc=0
		wait_api "$h" "$secs" || rc=$?
		rc_check "ready $h" "$rc"
		((rc == 0)) || bad=1
	done
	return "$bad"
}

# rc_start_gets NAME SECONDS NODE...: `raftcast get NAME` in the background on each node, its
# copy at recv/NODE.bin, bounded by SECONDS; the PIDs in RC_GETPID[NODE].
declare -gA RC_GETPID=()
rc_start_gets() {
	local name=$1 secs=$2 h
	shift 2
	mkdir -p "$RC_DIR/recv"
	for h in "$@"; do
		rc_bg "$h" get "$RAFTCAST_BIN" --data "$(rc_data "$h")" get "$name" \
			--out "$RC_DIR/recv/$h.bin" --timeout "${secs}s" --json
		RC_GETPID[$h]=$RC_PID
	done
}

# faults: one distribution (share/get, as in `distribution`) under three faults at once.
# The rendezvous is rv (else the first host), the source h21 (else the second host), every
# other host receives; three receivers or more are needed (lan --hosts 5).
# - loss: RC_FAULT_LOSS percent (5) random loss at both ends of every link, from before the
#   share to the end (with --loss, that instead);
# - kill: once the first receiver K holds RC_KILL_AT bytes (half the file, at least 9 MiB so
#   that its store has saved its bitmap of slices), its daemon is SIGKILLed by PID; after
#   RC_RESTART_AFTER seconds (2) it restarts on its data dir and `get` runs again: it must
#   resume (bytes_resumed > 0) and complete;
# - partition: once the second receiver P holds RC_PARTITION_AT bytes (a quarter of the
#   file), it is cut off (nftables drop in its namespace, all but loopback) for
#   RC_PARTITION_SECONDS (8), then healed: its `get`, still running, must complete.
# Links are shaped to --rate, else RC_FAULT_RATE (30mbit), so that the faults land
# mid-transfer; the source shares at 90 % of that. Every copy must be byte-identical.
# --bytes sets the file (24MiB; at least 12MiB).
scenario_faults() {
	local hosts rvh src h rc size file linkrate loss kill_at k p others=() receivers=()
	rc_raftcast_bin
	mapfile -t hosts < <(rc_hosts)
	rvh=${hosts[0]}
	[[ -n $(rc_q node rv host) ]] && rvh=rv
	src=h21
	[[ " ${hosts[*]} " == *" h21 "* ]] || src=${hosts[1]}
	for h in "${hosts[@]}"; do [[ $h == "$rvh" || $h == "$src" ]] || receivers+=("$h"); done
	((${#receivers[@]} >= 3)) || rc_die "faults needs 3 receivers or more besides the rendezvous and the source (e.g. lan --hosts 5)"
	k=${receivers[0]} p=${receivers[1]}
	others=("${receivers[@]:2}")
	size=$(rc_size_bytes "${RC_BYTES:-24MiB}")
	((size >= 12 << 20)) || rc_die "faults needs --bytes 12MiB or more (the killed receiver must have saved slices)"
	kill_at=${RC_KILL_AT:-$((size / 2))}
	((kill_at >= 9 << 20)) || kill_at=$((9 << 20))
	rc_fault_start "$rvh" "$src" "${receivers[@]}"
	linkrate=$RC_FAULT_LINKRATE
	rc=0
	rc_raftcast "$src" group create tn --json >"$RC_DIR/logs/$src-group.json" || rc=$?
	rc_check "group create $src" "$rc"
	for h in "${receivers[@]}"; do rc_join "$h" tn; done
	sleep "${RC_BEACON_WAIT:-3}" # multicast beacons: every node learns its domain
	loss=${RC_DEFAULT_LOSS:-}
	if [[ -z $loss ]]; then
		loss=${RC_FAULT_LOSS:-5}
		rc_links_loss "$loss"
	fi
	rc_check "faults set" 0 "\"link_rate\":\"$linkrate\",\"loss_percent\":$loss,\"bytes\":$size,\"killed\":\"$k\",\"kill_at\":$kill_at,\"partitioned\":\"$p\",\"partition_at\":${RC_PARTITION_AT:-$((size / 4))},\"partition_seconds\":${RC_PARTITION_SECONDS:-8}"
	file=$RC_DIR/share.bin
	rc_make_file "$file" "$size"
	rc=0
	rc_raftcast "$src" share "$file" --name faults.bin --rate "$(awk -v m="$(rc_mbit "$linkrate")" 'BEGIN { printf "%.1fMbit", m * 0.9 }')" \
		--json >"$RC_DIR/logs/$src-share.json" || rc=$?
	rc_check "share $src" "$rc"
	((rc == 0)) || return 0
	local gt=${RC_GET_TIMEOUT:-240} start=$SECONDS
	rc_start_gets faults.bin "$gt" "${receivers[@]}"

	# The faults as the transfer goes, each on its own trigger (the receivers do not
	# progress alike): P is cut off once it holds part_at bytes and healed
	# RC_PARTITION_SECONDS later; K is killed once it holds kill_at bytes and restarted
	# RC_RESTART_AFTER seconds later. A receiver that finished (or failed) before its
	# trigger gets the fault all the same, and its "mid-transfer" check fails.
	local part_at=${RC_PARTITION_AT:-$((size / 4))} psecs=${RC_PARTITION_SECONDS:-8}
	local kdone=0 pdone=0 pheld=0 tk=-1 tp=-1 healed=0 restarted=0 deadline=$((SECONDS + gt))
	while ((SECONDS < deadline)) && ! ((healed && restarted)); do
		if ((tp < 0)); then
			pdone=$(rc_done_bytes "$p")
			if ((pdone >= part_at)) || ! kill -0 "${RC_GETPID[$p]}" 2>/dev/null; then
				rc_partition "$p"
				tp=$SECONDS
				rc_log "partitioned $p (it held $pdone bytes)"
				rc=0
				((pdone < size)) || rc=1
				rc_check "partition mid-transfer $p" "$rc" "\"done_bytes\":$pdone,\"size\":$size"
			fi
		elif ((!healed && SECONDS - tp >= psecs)); then
			pheld=$(rc_done_bytes "$p")
			rc_heal "$p"
			healed=1
			rc_log "healed $p after $((SECONDS - tp)) s (it holds $pheld bytes)"
		fi
		if ((tk < 0)); then
			kdone=$(rc_done_bytes "$k")
			if ((kdone >= kill_at)) || ! kill -0 "${RC_GETPID[$k]}" 2>/dev/null; then
				rc_kill_node "$k"
				tk=$SECONDS
				rc_log "$k held $kdone bytes when killed"
				rc=0
				((kdone >= kill_at && kdone < size)) || rc=1
				rc_check "kill mid-transfer $k" "$rc" "\"done_bytes\":$kdone,\"size\":$size"
				rc_wait_pid "${RC_GETPID[$k]}" 30 || true # its get ends with its daemon
			fi
		elif ((!restarted && SECONDS - tk >= ${RC_RESTART_AFTER:-2})); then
			restarted=1
			rc_restart_node "$k"
			rc=0
			wait_api "$k" 60 || rc=$?
			rc_check "restart $k" "$rc"
			if ((rc == 0)); then
				rc_bg "$k" get-resume "$RAFTCAST_BIN" --data "$(rc_data "$k")" get faults.bin \
					--out "$RC_DIR/recv/$k.bin" --timeout "${gt}s" --json
				RC_GETPID[$k]=$RC_PID
			fi
		fi
		sleep 0.1
	done
	((healed && restarted)) || rc_check "faults applied" 1 "\"healed\":$healed,\"restarted\":$restarted"

	# Every receiver completes with an identical copy.
	local log mc peers srcb resumed secs
	for h in "${receivers[@]}"; do
		rc=0
		rc_wait_pid "${RC_GETPID[$h]}" "$((gt + 30))" || rc=$?
		log=$RC_DIR/logs/$h-get.log
		[[ $h == "$k" ]] && log=$RC_DIR/logs/$h-get-resume.log
		cmp -s "$file" "$RC_DIR/recv/$h.bin" || rc=1
		mc=$(rc_jnum bytes_multicast "$log")
		peers=$(rc_jnum bytes_peers "$log")
		srcb=$(rc_jnum bytes_source "$log")
		resumed=$(rc_jnum bytes_resumed "$log")
		secs=$(rc_jnum seconds "$log")
		local role=healthy
		[[ $h == "$k" ]] && role=killed
		[[ $h == "$p" ]] && role=partitioned
		rc_check "identical $h" "$rc" "\"fault\":\"$role\",\"bytes_multicast\":$mc,\"bytes_peers\":$peers,\"bytes_source\":$srcb,\"bytes_resumed\":$resumed,\"seconds\":$secs"
		if [[ $h == "$k" ]]; then
			rc=0
			((resumed > 0)) || rc=1
			rc_check "resumed $k" "$rc" "\"bytes_resumed\":$resumed,\"held_when_killed\":$kdone"
		fi
		if [[ $h == "$p" ]]; then
			rc_check "completed after partition $p" "$([[ $rc == 0 ]] && echo 0 || echo 1)" "\"held_at_partition\":$pdone,\"held_at_heal\":$pheld,\"partition_at\":$part_at"
		fi
	done
	rc_check "faults distribution time" 0 "\"seconds\":$((SECONDS - start)),\"bytes\":$size,\"receivers\":${#receivers[@]}"
}
