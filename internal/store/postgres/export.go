package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/jackc/pgx/v5"
)

// Export and import (store.Exporter, store.Importer): herald migrate.
// Export streams one query per table from the pool, or, through a
// Snapshot, from one transaction that sees one state of every table. Import writes each
// page in one transaction, with COPY for the rows (no ON CONFLICT: a row
// that is already there fails the page and nothing of it stays), and
// rebuilds what the store derives on the way: conversations rows and their
// last_seq and last_id, call_users, the media table's columns beside its
// record. FinishImport moves messages_id_seq past
// the imported IDs.

var (
	_ store.Exporter = (*Store)(nil)
	_ store.Importer = (*Store)(nil)
)

// exportTable is how one table is read: the query (rows in Export's
// order), its count, and how a row is scanned into a page.
type exportTable struct {
	query, count string
	scan         func(row pgx.Row, r *store.Rows) error
}

var exportTables = map[store.Table]exportTable{
	store.TableUsers: {
		query: "SELECT id, name, avatar, extended, registered_at FROM users ORDER BY id",
		count: "SELECT count(*) FROM users",
		scan: func(row pgx.Row, r *store.Rows) error {
			var u herald.User
			var at int64
			if err := row.Scan(&u.ID, &u.Name, &u.Avatar, &u.Extended, &at); err != nil {
				return err
			}
			u.RegisteredAt = fromMillis(at)
			r.Users = append(r.Users, u)
			return nil
		},
	},
	store.TableGroups: {
		query: "SELECT id, name, join_mode, invite_mode, extended, created_at, dismissed_at FROM chat_groups ORDER BY id",
		count: "SELECT count(*) FROM chat_groups",
		scan: func(row pgx.Row, r *store.Rows) error {
			var g store.GroupRecord
			var at int64
			var dismissed *int64
			if err := row.Scan(&g.Group.ID, &g.Group.Name, &g.Group.JoinMode, &g.Group.InviteMode, &g.Group.Extended, &at, &dismissed); err != nil {
				return err
			}
			g.Group.CreatedAt = fromMillis(at)
			if dismissed != nil {
				g.Dismissed, g.DismissedAt = true, fromMillis(*dismissed)
			}
			r.Groups = append(r.Groups, g)
			return nil
		},
	},
	store.TableMessages: {
		query: "SELECT " + msgCols + msgFrom + "ORDER BY m.conv_id, m.seq",
		count: "SELECT count(*) FROM messages",
		scan: func(row pgx.Row, r *store.Rows) error {
			m, err := scanMessage(row)
			if err != nil {
				return err
			}
			r.Messages = append(r.Messages, m)
			return nil
		},
	},
	store.TableConvMembers: {
		query: `SELECT m.user_id, c.conv_key, m.read_seq FROM members m JOIN conversations c ON c.id = m.conv_id
			WHERE m.role = 0 ORDER BY m.user_id, c.conv_key`,
		count: "SELECT count(*) FROM members WHERE role = 0",
		scan: func(row pgx.Row, r *store.Rows) error {
			var m store.ConvMember
			if err := row.Scan(&m.User, &m.Conv, &m.ReadSeq); err != nil {
				return err
			}
			r.ConvMembers = append(r.ConvMembers, m)
			return nil
		},
	},
	store.TableGroupMembers: {
		query: `SELECT g.id, m.user_id, m.role, m.join_seq, m.joined_at, m.read_seq
			FROM members m JOIN chat_groups g ON g.conv_id = m.conv_id
			WHERE m.role <> 0 ORDER BY g.id, m.user_id`,
		count: "SELECT count(*) FROM members WHERE role <> 0",
		scan: func(row pgx.Row, r *store.Rows) error {
			var m store.GroupMemberRecord
			var role int16
			var joined int64
			if err := row.Scan(&m.Member.Group, &m.Member.User, &role, &m.Member.JoinSeq, &joined, &m.ReadSeq); err != nil {
				return err
			}
			m.Member.Role, m.Member.JoinedAt = herald.GroupRole(role), fromMillis(joined)
			r.GroupMembers = append(r.GroupMembers, m)
			return nil
		},
	},
	// Ping's probe row (the empty user ID) is no data.
	store.TableCursors: {
		query: "SELECT user_id, device, conv_key, seq FROM cursors WHERE user_id <> '' ORDER BY user_id, device, conv_key",
		count: "SELECT count(*) FROM cursors WHERE user_id <> ''",
		scan: func(row pgx.Row, r *store.Rows) error {
			var c store.Cursor
			if err := row.Scan(&c.User, &c.Device, &c.Conv, &c.Seq); err != nil {
				return err
			}
			r.Cursors = append(r.Cursors, c)
			return nil
		},
	},
	store.TableMutes: {
		query: "SELECT user_id, conv_key FROM mutes ORDER BY user_id, conv_key",
		count: "SELECT count(*) FROM mutes",
		scan: func(row pgx.Row, r *store.Rows) error {
			var m store.Mute
			if err := row.Scan(&m.User, &m.Conv); err != nil {
				return err
			}
			r.Mutes = append(r.Mutes, m)
			return nil
		},
	},
	store.TablePushRules: {
		query: "SELECT user_id, rule FROM push_rules ORDER BY user_id",
		count: "SELECT count(*) FROM push_rules",
		scan: func(row pgx.Row, r *store.Rows) error {
			var p store.PushRuleRecord
			var data string
			if err := row.Scan(&p.User, &data); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(data), &p.Rule); err != nil {
				return fmt.Errorf("push rule of %q: %w", p.User, err)
			}
			r.PushRules = append(r.PushRules, p)
			return nil
		},
	},
	store.TablePushDevices: {
		query: "SELECT " + deviceCols + " FROM push_devices ORDER BY push_id",
		count: "SELECT count(*) FROM push_devices",
		scan: func(row pgx.Row, r *store.Rows) error {
			d, err := scanDevice(row)
			if err != nil {
				return err
			}
			r.PushDevices = append(r.PushDevices, d)
			return nil
		},
	},
	store.TablePushOutbox: {
		query: "SELECT " + jobCols + " FROM push_outbox ORDER BY due, push_id, msg_id",
		count: "SELECT count(*) FROM push_outbox",
		scan: func(row pgx.Row, r *store.Rows) error {
			j, err := scanJob(row)
			if err != nil {
				return err
			}
			// A lease names a node of this cluster: the copy's jobs are
			// anybody's, claimed by the target's nodes once due.
			j.Owner, j.LeaseUntil = "", time.Time{}
			r.PushOutbox = append(r.PushOutbox, j)
			return nil
		},
	},
	store.TablePushLog: {
		query: "SELECT " + logCols + " FROM push_log ORDER BY at, id",
		count: "SELECT count(*) FROM push_log",
		scan: func(row pgx.Row, r *store.Rows) error {
			var (
				a               herald.PushAttempt
				at, latency     int64
				provider, env   string
				attempt, status int32
				reason, body    []byte
			)
			if err := row.Scan(&at, &a.PushID, &a.User, &a.MsgID, &a.Conv, &provider, &a.App, &env, &attempt,
				&a.Outcome, &status, &reason, &body, &a.NotifID, &latency); err != nil {
				return err
			}
			a.At, a.Provider, a.Env = fromMillis(at), herald.PushProvider(provider), herald.PushEnvironment(env)
			a.Attempt, a.Status, a.Latency = int(attempt), int(status), time.Duration(latency)
			a.Reason, a.Body = string(reason), string(body)
			r.PushLog = append(r.PushLog, a)
			return nil
		},
	},
	store.TableCalls: {
		query: "SELECT data FROM calls ORDER BY id",
		count: "SELECT count(*) FROM calls",
		scan: func(row pgx.Row, r *store.Rows) error {
			var data []byte
			if err := row.Scan(&data); err != nil {
				return err
			}
			c, err := store.DecodeCall(data)
			if err != nil {
				return err
			}
			r.Calls = append(r.Calls, c)
			return nil
		},
	},
	// Finished uploads: the service marks an upload complete exactly
	// when its last byte is received (sizes are at least 1).
	store.TableMedia: {
		query: "SELECT body FROM media WHERE received = size ORDER BY id",
		count: "SELECT count(*) FROM media WHERE received = size",
		scan: func(row pgx.Row, r *store.Rows) error {
			var body []byte
			if err := row.Scan(&body); err != nil {
				return err
			}
			f, err := store.DecodeMediaFile(body)
			if err != nil {
				return err
			}
			r.Media = append(r.Media, f)
			return nil
		},
	},
}

