#!/usr/bin/env bash
# testnet/lib.sh: build multi-host testnets from network namespaces. Source it; do not run it.
#
# A run has an ID (RC_ID, default rc<pid>) and a directory (RC_DIR, default
# $RC_BASE/$RC_ID with RC_BASE=/tmp/raftcast-testnet) holding the state file, logs and
# tool binaries. Every namespace is named "$RC_ID-<node>", so concurrent runs never
# collide. Nothing is added to the root namespace: the segments' bridges live in one
# "switch" namespace per run ($RC_ID-sw), and every veth is created directly between
# that namespace and a node's namespace, so interface names inside them (eth0, p3,
# br-s1) need no run prefix.
#
# Addressing: segment number k (in order of creation) is 198.18.k.0/24 and
# fd00:0:0:k::/64; routers take .1, .2, ... and hosts .10, .11, ... (same numbers in
# IPv6). Hosts get routes to 198.18.0.0/15 and fd00::/8 via their segment's first
# router, a 224.0.0.0/4 route on their first interface, and no default route.
#
# Spec format (one statement per line, '#' starts a comment), see rc_build:
#   segment NAME [rate=R] [loss=P]        a bridge; options are defaults for its links
#   host NAME SEGMENT [rate=R] [loss=P]   a namespace with one veth into SEGMENT
#   router NAME SEG [SEG...] [rate=R] [loss=P]  IPv4/IPv6 forwarding between segments
#   mcast ROUTER SEG SEG [SEG...]         forward multicast between these segments (smcroute)
# R is a tc rate (100mbit); P a loss percentage (1, 0.5) applied at both ends of a link.
#
# State file lines (whitespace separated), appended as resources are made:
#   netns NS | pid PID NODE LABEL | segment NAME NUM | node NAME KIND NS
#   iface NODE SEG IF ADDR4 ADDR6 PORT RATE LOSS | smcroute ROUTER CONF | mdomain ROUTER SEG...
#   rmdir DIR (an empty directory made outside the run directory, removed at teardown)
# rc_teardown reads it: processes by PID (TERM, then KILL), then any process still in
# one of the run's namespaces, then the namespaces (which removes every veth and bridge).
# It is idempotent and installed on EXIT/INT/TERM by rc_traps.

# shellcheck disable=SC2034  # variables are used by the scripts that source this file

RC_BASE=${RC_BASE:-/tmp/raftcast-testnet}
RC_ID=${RC_ID:-rc$$}
RC_DIR=${RC_DIR:-$RC_BASE/$RC_ID}
RC_STATE=$RC_DIR/state
RC_SW=$RC_ID-sw
RC_DEFAULT_RATE=${RC_DEFAULT_RATE:-}
RC_DEFAULT_LOSS=${RC_DEFAULT_LOSS:-}
RC_TORN_DOWN=0
RC_PORTS=0

# RC_XTRACE=1: trace every command with a timestamp (to stderr), to see where a run spends
# its time.
if [[ ${RC_XTRACE:-0} == 1 ]]; then
	PS4='+ $EPOCHREALTIME ${BASH_SOURCE[0]##*/}:$LINENO '
	set -x
fi

rc_log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$RC_ID" "$*" >&2; }
rc_die() { rc_log "ERROR: $*"; exit 1; }

