package overlay

import (
	"encoding/binary"
	"fmt"

	"github.com/raftcast/raftcast/advert"
)

// maxEnvelopesPerMessage bounds how many envelopes one index or adverts message carries.
const maxEnvelopesPerMessage = 512

// encodeEnvelopes packs envelopes as uvarint(count) then uvarint(len) bytes each, stopping
// before the message would exceed MaxResolverMessage.
func encodeEnvelopes(envs [][]byte) []byte {
	out := binary.AppendUvarint(nil, 0)
	count := 0
	body := []byte{}
	for _, e := range envs {
		if count == maxEnvelopesPerMessage || len(body)+len(e)+binary.MaxVarintLen64+16 > MaxResolverMessage {
			break
		}
		body = binary.AppendUvarint(body, uint64(len(e)))
		body = append(body, e...)
		count++
	}
	out = binary.AppendUvarint(out[:0], uint64(count))
	return append(out, body...)
}

// decodeEnvelopes is the strict inverse of encodeEnvelopes. The envelopes are not verified.
func decodeEnvelopes(b []byte) ([][]byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxEnvelopesPerMessage {
		return nil, fmt.Errorf("%w: envelope count", ErrMalformedRq)
	}
	b = b[k:]
	out := make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k > 0 && l > advert.MaxEnvelopeSize {
			return nil, fmt.Errorf("%w: envelope %d has %d bytes, limit %d", advert.ErrTooLarge, i, l, advert.MaxEnvelopeSize)
		}
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: envelope %d length", ErrMalformedRq, i)
		}
		out = append(out, b[k:k+int(l)])
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedRq, len(b))
	}
	return out, nil
}
