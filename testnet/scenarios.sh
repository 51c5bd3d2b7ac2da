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
# interface, SENDER sends COUNT datagrams to each, and each receiver's count is checked:
# at least 90% where the receiver shares SENDER's multicast domain (the first datagrams
# may wait for smcroute to install a route), less 4 times the configured loss percentage
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
	rc_wait_pid "$send_pid" "${RC_TIMEOUT:-300}" || rc_die "sender failed (see its log)"
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
# IPv6 addresses (TCP, port 0).
rc_daemon() {
	local node=$1 role=$2 data
	shift 2
	rc_raftcast_bin
	data=$(rc_data "$node")
	mkdir -p "$data"
	rc_bg "$node" raftcast "$RAFTCAST_BIN" "$role" --data "$data" \
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
	for h in "${hosts[@]:1}"; do
		rc=0
		wait_api "$h" 30 || rc=$?
		rc_check "ready $h" "$rc"
	done
	for h in "${hosts[@]:1}"; do
		rc=1
		rc_wait_for 30 rc_peers_connected "$h" && rc=0
		rc_check "peers $h" "$rc"
	done
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
	for h in "$@"; do [[ $h == "$RC_RV" ]] || start_node "$h"; done
	for h in "$@"; do
		[[ $h == "$RC_RV" ]] && continue
		rc=0
		wait_api "$h" 30 || rc=$?
		rc_check "ready $h" "$rc"
		((rc == 0)) || rc_die "node $h not ready"
	done
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
		rc=0
		rc_raftcast "$h" group join coop --timeout 60s --json >"$RC_DIR/logs/$h-group-join.json" || rc=$?
		rc_check "group join $h" "$rc"
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

# remote-smoke: proves testnet/remote (the real-hosts mode) on namespaces. Every host runs
# sshd (keys, config and PID in the run directory, listening on its testnet address); the
# first host drives `testnet/remote` over ssh to the others and itself, exactly as it would
# drive real machines. Check: the remote run's own summary is ok.
scenario_remote_smoke() {
	local sd h hosts rc=0 addr
	for h in /usr/sbin/sshd ssh-keygen ssh scp; do
		command -v "$h" >/dev/null || rc_die "remote-smoke needs $h (apt-get install openssh-server openssh-client)"
	done
	rc_raftcast_bin
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
		rc_bg "$h" sshd /usr/sbin/sshd -D -e -f "$sd/sshd-$h.conf"
		echo "$h root@$addr $addr" >>"$sd/hosts"
	done
	for h in "${hosts[@]}"; do
		addr=$(rc_addr "$h" 4)
		rc_wait_for 15 rc_exec "${hosts[0]}" bash -c "echo >/dev/tcp/$addr/22" || rc_die "sshd on $h not up"
	done
	rc_exec "${hosts[0]}" env RAFTCAST_BIN="$RAFTCAST_BIN" RC_BASE="$RC_DIR/remote" \
		"$RC_TESTNET/remote" "$sd/hosts" --id "${RC_ID}r" --timeout 150 \
		--ssh-opt "-i $sd/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null" \
		>"$RC_DIR/remote.json" 2>"$RC_DIR/logs/remote.log" || rc=$?
	# Trust the summary too, not only the exit status.
	grep -q '^{"topology":"remote".*"ok":true' "$RC_DIR/remote.json" 2>/dev/null || { [[ $rc != 0 ]] || rc=1; }
	rc_check "remote run" "$rc" "\"summary\":$(cat "$RC_DIR/remote.json" 2>/dev/null || echo null)"
}