func lookupTable(t store.Table) (exportTable, error) {
	et, ok := exportTables[t]
	if !ok {
		return et, herald.Errorf(herald.CodeInvalidArgument, "no table %q", t)
	}
	return et, nil
}

// querier is what an export reads through: the pool (Store), or one
// transaction (Snapshot).
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Count implements store.Counter.
func (s *Store) Count(ctx context.Context, t store.Table) (int64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	return countRows(ctx, s.pool, t)
}

// Export implements store.Exporter, each table read in a query of its
// own: Snapshot reads them all from one snapshot.
func (s *Store) Export(ctx context.Context, t store.Table, page int, fn func(*store.Rows) error) error {
	if s.closed.Load() {
		return errClosed
	}
	return exportRows(ctx, s.pool, t, page, fn)
}

// Snapshot is a store.Exporter reading every table from one snapshot of
// the database: one REPEATABLE READ READ ONLY transaction, held on one
// connection of the pool until Close. Its counts and rows are those of
// the moment Snapshot began, whatever is written since; herald migrate
// reads a PostgreSQL source through it.
type Snapshot struct {
	s  *Store
	tx pgx.Tx
}

var _ store.Exporter = (*Snapshot)(nil)

// Snapshot begins a Snapshot; it blocks on I/O. The caller must Close it.
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("postgres: begin the export's snapshot: %w", err)
	}
	return &Snapshot{s: s, tx: tx}, nil
}

