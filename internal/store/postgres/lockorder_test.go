package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// retryCounter counts the store's "transaction retried" warnings: a
// deadlock PostgreSQL broke, or a serialization failure.
type retryCounter struct{ n atomic.Int64 }

func (c *retryCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *retryCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "transaction retried") {
		c.n.Add(1)
	}
	return nil
}
func (c *retryCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *retryCounter) WithGroup(string) slog.Handler      { return c }

// TestTwoNodesFinishPushLockOrder: two nodes storing the badge counts of
// the same devices at once, then rescheduling the same jobs given in
// opposite orders, both succeed, and the sorted binding makes deadlocks
// rare: a deadlock PostgreSQL reports is retried, but nearly every
// transaction should pass at its first run (unsorted, most rounds clash).
func TestTwoNodesFinishPushLockOrder(t *testing.T) {
	dsn := newSchema(t)
	var retries retryCounter
	opts := Options{Logger: slog.New(&retries)}
	nodes := []*Store{openURL(t, dsn, opts), openURL(t, dsn, opts)}
	for _, n := range nodes {
		defer n.Close()
	}
	ctx := context.Background()
	const devices = 300
	var ids []string
	for i := range devices {
		d, err := nodes[0].RegisterPushDevice(ctx, herald.PushDevice{
			Provider: herald.ProviderAPNs, Token: fmt.Sprintf("%064x", i), App: "com.example.chat", Env: herald.EnvProduction,
			User: fmt.Sprint("u", i), Device: "phone",
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.PushID)
	}
	var wg sync.WaitGroup
	for ni, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 10 {
				badges := make(map[string]store.Badge, len(ids))
				for i, id := range ids {
					badges[id] = store.Badge{Count: ni*1000 + round + i, Kind: herald.BadgeCounted}
				}
				if err := node.FinishPush(ctx, nil, nil, nil, badges); err != nil {
					t.Errorf("node %d: FinishPush: %v", ni, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	m := msg("alice", "bob", "l1")
	var jobs []store.PushJob
	for i := range devices {
		jobs = append(jobs, store.PushJob{PushID: fmt.Sprintf("pd_%03d", i), User: "bob", Conv: m.Conv, Due: t0, Expires: t0.Add(time.Hour)})
	}
	res, err := nodes[0].AppendMessages(ctx, []*herald.Message{m}, jobs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range jobs {
		jobs[i].MsgID = res[0].Message.ID
	}
	for ni, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 10 {
				retry := make([]store.PushJob, len(jobs))
				for i, j := range jobs {
					if ni == 1 {
						j = jobs[len(jobs)-1-i]
					}
					j.Attempt, j.Due = round+1, t0.Add(time.Duration(round)*time.Second)
					retry[i] = j
				}
				if err := node.FinishPush(ctx, nil, retry, nil, nil); err != nil {
					t.Errorf("node %d: FinishPush: %v", ni, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := retries.n.Load(); n > 2 {
		t.Errorf("%d of 40 transactions retried (deadlocks); want at most 2", n)
	}
}
