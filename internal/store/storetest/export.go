package storetest

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// RunExport checks store.Exporter and store.Importer across two backends:
// a store filled through the Store API (peer and group messages with
// every field, a resend, read seqs, cursors, mutes, bound and unbound push
// devices with badges, the outbox with a retried job, the delivery log,
// groups with join seqs, roles and a dismissed one, calls, users, an
// unregistered one, finished uploads sent or not and an unfinished one) is copied with store.Copy, in small pages, into an
// empty store; then every read of the contract must answer as on the
// original, the counts of every table must match, and the copy must go on
// from the original: seqs continue, IDs grow past the imported ones, a
// resend of an imported message is its duplicate, a dismissed group's ID
// is refused, the unfinished upload is left behind and the copied ones
// keep every field, the log's order continues, a token registered again keeps
// its push ID and badge. The same holds once the copy is closed and
// opened again.
//
// from must return a new, empty store whose backend implements
// store.Exporter; to must open the store kept in dir (implementing
// store.Importer), empty the first time; it is called twice with the same
// dir. RunExport closes every store it gets.
func RunExport(t *testing.T, from func(t *testing.T) store.Store, to func(t *testing.T, dir string) store.Store) {
	ctx := context.Background()
	src := from(t)
	defer src.Close()
	f := &fixture{s: src, at: baseTime}
	w := fillForExport(t, f)
	before := w.snapshot(t, src)

	dir := t.TempDir()
	dst := to(t, dir)
	exp, ok := src.(store.Exporter)
	if !ok {
		t.Fatalf("%T is no store.Exporter", src)
	}
	imp, ok := dst.(store.Importer)
	if !ok {
		t.Fatalf("%T is no store.Importer", dst)
	}
	pages := 0
	err := store.Copy(ctx, exp, imp, store.CopyOptions{Page: 3, Progress: func(store.Table, int64) { pages++ }})
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if pages < len(store.Tables) {
		t.Errorf("Copy imported %d pages, want at least one per table (%d)", pages, len(store.Tables))
	}
	srcCounts, err := store.Counts(ctx, exp, store.Tables)
	if err != nil {
		t.Fatalf("source counts: %v", err)
	}
	dstCounts, err := store.Counts(ctx, imp, store.Tables)
	if err != nil {
		t.Fatalf("target counts: %v", err)
	}
	for _, tb := range store.Tables {
		if srcCounts[tb] == 0 {
			t.Errorf("the source's %s is empty: the fill does not cover it", tb)
		}
	}
	if !maps.Equal(srcCounts, dstCounts) {
		t.Errorf("counts after the copy: %v, want the source's %v", dstCounts, srcCounts)
	}
	if got := w.snapshot(t, src); got != before {
		t.Errorf("the export changed the original:\n%s", diffLines(got, before))
	}
	if got := w.snapshot(t, dst); got != before {
		t.Errorf("the copy reads differently from the original:\n%s", diffLines(got, before))
	}
	w.unfinishedLeft(t, src, dst)

	pageAtomic(t, imp)

	g := &fixture{s: dst, at: f.at, n: f.n}
	w.goOn(t, g)
	after := w.snapshot(t, dst)
	if err := dst.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	dst = to(t, dir)
	defer dst.Close()
	if got := w.snapshot(t, dst); got != after {
		t.Errorf("the copy reads differently after reopening it:\n%s", diffLines(got, after))
	}
}

