package push_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// sharedReads counts the reads of the store's shared table; with fail
// set they fail; with gate set, the next read waits for it to close.
type sharedReads struct {
	store.Store
	n        atomic.Int64
	fail     atomic.Bool
	inFlight atomic.Int64
	maxIn    atomic.Int64
	mu       sync.Mutex
	gate     chan struct{}
	entered  chan struct{} // closed when a read waits at the gate
}

func (c *sharedReads) GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error) {
	c.n.Add(1)
	in := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		m := c.maxIn.Load()
		if in <= m || c.maxIn.CompareAndSwap(m, in) {
			break
		}
	}
	c.mu.Lock()
	gate, entered := c.gate, c.entered
	c.gate, c.entered = nil, nil
	c.mu.Unlock()
	if gate != nil {
		close(entered)
		<-gate
	}
	if c.fail.Load() {
		return store.SharedEntry{}, errors.New("disk on fire")
	}
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

// TestStrategyMissReadsAreBounded: sends naming many different unknown
// resources IDs at once make one store read (one in flight, at most one
// a second), and a put on the same node is not held up while it runs.
func TestStrategyMissReadsAreBounded(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	now := time.Unix(1_700_000_000, 0)
	cfg := h.cfg
	cfg.Now = func() time.Time { return now }
	reads := &sharedReads{Store: h.st}
	svc := push.New(reads, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, cfg)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	base := reads.n.Load()
	gate, entered := make(chan struct{}), make(chan struct{})
	reads.mu.Lock()
	reads.gate, reads.entered = gate, entered
	reads.mu.Unlock()

	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- svc.Check(&herald.Message{Push: &herald.PushConfig{Content: "x", ResourcesID: fmt.Sprint("random", i)}})
		}()
	}
	<-entered // one miss read is in flight, waiting
	put := make(chan error, 1)
	go func() {
		_, err := svc.PutStrategy(context.Background(), "mine", push.Strategy{})
		put <- err
	}()
	select {
	case err := <-put:
		if err != nil {
			t.Fatalf("PutStrategy during a miss read: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PutStrategy waited for a send's miss read")
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if herald.ErrorCode(err) != herald.CodeInvalidArgument {
			t.Errorf("Check of an unknown ID: %v; want invalid_argument", err)
		}
	}
	// The put read the record once; the 50 checks, once.
	if n := reads.n.Load() - base; n != 2 {
		t.Errorf("50 checks of unknown IDs and a put: %d store reads, want 2", n)
	}
	if m := reads.maxIn.Load(); m > 2 {
		t.Errorf("%d reads in flight at once, want at most the miss read and the put's", m)
	}
	if err := svc.Check(&herald.Message{Push: &herald.PushConfig{Content: "x", ResourcesID: "mine"}}); err != nil {
		t.Errorf("the strategy put meanwhile: %v", err)
	}
}

// TestStrategyReadFailureIsUnavailable: an unknown ID whose store read
// fails is unavailable, not unknown, and the failure does not hold the
// next lookup back; a push whose strategy cannot be read is retried, and
// sent once the store answers.
func TestStrategyReadFailureIsUnavailable(t *testing.T) {
	h := newHarness(t, push.Config{RetryBase: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond}, nil)
	real := h.st
	h.stop()
	reads := &sharedReads{Store: real}
	h.st = reads
	h.start()
	other := push.New(real, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, h.cfg)
	if err := other.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close(context.Background()) })
	if _, err := other.PutStrategy(context.Background(), "elsewhere", push.Strategy{Sound: "x.caf"}); err != nil {
		t.Fatal(err)
	}
	reads.fail.Store(true)
	msg := &herald.Message{Push: &herald.PushConfig{Content: "x", ResourcesID: "elsewhere"}}
	for i := range 2 {
		before := reads.n.Load()
		if err := h.svc.Check(msg); herald.ErrorCode(err) != herald.CodeUnavailable {
			t.Errorf("check %d with the store failing: %v; want unavailable", i, err)
		}
		if reads.n.Load() == before {
			t.Errorf("check %d made no store read: a failed read held it back", i)
		}
	}

	// The job is written as a sender on the other node would (its check
	// passed there); here the strategy is unknown and cannot be read.
	h.device("bob", 1)
	m := &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "bob"), From: "alice", To: "bob",
		LocalID: "l1", Type: herald.MessageText, Text: "hi", CreatedAt: time.Now().Truncate(time.Millisecond),
		Push: &herald.PushConfig{Content: "hi", ResourcesID: "elsewhere"},
	}
	jobs := h.svc.Plan(m, 0, nil)
	stored := h.svc.Committing()
	res, err := real.AppendMessages(context.Background(), []*herald.Message{m}, jobs)
	if err != nil {
		stored(nil)
		t.Fatal(err)
	}
	for i := range jobs {
		jobs[i].MsgID, jobs[i].Seq = res[0].Message.ID, res[0].Message.Seq
	}
	stored(jobs)
	id := res[0].Message.ID
	h.waitLog(id, herald.PushRetry)
	reads.fail.Store(false)
	log := h.waitLog(id, herald.PushSent)
	for _, e := range log {
		if e.Outcome == herald.PushFailed {
			t.Errorf("the push failed for good while the store could not be read: %+v", e)
		}
	}
	if in := h.emu.Inbox(token(1)); len(in) != 1 || !bytes.Contains(in[0].Payload, []byte("x.caf")) {
		t.Errorf("inbox %+v; want one push with the strategy's sound", in)
	}
}

// TestShadowedStrategy: a strategy stored through the API whose ID the
// file later defines is listed once, as the file's, and its stored copy
// can be deleted (the file's stays); then the ID is the file's alone.
func TestShadowedStrategy(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	ctx := context.Background()
	if _, err := h.svc.PutStrategy(ctx, "dup", push.Strategy{Sound: "api.caf"}); err != nil {
		t.Fatal(err)
	}
	cfg := h.cfg
	cfg.Strategies = map[string]push.Strategy{"dup": {Sound: "file.caf"}}
	withFile := push.New(h.st, h.pres, map[herald.PushProvider]push.Provider{herald.ProviderAPNs: h.prov}, cfg)
	if err := withFile.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { withFile.Close(ctx) })
	if got := withFile.Strategies(); len(got) != 1 || got[0].Source != push.SourceFile || got[0].Strategy.Sound != "file.caf" {
		t.Errorf("Strategies() = %+v; want dup once, the file's", got)
	}
	if _, err := withFile.PutStrategy(ctx, "dup", push.Strategy{}); herald.ErrorCode(err) != herald.CodeConflict {
		t.Errorf("put over the file's: %v; want conflict", err)
	}
	if err := withFile.DeleteStrategy(ctx, "dup"); err != nil {
		t.Errorf("delete the shadowed stored copy: %v; want it deleted", err)
	}
	if got := withFile.Strategies(); len(got) != 1 || got[0].Source != push.SourceFile {
		t.Errorf("after the delete: %+v; want the file's dup", got)
	}
	if err := withFile.DeleteStrategy(ctx, "dup"); herald.ErrorCode(err) != herald.CodeConflict {
		t.Errorf("delete the file's: %v; want conflict", err)
	}
	h.svc.RefreshStrategies(ctx)
	if got := h.svc.Strategies(); len(got) != 0 {
		t.Errorf("the node without the file after the delete: %+v; want none stored", got)
	}
}