// Count implements store.Counter, in the snapshot.
func (sn *Snapshot) Count(ctx context.Context, t store.Table) (int64, error) {
	if sn.s.closed.Load() {
		return 0, errClosed
	}
	return countRows(ctx, sn.tx, t)
}

// Export implements store.Exporter, in the snapshot. One table at a time:
// the transaction's connection reads one query at once.
func (sn *Snapshot) Export(ctx context.Context, t store.Table, page int, fn func(*store.Rows) error) error {
	if sn.s.closed.Load() {
		return errClosed
	}
	return exportRows(ctx, sn.tx, t, page, fn)
}

// Close ends the snapshot's transaction (it wrote nothing) and gives its
// connection back to the pool.
func (sn *Snapshot) Close() error {
	if err := sn.tx.Rollback(context.Background()); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("postgres: end the export's snapshot: %w", err)
	}
	return nil
}

func countRows(ctx context.Context, q querier, t store.Table) (int64, error) {
	et, err := lookupTable(t)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := q.QueryRow(ctx, et.count).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count %s: %w", t, err)
	}
	return n, nil
}

// exportRows streams t's rows to fn as it takes the pages: the query is
// not read into memory first.
func exportRows(ctx context.Context, q querier, t store.Table, page int, fn func(*store.Rows) error) error {
	et, err := lookupTable(t)
	if err != nil {
		return err
	}
	if page <= 0 {
		return herald.Errorf(herald.CodeInvalidArgument, "page %d is not positive", page)
	}
	rows, err := q.Query(ctx, et.query)
	if err != nil {
		return fmt.Errorf("postgres: export %s: %w", t, err)
	}
	defer rows.Close()
	return store.Paged("postgres", t, page, rows.Next, func(r *store.Rows) error { return et.scan(rows, r) }, rows.Err, fn)
}

// Import implements store.Importer: one transaction per call.
func (s *Store) Import(ctx context.Context, t store.Table, r *store.Rows) error {
	if _, err := lookupTable(t); err != nil {
		return err
	}
	err := s.tx(ctx, func(tx pgx.Tx) error { return importRows(ctx, tx, t, r) })
	if err != nil {
		return fmt.Errorf("postgres: import %s: %w", t, err)
	}
	return nil
}

// FinishImport implements store.Importer: messages_id_seq continues after
// the highest imported message ID.
func (s *Store) FinishImport(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	_, err := s.pool.Exec(ctx, `SELECT CASE WHEN m.last > 0 THEN setval('messages_id_seq', m.last) END
		FROM (SELECT coalesce(max(id), 0) AS last FROM messages) m`)
	if err != nil {
		return fmt.Errorf("postgres: finish import: %w", err)
	}
	return nil
}

// copyRows copies n rows, row(i) each, into table's columns.
func copyRows(ctx context.Context, tx pgx.Tx, table string, cols []string, n int, row func(i int) []any) error {
	if n == 0 {
		return nil
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromSlice(n, func(i int) ([]any, error) { return row(i), nil }))
	if err != nil {
		return fmt.Errorf("copy %s: %w", table, err)
	}
	return nil
}

// importedConv is a conversations row as the import sees it.
type importedConv struct{ id, lastSeq int64 }