// pageAtomic checks that an Import whose page meets a stored row, or
// whose messages are out of seq order, fails and stores nothing of the
// page: a failed herald migrate leaves whole pages only.
func pageAtomic(t *testing.T, imp store.Importer) {
	t.Helper()
	ctx := context.Background()
	before, err := store.Counts(ctx, imp, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		table store.Table
		rows  *store.Rows
	}{
		{store.TableUsers, &store.Rows{Users: []herald.User{
			{ID: "new", RegisteredAt: baseTime}, {ID: "alice", RegisteredAt: baseTime}}}},
		{store.TableMutes, &store.Rows{Mutes: []store.Mute{{User: "new", Conv: "p:a:new"}, {User: "alice", Conv: "p:alice:bob"}}}},
		{store.TablePushRules, &store.Rows{PushRules: []store.PushRuleRecord{{User: "new", Rule: nightRule}, {User: "alice", Rule: nightRule}}}},
		// Seq 1 of alice and bob's conversation is stored: out of order.
		{store.TableMessages, &store.Rows{Messages: []*herald.Message{
			exportMessage(1<<40, "new", "zoe", 1), exportMessage(1<<40+1, "alice", "bob", 1)}}},
		// A new conversation's seqs going back: not Export's order.
		{store.TableMessages, &store.Rows{Messages: []*herald.Message{
			exportMessage(1<<40+2, "new", "yan", 2), exportMessage(1<<40+3, "new", "yan", 1)}}},
	} {
		if err := imp.Import(ctx, tt.table, tt.rows); err == nil {
			t.Errorf("Import of a %s page holding a stored row or seqs out of order: no error", tt.table)
		}
	}
	after, err := store.Counts(ctx, imp, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, after) {
		t.Errorf("a failed Import stored part of its page: counts %v, were %v", after, before)
	}
}

// exportMessage is a message as Export gives it, ID and seq set.
func exportMessage(id int64, from, to string, seq int64) *herald.Message {
	return &herald.Message{ID: id, ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to), Seq: seq,
		From: from, To: to, LocalID: fmt.Sprint("import-", id), Type: herald.MessageText, Text: "imported", CreatedAt: baseTime}
}

// exportWorld is what fillForExport stored: the names the snapshot reads.
type exportWorld struct {
	users, groups, calls []string
	convs                []string
	devices              [][2]string // (user, device) with cursors
	logAt                time.Time
	imported             []store.Appended // the first messages stored
	phone                herald.PushDevice
	resent               *herald.Message // stored before the copy
	media                []string        // finished uploads
	unfinished           herald.MediaFile
}

