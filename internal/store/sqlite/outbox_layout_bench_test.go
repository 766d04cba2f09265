package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkOutboxLayout measures, at the SQL level, a successful push's
// rows in the outbox and the delivery log, on a database the store
// migrated: jobs (180 bytes of data each, 1,000 devices) inserted 256 to
// a transaction, about what the server commits at a time under load, in
// statements of 64 rows as insertJobs and FinishPush write them, and 8
// batches later (a backlog of 2,048 jobs) each batch's outcomes stored in
// one transaction. 32,000 jobs go through before the measure starts.
// cpu-ns/push is the process's CPU time per push.
//
//   - today: FinishPush's statements, the jobs deleted (the row and its
//     push_outbox_due entry) and one log row appended each (with its
//     push_log_msg and push_log_at entries).
//   - done-row: the plan of docs/benchmarks.md ("Render, workers and the
//     delivery log's tables"), not adopted: the outbox row gains the log's
//     columns, push_outbox_due becomes partial (WHERE done = 0), a partial
//     index by time serves the log's newest entries and pruning
//     (WHERE done = 1), and a success is one UPDATE of the row.
//   - done-row-wide: the same, with the log columns written at full width
//     when the job is inserted, so that the UPDATE does not grow the row.
//
// The log's tables by user and push ID are left out: both layouts would
// fill them alike.
func BenchmarkOutboxLayout(b *testing.B) {
	const doneCols = `ALTER TABLE push_outbox ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
		ALTER TABLE push_outbox ADD COLUMN log_id INTEGER NOT NULL DEFAULT 0;
		ALTER TABLE push_outbox ADD COLUMN at INTEGER NOT NULL DEFAULT 0;
		ALTER TABLE push_outbox ADD COLUMN provider TEXT NOT NULL DEFAULT '';
		ALTER TABLE push_outbox ADD COLUMN app TEXT NOT NULL DEFAULT '';
		ALTER TABLE push_outbox ADD COLUMN env TEXT NOT NULL DEFAULT '';
		ALTER TABLE push_outbox ADD COLUMN status INTEGER NOT NULL DEFAULT 0;
		ALTER TABLE push_outbox ADD COLUMN notif_id TEXT NOT NULL DEFAULT '';
		ALTER TABLE push_outbox ADD COLUMN latency INTEGER NOT NULL DEFAULT 0;`
	const doneIndexes = `DROP INDEX push_outbox_due;
		CREATE INDEX push_outbox_due ON push_outbox (due, push_id, msg_id) WHERE done = 0;
		CREATE INDEX push_outbox_at ON push_outbox (at, log_id) WHERE done = 1;`
	// Defaults as wide as the values the UPDATE writes.
	wide := strings.NewReplacer("log_id INTEGER NOT NULL DEFAULT 0", "log_id INTEGER NOT NULL DEFAULT 1000000000",
		"at INTEGER NOT NULL DEFAULT 0", "at INTEGER NOT NULL DEFAULT 1700000000000",
		"provider TEXT NOT NULL DEFAULT ''", "provider TEXT NOT NULL DEFAULT 'apns'",
		"app TEXT NOT NULL DEFAULT ''", "app TEXT NOT NULL DEFAULT 'com.example.app'",
		"env TEXT NOT NULL DEFAULT ''", "env TEXT NOT NULL DEFAULT 'production'",
		"status INTEGER NOT NULL DEFAULT 0", "status INTEGER NOT NULL DEFAULT 200",
		"notif_id TEXT NOT NULL DEFAULT ''", "notif_id TEXT NOT NULL DEFAULT '"+strings.Repeat("0", 32)+"'",
		"latency INTEGER NOT NULL DEFAULT 0", "latency INTEGER NOT NULL DEFAULT 1000000").Replace(doneCols)
	const batch, lag, devices, warm = 256, 8, 1000, 125
	// A statement takes finishRows rows, as the store's do.
	multi := func(head, row, tail string) string {
		return head + strings.TrimSuffix(strings.Repeat(row+",", finishRows), ",") + tail
	}
	// chunks calls fn for each statement's first message ID of a batch
	// that starts at base.
	chunks := func(base int64, fn func(base int64) error) error {
		for off := int64(0); off < batch; off += finishRows {
			if err := fn(base + off); err != nil {
				return err
			}
		}
		return nil
	}
	pushID := func(m int64) string { return fmt.Sprintf("pd_%032x", m%devices) }
	// exec runs query as a statement prepared once on c, as the store
	// keeps its multi-row statements.
	prepared := map[string]*sql.Stmt{}
	exec := func(ctx context.Context, c *sql.Conn, query string, args ...any) error {
		st := prepared[query]
		if st == nil {
			var err error
			if st, err = c.PrepareContext(ctx, query); err != nil {
				return err
			}
			prepared[query] = st
		}
		_, err := st.ExecContext(ctx, args...)
		return err
	}
	today := func(ctx context.Context, c *sql.Conn, base int64) error {
		args := make([]any, 0, logInsertArgs*finishRows)
		for m := base; m < base+finishRows; m++ {
			args = append(args, m, pushID(m))
		}
		if err := exec(ctx, c, multi(jobDeleteHead, jobDeleteRow, ")"), args...); err != nil {
			return err
		}
		args = args[:0]
		for m := base; m < base+finishRows; m++ {
			args = append(args, 1_700_000_000_000+m, pushID(m), fmt.Sprintf("user-%d", m%devices), m,
				fmt.Sprintf("p:sender:user-%d", m%devices), "apns", "com.example.app", "production", 1, "sent", 200,
				"", "", fmt.Sprintf("%032x", m), 1_000_000)
		}
		return exec(ctx, c, multi(logInsertHead, logInsertRow, ""), args...)
	}
	doneRow := func(ctx context.Context, c *sql.Conn, base int64) error {
		args := make([]any, 0, 10*finishRows)
		for m := base; m < base+finishRows; m++ {
			args = append(args, m, 1_700_000_000_000+m, "apns", "com.example.app", "production", 200,
				fmt.Sprintf("%032x", m), 1_000_000, m, pushID(m))
		}
		return exec(ctx, c, multi(`UPDATE push_outbox SET done = 1, attempt = attempt + 1,
			log_id = v.column1, at = v.column2, provider = v.column3, app = v.column4, env = v.column5,
			status = v.column6, notif_id = v.column7, latency = v.column8 FROM (VALUES `,
			`(?,?,?,?,?,?,?,?,?,?)`, `) AS v WHERE msg_id = v.column9 AND push_id = v.column10`), args...)
	}
	for _, v := range []struct {
		name   string
		schema string
		finish func(context.Context, *sql.Conn, int64) error
	}{
		{"today", "", today},
		{"done-row", doneCols + doneIndexes, doneRow},
		{"done-row-wide", wide + doneIndexes, doneRow},
	} {
		b.Run(v.name, func(b *testing.B) {
			// The schema as the store migrates it, then the layout's
			// changes; the statements run on a connection of their own.
			s, path := openTemp(b, Options{})
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			db, err := sql.Open("sqlite", dsn(path, "synchronous(FULL)", "temp_store(MEMORY)"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			c, err := db.Conn(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			clear(prepared)
			defer func() {
				for _, st := range prepared {
					st.Close()
				}
			}()
			if v.schema != "" {
				if _, err := c.ExecContext(ctx, v.schema); err != nil {
					b.Fatal(err)
				}
			}
			tx := func(fn func() error) {
				if err := exec(ctx, c, "BEGIN IMMEDIATE"); err != nil {
					b.Fatal(err)
				}
				if err := fn(); err != nil {
					b.Fatal(err)
				}
				if err := exec(ctx, c, "COMMIT"); err != nil {
					b.Fatal(err)
				}
			}
			data := make([]byte, 180)
			insert := multi(jobInsertHead, jobInsertRow, jobInsertTail)
			next := int64(1) // the next job's message ID
			step := func() {
				tx(func() error {
					return chunks(next, func(base int64) error {
						args := make([]any, 0, jobInsertArgs*finishRows)
						for m := base; m < base+finishRows; m++ {
							args = append(args, m, pushID(m), 1_700_000_000_000+m, fmt.Sprintf("user-%d", m%devices),
								fmt.Sprintf("p:sender:user-%d", m%devices), m, 1_800_000_000_000, 0, data)
						}
						return exec(ctx, c, insert, args...)
					})
				})
				next += batch
				if base := next - (lag+1)*batch; base > 0 {
					tx(func() error { return chunks(base, func(base int64) error { return v.finish(ctx, c, base) }) })
				}
			}
			for range warm {
				step()
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				step()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/push")
		})
	}
}
