#!/usr/bin/env bash
# testnet/topologies.sh: the named topologies, each printed as a spec for rc_build (see
# lib.sh for the format). Source it. Options come from the environment:
#   RC_HOSTS   hosts per segment (lan: 3, paper: 2, wan: 2)
#   RC_DOMAINS wan: number of domains (3)
#   RC_WAN_RATE, RC_WAN_LOSS  wan: rate and loss of each domain's link to the core
#              router (20mbit, 1); LAN links take RC_DEFAULT_RATE / RC_DEFAULT_LOSS.

# lan: one segment (one bridge, one multicast domain) of N hosts h1..hN. No router.
rc_spec_lan() {
	local n=${RC_HOSTS:-3} i
	echo "segment lan"
	for ((i = 1; i <= n; i++)); do echo "host h$i lan"; done
}

# paper: the seed paper's testbed. Three segments behind one router r; the router
# forwards multicast between s2 and s3 (one multicast domain), not to or from s1.
# rv (the rendezvous host, where a proxy for s1 also fits) sits in s1; hosts hK1..hKN
# in segment K. The source of a distribution goes in s2 (h21).
rc_spec_paper() {
	local n=${RC_HOSTS:-2} s i
	echo "segment s1"
	echo "segment s2"
	echo "segment s3"
	echo "router r s1 s2 s3"
	echo "mcast r s2 s3"
	echo "host rv s1"
	for s in 1 2 3; do
		for ((i = 1; i <= n; i++)); do echo "host h$s$i s$s"; done
	done
}

# wan: D domains d1..dD, each a segment of N hosts (hK1..hKN in dK), joined by a core
# router whose link into each domain is the domain's WAN link (rate RC_WAN_RATE, loss
# RC_WAN_LOSS). No multicast routing: every domain is its own multicast domain.
# Delay cannot be emulated (this kernel has no netem): only rate and loss differ.
rc_spec_wan() {
	local d=${RC_DOMAINS:-3} n=${RC_HOSTS:-2} k i segs=()
	for ((k = 1; k <= d; k++)); do
		echo "segment d$k"
		segs+=("d$k")
	done
	echo "router core ${segs[*]} rate=${RC_WAN_RATE:-20mbit} loss=${RC_WAN_LOSS:-1}"
	for ((k = 1; k <= d; k++)); do
		for ((i = 1; i <= n; i++)); do echo "host h$k$i d$k"; done
	done
}