func fillForExport(t *testing.T, f *fixture) *exportWorld {
	ctx := context.Background()
	w := &exportWorld{
		users:   []string{"alice", "bob", "carol", "dave", "gus", "hal", "ivy", "jay", "zed"},
		groups:  []string{"g1", "g2", "g3"},
		calls:   []string{"c1", "c2"},
		devices: [][2]string{{"alice", "phone"}, {"bob", "tablet"}, {"bob", "phone"}},
	}
	users := []herald.User{
		{ID: "alice", Name: "Alice", Avatar: "https://a.example/a.png", Extended: `{"k":1}`, RegisteredAt: baseTime},
		{ID: "bob", Name: "Bob", RegisteredAt: baseTime.Add(time.Second)},
		{ID: "zed", Name: "Zed", RegisteredAt: baseTime},
	}
	if _, err := f.s.RegisterUsers(ctx, users); err != nil {
		t.Fatal(err)
	}
	if err := f.s.UnregisterUser(ctx, "zed"); err != nil {
		t.Fatal(err)
	}

	phone := f.register(t, pushDevice("bob", "phone", "b0b0"))
	tablet := f.register(t, pushDevice("bob", "tablet", "b0b1"))
	f.register(t, pushDevice("carol", "phone", "c0c0"))
	if _, err := f.s.UnbindPushDevices(ctx, "carol", "phone"); err != nil {
		t.Fatal(err)
	}
	w.phone = phone

	ab, ba, ca := f.text("alice", "bob"), f.text("bob", "alice"), f.text("carol", "alice")
	ab.Extended, ab.FromDevice = "ext \x00 nul", "alice-phone"
	ba.Type, ba.Text, ba.SubType, ba.Data = herald.MessageCustom, "", 7, []byte{0, 1, 2, 255}
	first := f.appendJobs(t, []*herald.Message{ab, ba, ca, f.text("alice", "bob")}, []store.PushJob{
		job(phone.PushID, 0, ab, baseTime), job(tablet.PushID, 0, ab, baseTime), job("pd_alice", 1, ba, baseTime),
	})
	w.imported, w.resent = first, ab
	if res := f.append(t, retry(ab)); !res[0].Duplicate {
		t.Fatalf("resend was stored again")
	}
	retried := storedJob(job(tablet.PushID, 0, ab, baseTime), first[0].Message)
	retried.Due, retried.Attempt = baseTime.Add(time.Minute), 1
	w.logAt = baseTime.Add(time.Second)
	f.finish(t, nil, []store.PushJob{retried}, []herald.PushAttempt{
		{At: w.logAt, User: "bob", PushID: tablet.PushID, MsgID: first[0].Message.ID, Conv: ab.Conv, Provider: herald.ProviderAPNs,
			App: testApp, Env: herald.EnvProduction, Attempt: 1, Outcome: herald.PushRetry, Status: 503, Reason: "before 1",
			Body: "busy \xff", NotifID: "n-1", Latency: 1234567},
		{At: w.logAt, User: "bob", PushID: phone.PushID, MsgID: first[0].Message.ID, Outcome: herald.PushRetry, Reason: "before 2"},
		{At: w.logAt.Add(-time.Hour), User: "alice", PushID: "pd_alice", Outcome: herald.PushSent, Reason: "older"},
	}, map[string]store.Badge{phone.PushID: {Count: 3, Kind: herald.BadgeTotal}})
	if err := f.s.SetReadSeq(ctx, "alice", ab.Conv, 1); err != nil {
		t.Fatal(err)
	}
	err := f.s.SaveCursors(ctx, []store.DeviceCursors{
		{User: "alice", Device: "phone", Cursors: map[string]int64{ab.Conv: 2, ca.Conv: 1}},
		{User: "bob", Device: "tablet", Cursors: map[string]int64{ab.Conv: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.setMuted(t, "alice", ab.Conv, true)
	cd := herald.PeerConversationKey("carol", "dave")
	f.setMuted(t, "carol", cd, true)
	f.setPushRule(t, "alice", desktopRule)
	f.setPushRule(t, "bob", nightRule)

	f.createGroup(t, "g1", "gus", "hal")
	m := f.gtext("gus", "g1")
	m.Mentions = []string{"hal", "ivy"}
	f.append(t, m, f.gtext("hal", "g1"))
	f.addMembers(t, "g1", f.newMembers(herald.RoleAdmin, "ivy"))
	f.append(t, f.gtext("ivy", "g1"))
	f.setRead(t, "hal", "g:g1", 1)
	f.setRead(t, "ivy", "g:g1", 3)
	f.addMembers(t, "g1", f.newMembers(herald.RoleMember, "jay")) // joins at 3, reads nothing
	f.createGroup(t, "g2", "gus")
	if err := f.s.DismissGroup(ctx, "g2"); err != nil {
		t.Fatal(err)
	}
	f.createGroup(t, "g3", "ivy", "alice") // no message
	open := f.call("c1", time.Minute, "gus", "hal")
	ended := f.call("c2", time.Minute, "hal", "ivy", "gus")
	ended.EndedAt = ended.CreatedAt.Add(time.Second)
	f.saveCall(t, open, []store.PushJob{callJob(phone.PushID, 1<<40, "bob", open)})
	f.saveCall(t, ended, nil)
	w.convs = []string{ab.Conv, ca.Conv, cd, "g:g1", "g:g2", "g:g3"}

	// Uploads: a photo sent to bob (every field set), a file finished but
	// not sent yet, and one half uploaded.
	sent := f.upload("up-sent", "alice", 2000)
	sent.Received, sent.HashState, sent.Sniffed, sent.SHA256, sent.Complete = 2000, []byte{9, 8, 7}, "image/jpeg", "ab12", true
	sent.Width, sent.Height, sent.Thumb, sent.ThumbW, sent.ThumbH = 640, 480, true, 320, 240
	sent.Conv, sent.AttachedAt = ab.Conv, baseTime.Add(time.Minute)
	kept := f.upload("up-kept", "bob", 30)
	kept.Kind, kept.Name, kept.MIME, kept.Received, kept.SHA256, kept.Complete = herald.KindFile, "notes.txt", "text/plain", 30, "cd34", true
	half := f.upload("up-half", "alice", 5000)
	for _, m := range []herald.MediaFile{sent, kept, half} {
		up := m
		up.Received, up.HashState, up.Sniffed, up.SHA256, up.Complete = 0, nil, "", "", false
		up.Width, up.Height, up.Thumb, up.ThumbW, up.ThumbH, up.Conv, up.AttachedAt = 0, 0, false, 0, 0, "", time.Time{}
		f.createMedia(t, up)
	}
	half.Received = 1000
	for _, m := range []herald.MediaFile{sent, kept, half} {
		if err := f.s.UpdateMedia(ctx, m, 0); err != nil {
			t.Fatalf("UpdateMedia(%q): %v", m.ID, err)
		}
	}
	w.media, w.unfinished = []string{"up-kept", "up-sent"}, half
	return w
}

// unfinishedLeft checks that the unfinished upload stayed behind: gone
// from the copy's records, its sweep and its quota sum, as the
// documentation of store.TableMedia says.
func (w *exportWorld) unfinishedLeft(t *testing.T, src, dst store.Store) {
	t.Helper()
	ctx := context.Background()
	_, err := dst.Media(ctx, w.unfinished.ID)
	wantCode(t, "Media of the unfinished upload on the copy", err, herald.CodeNotFound)
	day := w.unfinished.CreatedAt.Add(-time.Hour)
	had, err := src.MediaUsage(ctx, w.unfinished.Owner, day)
	if err != nil {
		t.Fatal(err)
	}
	has, err := dst.MediaUsage(ctx, w.unfinished.Owner, day)
	if err != nil {
		t.Fatal(err)
	}
	if has != had-w.unfinished.Size {
		t.Errorf("MediaUsage of %s on the copy = %d, want the original's %d less the unfinished %d", w.unfinished.Owner, has, had, w.unfinished.Size)
	}
}

// goOn writes to the copy, checking it continues from the original.
func (w *exportWorld) goOn(t *testing.T, f *fixture) {
	ctx := context.Background()
	var maxID int64
	for _, c := range w.convs {
		for _, m := range f.all(t, c) {
			maxID = max(maxID, m.ID)
		}
	}
	ab := w.resent
	next := f.text("alice", "bob")
	res := f.append(t, next, retry(ab), f.gtext("hal", "g1"))
	if got := res[0].Message.Seq; got != 4 {
		t.Errorf("seq of a new message in %s after the copy = %d, want 4", ab.Conv, got)
	}
	if res[0].Message.ID <= maxID || res[2].Message.ID <= maxID {
		t.Errorf("IDs after the copy %d, %d, want past the imported %d", res[0].Message.ID, res[2].Message.ID, maxID)
	}
	if !res[1].Duplicate || res[1].Message.ID != w.imported[0].Message.ID {
		t.Errorf("resend of an imported message = %+v, want the original (ID %d) marked duplicate", res[1], w.imported[0].Message.ID)
	}
	if got := res[2].Message.Seq; got != 4 {
		t.Errorf("seq of a new group message after the copy = %d, want 4", got)
	}
	err := f.s.CreateGroup(ctx, f.group("g2"), []herald.GroupMember{{User: "gus", Role: herald.RoleOwner}})
	wantCode(t, "CreateGroup of a dismissed ID after the copy", err, herald.CodeConflict)
	f.finish(t, nil, nil, []herald.PushAttempt{{At: w.logAt, User: "bob", PushID: w.phone.PushID, Reason: "after"}}, nil)
	if got, want := reasons(f.pushLog(t, store.PushLogQuery{User: "bob", Limit: 10})), []string{"after", "before 2", "before 1"}; !slices.Equal(got, want) {
		t.Errorf("log after the copy = %q, want %q", got, want)
	}
	if again := f.register(t, pushDevice("bob", "phone", "b0b0")); again.PushID != w.phone.PushID || again.Badge != 3 || again.BadgeKind != herald.BadgeTotal {
		t.Errorf("registering a token again after the copy = %s, want %s with badge 3 (total)", deviceString(again), w.phone.PushID)
	}
	if err := f.s.SetReadSeq(ctx, "bob", ab.Conv, 4); err != nil {
		t.Errorf("SetReadSeq after the copy: %v", err)
	}
}

// snapshot renders every read of the contract over w's names.
func (w *exportWorld) snapshot(t *testing.T, s store.Store) string {
	t.Helper()
	ctx := context.Background()
	f := &fixture{s: s}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	for _, c := range w.convs {
		line("conversation %s:", c)
		for _, m := range f.all(t, c) {
			line("\t%s", messageString(m))
		}
		page, err := s.History(ctx, c, store.HistoryQuery{Direction: store.Backward, Limit: 2})
		line("\thistory: %v %v", seqsOf(page), err)
	}
	for _, u := range w.users {
		last, err := s.LastSeqs(ctx, u)
		line("user %s: last seqs %v %v", u, last, err)
		convs, err := s.Conversations(ctx, u, 100)
		line("\tconversations (%v):", err)
		for _, c := range convs {
			last := "none"
			if c.LastMessage != nil {
				last = messageString(c.LastMessage)
			}
			line("\t\t%s %s %s read=%d unread=%d muted=%v last=%s", c.Type, c.Key, c.ID, c.ReadSeq, c.Unread, c.Muted, last)
		}
		groups, err := s.UserGroups(ctx, u)
		line("\tgroups %v:%s", err, memberStrings(groups))
		calls, err := s.UserCalls(ctx, u, time.Time{}, 100)
		line("\tcalls %q %v", callIDs(calls), err)
		reg, err := s.User(ctx, u)
		line("\tregistered %+v %v", reg, herald.ErrorCode(err))
		log, err := s.PushLog(ctx, store.PushLogQuery{User: u, Limit: 100})
		line("\tpush log (%v):", err)
		for _, a := range log {
			line("\t\t%s", attemptString(a))
		}
	}
	for _, d := range w.devices {
		cur, err := s.Cursors(ctx, d[0], d[1])
		line("cursors %s/%s: %v %v", d[0], d[1], cur, err)
	}
	muted, err := s.MutedConversations(ctx)
	line("muted: %v %v", muted, err)
	rules, err := s.PushRules(ctx)
	line("push rules: %s %v", ruleString(rules), err)
	line("outbox:%s", jobStrings(f.pending(t)))
	line("devices:%s", deviceStrings(f.devices(t)))
	for _, id := range w.groups {
		g, err := s.Group(ctx, id)
		line("group %s: %s %v", id, groupString(g), herald.ErrorCode(err))
		members, err := s.GroupMembers(ctx, id, "", 100)
		line("\tmembers %v:%s", herald.ErrorCode(err), memberStrings(members))
	}
	for _, id := range w.calls {
		c, err := s.Call(ctx, id)
		line("call %s: %s %v", id, callString(t, c), err)
	}
	open, err := s.OpenCalls(ctx)
	line("open calls %q %v", callIDs(open), err)
	for _, id := range w.media {
		m, err := s.Media(ctx, id)
		line("upload %s: %+v %v", id, m, err)
	}
	unref, err := s.UnreferencedMedia(ctx, baseTime.Add(time.Hour), 100)
	line("unreferenced uploads (%v):", err)
	for _, m := range unref {
		if m.ID != w.unfinished.ID {
			line("\t%s", m.ID)
		}
	}
	usage, err := s.MediaUsage(ctx, "bob", baseTime)
	line("bob's upload bytes %d %v", usage, err)
	return b.String()
}

// messageString shows every stored field of m; CreatedAt as Unix ms.
func messageString(m *herald.Message) string {
	return fmt.Sprintf("#%d %s %s/%d %s>%s local=%s type=%d/%d text=%q data=%x ext=%q mentions=%q at=%d device=%q",
		m.ID, m.ConvType, m.Conv, m.Seq, m.From, m.To, m.LocalID, m.Type, m.SubType, m.Text, m.Data, m.Extended,
		m.Mentions, m.CreatedAt.UnixMilli(), m.FromDevice)
}

// diffLines shows the lines of got and want that differ.
func diffLines(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var b strings.Builder
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			fmt.Fprintf(&b, "line %d:\n  got  %s\n  want %s\n", i+1, gl, wl)
		}
	}
	return b.String()
}

// Column dispositions for ExportCovers: what herald migrate does with a
// column of a backend's schema.
const (
	Exported    = "exported"     // read by Export and written by Import
	Rebuilt     = "rebuilt"      // derived again by Import or FinishImport
	NotMigrated = "not migrated" // deliberately left behind (documented)
)

// ExportCovers checks that every column of schema (table -> its columns,
// as the backend's catalog lists them) has a disposition in covered
// (table -> column -> Exported, Rebuilt or NotMigrated), and that covered
// names no column the schema lacks: a schema change that herald migrate
// does not account for fails the backend's test. Each Exported column
// must be selected by one of queries, the backend's export queries, from
// its table (QueryReads).
func ExportCovers(t *testing.T, schema map[string][]string, covered map[string]map[string]string, queries []string) {
	t.Helper()
	if len(schema) == 0 {
		t.Fatal("the schema lists no table")
	}
	for _, table := range slices.Sorted(maps.Keys(schema)) {
		cols, ok := covered[table]
		if !ok {
			t.Errorf("table %s is neither exported, rebuilt nor on the not-migrated list: teach herald migrate about it (Export, Import) or list it", table)
			continue
		}
		for _, c := range schema[table] {
			switch d := cols[c]; d {
			case Exported:
				if !QueryReads(queries, table, c) {
					t.Errorf("column %s.%s is listed as exported, but no export query reads it from %s", table, c, table)
				}
			case Rebuilt, NotMigrated:
			case "":
				t.Errorf("column %s.%s is neither exported, rebuilt nor on the not-migrated list: teach herald migrate about it (Export, Import) or list it", table, c)
			default:
				t.Errorf("column %s.%s: unknown disposition %q", table, c, d)
			}
		}
		for _, c := range slices.Sorted(maps.Keys(cols)) {
			if !slices.Contains(schema[table], c) {
				t.Errorf("column %s.%s is listed but not in the schema: update the list", table, c)
			}
		}
	}
	for _, table := range slices.Sorted(maps.Keys(covered)) {
		if _, ok := schema[table]; !ok {
			t.Errorf("table %s is listed but not in the schema: update the list", table)
		}
	}
}

// Cols gives every column of cols the disposition d, for ExportCovers.
func Cols(d string, cols ...string) map[string]string {
	m := make(map[string]string, len(cols))
	for _, c := range cols {
		m[c] = d
	}
	return m
}

// QueryReads reports whether one of queries names table after FROM or
// JOIN and col as a word: a crude reading of SQL, enough for the export
// queries, whose columns are listed by name.
func QueryReads(queries []string, table, col string) bool {
	from := regexp.MustCompile(`(?i)\b(FROM|JOIN)\s+` + regexp.QuoteMeta(table) + `\b`)
	word := regexp.MustCompile(`\b` + regexp.QuoteMeta(col) + `\b`)
	for _, q := range queries {
		if from.MatchString(q) && word.MatchString(q) {
			return true
		}
	}
	return false
}
