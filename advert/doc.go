// Package advert defines raftcast's advertisements (JXTA's advertisements): signed, expiring
// descriptions of peers, groups, pipes, content and rendezvous nodes.
//
// # Encoding
//
// An Advert is encoded canonically (MarshalBinary, UnmarshalBinary; the layout is at the top
// of codec.go): a version byte, the kind, then id, name, publisher (peer ID bytes), seq,
// created and expires (Unix milliseconds), the attributes sorted by key, the addresses as
// binary multiaddrs and the kind-specific body, every length a minimal uvarint. Exactly one
// byte string encodes a given advert: the decoder rejects trailing bytes, non-minimal
// varints, unsorted or duplicate attributes, over-limit lengths (checked before anything is
// allocated), unknown kinds and invalid UTF-8. Times are carried in milliseconds; Seal and
// MarshalBinary truncate finer times. testdata/golden_*.hex pins the encoding.
//
// # Signing and verification
//
// Seal signs the canonical encoding in a libp2p signed envelope (core/record) with domain
// EnvelopeDomain and payload type EnvelopeCodec; the signing key must be the publisher's.
// Signed.Envelope is the exact envelope bytes: what goes on the wire, into the DHT and to
// disk. A receiver trusts an advertisement only after Open has checked, in this order:
//
//  1. the size of the bytes received (MaxEnvelopeSize) → ErrTooLarge;
//  2. that they parse as an envelope carrying EnvelopeCodec → ErrMalformed;
//  3. the signature over the received payload → ErrBadSignature;
//  4. that the envelope is in canonical protobuf form (no unknown or repeated fields), so one
//     advert has one byte form → ErrMalformed;
//  5. that the signer's peer ID is the advert's Publisher → ErrPublisherMismatch;
//  6. the advert's structure and limits (Validate) → ErrMalformed, ErrTooLarge, ErrUnknownKind;
//  7. its expiry at the receiver's clock → ErrExpired.
//
// Every rejection wraps exactly one sentinel; Reason maps it to a short counter name
// ("malformed", "too_large", "bad_signature", "publisher_mismatch", "expired", "stale",
// "unknown_kind"). Of two adverts with the same Key (kind, ID, publisher), the higher Seq
// wins; New sets Seq to the creation time in milliseconds, so a republished advert
// supersedes the previous one.
//
// # Queries
//
// A Query selects by kind, exact ID, name glob (path.Match syntax: "*" does not cross "/"),
// publisher and attribute equality; zero fields match anything. Query has its own strict
// binary encoding for remote queries (layout in query.go).
//
// # Cache
//
// The Cache keeps verified advertisements: the highest Seq per Key, at most MaxEntries
// (evicting the one expiring soonest), expired ones invisible to Get and Query and dropped
// by Expire. It counts what it accepted and rejected by reason (Stats). With a Path it loads
// that file in NewCache (re-verifying every entry with Open; bad, expired and stale entries
// and a damaged tail are skipped and logged) and Save rewrites it atomically (temporary
// file, fsync, rename, mode 0600). The file is the line "raftcast-adverts/1\n" followed by
// one uvarint length and signed envelope per advertisement.
//
// This package does no networking.
package advert
