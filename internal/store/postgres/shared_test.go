package postgres

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// TestTwoNodesShared: two Stores (two nodes' pools) on one database race
// to insert one shared key, then to swap it from one version, many times:
// each time exactly one wins, and the loser sees the winner's entry.
func TestTwoNodesShared(t *testing.T) {
	dsn := newSchema(t)
	ctx := context.Background()
	nodes := []*Store{openURL(t, dsn, Options{}), openURL(t, dsn, Options{})}
	defer nodes[0].Close()
	defer nodes[1].Close()
	now := time.Now()
	for round := range 20 {
		key := "k" + string(rune('a'+round))
		race := func(version int64) (won int, value []byte) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i, n := range nodes {
				wg.Go(func() {
					e := store.SharedEntry{Namespace: store.SharedAPNsJWT, Key: key, Value: []byte{byte(i)}, Expires: now.Add(time.Hour), Version: version}
					_, err := n.PutShared(ctx, e, now)
					mu.Lock()
					defer mu.Unlock()
					switch herald.ErrorCode(err) {
					case "":
						won++
						value = e.Value
					case herald.CodeConflict:
					default:
						t.Errorf("PutShared: %v", err)
					}
				})
			}
			wg.Wait()
			return won, value
		}
		for _, version := range []int64{0, 1} {
			won, value := race(version)
			if won != 1 {
				t.Fatalf("round %d, version %d: %d nodes won, want 1", round, version, won)
			}
			for i, n := range nodes {
				got, err := n.GetShared(ctx, store.SharedAPNsJWT, key, now)
				if err != nil || string(got.Value) != string(value) || got.Version != version+1 {
					t.Fatalf("round %d: node %d reads %+v, %v; want the winner's value at version %d", round, i, got, err, version+1)
				}
			}
		}
	}
}
