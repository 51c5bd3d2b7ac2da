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

# distribution: the paper's job. In `paper`, h21 (segment 2) is the source; every other
# host but the rendezvous receives. Segments 2 and 3 share a multicast domain with the
# source; segment 1 does not, so one of its receivers becomes the proxy and the other gets
# its bytes by multicast from it. Checks: every receiver completes with a byte-identical
# copy; the summary adds up; the non-proxy receivers of segment 1 got most bytes by
# multicast. Options: --bytes (32MiB), --loss P.
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
	for h in "${hosts[@]:1}"; do
		rc=0
		wait_api "$h" 60 || rc=$?
		rc_check "ready $h" "$rc"
	done
	rc_group_form "$src" "${receivers[@]}"
	sleep 3 # multicast beacons: every node learns its domain's members
	file=$RC_DIR/share.bin
	rc_make_file "$file" "$size"
	rc=0
	rc_raftcast "$src" share "$file" --name share.bin --json >"$RC_DIR/logs/$src-share.json" || rc=$?
	rc_check "share $src" "$rc"
	local pids=() start=$SECONDS
	for h in "${receivers[@]}"; do
		rc_bg "$h" get "$RAFTCAST_BIN" --data "$(rc_data "$h")" get share.bin \
			--out "$RC_DIR/out-$h.bin" --timeout "${RC_GET_TIMEOUT:-240}s" --json
		pids+=("$RC_PID")
	done
	local i
	for i in "${!receivers[@]}"; do
		h=${receivers[$i]}
		rc=0
		rc_wait_pid "${pids[$i]}" "$((${RC_GET_TIMEOUT:-240} + 30))" || rc=$?
		rc_check "get $h" "$rc"
		rc=0
		cmp -s "$file" "$RC_DIR/out-$h.bin" || rc=1
		local log=$RC_DIR/logs/$h-get.log mc peers srcb proxy
		mc=$(rc_jnum bytes_multicast "$log")
		peers=$(rc_jnum bytes_peers "$log")
		srcb=$(rc_jnum bytes_source "$log")
		proxy=false
		grep -q '"proxy": *true' "$log" && proxy=true
		rc_check "identical $h" "$rc" "\"segment\":\"$(rc_segment_of "$h")\",\"proxy\":$proxy,\"bytes_multicast\":$mc,\"bytes_peers\":$peers,\"bytes_source\":$srcb,\"seconds\":$(rc_jnum seconds "$log")"
		# Without loss, receivers in segment 1 other than the proxy take most bytes from its
		# multicast (with loss, more of them come from peers).
		if [[ $(rc_segment_of "$h") == s1 && $proxy == false && ${RC_DEFAULT_LOSS:-0} == 0 ]]; then
			rc=1
			((mc * 2 > size)) && rc=0
			rc_check "multicast from proxy $h" "$rc" "\"bytes_multicast\":$mc,\"size\":$size"
		fi
	done
	rc_check "distribution time" 0 "\"seconds\":$((SECONDS - start)),\"bytes\":$size,\"receivers\":${#receivers[@]}"
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
