package store

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-im/herald"
)

// Moving a node's data from one backend to another (herald migrate): an
// Exporter reads everything a store holds, table by table, and an Importer
// writes it verbatim into an empty store of another backend, keeping
// message IDs and seqs, join and read seqs, push IDs and badges. The tables
// are logical, the same for every backend: each backend maps its own
// layout to them (Pebble has no tables, SQL backends have index tables the
// importer rebuilds).
//
// Neither is part of Store: a store is moved while no server runs on it,
// and a running server never enumerates everything.

// Table names one kind of row of an export.
type Table string

// The tables of an export, in Tables' order.
const (
	TableUsers        Table = "users"
	TableGroups       Table = "groups"        // every group ever created, dismissed ones too
	TableMessages     Table = "messages"      // with their IDs and seqs
	TableConvMembers  Table = "conv_members"  // peer conversation list entries, with read seqs
	TableGroupMembers Table = "group_members" // memberships, with join and read seqs and roles
	TableCursors      Table = "cursors"
	TableMutes        Table = "mutes"
	TablePushRules    Table = "push_rules"
	TablePushDevices  Table = "push_devices" // bound or not, with badges
	TablePushOutbox   Table = "push_outbox"
	TablePushLog      Table = "push_log"
	TableCalls        Table = "calls"
	// TableMedia holds the finished uploads (Complete, which the media
	// service sets in the same write that makes Received equal Size: the
	// SQL backends select received = size, Pebble Complete), referenced by a
	// message or not; unfinished ones are left behind (the sweep deletes
	// them, and their bytes are not in a Blobs' finished files). The
	// files themselves are not rows: herald migrate copies them apart.
	TableMedia Table = "media"
)

// Tables lists every table in the order an import must follow: groups
// before messages (a group's conversation exists before its messages),
// messages before the list entries and cursors that refer to them.
var Tables = []Table{
	TableUsers, TableGroups, TableMessages, TableConvMembers, TableGroupMembers,
	TableCursors, TableMutes, TablePushRules, TablePushDevices, TablePushOutbox, TablePushLog, TableCalls,
	TableMedia,
}

// GroupRecord is a row of TableGroups.
type GroupRecord struct {
	Group     herald.Group
	Dismissed bool
	// DismissedAt is when it was dismissed, when the backend keeps it
	// (Pebble keeps only that it was: zero then).
	DismissedAt time.Time
}

// ConvMember is a row of TableConvMembers: Conv (a peer conversation key)
// is in User's conversation list, read up to ReadSeq.
type ConvMember struct {
	User, Conv string
	ReadSeq    int64
}

// GroupMemberRecord is a row of TableGroupMembers. ReadSeq is the
// member's effective read seq (at least JoinSeq).
type GroupMemberRecord struct {
	Member  herald.GroupMember
	ReadSeq int64
}

// Cursor is a row of TableCursors: one device's cursor in one conversation.
type Cursor struct {
	User, Device, Conv string
	Seq                int64
}

// Mute is a row of TableMutes: User muted Conv.
type Mute struct{ User, Conv string }

// PushRuleRecord is a row of TablePushRules: User's push rule.
type PushRuleRecord struct {
	User string
	Rule herald.PushRule
}

// Rows is one page of one table: only the slice of its table is set.
type Rows struct {
	Users        []herald.User
	Groups       []GroupRecord
	Messages     []*herald.Message
	ConvMembers  []ConvMember
	GroupMembers []GroupMemberRecord
	Cursors      []Cursor
	Mutes        []Mute
	PushRules    []PushRuleRecord
	PushDevices  []herald.PushDevice
	PushOutbox   []PushJob
	PushLog      []herald.PushAttempt
	Calls        []*herald.Call
	Media        []herald.MediaFile
}

// Len returns how many rows r holds, of every table.
func (r *Rows) Len() int {
	return len(r.Users) + len(r.Groups) + len(r.Messages) + len(r.ConvMembers) + len(r.GroupMembers) +
		len(r.Cursors) + len(r.Mutes) + len(r.PushRules) + len(r.PushDevices) + len(r.PushOutbox) + len(r.PushLog) + len(r.Calls) + len(r.Media)
}

