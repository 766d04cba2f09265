package storetest

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// sharedTests are the shared table's promises (store.Store.PutShared).
var sharedTests = []struct {
	name string
	fn   func(t *testing.T, f *fixture)
}{
	{"Shared/InsertIfAbsent", testSharedInsert},
	{"Shared/CompareAndSwap", testSharedSwap},
	{"Shared/Expiry", testSharedExpiry},
	{"Shared/Delete", testSharedDelete},
	{"Shared/Prune", testSharedPrune},
	{"Shared/Invalid", testSharedInvalid},
	{"Shared/Concurrent", testSharedConcurrent},
}

func (f *fixture) putShared(t *testing.T, e store.SharedEntry, now time.Time) store.SharedEntry {
	t.Helper()
	got, err := f.s.PutShared(context.Background(), e, now)
	if err != nil {
		t.Fatalf("PutShared(%s/%s, version %d): %v", e.Namespace, e.Key, e.Version, err)
	}
	return got
}

func wantSharedCode(t *testing.T, err error, want herald.Code, what string) {
	t.Helper()
	if got := herald.ErrorCode(err); got != want {
		t.Fatalf("%s: got %v (code %q), want code %q", what, err, got, want)
	}
}

func testSharedInsert(t *testing.T, f *fixture) {
	ctx := context.Background()
	now := baseTime
	e := store.SharedEntry{Namespace: store.SharedNonce, Key: "app\x00n1", Value: []byte("v1"), Expires: now.Add(time.Minute)}
	got := f.putShared(t, e, now)
	if got.Version != 1 || !bytes.Equal(got.Value, []byte("v1")) || !got.Expires.Equal(e.Expires) {
		t.Fatalf("PutShared = %+v, want version 1 and the entry", got)
	}
	_, err := f.s.PutShared(ctx, store.SharedEntry{Namespace: e.Namespace, Key: e.Key, Value: []byte("v2"), Expires: now.Add(time.Hour)}, now)
	wantSharedCode(t, err, herald.CodeConflict, "second insert of a live key")
	read, err := f.s.GetShared(ctx, e.Namespace, e.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	if read.Version != 1 || string(read.Value) != "v1" || !read.Expires.Equal(e.Expires) || read.Namespace != e.Namespace || read.Key != e.Key {
		t.Fatalf("GetShared = %+v, want the first insert unchanged", read)
	}
	// Namespaces are apart: the same key in another is another entry.
	f.putShared(t, store.SharedEntry{Namespace: store.SharedConsoleSession, Key: e.Key, Expires: now.Add(time.Minute)}, now)
	_, err = f.s.GetShared(ctx, e.Namespace, "app\x00other", now)
	wantSharedCode(t, err, herald.CodeNotFound, "GetShared of a key never put")
}

func testSharedSwap(t *testing.T, f *fixture) {
	ctx := context.Background()
	now := baseTime
	e := f.putShared(t, store.SharedEntry{Namespace: store.SharedAPNsJWT, Key: "team/key", Value: []byte("t1"), Expires: now.Add(time.Hour)}, now)
	next := e
	next.Value = []byte("t2")
	got := f.putShared(t, next, now)
	if got.Version != 2 || string(got.Value) != "t2" {
		t.Fatalf("swap from version 1 = %+v, want version 2 with t2", got)
	}
	stale := e // still at version 1
	stale.Value = []byte("t3")
	_, err := f.s.PutShared(ctx, stale, now)
	wantSharedCode(t, err, herald.CodeConflict, "swap from a version replaced")
	far := got
	far.Version = 7
	_, err = f.s.PutShared(ctx, far, now)
	wantSharedCode(t, err, herald.CodeConflict, "swap from a version never stored")
	_, err = f.s.PutShared(ctx, store.SharedEntry{Namespace: store.SharedAPNsJWT, Key: "absent", Expires: now.Add(time.Hour), Version: 1}, now)
	wantSharedCode(t, err, herald.CodeConflict, "swap of an absent key")
	read, err := f.s.GetShared(ctx, store.SharedAPNsJWT, "team/key", now)
	if err != nil || read.Version != 2 || string(read.Value) != "t2" {
		t.Fatalf("GetShared after refused swaps = %+v, %v; want version 2 with t2", read, err)
	}
}

func testSharedExpiry(t *testing.T, f *fixture) {
	ctx := context.Background()
	now := baseTime
	exp := now.Add(time.Minute)
	e := f.putShared(t, store.SharedEntry{Namespace: store.SharedNonce, Key: "k", Value: []byte("old"), Expires: exp}, now)
	if _, err := f.s.GetShared(ctx, e.Namespace, e.Key, exp.Add(-time.Millisecond)); err != nil {
		t.Fatalf("GetShared just before expiry: %v", err)
	}
	_, err := f.s.GetShared(ctx, e.Namespace, e.Key, exp)
	wantSharedCode(t, err, herald.CodeNotFound, "GetShared at expiry")
	swap := e
	swap.Expires = exp.Add(time.Hour)
	_, err = f.s.PutShared(ctx, swap, exp)
	wantSharedCode(t, err, herald.CodeConflict, "swap of an expired entry")
	got := f.putShared(t, store.SharedEntry{Namespace: e.Namespace, Key: e.Key, Value: []byte("new"), Expires: exp.Add(time.Hour)}, exp)
	if got.Version <= e.Version {
		t.Fatalf("insert over an expired entry: version %d, want more than %d", got.Version, e.Version)
	}
	read, err := f.s.GetShared(ctx, e.Namespace, e.Key, exp)
	if err != nil || string(read.Value) != "new" || read.Version != got.Version {
		t.Fatalf("GetShared after insert over expired = %+v, %v; want new at version %d", read, err, got.Version)
	}
}

func testSharedDelete(t *testing.T, f *fixture) {
	ctx := context.Background()
	now := baseTime
	e := f.putShared(t, store.SharedEntry{Namespace: store.SharedConsoleSession, Key: "s1", Expires: now.Add(time.Hour)}, now)
	if err := f.s.DeleteShared(ctx, e.Namespace, e.Key); err != nil {
		t.Fatal(err)
	}
	_, err := f.s.GetShared(ctx, e.Namespace, e.Key, now)
	wantSharedCode(t, err, herald.CodeNotFound, "GetShared after delete")
	if err := f.s.DeleteShared(ctx, e.Namespace, e.Key); err != nil {
		t.Fatalf("DeleteShared of an absent key: %v", err)
	}
	f.putShared(t, store.SharedEntry{Namespace: e.Namespace, Key: e.Key, Expires: now.Add(time.Hour)}, now)
}

func testSharedPrune(t *testing.T, f *fixture) {
	ctx := context.Background()
	now := baseTime
	for i, d := range []time.Duration{time.Second, 2 * time.Second, time.Hour} {
		f.putShared(t, store.SharedEntry{Namespace: store.SharedNonce, Key: string(rune('a' + i)), Expires: now.Add(d)}, now)
	}
	n, err := f.s.PruneShared(ctx, now.Add(2*time.Second))
	if err != nil || n != 2 {
		t.Fatalf("PruneShared = %d, %v; want 2 (those expired at or before now)", n, err)
	}
	if _, err := f.s.GetShared(ctx, store.SharedNonce, "c", now); err != nil {
		t.Fatalf("the live entry after prune: %v", err)
	}
	// Pruned means gone, not just expired: a read at an earlier now
	// does not find it.
	_, err = f.s.GetShared(ctx, store.SharedNonce, "a", now)
	wantSharedCode(t, err, herald.CodeNotFound, "GetShared of a pruned entry")
	if n, err := f.s.PruneShared(ctx, now.Add(2*time.Second)); err != nil || n != 0 {
		t.Fatalf("second PruneShared = %d, %v; want 0", n, err)
	}
}

func testSharedInvalid(t *testing.T, f *fixture) {
	now := baseTime
	exp := now.Add(time.Minute)
	for _, tt := range []struct {
		name string
		e    store.SharedEntry
	}{
		{"no namespace", store.SharedEntry{Key: "k", Expires: exp}},
		{"no key", store.SharedEntry{Namespace: "ns", Expires: exp}},
		{"long key", store.SharedEntry{Namespace: "ns", Key: strings.Repeat("k", store.MaxSharedKey+1), Expires: exp}},
		{"long namespace", store.SharedEntry{Namespace: strings.Repeat("n", store.MaxSharedNamespace+1), Key: "k", Expires: exp}},
		{"large value", store.SharedEntry{Namespace: "ns", Key: "k", Value: make([]byte, store.MaxSharedValue+1), Expires: exp}},
		{"no expiry", store.SharedEntry{Namespace: "ns", Key: "k"}},
		{"negative version", store.SharedEntry{Namespace: "ns", Key: "k", Expires: exp, Version: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.s.PutShared(context.Background(), tt.e, now)
			wantSharedCode(t, err, herald.CodeInvalidArgument, "PutShared")
		})
	}
}

// testSharedConcurrent: of writers racing on one key, one insert and one
// swap from a version win.
func testSharedConcurrent(t *testing.T, f *fixture) {
	const writers = 8
	now := baseTime
	race := func(e store.SharedEntry) (won int, versions []int64) {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for i := 0; i < writers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := e
				e.Value = []byte{byte(i)}
				got, err := f.s.PutShared(context.Background(), e, now)
				mu.Lock()
				defer mu.Unlock()
				switch herald.ErrorCode(err) {
				case "":
					won++
					versions = append(versions, got.Version)
				case herald.CodeConflict:
				default:
					t.Errorf("PutShared: %v", err)
				}
			}()
		}
		wg.Wait()
		return won, versions
	}
	e := store.SharedEntry{Namespace: store.SharedNonce, Key: "raced", Expires: now.Add(time.Hour)}
	if won, v := race(e); won != 1 || v[0] != 1 {
		t.Fatalf("%d racing inserts: %d won (versions %v), want 1 at version 1", writers, won, v)
	}
	e.Version = 1
	if won, v := race(e); won != 1 || v[0] != 2 {
		t.Fatalf("%d racing swaps from version 1: %d won (versions %v), want 1 at version 2", writers, won, v)
	}
}
