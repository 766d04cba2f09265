package push_test

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// TestStrategiesFileAndStore: the file's strategies are read-only through
// the API; stored ones are put, listed with their source, replaced and
// deleted; bad ones are refused naming the field.
func TestStrategiesFileAndStore(t *testing.T) {
	h := newHarness(t, push.Config{Strategies: map[string]push.Strategy{"file1": {Sound: "default"}}}, nil)
	ctx := context.Background()
	for name, err := range map[string]error{
		"put a file strategy":    func() error { _, err := h.svc.PutStrategy(ctx, "file1", push.Strategy{}); return err }(),
		"delete a file strategy": h.svc.DeleteStrategy(ctx, "file1"),
	} {
		if herald.ErrorCode(err) != herald.CodeConflict {
			t.Errorf("%s: %v; want conflict", name, err)
		}
	}
	if _, err := h.svc.PutStrategy(ctx, "api1", push.Strategy{Sound: "ping.caf", Importance: "high"}); err != nil {
		t.Fatal(err)
	}
	got := h.svc.Strategies()
	if len(got) != 2 || got[0].ID != "api1" || got[0].Source != push.SourceAPI || got[1].ID != "file1" || got[1].Source != push.SourceFile {
		t.Errorf("Strategies() = %+v; want api1 (api) and file1 (file)", got)
	}
	if got[0].Strategy.Sound != "ping.caf" {
		t.Errorf("api1 = %+v; want its sound", got[0].Strategy)
	}
	if err := h.svc.DeleteStrategy(ctx, "nope"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("delete an unknown strategy: %v; want not_found", err)
	}
	for name, st := range map[string]push.Strategy{
		"importance":       {Importance: "urgent"},
		"priority":         {Priority: 7},
		"background at 10": {Type: push.TypeBackground, Priority: 10},
		"ttl":              {TTLSeconds: -1},
		"android_category": {AndroidCategory: "im"},
	} {
		if _, err := h.svc.PutStrategy(ctx, "bad", st); herald.ErrorCode(err) != herald.CodeInvalidArgument {
			t.Errorf("%s: %v; want invalid_argument", name, err)
		}
	}
	if _, err := h.svc.PutStrategy(ctx, "with space", push.Strategy{}); herald.ErrorCode(err) != herald.CodeInvalidArgument {
		t.Errorf("resources ID with a space: %v; want invalid_argument", err)
	}
	// A restarted service reads them back from the store.
	h.stop()
	h.start()
	if got := h.svc.Strategies(); len(got) != 2 {
		t.Errorf("after a restart: %+v; want api1 and file1", got)
	}
}

// TestStrategiesSeenByAnotherNode: two services on one store stand for two
// nodes. A strategy put on one is usable on the other at once (the miss
// reads the store); a replacement and a deletion reach it with a refresh
// (what the cluster's notice triggers); puts on both at once both land.
func TestStrategiesSeenByAnotherNode(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	ctx := context.Background()
	other := push.New(h.st, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, h.cfg)
	if err := other.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close(ctx) })

	if _, err := h.svc.PutStrategy(ctx, "s1", push.Strategy{Sound: "a.caf"}); err != nil {
		t.Fatal(err)
	}
	msg := &herald.Message{Push: &herald.PushConfig{Content: "x", ResourcesID: "s1"}}
	if err := other.Check(msg); err != nil {
		t.Fatalf("the other node refuses s1 put on the first: %v", err)
	}
	if _, err := h.svc.PutStrategy(ctx, "s1", push.Strategy{Sound: "b.caf"}); err != nil {
		t.Fatal(err)
	}
	if n, err := other.RefreshStrategies(ctx); err != nil || n != 1 {
		t.Errorf("RefreshStrategies = %d, %v; want 1 (changed)", n, err)
	}
	if got := other.Strategies(); len(got) != 1 || got[0].Strategy.Sound != "b.caf" {
		t.Errorf("the other node holds %+v; want s1 with b.caf", got)
	}
	if n, _ := other.RefreshStrategies(ctx); n != 0 {
		t.Errorf("a second refresh found %d changes, want 0", n)
	}
	if err := h.svc.DeleteStrategy(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	other.RefreshStrategies(ctx)
	if err := other.Check(msg); herald.ErrorCode(err) != herald.CodeInvalidArgument {
		t.Errorf("the other node after the delete: %v; want invalid_argument", err)
	}

	var wg sync.WaitGroup
	for i, svc := range []*push.Service{h.svc, other} {
		for j := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := string(rune('a'+i)) + string(rune('0'+j))
				if _, err := svc.PutStrategy(ctx, id, push.Strategy{}); err != nil {
					t.Errorf("put %s: %v", id, err)
				}
			}()
		}
	}
	wg.Wait()
	h.svc.RefreshStrategies(ctx)
	if got := h.svc.Strategies(); len(got) != 10 {
		t.Errorf("after concurrent puts on both nodes: %d strategies, want 10: %+v", len(got), got)
	}
}

// TestContentFreePerApp: an app configured content-free gets pushes with
// the generic text and its localisation key, never the sender's title,
// content or payload, and mutable-content for its extension.
func TestContentFreePerApp(t *testing.T) {
	h := newHarness(t, push.Config{ContentFree: push.ContentFree{Apps: []string{app}, Text: "Neue Nachricht", LocKey: "NEW_MESSAGE"}}, nil)
	h.device("bob", 1)
	m := h.sendWith("bob", &herald.PushConfig{Title: "Alice", Content: "the secret", Payload: "secret payload"})
	h.waitLog(m.ID, herald.PushSent)
	in := h.emu.Inbox(token(1))
	if len(in) != 1 {
		t.Fatalf("inbox %d, want 1", len(in))
	}
	p := in[0].Payload
	for _, leak := range []string{"secret", "Alice"} {
		if bytes.Contains(p, []byte(leak)) {
			t.Errorf("payload %s holds %q", p, leak)
		}
	}
	for _, want := range []string{`"body":"Neue Nachricht"`, `"loc-key":"NEW_MESSAGE"`, `"mutable-content":1`, `"content_free":true`} {
		if !bytes.Contains(p, []byte(want)) {
			t.Errorf("payload %s lacks %s", p, want)
		}
	}
}

// sharedReads counts the reads of the store's shared table.
type sharedReads struct {
	store.Store
	n atomic.Int64
}

func (c *sharedReads) GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error) {
	c.n.Add(1)
	return c.Store.GetShared(ctx, namespace, key, now)
}

// TestUnknownStrategyReadsTheStoreOnce: a burst of sends (or a group's
// jobs) naming an unknown resources ID costs one store read, not one each;
// the same ID is looked up again a second later.
func TestUnknownStrategyReadsTheStoreOnce(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	now := time.Unix(1_700_000_000, 0)
	cfg := h.cfg
	cfg.Now = func() time.Time { return now }
	reads := &sharedReads{Store: h.st}
	svc := push.New(reads, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, cfg)
	msg := &herald.Message{Push: &herald.PushConfig{Content: "x", ResourcesID: "gone"}}
	for range 100 {
		if err := svc.Check(msg); herald.ErrorCode(err) != herald.CodeInvalidArgument {
			t.Fatalf("Check: %v; want invalid_argument", err)
		}
	}
	if n := reads.n.Load(); n != 1 {
		t.Errorf("100 checks read the store %d times, want 1", n)
	}
	now = now.Add(time.Second)
	svc.Check(msg)
	if n := reads.n.Load(); n != 2 {
		t.Errorf("a second later: %d reads, want 2", n)
	}
}
