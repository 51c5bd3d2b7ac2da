// Package advert defines raftcast's advertisements (JXTA's advertisements): signed, expiring
// descriptions of peers, groups, pipes, content and rendezvous nodes.
//
// An Advert is encoded canonically in a compact binary form and sealed in a libp2p signed
// envelope (core/record) with the publisher's key. A receiver trusts an advertisement only
// after Open has checked, in this order: the size of the bytes received, the signature over
// those bytes, that the signer is the claimed publisher, the structure and limits of the
// decoded advertisement, and its expiry. The Cache keeps verified advertisements, the highest
// sequence number per Key winning, bounded in size and persisted to a file.
//
// This package does no networking.
package advert