// convRows returns the conversations rows of keys, inserting those
// missing (of the type their key says).
func convRows(ctx context.Context, tx pgx.Tx, keys []string) (map[string]importedConv, error) {
	types := make([]int16, len(keys))
	for i, k := range keys {
		types[i] = int16(herald.ConversationPeer)
		if strings.HasPrefix(k, "g:") {
			types[i] = int16(herald.ConversationGroup)
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO conversations (conv_key, type) SELECT * FROM unnest($1::text[], $2::smallint[])
		ON CONFLICT (conv_key) DO NOTHING`, keys, types)
	if err != nil {
		return nil, fmt.Errorf("insert conversations: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT conv_key, id, last_seq FROM conversations WHERE conv_key = ANY($1)", keys)
	if err != nil {
		return nil, fmt.Errorf("read conversations: %w", err)
	}
	defer rows.Close()
	convs := make(map[string]importedConv, len(keys))
	for rows.Next() {
		var key string
		var c importedConv
		if err := rows.Scan(&key, &c.id, &c.lastSeq); err != nil {
			return nil, fmt.Errorf("read conversations: %w", err)
		}
		convs[key] = c
	}
	return convs, rows.Err()
}

func importRows(ctx context.Context, tx pgx.Tx, t store.Table, r *store.Rows) error {
	switch t {
	case store.TableUsers:
		return copyRows(ctx, tx, "users", []string{"id", "name", "avatar", "extended", "registered_at"}, len(r.Users), func(i int) []any {
			u := &r.Users[i]
			return []any{u.ID, u.Name, u.Avatar, u.Extended, millis(u.RegisteredAt)}
		})
	case store.TableGroups:
		keys := make([]string, len(r.Groups))
		for i, g := range r.Groups {
			keys[i] = herald.GroupConversationKey(g.Group.ID)
		}
		convs, err := convRows(ctx, tx, keys)
		if err != nil {
			return err
		}
		return copyRows(ctx, tx, "chat_groups", []string{"id", "conv_id", "name", "join_mode", "invite_mode", "extended", "created_at", "dismissed_at"},
			len(r.Groups), func(i int) []any {
				g := &r.Groups[i]
				var dismissed *int64
				if g.Dismissed {
					at := g.DismissedAt
					if at.IsZero() {
						at = g.Group.CreatedAt // the source did not keep when
					}
					ms := millis(at)
					dismissed = &ms
				}
				return []any{g.Group.ID, convs[keys[i]].id, g.Group.Name, g.Group.JoinMode, g.Group.InviteMode, g.Group.Extended,
					millis(g.Group.CreatedAt), dismissed}
			})
	case store.TableMessages:
		return importMessages(ctx, tx, r.Messages)
	case store.TableConvMembers:
		keys := make([]string, len(r.ConvMembers))
		for i, m := range r.ConvMembers {
			keys[i] = m.Conv
		}
		convs, err := convRows(ctx, tx, keys)
		if err != nil {
			return err
		}
		return copyRows(ctx, tx, "members", []string{"user_id", "conv_id", "read_seq"}, len(r.ConvMembers), func(i int) []any {
			m := &r.ConvMembers[i]
			return []any{m.User, convs[m.Conv].id, m.ReadSeq}
		})
	case store.TableGroupMembers:
		keys := make([]string, len(r.GroupMembers))
		for i, m := range r.GroupMembers {
			keys[i] = herald.GroupConversationKey(m.Member.Group)
		}
		convs, err := convRows(ctx, tx, keys)
		if err != nil {
			return err
		}
		return copyRows(ctx, tx, "members", []string{"user_id", "conv_id", "read_seq", "role", "join_seq", "joined_at"}, len(r.GroupMembers), func(i int) []any {
			m := &r.GroupMembers[i]
			return []any{m.Member.User, convs[keys[i]].id, m.ReadSeq, int16(m.Member.Role), m.Member.JoinSeq, millis(m.Member.JoinedAt)}
		})
	case store.TableCursors:
		return copyRows(ctx, tx, "cursors", []string{"user_id", "device", "conv_key", "seq"}, len(r.Cursors), func(i int) []any {
			c := &r.Cursors[i]
			return []any{c.User, c.Device, c.Conv, c.Seq}
		})
	case store.TableMutes:
		return copyRows(ctx, tx, "mutes", []string{"user_id", "conv_key"}, len(r.Mutes), func(i int) []any {
			return []any{r.Mutes[i].User, r.Mutes[i].Conv}
		})
	case store.TablePushRules:
		data := make([]string, len(r.PushRules))
		for i := range r.PushRules {
			b, err := json.Marshal(&r.PushRules[i].Rule)
			if err != nil {
				return fmt.Errorf("push rule of %q: %w", r.PushRules[i].User, err)
			}
			data[i] = string(b)
		}
		return copyRows(ctx, tx, "push_rules", []string{"user_id", "rule"}, len(r.PushRules), func(i int) []any {
			return []any{r.PushRules[i].User, data[i]}
		})
	case store.TablePushDevices:
		return copyRows(ctx, tx, "push_devices", strings.Split(strings.ReplaceAll(deviceCols, " ", ""), ","), len(r.PushDevices), func(i int) []any {
			d := &r.PushDevices[i]
			return []any{d.PushID, string(d.Provider), d.Token, d.App, string(d.Env), d.User, d.Device, millis(d.RegisteredAt), int32(d.Badge), string(d.BadgeKind)}
		})
	case store.TablePushOutbox:
		// fresh: COPY, and a job already stored fails the page.
		return insertJobs(ctx, tx, r.PushOutbox, true)
	case store.TablePushLog:
		// In the export's order: the new IDs keep the insertion order of
		// entries of the same time.
		return insertLog(ctx, tx, r.PushLog)
	case store.TableCalls:
		type callUser struct {
			user    string
			created int64
			id      string
		}
		var users []callUser
		data := make([][]byte, len(r.Calls))
		for i, c := range r.Calls {
			var err error
			if data[i], err = store.EncodeCall(c); err != nil {
				return fmt.Errorf("call %s: %w", c.ID, err)
			}
			seen := map[string]bool{}
			for _, p := range c.Participants {
				if !seen[p.User] {
					seen[p.User] = true
					users = append(users, callUser{p.User, c.CreatedAt.UnixMilli(), c.ID})
				}
			}
		}
		err := copyRows(ctx, tx, "calls", []string{"id", "created_at", "deadline", "ended_at", "data"}, len(r.Calls), func(i int) []any {
			c := r.Calls[i]
			var ended *int64
			if !c.EndedAt.IsZero() {
				e := c.EndedAt.UnixMilli()
				ended = &e
			}
			return []any{c.ID, c.CreatedAt.UnixMilli(), c.Deadline.UnixMilli(), ended, data[i]}
		})
		if err != nil {
			return err
		}
		return copyRows(ctx, tx, "call_users", []string{"user_id", "created_at", "call_id"}, len(users), func(i int) []any {
			return []any{users[i].user, users[i].created, users[i].id}
		})
	case store.TableMedia:
		return copyRows(ctx, tx, "media", []string{"id", "owner", "created_at", "size", "received", "referenced", "body"}, len(r.Media), func(i int) []any {
			f := &r.Media[i]
			return []any{f.ID, f.Owner, f.CreatedAt.UnixMilli(), f.Size, f.Received, f.Conv != "", store.EncodeMediaFile(f)}
		})
	}
	return nil
}

// importMessages copies msgs, which come in Export's order, and raises
// their conversations' last_seq and last_id. A message whose seq is not
// after its conversation's last fails the page: the order was not kept.
func importMessages(ctx context.Context, tx pgx.Tx, msgs []*herald.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	var keys []string
	seen := map[string]bool{}
	for _, m := range msgs {
		if !seen[m.Conv] {
			seen[m.Conv] = true
			keys = append(keys, m.Conv)
		}
	}
	convs, err := convRows(ctx, tx, keys)
	if err != nil {
		return err
	}
	last := make(map[string]*herald.Message, len(keys))
	for _, m := range msgs {
		c := convs[m.Conv]
		prev := c.lastSeq
		if l := last[m.Conv]; l != nil {
			prev = l.Seq
		}
		if m.Seq <= prev {
			return fmt.Errorf("message %d of %q: seq %d after %d: messages must come in seq order", m.ID, m.Conv, m.Seq, prev)
		}
		last[m.Conv] = m
	}
	err = copyRows(ctx, tx, "messages", []string{"id", "conv_id", "seq", "sender", "receiver", "local_id",
		"type", "sub_type", "text", "data", "extended", "created_at", "mentions", "sender_device"}, len(msgs), func(i int) []any {
		m := msgs[i]
		var ment any
		if s := encodeMentions(m.Mentions); s != "" {
			ment = s
		}
		return []any{m.ID, convs[m.Conv].id, m.Seq, m.From, m.To, m.LocalID, int16(m.Type), m.SubType,
			nilIfEmpty([]byte(m.Text)), nilIfEmpty(store.MessageBody(m)), nilIfEmpty([]byte(m.Extended)), m.CreatedAt.UnixMilli(), ment, m.FromDevice}
	})
	if err != nil {
		return err
	}
	ids, seqs, lasts := make([]int64, 0, len(last)), make([]int64, 0, len(last)), make([]int64, 0, len(last))
	for key, m := range last {
		ids, seqs, lasts = append(ids, convs[key].id), append(seqs, m.Seq), append(lasts, m.ID)
	}
	_, err = tx.Exec(ctx, `UPDATE conversations c SET last_seq = v.seq, last_id = v.last
		FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, seq, last) WHERE c.id = v.id`, ids, seqs, lasts)
	if err != nil {
		return fmt.Errorf("raise conversations: %w", err)
	}
	return nil
}
