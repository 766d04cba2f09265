package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/media"
	"github.com/herald-im/herald/internal/media/s3test"
	"github.com/herald-im/herald/internal/server"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/pebble"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/internal/store/sqlite"
	"github.com/herald-im/herald/proto"
)

var migrateT0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// The finished upload fillSmall records: a photo alice sent bob, with a
// thumbnail; putFiles stores its bytes.
var (
	movedFile  = bytes.Repeat([]byte("herald media bytes "), 5000)
	movedThumb = []byte("a thumbnail")
)

const movedFileID = "0123456789abcdef0123456789abcdef"

// fillSmall stores a little of everything in s: messages with a push job,
// a read seq, a cursor, a mute, a device, a delivery-log entry, a group,
// a call, a user, and a finished upload sent to bob (movedFileID) beside
// an unfinished one.
func fillSmall(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	d, err := s.RegisterPushDevice(ctx, herald.PushDevice{Provider: herald.ProviderAPNs, Token: "t0", App: "im.app", Env: herald.EnvProduction, User: "bob", Device: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*herald.Message
	for i, from := range []string{"alice", "bob", "alice"} {
		to := map[string]string{"alice": "bob", "bob": "alice"}[from]
		msgs = append(msgs, &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
			From: from, To: to, LocalID: "l" + string(rune('0'+i)), Type: herald.MessageText, Text: "hi", CreatedAt: migrateT0})
	}
	res, err := s.AppendMessages(ctx, msgs, []store.PushJob{{PushID: d.PushID, Msg: 0, User: "bob", Conv: msgs[0].Conv, Due: migrateT0, Expires: migrateT0.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetReadSeq(ctx, "bob", msgs[0].Conv, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "phone", Cursors: map[string]int64{msgs[0].Conv: 2}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPushRule(ctx, "bob", herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "22:00", End: "07:00", Mode: herald.DNDHold}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetConversationMuted(ctx, "alice", msgs[0].Conv, true); err != nil {
		t.Fatal(err)
	}
	err = s.FinishPush(ctx, nil, nil, []herald.PushAttempt{{At: migrateT0, User: "bob", PushID: d.PushID, MsgID: res[0].Message.ID, Outcome: herald.PushRetry}}, map[string]store.Badge{d.PushID: {Count: 1, Kind: herald.BadgeCounted}})
	if err != nil {
		t.Fatal(err)
	}
	g := herald.Group{ID: "team", Name: "Team", JoinMode: herald.GroupJoinAny, InviteMode: herald.GroupInviteAny, CreatedAt: migrateT0}
	if err := s.CreateGroup(ctx, g, []herald.GroupMember{{User: "alice", Role: herald.RoleOwner, JoinedAt: migrateT0}, {User: "bob", Role: herald.RoleMember, JoinedAt: migrateT0}}); err != nil {
		t.Fatal(err)
	}
	c := &herald.Call{ID: "call1", Mode: herald.CallGeneral, Timeout: time.Minute, CreatedAt: migrateT0, Deadline: migrateT0.Add(time.Minute),
		Participants: []herald.CallParticipant{{User: "alice", State: herald.CallInviting, UpdatedAt: migrateT0}, {User: "bob", State: herald.CallNotYet, UpdatedAt: migrateT0}}}
	if err := s.SaveCall(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterUsers(ctx, []herald.User{{ID: "alice", Name: "Alice", RegisteredAt: migrateT0}}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(movedFile)
	photo := herald.MediaFile{ID: movedFileID, Owner: "alice", Kind: herald.KindImage, Name: "beach.jpg", MIME: "image/jpeg",
		Size: int64(len(movedFile)), CreatedAt: migrateT0}
	half := herald.MediaFile{ID: "halfway", Owner: "alice", Kind: herald.KindFile, Name: "big.zip", MIME: "application/zip",
		Size: 1 << 20, CreatedAt: migrateT0}
	for _, f := range []herald.MediaFile{photo, half} {
		if err := s.CreateMedia(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	photo.Received, photo.Complete, photo.SHA256, photo.Sniffed = photo.Size, true, hex.EncodeToString(sum[:]), "image/jpeg"
	photo.Width, photo.Height, photo.Thumb, photo.ThumbW, photo.ThumbH = 800, 600, true, 320, 240
	photo.Conv, photo.AttachedAt = msgs[0].Conv, migrateT0
	half.Received = 1000
	for _, f := range []herald.MediaFile{photo, half} {
		if err := s.UpdateMedia(ctx, f, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// putFiles stores the bytes of fillSmall's finished upload in b.
func putFiles(t *testing.T, b media.Blobs) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.Append(ctx, movedFileID, 0, bytes.NewReader(movedFile)); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, movedFileID, int64(len(movedFile))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, movedFileID+".thumb", bytes.NewReader(movedThumb)); err != nil {
		t.Fatal(err)
	}
}

// putDirFiles stores them in a data folder's media folder.
func putDirFiles(t *testing.T, data string) {
	t.Helper()
	d, err := media.OpenDir(filepath.Join(data, "media"))
	if err != nil {
		t.Fatal(err)
	}
	putFiles(t, d)
}

// checkMovedFile checks, as a node on st and b serves it, that bob
// downloads the moved photo and its thumbnail (signed URLs of the media
// HTTP API), carol neither, and that the unfinished upload stayed behind.
func checkMovedFile(t *testing.T, st store.Store, b media.Blobs) {
	t.Helper()
	ctx := context.Background()
	svc := media.New(st, b, media.Config{Secret: []byte("secret")})
	f, err := svc.Readable(ctx, "bob", movedFileID)
	if err != nil {
		t.Fatalf("Readable by bob after the move: %v", err)
	}
	if f.Name != "beach.jpg" || f.Width != 800 || f.ThumbW != 320 || f.Conv != herald.PeerConversationKey("alice", "bob") || !f.AttachedAt.Equal(migrateT0) {
		t.Errorf("the moved record: %+v, want every field of the source's", f)
	}
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	get := func(user string, thumb bool) (int, []byte) {
		t.Helper()
		q, _ := svc.Sign(movedFileID, user, thumb)
		res, err := http.Get(srv.URL + proto.MediaFilesPath + movedFileID + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, body
	}
	for _, thumb := range []bool{false, true} {
		want := map[bool][]byte{false: movedFile, true: movedThumb}[thumb]
		if code, got := get("bob", thumb); code != http.StatusOK || !bytes.Equal(got, want) {
			t.Errorf("bob's download of the moved file (thumbnail %v): %d, %d bytes; want 200 and the %d bytes uploaded", thumb, code, len(got), len(want))
		}
	}
	if code, _ := get("carol", false); code != http.StatusForbidden {
		t.Errorf("carol's download after the move: %d, want 403", code)
	}
	if _, err := st.Media(ctx, "halfway"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("the unfinished upload after the move: %v, want it left behind (not_found)", err)
	}
}

// newSQLiteData makes a data folder holding a small SQLite store.
func newSQLiteData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillSmall(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	putDirFiles(t, dir)
	return dir
}

func runMigrate(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(append([]string{"migrate"}, args...), &out, &errOut)
	return out.String() + errOut.String(), err
}

// counts opens the SQLite store of dir and counts every table.
func sqliteCounts(t *testing.T, dir string) map[store.Table]int64 {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err := store.Counts(context.Background(), s, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The source is the node's configuration, here its --config file, as
// herald serve reads it.
func TestMigrateSQLiteToSQLite(t *testing.T) {
	from, to := newSQLiteData(t), filepath.Join(t.TempDir(), "new")
	conf := filepath.Join(t.TempDir(), "herald.env")
	if err := os.WriteFile(conf, []byte("HERALD_DATA="+from+"\nHERALD_STORE=sqlite\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runMigrate("--config", conf, "--to-store", "sqlite", "--to-data", to, "--page", "2")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	for _, want := range []string{"copying sqlite in " + from, "messages", "3/3", "copied in", "vapid.pem", "node-id"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	want, got := sqliteCounts(t, from), sqliteCounts(t, to)
	for _, tb := range store.Tables {
		if want[tb] == 0 || got[tb] != want[tb] {
			t.Errorf("%s: %d rows copied, want %d (and more than 0)", tb, got[tb], want[tb])
		}
	}
	if !strings.Contains(out, "files          1/1") {
		t.Errorf("output does not count the copied file:\n%s", out)
	}
}

// The end-to-end move the command exists for: an embedded node's data
// into PostgreSQL.
func TestMigratePebbleToPostgres(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate into PostgreSQL"))
	from := t.TempDir()
	s, err := pebble.Open(context.Background(), filepath.Join(from, server.PebbleDir), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillSmall(t, s)
	want, err := store.Counts(context.Background(), s, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	putDirFiles(t, from)
	out, err := runMigrate("--data", from, "--store", "pebble", "--to-store", dsn)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	// Nowhere to put the files was given: they stay, and it is said.
	if want := "The files of 1 finished uploads were NOT copied: they are in the source's folder " + filepath.Join(from, "media"); !strings.Contains(out, want) {
		t.Errorf("output does not say the files were left behind (%q):\n%s", want, out)
	}
	pg, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	got, err := store.Counts(context.Background(), pg, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range store.Tables {
		if got[tb] != want[tb] {
			t.Errorf("%s: %d rows in PostgreSQL, want %d", tb, got[tb], want[tb])
		}
	}
	// The moved node goes on: the next message takes the next seq.
	m := &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "bob"),
		From: "alice", To: "bob", LocalID: "after", Type: herald.MessageText, Text: "after", CreatedAt: migrateT0}
	res, err := pg.AppendMessages(context.Background(), []*herald.Message{m}, nil)
	if err != nil || res[0].Message.Seq != 4 {
		t.Errorf("append after the move: %+v, %v; want seq 4", res, err)
	}
}

// A PostgreSQL source is read from one snapshot: what is written after
// migrate opened it is neither counted nor copied.
func TestMigratePostgresSourceSnapshot(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate from PostgreSQL"))
	// Not named as a node, which migrate would refuse to read beside.
	pg, err := postgres.Open(ctx, dsn, postgres.Options{ApplicationName: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	fillSmall(t, pg)
	want, err := store.Counts(ctx, pg, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	src, err := openSource(ctx, storeSpec{engine: "postgres", url: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Count(ctx, store.TableUsers); err != nil { // the snapshot is taken by now
		t.Fatal(err)
	}
	if _, err := pg.RegisterUsers(ctx, []herald.User{{ID: "late", RegisteredAt: migrateT0}}); err != nil {
		t.Fatal(err)
	}
	m := &herald.Message{ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey("alice", "late"),
		From: "alice", To: "late", LocalID: "late", Type: herald.MessageText, Text: "late", CreatedAt: migrateT0}
	if _, err := pg.AppendMessages(ctx, []*herald.Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	to := t.TempDir()
	dst, err := openTarget(ctx, storeSpec{engine: "sqlite", data: to})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := transfer(ctx, src, dst, migrateOptions{page: 2, from: storeSpec{engine: "postgres", url: dsn}}, store.Tables, &out); err != nil {
		t.Fatalf("transfer: %v\n%s", err, out.String())
	}
	dst.Close()
	if got := sqliteCounts(t, to); !equalCounts(got, want) {
		t.Errorf("counts of the copy %v, want those when migrate opened the source %v", got, want)
	}
}

// A PostgreSQL source or target with a node connected to its schema is
// refused; nodes on another schema of the database do not count.
func TestMigrateRefusesPostgresInUse(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Database(t, "to test herald migrate with PostgreSQL")
	dsn, other := pgtest.Schema(t, db), pgtest.Schema(t, db)
	node, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	fillSmall(t, node)
	elsewhere, err := postgres.Open(ctx, other, postgres.Options{}) // a node on another schema
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Close()

	out, err := runMigrate("--store", dsn, "--to-store", "sqlite", "--to-data", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "the source store is in use") {
		t.Errorf("migrate from a schema a node runs on: %v, want it refused as in use\n%s", err, out)
	}
	out, err = runMigrate("--data", newSQLiteData(t), "--to-store", dsn)
	if err == nil || !strings.Contains(err.Error(), "the target store is in use") {
		t.Errorf("migrate into a schema a node runs on: %v, want it refused as in use\n%s", err, out)
	}

	node.Close()
	// The server ends a closed connection's session on its own time.
	probe, err := postgres.Open(ctx, dsn, postgres.Options{ApplicationName: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		n, err := probe.Sessions(ctx, postgres.ApplicationName)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions of the closed node still listed after 10 s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	empty := pgtest.Schema(t, db)
	if out, err := runMigrate("--store", dsn, "--to-store", empty); err != nil {
		t.Fatalf("migrate once the node stopped (another schema's node running): %v\n%s", err, out)
	}
}

// From one embedded engine to the other: Pebble takes imports too.
func TestMigrateSQLiteToPebble(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	if out, err := runMigrate("--data", from, "--to-store", "pebble", "--to-data", to); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	want := sqliteCounts(t, from)
	s, err := pebble.Open(context.Background(), filepath.Join(to, server.PebbleDir), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := store.Counts(context.Background(), s, store.Tables)
	if err != nil {
		t.Fatal(err)
	}
	if !equalCounts(got, want) {
		t.Errorf("Pebble counts after the move: %v, want %v", got, want)
	}
}

// Pebble to SQLite: the files follow into --to-data's media folder, where
// a node on the target serves them.
func TestMigratePebbleToSQLiteMovesFiles(t *testing.T) {
	ctx := context.Background()
	from, to := t.TempDir(), t.TempDir()
	s, err := pebble.Open(ctx, filepath.Join(from, server.PebbleDir), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fillSmall(t, s)
	s.Close()
	putDirFiles(t, from)
	if out, err := runMigrate("--data", from, "--store", "pebble", "--to-store", "sqlite", "--to-data", to); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	st, err := sqlite.Open(ctx, filepath.Join(to, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := media.OpenDir(filepath.Join(to, "media"))
	if err != nil {
		t.Fatal(err)
	}
	checkMovedFile(t, st, d)
}

// SQLite to PostgreSQL with the files from the data folder into an
// S3-compatible store: HERALD_TEST_S3's server (CI sets it), else an
// in-process fake.
func TestMigrateSQLiteToPostgresFilesToS3(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate into PostgreSQL"))
	from := newSQLiteData(t)
	target := testS3(t)
	out, err := runMigrate("--data", from, "--to-store", dsn, "--to-media", target)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if u, _ := url.Parse(target); strings.Contains(out, u.User.String()+"@") || !strings.Contains(out, "into S3 "+u.Host) {
		t.Errorf("the output does not name the S3 store without its keys:\n%s", out)
	}
	pg, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	b, err := media.OpenS3(ctx, target, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	checkMovedFile(t, pg, b)
}

// testS3 returns the URL of an empty place in an S3-compatible store: a
// prefix of its own in HERALD_TEST_S3's bucket, or an in-process fake.
func testS3(t *testing.T) string {
	t.Helper()
	if os.Getenv("HERALD_TEST_S3") != "" {
		return s3test.Place(t, "migrate")
	}
	return s3test.Fake(t) + "/moved"
}

// Files in S3 stay there by default, and the output says so.
func TestMigrateFilesInS3Stay(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	place := testS3(t)
	out, err := runMigrate("--data", from, "--media-s3", place, "--to-store", "sqlite", "--to-data", to)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "The files of 1 finished uploads stay in S3 ") {
		t.Errorf("output does not say the files stay in S3:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(to, "media")); err == nil {
		t.Errorf("a media folder was made in the target folder, though the files stay in S3")
	}
}

// Every file the source lacks or holds with another size is named before
// anything is written; a source media folder that is not there fails the
// run likewise.
func TestMigrateFileFailures(t *testing.T) {
	ctx := context.Background()
	from, to := newSQLiteData(t), t.TempDir()
	s, err := sqlite.Open(ctx, filepath.Join(from, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("other"))
	other := herald.MediaFile{ID: "otherfile", Owner: "bob", Kind: herald.KindFile, Name: "notes.txt", MIME: "text/plain", Size: 5, CreatedAt: migrateT0}
	if err := s.CreateMedia(ctx, other); err != nil {
		t.Fatal(err)
	}
	other.Received, other.Complete, other.SHA256 = 5, true, hex.EncodeToString(sum[:])
	if err := s.UpdateMedia(ctx, other, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	d, err := media.OpenDir(filepath.Join(from, "media"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(ctx, "otherfile", strings.NewReader("other, longer")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(from, "media", "blobs", movedFileID+".thumb")); err != nil {
		t.Fatal(err)
	}
	out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to)
	if err == nil || !strings.Contains(err.Error(), movedFileID+".thumb") || !strings.Contains(err.Error(), "otherfile: the source holds 13 bytes, its record says 5") ||
		!strings.Contains(err.Error(), "2 of 2 finished uploads") || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("migrate with a thumbnail missing and a file of another size in the source: %v, want both named at once\n%s", err, out)
	}
	if entries, err := os.ReadDir(to); err != nil || len(entries) != 0 {
		t.Errorf("the refused run wrote into the target folder: %v, %v", entries, err)
	}
	if _, err := os.Stat(filepath.Join(from, server.MigratedFile)); err == nil {
		t.Errorf("the refused run marked the source as moved")
	}

	from, to = newSQLiteData(t), t.TempDir()
	if err := os.RemoveAll(filepath.Join(from, "media")); err != nil {
		t.Fatal(err)
	}
	out, err = runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to)
	if err == nil || !strings.Contains(err.Error(), "media folder") || !strings.Contains(err.Error(), "--media-dir") {
		t.Fatalf("migrate without the source's media folder: %v, want a refusal naming --media-dir\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(to, server.SQLiteFile)); err == nil {
		t.Errorf("the refused run created the target store")
	}
	// Named, the folder elsewhere is read.
	elsewhere := t.TempDir()
	d, err = media.OpenDir(elsewhere)
	if err != nil {
		t.Fatal(err)
	}
	putFiles(t, d)
	if out, err := runMigrate("--data", from, "--media-dir", elsewhere, "--to-store", "sqlite", "--to-data", to); err != nil {
		t.Fatalf("migrate with --media-dir: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(to, "media", "blobs", movedFileID)); err != nil {
		t.Errorf("the file read from --media-dir is not in the target's media folder: %v", err)
	}
}

// A target with data is refused before anything is written, and left as
// it was: a second run into the same target is the usual mistake.
func TestMigrateRefusesNonEmptyTarget(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	if out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to); err != nil {
		t.Fatalf("first migrate: %v\n%s", err, out)
	}
	before := sqliteCounts(t, to)
	out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second migrate into the same target: %v, want a refusal saying it is not empty\n%s", err, out)
	}
	if after := sqliteCounts(t, to); !equalCounts(before, after) {
		t.Errorf("the refused run changed the target: %v, was %v", after, before)
	}
}

func equalCounts(a, b map[store.Table]int64) bool {
	for _, t := range store.Tables {
		if a[t] != b[t] {
			return false
		}
	}
	return true
}

// A running server holds the source's lock: migrate says to stop it.
func TestMigrateRefusesSourceInUse(t *testing.T) {
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) {
			from := t.TempDir()
			var (
				s   store.Store
				err error
			)
			if engine == "pebble" {
				s, err = pebble.Open(context.Background(), filepath.Join(from, server.PebbleDir), pebble.Options{})
			} else {
				s, err = sqlite.Open(context.Background(), filepath.Join(from, server.SQLiteFile), sqlite.Options{})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			out, err := runMigrate("--data", from, "--store", engine, "--to-store", "sqlite", "--to-data", t.TempDir())
			if err == nil || !strings.Contains(err.Error(), "stop the server") {
				t.Fatalf("migrate of a store in use: %v, want a refusal saying to stop the server\n%s", err, out)
			}
		})
	}
}

func TestMigrateSkipPushLog(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to, "--skip-push-log")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "(skipped)") {
		t.Errorf("output does not say the log was skipped:\n%s", out)
	}
	got := sqliteCounts(t, to)
	if got[store.TablePushLog] != 0 || got[store.TableMessages] != 3 {
		t.Errorf("counts with --skip-push-log: %v, want no log entry and 3 messages", got)
	}
}

// Bad flags are refused with a clear error, before any store is opened:
// a source folder that does not exist is not created.
func TestMigrateBadFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing-here")
	src := newSQLiteData(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"--data", src}, "--to-store is required"},
		{"target folder of the other engine", []string{"--data", src, "--to-store", "pebble", "--to-data", src}, "holds sqlite data"},
		{"same store", []string{"--data", src, "--to-store", "sqlite", "--to-data", src}, "same store"},
		{"embedded target without folder", []string{"--data", src, "--to-store", "sqlite"}, "--to-data is needed"},
		{"bad target store", []string{"--data", src, "--to-store", "mysql://x/y"}, "must be sqlite, pebble or a postgres:// URL"},
		{"bad source store", []string{"--data", src, "--store", "mysql", "--to-store", "sqlite", "--to-data", t.TempDir()}, "HERALD_STORE must be sqlite, pebble or a postgres:// URL"},
		{"bad page", []string{"--data", src, "--to-store", "sqlite", "--to-data", t.TempDir(), "--page", "0"}, "--page"},
		{"page too big", []string{"--data", src, "--to-store", "sqlite", "--to-data", t.TempDir(), "--page", "10001"}, "between 1 and 10000"},
		{"no source", []string{"--data", missing, "--to-store", "sqlite", "--to-data", t.TempDir()}, "no sqlite store in"},
		{"bad target media", []string{"--data", src, "--to-store", "sqlite", "--to-data", t.TempDir(), "--to-media", "ftp://x/y"}, "--to-media must be a folder or an http(s)://"},
		{"target media bucket missing", []string{"--data", src, "--to-store", "sqlite", "--to-data", t.TempDir(), "--to-media", "http://k:s@127.0.0.1:1/bucket"}, "the target's media store (--to-media)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runMigrate(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("migrate %q: %v, want an error containing %q\n%s", tt.args, err, tt.want, out)
			}
		})
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("a failed migrate created the missing source folder %s", missing)
	}
	if out, err := runMigrate("--help"); err != nil || !strings.Contains(out, "--to-store") {
		t.Errorf("migrate --help: %v, want its flags and no error:\n%s", err, out)
	}
	var usage, e bytes.Buffer
	if err := run([]string{"help"}, &usage, &e); err != nil || !strings.Contains(usage.String(), "herald migrate") {
		t.Errorf("herald help: %v, want it to list herald migrate:\n%s", err, usage.String())
	}
}

// lossyImporter drops the last row of each message page: the count check
// must catch what the copy did not report.
type lossyImporter struct{ store.Importer }

func (l lossyImporter) Import(ctx context.Context, t store.Table, r *store.Rows) error {
	if t == store.TableMessages && len(r.Messages) > 0 {
		r.Messages = r.Messages[:len(r.Messages)-1]
	}
	return l.Importer.Import(ctx, t, r)
}

func TestMigrateCountMismatchFails(t *testing.T) {
	ctx := context.Background()
	from := newSQLiteData(t)
	src, err := sqlite.Open(ctx, filepath.Join(from, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var out bytes.Buffer
	err = transfer(ctx, src, lossyImporter{dst}, migrateOptions{page: 1000}, store.Tables, &out)
	if err == nil || !strings.Contains(err.Error(), "messages") {
		t.Fatalf("transfer that lost a message: %v, want an error naming messages\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "MISMATCH") {
		t.Errorf("the count table does not mark the mismatch:\n%s", out.String())
	}
}

// failingImporter fails the import of the second page of messages, as a
// lost connection would.
type failingImporter struct {
	store.Importer
	pages *int
}

func (f failingImporter) Import(ctx context.Context, t store.Table, r *store.Rows) error {
	if t == store.TableMessages {
		if *f.pages++; *f.pages == 2 {
			return errors.New("connection lost")
		}
	}
	return f.Importer.Import(ctx, t, r)
}

// A failed run leaves whole pages in the target, which a second run
// refuses; emptied as docs/operations.md says, the target takes a new run.
func TestMigrateFailedRunThenRerun(t *testing.T) {
	ctx := context.Background()
	from, to := newSQLiteData(t), t.TempDir()
	src, err := sqlite.Open(ctx, filepath.Join(from, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := sqlite.Open(ctx, filepath.Join(to, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	pages := 0
	err = transfer(ctx, src, failingImporter{dst, &pages}, migrateOptions{page: 1}, store.Tables, &out)
	src.Close()
	dst.Close()
	if err == nil || !strings.Contains(err.Error(), "connection lost") || !strings.Contains(err.Error(), "empty it") {
		t.Fatalf("transfer that failed: %v, want the cause and what to do", err)
	}
	if got := sqliteCounts(t, to); got[store.TableMessages] != 1 || got[store.TableUsers] != 1 {
		t.Errorf("target after the failure: %v, want the user and the first message page", got)
	}
	if out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("rerun into the partly filled target: %v, want a refusal\n%s", err, out)
	}
	for _, name := range []string{"herald.db", "herald.db-wal", "herald.db-shm", "herald.db.lock"} {
		if err := os.Remove(filepath.Join(to, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to); err != nil {
		t.Fatalf("rerun into the emptied target: %v\n%s", err, out)
	}
	if got, want := sqliteCounts(t, to), sqliteCounts(t, from); !equalCounts(got, want) {
		t.Errorf("after the rerun: %v, want %v", got, want)
	}
}

// The target's media place is opened only once the target store is
// found empty, and the source's folder is only read: a refused run
// makes no media folder, and a migration leaves the source's leftovers.
func TestMigrateMediaOpenedAfterChecks(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	left := filepath.Join(from, "media", "tmp", "put-left")
	if err := os.WriteFile(left, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(from, "media", "uploads")); err != nil {
		t.Fatal(err)
	}
	if out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if _, err := os.Stat(left); err != nil {
		t.Errorf("the source's media folder was cleaned: %v", err)
	}
	if _, err := os.Stat(filepath.Join(from, "media", "uploads")); err == nil {
		t.Errorf("migrate made a folder in the source's media folder")
	}
	if err := os.RemoveAll(filepath.Join(to, "media")); err != nil {
		t.Fatal(err)
	}
	out, err := runMigrate("--data", from, "--to-store", "sqlite", "--to-data", to)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("migrate into a target with data: %v, want a refusal\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(to, "media")); err == nil {
		t.Errorf("the refused run made the target's media folder")
	}
}

// After a move the source's data folder holds server.MigratedFile, naming
// the target, and the output says the old node must not run again; with
// files left in a shared place, it says why.
func TestMigrateMarksSource(t *testing.T) {
	from, to := newSQLiteData(t), t.TempDir()
	place := testS3(t)
	b, err := media.OpenS3(context.Background(), place, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	putFiles(t, b)
	out, err := runMigrate("--data", from, "--media-s3", place, "--to-store", "sqlite", "--to-data", to)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	marker := filepath.Join(from, server.MigratedFile)
	note, err := os.ReadFile(marker)
	if err != nil || !strings.Contains(string(note), "sqlite in "+to) {
		t.Errorf("the source's %s: %q, %v; want it to name the target", server.MigratedFile, note, err)
	}
	if u, _ := url.Parse(place); strings.Contains(string(note), u.User.String()) {
		t.Errorf("%s holds the S3 keys: %q", server.MigratedFile, note)
	}
	if !strings.Contains(out, "The old node must not run again") || !strings.Contains(out, "its sweep would delete files the new node serves") ||
		!strings.Contains(out, marker) {
		t.Errorf("the output does not say the old node must stay stopped, and why:\n%s", out)
	}
}

// S3 as the source: the files are copied from the node's S3 store into a
// folder, where a node on the target serves them.
func TestMigrateFilesFromS3ToFolder(t *testing.T) {
	ctx := context.Background()
	from, to := newSQLiteData(t), t.TempDir()
	place := testS3(t)
	b, err := media.OpenS3(ctx, place, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	putFiles(t, b)
	if err := os.RemoveAll(filepath.Join(from, "media")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "files")
	if out, err := runMigrate("--data", from, "--media-s3", place, "--to-store", "sqlite", "--to-data", to, "--to-media", dir); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	st, err := sqlite.Open(ctx, filepath.Join(to, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := media.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkMovedFile(t, st, d)
}

// A PostgreSQL source's read is closed before the files are copied: no
// session of migrate is left on it (its snapshot would be held for as
// long as the files take).
func TestMigratePostgresSourceClosedBeforeFiles(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate from PostgreSQL"))
	pg, err := postgres.Open(ctx, dsn, postgres.Options{ApplicationName: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	fillSmall(t, pg)
	data := t.TempDir()
	putDirFiles(t, data)
	called := false
	testBeforeFiles = func() {
		called = true
		if n, err := pg.Sessions(ctx, migrateSessions); err != nil || n != 0 {
			t.Errorf("sessions of migrate on the source when the files are copied: %d, %v; want none", n, err)
		}
	}
	t.Cleanup(func() { testBeforeFiles = nil })
	to := t.TempDir()
	out, err := runMigrate("--store", dsn, "--data", data, "--to-store", "sqlite", "--to-data", to)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if !called {
		t.Fatal("no file was copied")
	}
	st, err := sqlite.Open(ctx, filepath.Join(to, server.SQLiteFile), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := media.OpenDir(filepath.Join(to, "media"))
	if err != nil {
		t.Fatal(err)
	}
	checkMovedFile(t, st, d)
}

// Files not copied (a PostgreSQL target, no --to-media) from a media
// folder that is not there: the output says so, not that they are in it.
func TestMigrateNotCopiedSaysFolderMissing(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate into PostgreSQL"))
	from := newSQLiteData(t)
	if err := os.RemoveAll(filepath.Join(from, "media")); err != nil {
		t.Fatal(err)
	}
	out, err := runMigrate("--data", from, "--to-store", dsn)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if want := "were NOT copied: they are not in " + "folder " + filepath.Join(from, "media") + ", which cannot be read"; !strings.Contains(out, want) ||
		!strings.Contains(out, "--media-dir or --media-s3") {
		t.Errorf("output does not say the media folder is missing (%q):\n%s", want, out)
	}
}

// startNode runs server.New on cfg's store in data and, when it starts,
// stops it again: the error is New's.
func startNode(t *testing.T, data, storeName string) error {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.Store = "127.0.0.1:0", data, storeName
	s, err := server.New(ctx, cfg, []byte("0123456789abcdef0123456789abcdef"), slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	return nil
}

// MIGRATED refuses the moved store only. SQLite moved to PostgreSQL,
// keeping the data folder (its secret and keys): a node there on the
// PostgreSQL URL starts, one on SQLite is refused, naming the file. A
// Pebble node on that folder, once the SQLite files are gone, starts too
// (Pebble beside SQLite data is refused by migrate and serve alike).
func TestMigrateMarkerRefusesOnlyTheSource(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.Database(t, "to test herald migrate into PostgreSQL"))
	data := newSQLiteData(t)
	if out, err := runMigrate("--data", data, "--store", "sqlite", "--to-store", dsn, "--to-media", filepath.Join(t.TempDir(), "media")); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if err := startNode(t, data, dsn); err != nil {
		t.Errorf("a node on the target URL, in the source's folder: %v, want it to start", err)
	}
	marker := filepath.Join(data, server.MigratedFile)
	if err := startNode(t, data, "sqlite"); err == nil || !strings.Contains(err.Error(), "delete "+marker) {
		t.Errorf("a node on the moved SQLite store: %v, want a refusal naming %s", err, marker)
	}
	if out, err := runMigrate("--data", data, "--store", "sqlite", "--to-store", "pebble", "--to-data", data); err == nil || !strings.Contains(err.Error(), "holds sqlite data") {
		t.Errorf("migrate from SQLite to Pebble in one folder: %v, want a refusal\n%s", err, out)
	}
	for _, f := range []string{"", "-wal", "-shm", ".lock"} {
		if err := os.Remove(filepath.Join(data, server.SQLiteFile+f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := startNode(t, data, "pebble"); err != nil {
		t.Errorf("a node on Pebble in the folder of the moved SQLite store: %v, want it to start", err)
	}
	if err := startNode(t, data, "sqlite"); err == nil || !strings.Contains(err.Error(), "delete "+marker) {
		t.Errorf("a node on SQLite in the folder of the moved SQLite store: %v, want a refusal naming %s", err, marker)
	}
}

// From PostgreSQL to PostgreSQL: a node on the source's data folder with
// the target's URL starts; with the source's (another password) it is
// refused, and the file holds no password.
func TestMigrateMarkerPostgresToPostgres(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Database(t, "to test herald migrate between PostgreSQL stores")
	from, to := pgtest.Schema(t, db), pgtest.Schema(t, db)
	pg, err := postgres.Open(ctx, from, postgres.Options{ApplicationName: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	fillSmall(t, pg)
	pg.Close()
	// Passwords the test server (trust authentication) does not check.
	withPassword := func(dsn, pw string) string {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), pw)
		return u.String()
	}
	data := t.TempDir()
	putDirFiles(t, data)
	if out, err := runMigrate("--data", data, "--store", withPassword(from, "PWSOURCE"), "--to-store", to, "--to-media", filepath.Join(t.TempDir(), "media")); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if err := startNode(t, data, to); err != nil {
		t.Errorf("a node on the target URL, in the source's folder: %v, want it to start", err)
	}
	if err := startNode(t, data, withPassword(from, "PWOTHER")); err == nil || !strings.Contains(err.Error(), server.MigratedFile) {
		t.Errorf("a node on the moved PostgreSQL store: %v, want a refusal naming %s", err, server.MigratedFile)
	}
	if note, err := os.ReadFile(filepath.Join(data, server.MigratedFile)); err != nil || strings.Contains(string(note), "PWSOURCE") {
		t.Errorf("%s: %q, %v; want it without the password", server.MigratedFile, note, err)
	}
}
