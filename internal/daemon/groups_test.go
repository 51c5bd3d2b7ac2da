package daemon

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestKeepAdvert: the group advertisement is published at once, again only when what it says
// changed after a change of the group (not for changes that leave it as it was, such as a
// download task's progress), and at every refresh whatever it says.
func TestKeepAdvert(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{})
	refresh := make(chan time.Time)
	var mu sync.Mutex // guards content, published
	content, published := "a", []string(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		keepAdvert(ctx, changed, refresh, time.Millisecond,
			func() []byte { mu.Lock(); defer mu.Unlock(); return []byte(content) },
			func() { mu.Lock(); defer mu.Unlock(); published = append(published, content) })
	}()
	set := func(c string) { mu.Lock(); content = c; mu.Unlock() }
	// Unbuffered sends: each returns once the loop has taken the event; the next send waits
	// for the loop to have handled it (published or not).
	for range 5 {
		changed <- struct{}{} // task progress: the advertisement says the same
	}
	set("b")
	changed <- struct{}{} // a member joined
	changed <- struct{}{}
	refresh <- time.Now() // due again although nothing changed
	changed <- struct{}{}
	close(changed) // the group closed: the loop ends
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("keepAdvert did not end when the group closed")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"a", "b", "b"}
	if len(published) != len(want) {
		t.Fatalf("published %q, want %q", published, want)
	}
	for i := range want {
		if published[i] != want[i] {
			t.Fatalf("published %q, want %q", published, want)
		}
	}
}
