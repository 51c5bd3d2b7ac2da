package mcast

import (
	"bytes"
	"testing"
)

func TestBatchTrim(t *testing.T) {
	var b Batch
	for range 44 {
		b.Append(make([]byte, 1472))
	}
	b.Reset()
	b.Append([]byte("one"))
	b.Append([]byte("two"))
	if cap(b.buf) < 44*1472 {
		t.Fatalf("reset batch kept %d bytes of buffer, want its old capacity", cap(b.buf))
	}
	b.trim()
	if cap(b.buf) > 2*len(b.buf)+4096 || b.Len() != 2 || !bytes.Equal(b.At(0), []byte("one")) || !bytes.Equal(b.At(1), []byte("two")) {
		t.Fatalf("trimmed batch: %d datagrams %q %q in %d bytes of buffer", b.Len(), b.At(0), b.At(1), cap(b.buf))
	}
	full := cap(b.buf)
	b.trim()
	if cap(b.buf) != full {
		t.Fatalf("a batch that fits its buffer was reallocated")
	}
}