# rc_init: create the run directory and state file. Call once before anything else.
rc_init() {
	[[ $(id -u) -eq 0 ]] || rc_die "testnet needs root (network namespaces, bridges, tc, nft)"
	local tool
	for tool in ip tc nft bridge; do
		command -v "$tool" >/dev/null || rc_die "missing '$tool' (apt-get install iproute2 nftables)"
	done
	[[ ${#RC_ID} -le 24 && $RC_ID =~ ^[a-zA-Z0-9_]+$ ]] || rc_die "RC_ID must be [a-zA-Z0-9_], <= 24 chars"
	mkdir -p "$RC_DIR/logs" || rc_die "cannot create $RC_DIR"
	if compgen -G "/run/netns/$RC_ID-*" >/dev/null; then
		rc_die "run ID $RC_ID is in use (namespaces $RC_ID-* exist); pick another --id"
	fi
	# A reused run directory starts afresh; its old logs are overwritten.
	: >"$RC_STATE"
	rm -f "$RC_DIR/checks.jsonl" "$RC_DIR/timed_out" "$RC_DIR/watchdog.fifo"
	rc_log "run directory $RC_DIR"
}

# rc_traps: tear down on EXIT, INT and TERM. A handler given as $1 runs after teardown
# (on EXIT) with the exit status in $RC_EXIT.
rc_traps() {
	RC_ON_EXIT=${1:-}
	# A signal's handler runs where the signal found the script, maybe inside a function
	# whose output goes to a file (`rc_raftcast h2 group join ... >FILE`): the EXIT handler
	# first goes back to the stdout and stderr the run started with, kept as fds 8 and 9
	# (rc_exec and rc_bg close them for the processes they start).
	exec 8>&1 9>&2
	# The run exits non-zero when the handler reports failure (a failed check), even if
	# the script itself finished. INT and TERM are ignored from the handler's first
	# statement: a TERM (the watchdog) landing while it runs would run `exit` inside it and
	# skip the teardown and the summary (seen once: a failure and the timeout together).
	trap 'RC_EXIT=$?; trap "" INT TERM; trap - ERR; exec 1>&8 2>&9; rc_teardown; rc_drop_data
		if [[ -n $RC_ON_EXIT ]] && ! "$RC_ON_EXIT" && ((RC_EXIT == 0)); then RC_EXIT=1; fi
		exit "$RC_EXIT"' EXIT
	set -E
	trap 'rc_log "failed (status $?): ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
	trap 'rc_log "interrupted"; exit 130' INT
	trap 'rc_log "terminated"; exit 143' TERM
}

rc_record() { printf '%s\n' "$*" >>"$RC_STATE"; }

# rc_drop_data: after teardown, remove the bulk data a run made in its directory (files
# shared and received, daemons' data dirs) and keep logs, state and results. RC_KEEP_DATA=1
# keeps everything.
rc_drop_data() {
	[[ ${RC_KEEP_DATA:-0} == 1 || ! -d $RC_DIR ]] && return 0
	rm -rf "$RC_DIR/data" "$RC_DIR/out" "$RC_DIR/recv" "$RC_DIR/origin" "$RC_DIR/share" \
		"$RC_DIR/mc" "$RC_DIR/ot" "$RC_DIR"/*.bin "$RC_DIR"/nginx*/tmp
}

# rc_q KIND [FIELD2 [FIELD3]]: state lines of KIND whose next fields match (empty = any).
rc_q() {
	awk -v k="$1" -v a="${2:-}" -v b="${3:-}" \
		'$1==k && (a=="" || $2==a) && (b=="" || $3==b)' "$RC_STATE"
}

# rc_ns NODE: the namespace of a node ("sw" is the switch).
rc_ns() { printf '%s-%s\n' "$RC_ID" "$1"; }

rc_valid_name() {
	[[ $1 =~ ^[a-z][a-z0-9]{0,9}$ ]] || rc_die "bad name '$1': want [a-z][a-z0-9]{0,9}"
}

# rc_netns_add NS: a namespace with loopback up, IPv6 DAD and router advertisements off.
rc_netns_add() {
	local ns=$1
	ip netns add "$ns" || rc_die "ip netns add $ns"
	rc_record netns "$ns"
	ip -n "$ns" link set lo up
	# shellcheck disable=SC2016  # $k expands in the inner shell
	ip netns exec "$ns" sh -c '
		for k in all default; do
			echo 0 >/proc/sys/net/ipv6/conf/$k/accept_dad
			echo 0 >/proc/sys/net/ipv6/conf/$k/dad_transmits
			echo 0 >/proc/sys/net/ipv6/conf/$k/accept_ra
		done' || rc_die "sysctls in $ns"
}

rc_switch() {
	if [[ -z $(rc_q netns "$RC_SW") ]]; then
		rc_netns_add "$RC_SW"
	fi
}

# rc_offloads_off NS IF: TSO/GSO/GRO off, or shaped links drop 64 KB bursts.
rc_offloads_off() {
	if command -v ethtool >/dev/null; then
		ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 ||
			rc_log "warning: ethtool -K $2 in $1 failed"
	else
		rc_log "warning: ethtool missing, offloads stay on (apt-get install ethtool)"
	fi
}

# rc_burst RATE: bytes in 2 ms at RATE (100mbit, 20mbit, 1gbit), at least 15000.
rc_burst() {
	awk -v r="$1" 'BEGIN {
		n = r + 0; u = tolower(substr(r, length(n "") + 1))
		m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : (u == "bit" || u == "") ? 1 : -1
		if (n <= 0 || m < 0) exit 1
		b = n * m / 8 / 500; if (b < 15000) b = 15000; printf "%d", b }' ||
		rc_die "bad rate '$1' (want e.g. 100mbit, 20mbit, 1gbit)"
}

# rc_shape NS IF RATE: htb at RATE (e.g. 100mbit) on IF's egress (delete, then add:
# replace fails on htb). The burst is 2 ms of RATE (at least 15 kB): tc's default (one
# MTU) lets softirq latency starve the class; at 100mbit it delivered 75% of the rate.
rc_shape() {
	local ns=$1 dev=$2 rate=$3 burst
	burst=$(rc_burst "$rate")
	tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
	if ! tc -n "$ns" qdisc add dev "$dev" root handle 1: htb default 1 ||
		! tc -n "$ns" class add dev "$dev" parent 1: classid 1:1 htb rate "$rate" ceil "$rate" \
			burst "$burst" cburst "$burst" quantum 15140; then
		rc_die "tc htb $rate on $dev in $ns"
	fi
}

# rc_cap_per_ip NODE RATE: cap what NODE sends to each other node's address at RATE (an
# origin that limits every client IP, whatever its number of connections), under the
# link's own rate when the link is shaped. One htb class per destination, u32 filters
# on the IPv4 and IPv6 destination; other traffic may use the whole link.
rc_cap_per_ip() {
	local node=$1 rate=$2 ns dev link burst id=10 other a4 a6
	ns=$(rc_ns "$node")
	dev=$(rc_iface "$node")
	link=$(rc_q iface "$node" | awk '{print $8; exit}')
	[[ $link != - && -n $link ]] || link=10gbit
	burst=$(rc_burst "$link")
	tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
	if ! {
		tc -n "$ns" qdisc add dev "$dev" root handle 1: htb default 2 &&
			tc -n "$ns" class add dev "$dev" parent 1: classid 1:1 htb rate "$link" ceil "$link" \
				burst "$burst" cburst "$burst" quantum 15140 &&
			tc -n "$ns" class add dev "$dev" parent 1:1 classid 1:2 htb rate 1mbit ceil "$link" \
				burst "$burst" cburst "$burst" quantum 15140
	}; then
		rc_die "tc htb on $dev in $ns"
	fi
	while read -r _ other _ _ a4 a6 _; do
		[[ $other == "$node" ]] && continue
		id=$((id + 1))
		if ! {
			# A small guaranteed rate: htb grants "rate" even beyond the parent's, so
			# the link's rate holds only if the children borrow up to their ceil.
			tc -n "$ns" class add dev "$dev" parent 1:1 classid "1:$id" htb rate 1mbit ceil "$rate" \
				burst "$(rc_burst "$rate")" cburst "$(rc_burst "$rate")" quantum 15140 &&
				tc -n "$ns" filter add dev "$dev" parent 1: protocol ip prio 1 u32 \
					match ip dst "$a4/32" flowid "1:$id" &&
				tc -n "$ns" filter add dev "$dev" parent 1: protocol ipv6 prio 2 u32 \
					match ip6 dst "$a6/128" flowid "1:$id"
		}; then
			rc_die "per-IP cap for $other"
		fi
	done < <(rc_q iface)
}

# rc_loss NS IF PERCENT: drop PERCENT of what IF receives (nftables netdev ingress, numgen).
rc_loss() {
	local ns=$1 dev=$2 pct=$3 per10k
	per10k=$(awk -v p="$pct" 'BEGIN { if (p !~ /^[0-9.]+$/ || p > 100) exit 1; printf "%d", p * 100 + 0.5 }') ||
		rc_die "bad loss '$pct' (percent, e.g. 1 or 0.5)"
	((per10k > 0)) || return 0
	nft -f - <<-EOF || rc_die "nft loss on $dev in $ns"
		table netdev rcloss {
			chain in_$dev {
				type filter hook ingress device "$dev" priority 0; policy accept;
				numgen random mod 10000 < $per10k counter drop
			}
		}
	EOF
}

# Running nft inside a namespace needs exec; wrap so rc_loss reads simply.
nft() { if [[ -n ${RC_NFT_NS:-} ]]; then ip netns exec "$RC_NFT_NS" nft "$@"; else command nft "$@"; fi; }

# rc_segment NAME [rate=R] [loss=P]
rc_segment() {
	local name=$1 num br
	shift
	rc_valid_name "$name"
	[[ -z $(rc_q segment "$name") ]] || rc_die "segment $name exists"
	rc_switch
	num=$(($(rc_q segment | wc -l) + 1))
	((num <= 255)) || rc_die "too many segments"
	br=br-$name
	ip -n "$RC_SW" link add name "$br" type bridge \
		mcast_snooping 1 mcast_querier 1 mcast_igmp_version 3 mcast_mld_version 2 \
		mcast_query_response_interval 100 mcast_startup_query_interval 100 \
		mcast_query_interval 1000 || rc_die "bridge $br"
	ip -n "$RC_SW" link set "$br" up
	rc_record segment "$name" "$num" "$*"
}

# rc_opt KEY DEFAULT ARGS...: value of KEY=... among ARGS, else DEFAULT.
rc_opt() {
	local key=$1 val=$2 a
	shift 2
	for a in "$@"; do [[ $a == "$key="* ]] && val=${a#*=}; done
	printf '%s\n' "$val"
}

# rc_attach NODE KIND SEG OPTS...: a veth from the node's namespace into SEG's bridge.
rc_attach() {
	local node=$1 kind=$2 seg=$3 ns segline num segopts n if port rate loss idx a4 a6
	shift 3
	ns=$(rc_ns "$node")
	segline=$(rc_q segment "$seg")
	[[ -n $segline ]] || rc_die "no segment '$seg' (declare it before $node)"
	num=$(awk '{print $3}' <<<"$segline")
	read -r -a segopts <<<"$(cut -d' ' -f4- <<<"$segline")"
	n=$(rc_q iface "$node" | wc -l)
	if=eth$n
	RC_PORTS=$(($(rc_q iface | wc -l) + 1))
	port=p$RC_PORTS
	if [[ $kind == router ]]; then
		idx=$(($(rc_q iface "" "$seg" | awk '$6 ~ /::[1-9]$/' | wc -l) + 1))
		((idx <= 9)) || rc_die "too many routers in $seg"
	else
		idx=$(($(rc_q iface "" "$seg" | awk '$6 !~ /::[1-9]$/' | wc -l) + 10))
		((idx <= 250)) || rc_die "too many hosts in $seg"
	fi
	# Routers are counted by their IPv6 suffix ::1..::9; hosts start at ::10.
	a4=198.18.$num.$idx
	a6=fd00:0:0:$num::$idx
	ip -n "$RC_SW" link add "$port" type veth peer name "$if" netns "$ns" ||
		rc_die "veth $port <-> $node:$if"
	ip -n "$RC_SW" link set "$port" alias "$node.$seg"
	ip -n "$RC_SW" link set "$port" master "br-$seg"
	ip netns exec "$RC_SW" sh -c "echo 1 >/proc/sys/net/ipv6/conf/$port/disable_ipv6"
	ip -n "$RC_SW" link set "$port" up
	ip -n "$ns" addr add "$a4/24" dev "$if"
	ip -n "$ns" addr add "$a6/64" dev "$if" nodad
	ip -n "$ns" link set "$if" up
	rc_offloads_off "$RC_SW" "$port"
	rc_offloads_off "$ns" "$if"
	rate=$(rc_opt rate "$(rc_opt rate "$RC_DEFAULT_RATE" "${segopts[@]}")" "$@")
	loss=$(rc_opt loss "$(rc_opt loss "$RC_DEFAULT_LOSS" "${segopts[@]}")" "$@")
	if [[ -n $rate ]]; then
		rc_shape "$ns" "$if" "$rate"
		rc_shape "$RC_SW" "$port" "$rate"
	fi
	if [[ -n $loss ]]; then
		RC_NFT_NS=$ns rc_loss "$ns" "$if" "$loss"
		RC_NFT_NS=$RC_SW rc_loss "$RC_SW" "$port" "$loss"
	fi
	rc_record iface "$node" "$seg" "$if" "$a4" "$a6" "$port" "${rate:--}" "${loss:--}"
}

# rc_host NAME SEG [rate=R] [loss=P]
rc_host() {
	local name=$1 seg=$2 ns
	shift 2
	rc_valid_name "$name"
	[[ $name != sw ]] || rc_die "'sw' is reserved"
	[[ -z $(rc_q node "$name") ]] || rc_die "node $name exists"
	ns=$(rc_ns "$name")
	rc_netns_add "$ns"
	rc_record node "$name" host "$ns"
	rc_attach "$name" host "$seg" "$@"
	ip -n "$ns" route add 224.0.0.0/4 dev eth0
}

# rc_router NAME SEG [SEG...] [rate=R] [loss=P]
rc_router() {
	local name=$1 ns a segs=() opts=()
	shift
	rc_valid_name "$name"
	[[ -z $(rc_q node "$name") ]] || rc_die "node $name exists"
	for a in "$@"; do if [[ $a == *=* ]]; then opts+=("$a"); else segs+=("$a"); fi; done
	((${#segs[@]} >= 1)) || rc_die "router $name needs segments"
	ns=$(rc_ns "$name")
	rc_netns_add "$ns"
	ip netns exec "$ns" sh -c '
		echo 1 >/proc/sys/net/ipv4/ip_forward
		echo 1 >/proc/sys/net/ipv6/conf/all/forwarding' || rc_die "forwarding in $ns"
	rc_record node "$name" router "$ns"
	for a in "${segs[@]}"; do rc_attach "$name" router "$a" "${opts[@]}"; done
}

# rc_mcast ROUTER SEG SEG [SEG...]: the router forwards IPv4 (224.0.0.0/4) and IPv6
# (ff05::/16 site, ff08::/16 organisation, ff0e::/16 global scope) multicast between
# these segments with smcroute (*,G) routes, and the segments' bridges treat the router
# port as a permanent multicast-router port so snooping hands it every group.
rc_mcast() {
	local router=$1 ns conf seg line if port pid
	shift
	(($# >= 2)) || rc_die "mcast $router needs two segments or more"
	command -v smcrouted >/dev/null || rc_die "missing smcrouted (apt-get install smcroute)"
	ns=$(rc_ns "$router")
	conf=$RC_DIR/smcroute-$router.conf
	local ifs=()
	for seg in "$@"; do
		line=$(rc_q iface "$router" "$seg")
		[[ -n $line ]] || rc_die "router $router is not in segment $seg"
		if=$(awk '{print $4}' <<<"$line")
		port=$(awk '{print $7}' <<<"$line")
		ifs+=("$if")
		bridge -n "$RC_SW" link set dev "$port" mcast_router 2 || rc_die "mcast_router on $port"
	done
	{
		for if in "${ifs[@]}"; do echo "phyint $if enable"; done
		for if in "${ifs[@]}"; do
			local others=() o
			for o in "${ifs[@]}"; do [[ $o == "$if" ]] || others+=("$o"); done
			echo "mroute from $if group 224.0.0.0/4 to ${others[*]}"
			for g in ff05::/16 ff08::/16 ff0e::/16; do
				echo "mroute from $if group $g to ${others[*]}"
			done
		done
	} >"$conf"
	rc_bg "$router" smcroute smcrouted -n -N -l info -f "$conf" \
		-u "$RC_DIR/smcroute-$router.sock" -P "$RC_DIR/smcroute-$router.pid" -i "$RC_ID-$router"
	pid=$RC_PID
	rc_record smcroute "$router" "$conf"
	rc_record mdomain "$router" "$@"
	rc_wait_for 10 test -S "$RC_DIR/smcroute-$router.sock" ||
		rc_die "smcrouted in $router did not start (log: $RC_DIR/logs/$router-smcroute.log)"
	kill -0 "$pid" 2>/dev/null || rc_die "smcrouted in $router exited"
}

# rc_routes: after every node exists, give each host its routes to the testnet's
# prefixes through the first router of its first segment (never a default route).
rc_routes() {
	local node seg r4 r6 ns
	while read -r _ node seg _; do
		ns=$(rc_ns "$node")
		r4='' r6=''
		read -r r4 r6 < <(rc_q iface "" "$seg" | awk '$6 ~ /::[1-9]$/ {print $5, $6; exit}') || true
		[[ -n ${r4:-} ]] || continue
		ip -n "$ns" route add 198.18.0.0/15 via "$r4" 2>/dev/null || true
		ip -n "$ns" -6 route add fd00::/8 via "$r6" 2>/dev/null || true
	done < <(rc_hosts | while read -r h; do rc_q iface "$h" | awk 'NR==1'; done)
}

# rc_build SPECFILE: build the topology the spec describes (see the header).
rc_build() {
	local spec=$1 kw rest mcasts=()
	[[ -r $spec ]] || rc_die "cannot read spec $spec"
	cp "$spec" "$RC_DIR/topology.spec"
	while read -r kw rest; do
		kw=${kw%%#*}
		[[ -n $kw ]] || continue
		rest=${rest%%#*}
		local args=()
		read -r -a args <<<"$rest"
		case $kw in
		segment) rc_segment "${args[@]}" ;;
		host) rc_host "${args[@]}" ;;
		router) rc_router "${args[@]}" ;;
		mcast) mcasts+=("$rest") ;;
		*) rc_die "spec: unknown statement '$kw'" ;;
		esac
	done <"$spec"
	rc_routes
	local m
	for m in "${mcasts[@]}"; do
		# shellcheck disable=SC2086  # split the statement's words on purpose
		rc_mcast $m
	done
	rc_log "built $(rc_hosts | wc -l) hosts, $(rc_q segment | wc -l) segments, $(rc_q node "" router | wc -l) routers"
}

# Queries.
rc_hosts() { rc_q node "" host | awk '{print $2}'; }
rc_routers() { rc_q node "" router | awk '{print $2}'; }
rc_segments() { rc_q segment | awk '{print $2}'; }
# rc_seg_hosts SEG: the hosts attached to SEG.
rc_seg_hosts() {
	local h
	for h in $(rc_hosts); do rc_q iface "$h" "$1" | awk '{print $2}'; done
}
# rc_addr NODE [4|6] [SEG]: the node's address (in SEG, else on its first interface).
rc_addr() {
	local f=5
	[[ ${2:-4} == 6 ]] && f=6
	rc_q iface "$1" "${3:-}" | awk -v f="$f" '{print $f; exit}'
}
# rc_iface NODE [SEG]: the node's interface name (in SEG, else its first).
rc_iface() { rc_q iface "$1" "${2:-}" | awk '{print $4; exit}'; }
# rc_segment_of NODE: the node's first segment.
rc_segment_of() { rc_q iface "$1" | awk '{print $3; exit}'; }
# rc_same_mdomain SEG SEG: true if multicast sent in one segment reaches the other.
rc_same_mdomain() {
	[[ $1 == "$2" ]] && return 0
	awk -v a="$1" -v b="$2" '$1=="mdomain" { fa=fb=0; for (i=3; i<=NF; i++) { if ($i==a) fa=1; if ($i==b) fb=1 }
		if (fa && fb) found=1 } END { exit !found }' "$RC_STATE"
}

# rc_exec NODE CMD...: run CMD in the node's namespace in the foreground.
rc_exec() {
	local node=$1
	shift
	ip netns exec "$(rc_ns "$node")" "$@" 8>&- 9>&-
}

# rc_bg NODE LABEL CMD...: start CMD in the node's namespace in the background, stdout and
# stderr to $RC_DIR/logs/NODE-LABEL.log; records its PID and leaves it in RC_PID (not
# printed: starting it inside $(...) would make it a grandchild that wait cannot reap).
rc_bg() {
	local node=$1 label=$2
	shift 2
	ip netns exec "$(rc_ns "$node")" "$@" >"$RC_DIR/logs/$node-$label.log" 2>&1 </dev/null 8>&- 9>&- &
	RC_PID=$!
	rc_record pid "$RC_PID" "$node" "$label"
}

# rc_wait_pid PID SECONDS: wait for a process to exit; returns its status if it is our
# child, 0 if it exited otherwise, 124 on timeout.
rc_wait_pid() {
	local pid=$1 deadline=$((SECONDS + $2))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then return 124; fi
		# A zombie child still answers kill -0: reap it through wait once it is done.
		if grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then break; fi
		sleep 0.1
	done
	wait "$pid" 2>/dev/null
}

# rc_wait_for SECONDS CMD...: poll CMD until it succeeds; 124 on timeout.
rc_wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 124
		sleep 0.2
	done
}

# rc_stop PID...: TERM the processes, KILL those left after 5 s.
rc_stop() {
	local pid deadline=$((SECONDS + 5)) alive
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	while :; do
		alive=()
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
		((${#alive[@]})) || break
		if ((SECONDS >= deadline)); then
			for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
			break
		fi
		sleep 0.1
	done
	for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# rc_watchdog SECONDS: TERM this shell after SECONDS (bash builtins only, so killing
# the watchdog by its PID leaves nothing behind).
rc_watchdog() {
	local secs=$1 main=$$ fifo=$RC_DIR/watchdog.fifo
	mkfifo "$fifo"
	(
		exec 3<>"$fifo"
		if ! read -r -t "$secs" -u 3 _; then
			rc_log "timeout after ${secs}s: tearing down"
			: >"$RC_DIR/timed_out"
			kill -TERM "$main"
		fi
	) &
	rc_record pid "$!" - watchdog
}

# rc_teardown: remove everything the state file records. Idempotent.
rc_teardown() {
	((RC_TORN_DOWN)) && return 0
	RC_TORN_DOWN=1
	[[ -f $RC_STATE ]] || return 0
	trap '' INT TERM
	# A scenario may need to stop something gracefully while the topology still works
	# (e.g. the ssh driver cleaning up its hosts through their sshd): RC_PRE_TEARDOWN names
	# a function for that.
	if [[ -n ${RC_PRE_TEARDOWN:-} ]]; then "$RC_PRE_TEARDOWN" || true; fi
	local pids ns left
	mapfile -t pids < <(rc_q pid | awk '{print $2}')
	if ((${#pids[@]})); then rc_stop "${pids[@]}"; fi
	while read -r _ ns; do
		if [[ -e /run/netns/$ns ]]; then
			mapfile -t left < <(ip netns pids "$ns" 2>/dev/null)
			if ((${#left[@]})); then
				rc_log "killing ${#left[@]} leftover process(es) in $ns: ${left[*]}"
				rc_stop "${left[@]}"
			fi
			ip netns del "$ns" 2>/dev/null || rc_log "warning: ip netns del $ns failed"
		fi
	done < <(rc_q netns | tac)
	local d
	while read -r _ d; do rmdir "$d" 2>/dev/null || true; done < <(rc_q rmdir)
	rm -f "$RC_DIR"/smcroute-*.sock "$RC_DIR"/smcroute-*.pid "$RC_DIR/watchdog.fifo"
	rc_log "torn down"
	trap - INT TERM
}

# ---- faults applied to a built topology (scenarios: faults) ---------------------------

# rc_links_shape RATE: shape every link of the run (both ends, like --rate at build time).
# Use on a topology built without --rate; the state file keeps the build-time rates.
rc_links_shape() {
	local node if port
	while read -r _ node _ if _ _ port _; do
		rc_shape "$(rc_ns "$node")" "$if" "$1"
		rc_shape "$RC_SW" "$port" "$1"
	done < <(rc_q iface)
}

# rc_links_loss PERCENT: random loss on every link of the run (both ends' ingress, like
# --loss at build time). Use on a topology built without --loss: the rules would add up.
rc_links_loss() {
	local node if port ns
	while read -r _ node _ if _ _ port _; do
		ns=$(rc_ns "$node")
		RC_NFT_NS=$ns rc_loss "$ns" "$if" "$1"
		RC_NFT_NS=$RC_SW rc_loss "$RC_SW" "$port" "$1"
	done < <(rc_q iface)
}

# rc_partition NODE: cut NODE off the network: nftables in its namespace drops every packet
# it sends or receives on any interface but loopback (so its own client commands still reach
# its daemon), until rc_heal NODE. Established connections survive if healed in time.
rc_partition() {
	ip netns exec "$(rc_ns "$1")" nft -f - <<-'EOF' || rc_die "nft partition of $1"
		table inet rcpart {
			chain in { type filter hook input priority -10; policy accept; iifname "lo" accept; drop; }
			chain out { type filter hook output priority -10; policy accept; oifname "lo" accept; drop; }
		}
	EOF
}

# rc_heal NODE: undo rc_partition.
rc_heal() {
	ip netns exec "$(rc_ns "$1")" nft delete table inet rcpart || rc_die "nft heal of $1"
}
