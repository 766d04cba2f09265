package sqlite

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// checkpointer copies committed WAL frames into the database file from its
// own connection, so the writer's commits do not wait for it. A page that
// changes in many commits between two checkpoints is copied once: with
// appends spread over many conversations, most pages do. The writer's
// wal_autocheckpoint stays on, at twice the restart length, as a backstop.
type checkpointer struct {
	db       *sql.DB
	interval time.Duration
	// restartAt is the WAL length, in frames, past which a round ends with
	// a RESTART checkpoint.
	restartAt int
	log       *slog.Logger
	dirty     *atomic.Bool  // raised by the writer after each commit
	writer    chan struct{} // the writer's semaphore
	stop      chan struct{}
	done      sync.WaitGroup
}

func startCheckpointer(db *sql.DB, w *writer, interval time.Duration, restartAt int, log *slog.Logger) *checkpointer {
	c := &checkpointer{
		db: db, interval: interval, restartAt: restartAt, log: log,
		dirty: &w.committed, writer: w.sem, stop: make(chan struct{}),
	}
	c.done.Go(c.run)
	return c
}

func (c *checkpointer) run() {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if !c.dirty.Swap(false) {
			continue
		}
		// PASSIVE never blocks the writer or readers; frames still needed
		// by an open read transaction wait for the next round. It cannot
		// restart the WAL while the writer keeps committing, though, so
		// once the WAL is long, the checkpointer takes the writer between
		// two transactions for a RESTART, which copies the few frames
		// PASSIVE left and lets the next commit write from the start of
		// the file again. Its busy timeout is short: a slow reader
		// postpones the restart rather than stalling the writer.
		st := time.Now()
		busy, logFrames, done, err := c.checkpoint("PASSIVE")
		if err == nil && logFrames >= c.restartAt {
			// A second PASSIVE first: it copies what the writer appended
			// during the first (a long one copies thousands of frames), so
			// that the RESTART, which holds every message commit, copies
			// and syncs only the frames of the last few commits.
			busy, logFrames, done, err = c.checkpoint("PASSIVE")
		}
		var held time.Duration // how long the RESTART held the writer
		if err == nil && logFrames >= c.restartAt {
			select {
			case c.writer <- struct{}{}:
			case <-c.stop:
				return
			}
			hs := time.Now()
			busy, logFrames, done, err = c.checkpoint("RESTART")
			<-c.writer
			held = time.Since(hs)
		}
		if err != nil {
			c.log.Warn("sqlite: checkpoint failed", "err", err)
			continue
		}
		// took spans the round (the PASSIVEs, the wait for the writer and
		// the RESTART); held is the writer's stall alone (0: no RESTART).
		c.log.Debug("sqlite: checkpoint", "busy", busy, "log_frames", logFrames, "checkpointed", done, "took", time.Since(st), "held", held)
	}
}

func (c *checkpointer) checkpoint(mode string) (busy, logFrames, done int, err error) {
	err = c.db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &done)
	return busy, logFrames, done, err
}

// close stops the background checkpoints; it does not close db.
func (c *checkpointer) close() {
	close(c.stop)
	c.done.Wait()
}
