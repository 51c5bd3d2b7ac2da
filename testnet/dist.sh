#!/usr/bin/env bash
# testnet/dist.sh: raftcast's group-distribution and cooperative-download scenarios, on top
# of the scaffold in scenarios.sh (start_rendezvous, start_node, rc_raftcast). Sourced after
# scenarios.sh.

# rc_group_form SOURCE NODE...: SOURCE creates group "tn", the others join it.
rc_group_form() {
	local src=$1 h rc
	shift
	rc=0
	rc_raftcast "$src" group create tn --json >"$RC_DIR/logs/$src-group.json" || rc=$?
	rc_check "group create $src" "$rc"
	for h in "$@"; do
		rc=0
		rc_raftcast "$h" group join tn --timeout 60s --json >"$RC_DIR/logs/$h-group.json" || rc=$?
		rc_check "group join $h" "$rc"
	done
}

# rc_make_file PATH SIZE: a file of SIZE random bytes.
rc_make_file() {
	head -c "$2" /dev/urandom >"$1"
}

# rc_foreign_domains SRCSEG SEG...: one segment for each multicast domain among SEGs that
# SRCSEG's does not reach (the first named of each), space-separated.
rc_foreign_domains() {
	local src=$1 s r out=()
	shift
	for s in "$@"; do
		rc_same_mdomain "$src" "$s" && continue
		for r in "${out[@]}"; do rc_same_mdomain "$r" "$s" && continue 2; done
		out+=("$s")
	done
	echo "${out[*]}"
}