// Paged hands fn the rows scan reads, a page of page rows at a time and
// the rest at the end: the loop of a backend's Export over its query's
// rows (next and err are the result set's Next and Err). A scan or err
// failure comes back wrapped as "<engine>: export <t>"; fn's as it is.
func Paged(engine string, t Table, page int, next func() bool, scan func(*Rows) error, err func() error, fn func(*Rows) error) error {
	r := &Rows{}
	for next() {
		if e := scan(r); e != nil {
			return fmt.Errorf("%s: export %s: %w", engine, t, e)
		}
		if r.Len() >= page {
			if e := fn(r); e != nil {
				return e
			}
			r = &Rows{}
		}
	}
	if e := err(); e != nil {
		return fmt.Errorf("%s: export %s: %w", engine, t, e)
	}
	if r.Len() > 0 {
		return fn(r)
	}
	return nil
}

// Counter counts a store's rows per table, in Exporter's terms. Counting
// reads the whole table on the embedded backends.
type Counter interface {
	// Count returns how many rows Export gives (or Import stored) for t.
	// It blocks on I/O; CodeInvalidArgument for an unknown table.
	Count(ctx context.Context, t Table) (int64, error)
}

// Exporter reads everything a store holds. It must not run beside a
// server writing the store: pages are read one after the other, not from
// one snapshot.
type Exporter interface {
	Counter
	// Export calls fn with t's rows, at most page in each call (page > 0),
	// until every row was given; fn may keep the rows. Messages come
	// grouped by conversation, in ascending seq order within one; the
	// delivery log comes oldest first (by time, then insertion order); the
	// other tables in key order. It blocks on I/O and on fn. It returns
	// fn's first error as it is, or the store's (CodeInvalidArgument for an
	// unknown table or a page that is not positive).
	Export(ctx context.Context, t Table, page int, fn func(*Rows) error) error
}

// Importer writes rows into a store, verbatim: IDs, seqs, push IDs and
// times are kept, nothing is validated against the store's contract (the
// rows come from a store that kept it). It is meant for an empty store:
// rows that collide with stored ones fail the call.
type Importer interface {
	Counter
	// Import writes rows of table t in one transaction (all or none) and
	// blocks until they are durable. The tables must come in Tables'
	// order, and messages in Export's order: a message whose seq is not
	// past its conversation's stored ones fails the call. A row that is
	// already stored (same key) fails it too, and nothing of rows stays.
	Import(ctx context.Context, t Table, rows *Rows) error
	// FinishImport brings what the store derives from its rows up to date
	// (the next message ID, cached seqs) once every table was imported;
	// the store may be used normally afterwards.
	FinishImport(ctx context.Context) error
}

// CopyOptions tunes Copy.
type CopyOptions struct {
	// Page is how many rows go into one Import call (one transaction of
	// the target). Zero means 1000.
	Page int
	// Tables are the tables to copy, in Tables' order. Nil means Tables.
	Tables []Table
	// Progress, when set, is called after each page with the table and
	// how many of its rows were copied so far.
	Progress func(t Table, copied int64)
}

// Copy exports every table of from and imports it into to, page by page,
// then finishes the import. It stops at the first error: the pages
// imported before it stay in to (see Importer).
func Copy(ctx context.Context, from Exporter, to Importer, o CopyOptions) error {
	if o.Page <= 0 {
		o.Page = 1000
	}
	if o.Tables == nil {
		o.Tables = Tables
	}
	for _, t := range o.Tables {
		var n int64
		err := from.Export(ctx, t, o.Page, func(r *Rows) error {
			if err := to.Import(ctx, t, r); err != nil {
				return err
			}
			n += int64(r.Len())
			if o.Progress != nil {
				o.Progress(t, n)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("copy %s: %w", t, err)
		}
	}
	if err := to.FinishImport(ctx); err != nil {
		return fmt.Errorf("finish import: %w", err)
	}
	return nil
}

// Counts returns c's row count of each of tables.
func Counts(ctx context.Context, c Counter, tables []Table) (map[Table]int64, error) {
	counts := make(map[Table]int64, len(tables))
	for _, t := range tables {
		n, err := c.Count(ctx, t)
		if err != nil {
			return nil, err
		}
		counts[t] = n
	}
	return counts, nil
}
