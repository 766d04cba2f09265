package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Export and import (store.Exporter, store.Importer): herald migrate.
// Export reads the read pool, one query per table, streamed. Import writes
// each page in one writer transaction with plain INSERTs (no ON CONFLICT:
// a row that is already there fails the page), rebuilding what the writer
// derives on the way: conversations rows, created_max, call_users, the
// media table's columns beside its record.

var (
	_ store.Exporter = (*Store)(nil)
	_ store.Importer = (*Store)(nil)
)

// exportTable is how one table is read: the query (rows in Export's
// order), its count, and how a row is scanned into a page.
type exportTable struct {
	query, count string
	scan         func(sc scanner, r *store.Rows) error
}

var exportTables = map[store.Table]exportTable{
	store.TableUsers: {
		query: "SELECT id, name, avatar, extended, registered_at FROM users ORDER BY id",
		count: "SELECT count(*) FROM users",
		scan: func(sc scanner, r *store.Rows) error {
			var u herald.User
			var at int64
			if err := sc.Scan(&u.ID, &u.Name, &u.Avatar, &u.Extended, &at); err != nil {
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
		scan: func(sc scanner, r *store.Rows) error {
			var g store.GroupRecord
			var at int64
			var dismissed sql.NullInt64
			if err := sc.Scan(&g.Group.ID, &g.Group.Name, &g.Group.JoinMode, &g.Group.InviteMode, &g.Group.Extended, &at, &dismissed); err != nil {
				return err
			}
			g.Group.CreatedAt = fromMillis(at)
			if dismissed.Valid {
				g.Dismissed, g.DismissedAt = true, fromMillis(dismissed.Int64)
			}
			r.Groups = append(r.Groups, g)
			return nil
		},
	},
	store.TableMessages: {
		query: "SELECT " + msgCols + msgFrom + "ORDER BY m.conv_id, m.seq",
		count: "SELECT count(*) FROM messages",
		scan: func(sc scanner, r *store.Rows) error {
			m, err := scanMessage(sc)
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
		scan: func(sc scanner, r *store.Rows) error {
			var m store.ConvMember
			if err := sc.Scan(&m.User, &m.Conv, &m.ReadSeq); err != nil {
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
		scan: func(sc scanner, r *store.Rows) error {
			var m store.GroupMemberRecord
			var role, joined int64
			if err := sc.Scan(&m.Member.Group, &m.Member.User, &role, &m.Member.JoinSeq, &joined, &m.ReadSeq); err != nil {
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
		scan: func(sc scanner, r *store.Rows) error {
			var c store.Cursor
			if err := sc.Scan(&c.User, &c.Device, &c.Conv, &c.Seq); err != nil {
				return err
			}
			r.Cursors = append(r.Cursors, c)
			return nil
		},
	},
	store.TableMutes: {
		query: "SELECT user_id, conv_key FROM mutes ORDER BY user_id, conv_key",
		count: "SELECT count(*) FROM mutes",
		scan: func(sc scanner, r *store.Rows) error {
			var m store.Mute
			if err := sc.Scan(&m.User, &m.Conv); err != nil {
				return err
			}
			r.Mutes = append(r.Mutes, m)
			return nil
		},
	},
	store.TablePushRules: {
		query: "SELECT user_id, rule FROM push_rules ORDER BY user_id",
		count: "SELECT count(*) FROM push_rules",
		scan: func(sc scanner, r *store.Rows) error {
			var p store.PushRuleRecord
			var data string
			if err := sc.Scan(&p.User, &data); err != nil {
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
		scan: func(sc scanner, r *store.Rows) error {
			d, err := scanDevice(sc)
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
		scan: func(sc scanner, r *store.Rows) error {
			var (
				j                 store.PushJob
				due, exp, attempt int64
			)
			if err := sc.Scan(&j.PushID, &j.MsgID, &j.User, &j.Conv, &j.Seq, &due, &exp, &attempt, &j.Data); err != nil {
				return err
			}
			j.Due, j.Expires, j.Attempt = fromMillis(due), fromMillis(exp), int(attempt)
			r.PushOutbox = append(r.PushOutbox, j)
			return nil
		},
	},
	store.TablePushLog: {
		query: "SELECT " + logCols + " FROM push_log ORDER BY at, id",
		count: "SELECT count(*) FROM push_log",
		scan: func(sc scanner, r *store.Rows) error {
			var (
				a               herald.PushAttempt
				at, latency     int64
				provider, env   string
				attempt, status int64
			)
			if err := sc.Scan(&at, &a.PushID, &a.User, &a.MsgID, &a.Conv, &provider, &a.App, &env, &attempt,
				&a.Outcome, &status, &a.Reason, &a.Body, &a.NotifID, &latency); err != nil {
				return err
			}
			a.At, a.Provider, a.Env = fromMillis(at), herald.PushProvider(provider), herald.PushEnvironment(env)
			a.Attempt, a.Status, a.Latency = int(attempt), int(status), time.Duration(latency)
			r.PushLog = append(r.PushLog, a)
			return nil
		},
	},
	store.TableCalls: {
		query: "SELECT data FROM calls ORDER BY id",
		count: "SELECT count(*) FROM calls",
		scan: func(sc scanner, r *store.Rows) error {
			var data []byte
			if err := sc.Scan(&data); err != nil {
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
		scan: func(sc scanner, r *store.Rows) error {
			var body []byte
			if err := sc.Scan(&body); err != nil {
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

// Count implements store.Counter.
func (s *Store) Count(ctx context.Context, t store.Table) (int64, error) {
	et, err := lookupTable(t)
	if err != nil {
		return 0, err
	}
	if s.closed.Load() {
		return 0, errClosed
	}
	var n int64
	if err := s.read.QueryRowContext(ctx, et.count).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count %s: %w", t, err)
	}
	return n, nil
}

// Export implements store.Exporter.
func (s *Store) Export(ctx context.Context, t store.Table, page int, fn func(*store.Rows) error) error {
	et, err := lookupTable(t)
	if err != nil {
		return err
	}
	if page <= 0 {
		return herald.Errorf(herald.CodeInvalidArgument, "page %d is not positive", page)
	}
	if s.closed.Load() {
		return errClosed
	}
	rows, err := s.read.QueryContext(ctx, et.query)
	if err != nil {
		return fmt.Errorf("sqlite: export %s: %w", t, err)
	}
	defer rows.Close()
	return store.Paged("sqlite", t, page, rows.Next, func(r *store.Rows) error { return et.scan(rows, r) }, rows.Err, fn)
}

// Import implements store.Importer: one writer transaction.
func (s *Store) Import(ctx context.Context, t store.Table, r *store.Rows) error {
	if _, err := lookupTable(t); err != nil {
		return err
	}
	err := s.tx(ctx, func(ctx context.Context) error {
		im := importer{conn: s.w.conn, convs: map[string]int64{}}
		return im.table(ctx, t, r)
	})
	if err != nil {
		// Rolled back. The writer's cache was not touched: the import
		// keeps its own, and FinishImport clears the writer's.
		return fmt.Errorf("sqlite: import %s: %w", t, err)
	}
	return nil
}

// FinishImport implements store.Importer: the writer forgets its cached
// seqs and takes the next message ID after the imported ones.
func (s *Store) FinishImport(ctx context.Context) error {
	// The imported delivery log goes into its tables by user and push ID
	// now, not with the next pushes' outcomes.
	if err := s.tx(ctx, func(ctx context.Context) error { return s.w.indexLog(ctx, 1, false) }); err != nil {
		return fmt.Errorf("sqlite: finish import: %w", err)
	}
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.releaseWriter()
	var last int64
	if err := s.w.conn.QueryRowContext(ctx, "SELECT coalesce(max(id), 0) FROM messages").Scan(&last); err != nil {
		return fmt.Errorf("sqlite: finish import: %w", err)
	}
	s.w.convs = make(map[string]*convState)
	s.w.nextID = max(s.w.nextID, last+1)
	return nil
}

// importer writes one page inside a writer transaction.
type importer struct {
	conn  *sql.Conn
	convs map[string]int64 // conversation key -> conversations.id, this page's
}

// conv returns the id of the conversations row of key, inserting it.
func (im *importer) conv(ctx context.Context, key string) (int64, error) {
	if id, ok := im.convs[key]; ok {
		return id, nil
	}
	typ := herald.ConversationPeer
	if strings.HasPrefix(key, "g:") {
		typ = herald.ConversationGroup
	}
	if _, err := im.conn.ExecContext(ctx, "INSERT INTO conversations (conv_key, type) VALUES (?, ?) ON CONFLICT (conv_key) DO NOTHING", key, int64(typ)); err != nil {
		return 0, fmt.Errorf("conversation %q: %w", key, err)
	}
	var id int64
	if err := im.conn.QueryRowContext(ctx, "SELECT id FROM conversations WHERE conv_key = ?", key).Scan(&id); err != nil {
		return 0, fmt.Errorf("conversation %q: %w", key, err)
	}
	im.convs[key] = id
	return id, nil
}

func (im *importer) exec(ctx context.Context, what, query string, args ...any) error {
	if _, err := im.conn.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (im *importer) table(ctx context.Context, t store.Table, r *store.Rows) error {
	switch t {
	case store.TableUsers:
		for _, u := range r.Users {
			if err := im.exec(ctx, "user "+u.ID, "INSERT INTO users (id, name, avatar, extended, registered_at) VALUES (?, ?, ?, ?, ?)",
				u.ID, u.Name, u.Avatar, u.Extended, millis(u.RegisteredAt)); err != nil {
				return err
			}
		}
	case store.TableGroups:
		for _, g := range r.Groups {
			id, err := im.conv(ctx, herald.GroupConversationKey(g.Group.ID))
			if err != nil {
				return err
			}
			var dismissed any
			if g.Dismissed {
				at := g.DismissedAt
				if at.IsZero() {
					at = g.Group.CreatedAt // the source did not keep when
				}
				dismissed = millis(at)
			}
			if err := im.exec(ctx, "group "+g.Group.ID, `INSERT INTO chat_groups (id, conv_id, name, join_mode, invite_mode, extended, created_at, dismissed_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, g.Group.ID, id, g.Group.Name, g.Group.JoinMode, g.Group.InviteMode,
				g.Group.Extended, millis(g.Group.CreatedAt), dismissed); err != nil {
				return err
			}
		}
	case store.TableMessages:
		return im.messages(ctx, r.Messages)
	case store.TableConvMembers:
		for _, m := range r.ConvMembers {
			id, err := im.conv(ctx, m.Conv)
			if err != nil {
				return err
			}
			if err := im.exec(ctx, "list entry", "INSERT INTO members (user_id, conv_id, read_seq) VALUES (?, ?, ?)", m.User, id, m.ReadSeq); err != nil {
				return err
			}
		}
	case store.TableGroupMembers:
		for _, m := range r.GroupMembers {
			id, err := im.conv(ctx, herald.GroupConversationKey(m.Member.Group))
			if err != nil {
				return err
			}
			if err := im.exec(ctx, "group member", `INSERT INTO members (user_id, conv_id, read_seq, role, join_seq, joined_at) VALUES (?, ?, ?, ?, ?, ?)`,
				m.Member.User, id, m.ReadSeq, int64(m.Member.Role), m.Member.JoinSeq, millis(m.Member.JoinedAt)); err != nil {
				return err
			}
		}
	case store.TableCursors:
		for _, c := range r.Cursors {
			if err := im.exec(ctx, "cursor", "INSERT INTO cursors (user_id, device, conv_key, seq) VALUES (?, ?, ?, ?)", c.User, c.Device, c.Conv, c.Seq); err != nil {
				return err
			}
		}
	case store.TableMutes:
		for _, m := range r.Mutes {
			if err := im.exec(ctx, "mute", "INSERT INTO mutes (user_id, conv_key) VALUES (?, ?)", m.User, m.Conv); err != nil {
				return err
			}
		}
	case store.TablePushRules:
		for i := range r.PushRules {
			p := &r.PushRules[i]
			data, err := json.Marshal(&p.Rule)
			if err != nil {
				return fmt.Errorf("push rule of %q: %w", p.User, err)
			}
			if err := im.exec(ctx, "push rule", "INSERT INTO push_rules (user_id, rule) VALUES (?, ?)", p.User, string(data)); err != nil {
				return err
			}
		}
	case store.TablePushDevices:
		for _, d := range r.PushDevices {
			if err := im.exec(ctx, "push device "+d.PushID, "INSERT INTO push_devices ("+deviceCols+") VALUES (?,?,?,?,?,?,?,?,?,?)",
				d.PushID, string(d.Provider), d.Token, d.App, string(d.Env), d.User, d.Device, millis(d.RegisteredAt), int64(d.Badge), string(d.BadgeKind)); err != nil {
				return err
			}
		}
	case store.TablePushOutbox:
		for _, j := range r.PushOutbox {
			if err := im.exec(ctx, "push job", "INSERT INTO push_outbox ("+jobCols+") VALUES (?,?,?,?,?,?,?,?,?)",
				j.PushID, j.MsgID, j.User, j.Conv, j.Seq, millis(j.Due), millis(j.Expires), int64(j.Attempt), nullBytes(j.Data)); err != nil {
				return err
			}
		}
	case store.TablePushLog:
		// Inserted in the export's order, so the new rowids keep the
		// insertion order of entries of the same time.
		for _, a := range r.PushLog {
			if err := im.exec(ctx, "push log entry", logInsertHead+logInsertRow,
				millis(a.At), a.PushID, a.User, a.MsgID, a.Conv, string(a.Provider), a.App, string(a.Env), int64(a.Attempt),
				a.Outcome, int64(a.Status), a.Reason, a.Body, a.NotifID, int64(a.Latency)); err != nil {
				return err
			}
		}
	case store.TableCalls:
		for _, c := range r.Calls {
			data, err := store.EncodeCall(c)
			if err != nil {
				return err
			}
			var ended any
			if !c.EndedAt.IsZero() {
				ended = c.EndedAt.UnixMilli()
			}
			created := c.CreatedAt.UnixMilli()
			if err := im.exec(ctx, "call "+c.ID, "INSERT INTO calls (id, created_at, deadline, ended_at, data) VALUES (?, ?, ?, ?, ?)",
				c.ID, created, c.Deadline.UnixMilli(), ended, data); err != nil {
				return err
			}
			for _, p := range c.Participants {
				if err := im.exec(ctx, "call participant", "INSERT INTO call_users (user_id, created_at, call_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
					p.User, created, c.ID); err != nil {
					return err
				}
			}
		}
	case store.TableMedia:
		for i := range r.Media {
			f := &r.Media[i]
			if err := im.exec(ctx, "upload "+f.ID, "INSERT INTO media (id, owner, created_at, size, received, referenced, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
				f.ID, f.Owner, f.CreatedAt.UnixMilli(), f.Size, f.Received, referenced(f), store.EncodeMediaFile(f)); err != nil {
				return err
			}
		}
	}
	return nil
}

// messages inserts msgs, which come in Export's order, computing
// created_max from the conversation's stored messages: each conversation
// of the page costs one lookup of its last stored message.
func (im *importer) messages(ctx context.Context, msgs []*herald.Message) error {
	var (
		conv        string
		convID, seq int64
		maxAt       int64
	)
	for _, m := range msgs {
		if m.Conv != conv || convID == 0 {
			id, err := im.conv(ctx, m.Conv)
			if err != nil {
				return err
			}
			conv, convID, seq, maxAt = m.Conv, id, 0, math.MinInt64
			err = im.conn.QueryRowContext(ctx, "SELECT seq, created_max FROM messages WHERE conv_id = ? ORDER BY seq DESC LIMIT 1", id).Scan(&seq, &maxAt)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("conversation %q: %w", conv, err)
			}
		}
		if m.Seq <= seq {
			return fmt.Errorf("message %d of %q: seq %d after %d: messages must come in seq order", m.ID, m.Conv, m.Seq, seq)
		}
		at := m.CreatedAt.UnixMilli()
		seq, maxAt = m.Seq, max(maxAt, at)
		err := im.exec(ctx, fmt.Sprintf("message %d", m.ID), insertHead+insertRow, appendInsertArgs(nil, m, convID, maxAt)...)
		if err != nil {
			return err
		}
	}
	return nil
}