# distribution: the paper's job. In `paper`, h21 (segment 2) is the source; every other
# host but the rendezvous receives. Segments 2 and 3 share a multicast domain with the
# source; segment 1 does not, so one of its receivers becomes the proxy and the other gets
# its bytes by multicast from it. Checks: every receiver completes with a byte-identical
# copy; the summary adds up; one receiver of each multicast domain without the source (segment
# 1's) was a proxy, and no other (a domain's gets claim at once; the group's log picks one);
# the proxy took most of its bytes from peers, not the source; the non-proxy receivers of
# segment 1 got most bytes by multicast. Options: --bytes (32MiB), --loss P.
scenario_distribution() {
	local hosts rvh src h rc size file
	mapfile -t hosts < <(rc_hosts)
	rvh=${hosts[0]}
	src=h21
	[[ " ${hosts[*]} " == *" h21 "* ]] || src=${hosts[1]}
	size=$(rc_size_bytes "${RC_BYTES:-32MiB}")
	start_rendezvous "$rvh"
	local receivers=()
	for h in "${hosts[@]:1}"; do
		start_node "$h"
		[[ $h == "$src" ]] || receivers+=("$h")
	done
	rc_check_ready 60 "${hosts[@]:1}" || true
	rc_group_form "$src" "${receivers[@]}"
	sleep 3 # multicast beacons: every node learns its domain's members
	file=$RC_DIR/share.bin
	rc_make_file "$file" "$size"
	rc=0
	rc_raftcast "$src" share "$file" --name share.bin --json >"$RC_DIR/logs/$src-share.json" || rc=$?
	rc_check "share $src" "$rc"
	# CPU time and peak RSS of every daemon (source and receivers) around the distribution.
	local -A cpu0=()
	for h in "$src" "${receivers[@]}"; do cpu0[$h]=$(rc_cpu_ticks "$(rc_daemon_pid "$h")"); done
	local pids=() start=$SECONDS
	for h in "${receivers[@]}"; do
		rc_bg "$h" get "$RAFTCAST_BIN" --data "$(rc_data "$h")" get share.bin \
			--out "$RC_DIR/out-$h.bin" --timeout "${RC_GET_TIMEOUT:-240}s" --json
		pids+=("$RC_PID")
	done
	local i
	local -A getrc=()
	for i in "${!receivers[@]}"; do
		h=${receivers[$i]}
		rc=0
		rc_wait_pid "${pids[$i]}" "$((${RC_GET_TIMEOUT:-240} + 30))" || rc=$?
		getrc[$h]=$rc
	done
	local elapsed=$((SECONDS - start)) total_ticks=0
	local -A cpujs=()
	for h in "$src" "${receivers[@]}"; do
		local pid t
		pid=$(rc_daemon_pid "$h")
		t=$(rc_cpu_ticks "$pid")
		t=$((t - ${cpu0[$h]}))
		total_ticks=$((total_ticks + t))
		cpujs[$h]=$(rc_cpu_json "$t" "$size" "$(rc_vmhwm_kib "$pid")")
	done
	rc_check "source $src" 0 "${cpujs[$src]}"
	local proxies=()
	for i in "${!receivers[@]}"; do
		h=${receivers[$i]}
		rc=${getrc[$h]}
		rc_check "get $h" "$rc"
		rc=0
		cmp -s "$file" "$RC_DIR/out-$h.bin" || rc=1
		local log=$RC_DIR/logs/$h-get.log mc peers srcb proxy
		mc=$(rc_jnum bytes_multicast "$log")
		peers=$(rc_jnum bytes_peers "$log")
		srcb=$(rc_jnum bytes_source "$log")
		proxy=false
		if rc_get_proxy "$h"; then
			proxy=true
			proxies+=("$(rc_segment_of "$h")")
		fi
		rc_check "identical $h" "$rc" "\"segment\":\"$(rc_segment_of "$h")\",\"proxy\":$proxy,\"bytes_multicast\":$mc,\"bytes_peers\":$peers,\"bytes_source\":$srcb,\"seconds\":$(rc_jnum seconds "$log"),${cpujs[$h]}"
		# Without loss, receivers in segment 1 other than the proxy take most bytes from its
		# multicast (with loss, more of them come from peers).
		if [[ $(rc_segment_of "$h") == s1 && $proxy == false && ${RC_DEFAULT_LOSS:-0} == 0 ]]; then
			rc=1
			((mc * 2 > size)) && rc=0
			rc_check "multicast from proxy $h" "$rc" "\"bytes_multicast\":$mc,\"size\":$size"
		fi
		# The proxy takes its intake from the receivers of the source's domain and leaves the
		# source's uplink to its multicast (it asks the source only for what they stop gaining).
		if [[ $proxy == true && ${RC_DEFAULT_LOSS:-0} == 0 ]]; then
			rc=1
			((srcb * 2 < size)) && rc=0
			rc_check "proxy intake from peers $h" "$rc" "\"bytes_source\":$srcb,\"size\":$size"
		fi
	done
	local want segs=()
	for h in "${receivers[@]}"; do segs+=("$(rc_segment_of "$h")"); done
	want=$(rc_foreign_domains "$(rc_segment_of "$src")" "${segs[@]}")
	rc=1
	[[ $(rc_foreign_domains "$(rc_segment_of "$src")" "${proxies[@]}") == "$want" && ${#proxies[@]} == $(wc -w <<<"$want") ]] && rc=0
	rc_check "one proxy per domain" "$rc" "\"proxy_segments\":\"${proxies[*]}\",\"domains_without_source\":\"$want\""
	# No --rate was given: the source paces its pass at 96 %, and segment 1's proxy its relay
	# at 92 %, of the slowest link among them and their domain's receivers, as read from each
	# host's shaper (every link of the run has the same rate).
	if [[ -n ${RC_DEFAULT_RATE:-} ]]; then
		local want role node what line share
		for role in source proxy; do
			node=$src what='msg="multicast pass"' share=0.96
			if [[ $role == proxy ]]; then
				share=0.92
				what='msg="proxy peer for this multicast domain"'
				node=$(grep -l '"proxy": *true' "$RC_DIR"/logs/*-get.log | head -1)
				node=$(basename "${node%-get.log}")
			fi
			want=$(awk -v m="$(rc_mbit "$RC_DEFAULT_RATE")" -v s="$share" 'BEGIN { printf "%d", m * 1e6 * s / 8 }')
			line=$(grep -h -m1 "$what" "$RC_DIR/logs/$node-raftcast.log" 2>/dev/null |
				grep -o ' rate=[0-9]* rate_from=[a-z]*' || true)
			rc=1
			[[ $line == " rate=$want rate_from=shaper" ]] && rc=0
			rc_check "pace from the links $role" "$rc" "\"node\":\"$node\",\"want\":\"rate=$want rate_from=shaper\",\"got\":\"${line# }\""
		done
	fi
	# All daemons' CPU per delivered GB (every receiver's copy counts).
	local all
	all=$(awk -v t="$total_ticks" -v hz="$(getconf CLK_TCK)" -v b="$size" -v n="${#receivers[@]}" \
		'BEGIN { printf "\"cpu_seconds_all\":%.2f,\"cpu_s_per_delivered_gb\":%.2f", t/hz, (t/hz)/(b*n/1e9) }')
	rc_check "distribution time" 0 "\"seconds\":$elapsed,\"bytes\":$size,\"receivers\":${#receivers[@]},$all"
}

# rc_paper3_share SCENARIO NAME SIZE: the setup of proxy-failover and late-get on the paper's
# testbed with three hosts per segment: h21 is the source and every other host but the
# rendezvous a receiver (P3_RECEIVERS; those of segment 1, at least three, in P3_S1); links
# shaped as for faults (rc_fault_start); the group formed; a file of --bytes (else SIZE)
# written to P3_FILE (P3_SIZE bytes) and shared as NAME. Fails if the share did (checked).
rc_paper3_share() {
	local scen=$1 name=$2 hosts rvh h rc
	mapfile -t hosts < <(rc_hosts)
	rvh=${hosts[0]}
	P3_SRC=h21 P3_RECEIVERS=() P3_S1=()
	for h in "${hosts[@]:1}"; do
		[[ $h == "$P3_SRC" ]] && continue
		P3_RECEIVERS+=("$h")
		[[ $(rc_segment_of "$h") == s1 ]] && P3_S1+=("$h")
	done
	((${#P3_S1[@]} >= 3)) || rc_die "$scen needs three receivers in segment 1 (paper --hosts 3)"
	P3_SIZE=$(rc_size_bytes "${RC_BYTES:-$3}")
	rc_fault_start "$rvh" "$P3_SRC" "${P3_RECEIVERS[@]}"
	rc_group_form "$P3_SRC" "${P3_RECEIVERS[@]}"
	sleep "${RC_BEACON_WAIT:-3}" # multicast beacons: every node learns its domain
	P3_FILE=$RC_DIR/share.bin
	rc_make_file "$P3_FILE" "$P3_SIZE"
	rc=0
	rc_raftcast "$P3_SRC" share "$P3_FILE" --name "$name" --json >"$RC_DIR/logs/$P3_SRC-share.json" || rc=$?
	rc_check "share $P3_SRC" "$rc"
	return "$rc"
}

# proxy-failover: the paper's testbed with three hosts per segment (--hosts 3). Segment 1 has
# no source, so one of its receivers is its proxy; once the proxy holds a third of the file
# (RC_KILL_AT bytes) its daemon is SIGKILLed by PID. Another receiver of segment 1 must take
# over (it records itself as proxy in the group state, in place of the dead one, and relays
# into segment 1), and every receiver but the dead proxy must complete with a byte-identical
# copy. Links are shaped to --rate, else RC_FAULT_RATE (30mbit), so that the kill lands
# mid-transfer. --bytes sets the file (24MiB).
scenario_proxy_failover() {
	local src h rc size file s1=() receivers=()
	rc_raftcast_bin
	rc_paper3_share proxy-failover failover.bin 24MiB || return 0
	src=$P3_SRC size=$P3_SIZE file=$P3_FILE
	s1=("${P3_S1[@]}") receivers=("${P3_RECEIVERS[@]}")
	local gt=${RC_GET_TIMEOUT:-240}
	rc_start_gets failover.bin "$gt" "${receivers[@]}"

	# Find segment 1's proxy by its log line, then kill it once it holds kill_at bytes.
	local kill_at=${RC_KILL_AT:-$((size / 3))} proxy="" held=0 deadline=$((SECONDS + gt))
	while ((SECONDS < deadline)) && [[ -z $proxy ]]; do
		for h in "${s1[@]}"; do
			grep -q 'msg="proxy peer for this multicast domain" ' "$RC_DIR/logs/$h-raftcast.log" 2>/dev/null && proxy=$h
		done
		sleep 0.1
	done
	rc=0
	[[ -n $proxy ]] || rc=1
	rc_check "proxy chosen" "$rc" "\"proxy\":\"$proxy\""
	((rc == 0)) || return 0
	while ((SECONDS < deadline)); do
		held=$(rc_done_bytes "$proxy")
		((held >= kill_at)) && break
		kill -0 "${RC_GETPID[$proxy]}" 2>/dev/null || break
		sleep 0.1
	done
	rc_kill_node "$proxy"
	rc_wait_pid "${RC_GETPID[$proxy]}" 30 || true # its get ends with its daemon
	rc=0
	((held >= kill_at && held < size)) || rc=1
	rc_check "proxy killed mid-transfer $proxy" "$rc" "\"done_bytes\":$held,\"size\":$size"

	# Every other receiver completes with an identical copy.
	local taker=""
	for h in "${receivers[@]}"; do
		[[ $h == "$proxy" ]] && continue
		rc_check_get "$h" "$file" "$((gt + 30))" || true
		if grep -q 'msg="proxy peer for this multicast domain: taking over"' "$RC_DIR/logs/$h-raftcast.log" 2>/dev/null; then
			taker="$taker$h "
		fi
	done
	taker=${taker% }
	# Exactly one receiver of segment 1 took over, and the group records it in place of the
	# dead proxy (as the source sees the group state).
	rc=0
	[[ -n $taker && $taker != *" "* && $(rc_segment_of "${taker:-x}") == s1 ]] || rc=1
	local st recorded=""
	st=$(rc_raftcast "$src" group status tn --json 2>/dev/null | rc_flat) || true
	if [[ -n $taker && $taker != *" "* ]]; then
		local tid
		tid=$(rc_raftcast "$taker" status --json 2>/dev/null | rc_flat | grep -o '"peer_id":"[^"]*"' | head -1 | cut -d'"' -f4) || true
		[[ -n $tid && $st == *"\"proxies\""*"$tid"* ]] && recorded=$tid
	fi
	[[ -n $recorded ]] || rc=1
	rc_check "takeover" "$rc" "\"dead_proxy\":\"$proxy\",\"taken_over_by\":\"$taker\",\"recorded\":\"$recorded\""
}

# late-get: the paper's testbed with three hosts per segment (--hosts 3). Every receiver but
# the last two of segment 1 gets the file; once they all hold it, the second last gets it too.
# Segment 1's proxy holds the file and the group still records it as the domain's proxy, so it
# answers the late want with a multicast pass into segment 1, as the source does in its own
# domain: the late receiver takes most of its bytes by multicast instead of waiting for a relay
# that ended and then fetching it all from peers. Then the proxy's daemon is SIGKILLed and
# restarted on its data dir, and the last receiver gets the file: the restarted proxy serves
# what it held and still answers its domain's wants with passes. Links are shaped to --rate,
# else RC_FAULT_RATE (30mbit). --bytes sets the file (16MiB).
scenario_late_get() {
	local h rc size first=() late=() proxy=""
	rc_raftcast_bin
	rc_paper3_share late-get late.bin 16MiB || return 0
	size=$P3_SIZE late=("${P3_S1[-2]}" "${P3_S1[-1]}")
	for h in "${P3_RECEIVERS[@]}"; do [[ " ${late[*]} " == *" $h "* ]] || first+=("$h"); done
	local gt=${RC_GET_TIMEOUT:-120}
	rc_start_gets late.bin "$gt" "${first[@]}"
	for h in "${first[@]}"; do
		rc_check_get "$h" "$P3_FILE" "$((gt + 30))" || true
		rc_get_proxy "$h" && proxy=$h
	done
	late_get "${late[0]}" "$gt" "$size" "the proxy"
	rc=0
	if [[ -n $proxy ]]; then
		rc_kill_node "$proxy"
		rc_restart_node "$proxy"
		wait_api "$proxy" 60 || rc=$?
		sleep "${RC_BEACON_WAIT:-3}" # its multicast beacons: its domain hears it again
	else
		rc=1
	fi
	rc_check "restart proxy" "$rc" "\"proxy\":\"$proxy\""
	late_get "${late[1]}" "$gt" "$size" "the restarted proxy"
}

# rc_check_get HOST FILE SECS: waits up to SECS for HOST's get (rc_start_gets) and checks
# "identical HOST": it ended well and its copy is FILE's. The check's detail has HOST's segment,
# whether it was its domain's proxy, and the get summary's bytes by carrier and seconds.
# Returns the check's status.
rc_check_get() {
	local h=$1 file=$2 secs=$3 rc=0 log=$RC_DIR/logs/$1-get.log proxy=false
	rc_wait_pid "${RC_GETPID[$h]}" "$secs" || rc=$?
	cmp -s "$file" "$RC_DIR/recv/$h.bin" || rc=1
	rc_get_proxy "$h" && proxy=true
	rc_check "identical $h" "$rc" "\"segment\":\"$(rc_segment_of "$h")\",\"proxy\":$proxy,\"bytes_multicast\":$(rc_jnum bytes_multicast "$log"),\"bytes_peers\":$(rc_jnum bytes_peers "$log"),\"bytes_source\":$(rc_jnum bytes_source "$log"),\"seconds\":$(rc_jnum seconds "$log")"
	return "$rc"
}

# rc_get_proxy HOST: HOST's get summary says it was its domain's proxy.
rc_get_proxy() { grep -q '"proxy": *true' "$RC_DIR/logs/$1-get.log" 2>/dev/null; }

# late_get HOST SECS SIZE WHOM: HOST gets late.bin (P3_FILE) alone and must take most of its
# bytes by multicast (check "late get by multicast from WHOM HOST").
late_get() {
	local h=$1 gt=$2 size=$3 whom=$4 rc mc
	rc_start_gets late.bin "$gt" "$h"
	rc_check_get "$h" "$P3_FILE" "$((gt + 30))" || true
	mc=$(rc_jnum bytes_multicast "$RC_DIR/logs/$h-get.log")
	rc=1
	((mc * 2 > size)) && rc=0
	rc_check "late get by multicast from $whom $h" "$rc" "\"bytes_multicast\":$mc,\"size\":$size"
}

# rc_daemon_pid NODE: the PID of NODE's raftcast daemon (ip netns exec execs it, so the
# recorded PID is the daemon's own).
rc_daemon_pid() {
	rc_q pid "" | awk -v n="$1" '$3==n && $4=="raftcast" {p=$2} END {print p}'
}

# rc_cpu_ticks PID: user+system CPU time of PID in clock ticks (0 if it is gone).
rc_cpu_ticks() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	# Fields after the command name (which may hold spaces): utime and stime are the 12th
	# and 13th.
	st=${st##*) }
	awk '{print $12 + $13}' <<<"$st"
}

# rc_vmhwm_kib PID: peak resident set size of PID in KiB (0 if it is gone).
rc_vmhwm_kib() {
	awk '/^VmHWM:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0
}

# rc_cpu_json TICKS SIZE HWM_KIB: the JSON fields of one daemon's cost: CPU seconds over the
# distribution, CPU seconds per GB of the file, peak RSS in MiB.
rc_cpu_json() {
	awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v b="$2" -v k="$3" \
		'BEGIN { printf "\"cpu_seconds\":%.2f,\"cpu_s_per_gb\":%.2f,\"peak_rss_mib\":%.1f", t/hz, (t/hz)/(b/1e9), k/1024 }'
}

# rc_jnum FIELD FILE: a number in FILE's JSON (raftcast prints indented JSON), 0 if none.
rc_jnum() {
	local v
	v=$(tr -d ' \n' <"$2" 2>/dev/null | grep -o "\"$1\":[-0-9.e+]*" | awk 'NR==1' | cut -d: -f2)
	printf '%s\n' "${v:-0}"
}

# rc_size_bytes SIZE: 64MiB, 1GiB, 500KiB or plain bytes → bytes.
rc_size_bytes() {
	local s=$1 n unit
	n=${s%%[!0-9]*}
	unit=${s#"$n"}
	case $unit in
	"" | B) echo "$n" ;;
	KiB | K) echo $((n << 10)) ;;
	MiB | M) echo $((n << 20)) ;;
	GiB | G) echo $((n << 30)) ;;
	*) rc_die "bad size $s" ;;
	esac
}
