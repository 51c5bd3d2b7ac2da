// Package testnet holds no library code: the testnet is the bash in this directory
// (lib.sh builds topologies from network namespaces, topologies.sh names them,
// scenarios.sh runs probes and raftcast daemons on them, run drives one run end to end)
// and the rcnet probe under tools/rcnet. See README.md for how to run them.
//
// The Go tests here run testnet/run as a user would, as root, and check its JSON
// summary and that no namespace or link is left behind. They skip, saying why, when
// not root or when ip, tc, nft or bridge are missing (the paper topology also needs
// smcrouted from the smcroute package).
package testnet
