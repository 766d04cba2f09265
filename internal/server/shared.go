package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/herald-im/herald/internal/api"
	"github.com/herald-im/herald/internal/push/apns"
	"github.com/herald-im/herald/internal/store"
)

// On several nodes (HERALD_BUS set) the store's shared table
// (store.SharedEntry) holds what the nodes must agree on: the server
// API's accepted nonces, console sessions and the APNs JWT of each key.
// A single node keeps the nonces and sessions as before (the api-nonces
// journal, the console's memory): the journal costs a local fsync where
// the table would cost a store write per signed request. The APNs JWTs go
// to the table on one node too (sharedTokens).

// sharedRecord is st for the API's nonces; nil (one node) keeps the journal.
func sharedRecord(st store.Store) api.SharedRecord {
	if st == nil {
		return nil
	}
	return st
}

// sharedTokens is st for the APNs JWTs, on one node as on several: APNs
// answers a new JWT for a key within 20 minutes of the last one with 429
// TooManyProviderTokenUpdates, so a restarted server (or a second one on
// the same data) must go on with the JWT in use, not sign its own. One
// write per key every TokenRefresh (40 min) is all it costs.
func sharedTokens(st store.Store) apns.TokenStore {
	if st == nil {
		return nil
	}
	return st
}

// nodeCount is the live node count for the API's rate split; nil (one
// node, c nil) gives each node the whole rate.
func (c *clusterParts) nodeCount() func() int {
	if c == nil {
		return nil
	}
	return c.nodes.Count
}

// sharedPruneEvery is how often a node deletes the expired entries of the
// shared table. Every node prunes (a DELETE of what expired: the nodes'
// prunes find little after the first); expired entries are ignored by
// reads anyway, so pruning only bounds the table's size.
const sharedPruneEvery = time.Minute

// sharedPruner deletes expired shared entries every sharedPruneEvery
// until close, which cancels a prune in progress.
type sharedPruner struct {
	every   time.Duration // sharedPruneEvery; tests shorten it
	st      store.Store
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	done    chan struct{}
}

func newSharedPruner(st store.Store, log *slog.Logger) *sharedPruner {
	ctx, cancel := context.WithCancel(context.Background())
	return &sharedPruner{every: sharedPruneEvery, st: st, log: log, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (p *sharedPruner) start() {
	p.started = true
	go func() {
		defer close(p.done)
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-p.ctx.Done():
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
			n, err := p.st.PruneShared(ctx, time.Now())
			cancel()
			switch {
			case err != nil && p.ctx.Err() == nil:
				p.log.Warn("pruning the store's shared table failed; retried in a minute", "err", err)
			case n > 0:
				p.log.Debug("pruned the store's shared table", "deleted", n)
			}
		}
	}()
}

// close stops the pruner and waits for it; it may be called without start.
func (p *sharedPruner) close() {
	p.cancel()
	if p.started {
		<-p.done
	}
}
