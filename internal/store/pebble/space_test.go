package pebble

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// smallDisk is a disk of a given capacity over a real directory: the space
// used is the size of the files under root, a write past the capacity
// fails with ENOSPC as on a full disk, and GetDiskUsage reports what is
// left. Raising the capacity is freeing space.
type smallDisk struct {
	vfs.FS
	root     string
	capacity atomic.Int64
	refused  atomic.Int64 // writes that failed with ENOSPC
}

func (d *smallDisk) used() int64 {
	var n int64
	filepath.WalkDir(d.root, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func (d *smallDisk) GetDiskUsage(string) (vfs.DiskUsage, error) {
	used, c := d.used(), d.capacity.Load()
	return vfs.DiskUsage{AvailBytes: uint64(max(c-used, 0)), TotalBytes: uint64(c), UsedBytes: uint64(used)}, nil
}

// fits reports whether n more bytes fit, counting a refusal when not.
func (d *smallDisk) fits(n int) bool {
	if d.used()+int64(n) <= d.capacity.Load() {
		return true
	}
	d.refused.Add(1)
	return false
}

func (d *smallDisk) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &smallDiskFile{File: f, d: d}, nil
}

func (d *smallDisk) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return d.wrap(d.FS.Create(name, c))
}

func (d *smallDisk) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return d.wrap(d.FS.OpenReadWrite(name, c, opts...))
}

func (d *smallDisk) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return d.wrap(d.FS.ReuseForWrite(oldname, newname, c))
}

type smallDiskFile struct {
	vfs.File
	d *smallDisk
}

func (f *smallDiskFile) Write(p []byte) (int, error) {
	if !f.d.fits(len(p)) {
		return 0, &os.PathError{Op: "write", Path: "(small disk)", Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

func (f *smallDiskFile) WriteAt(p []byte, off int64) (int, error) {
	if !f.d.fits(len(p)) {
		return 0, &os.PathError{Op: "write", Path: "(small disk)", Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(p, off)
}

// TestDiskFullRefusesWritesAndResumes: as the disk fills, writes are
// refused with internal before Pebble's WAL meets a full disk (which would
// end the process); reads and the process go on, Ping reports the refusal,
// and once space is freed writes resume, with nothing stored before lost,
// across a reopen too.
func TestDiskFullRefusesWritesAndResumes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "herald")
	disk := &smallDisk{FS: vfs.Default, root: dir}
	// The margin follows MinFreeBytes' rule: every memtable flushed
	// (MemTableSize x MemTables = 16 MiB) and room for the compactions
	// after it. A 10 MiB margin let a flush under load meet the full disk.
	disk.capacity.Store(48 << 20)
	opts := testOptions
	opts.FS, opts.MinFreeBytes, opts.MemTables = disk, 32<<20, 4
	s, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	text := strings.Repeat("x", 4000)
	batch := func(from int) []*herald.Message {
		msgs := make([]*herald.Message, 32)
		for i := range msgs {
			m := msg("alice", "bob", fmt.Sprintf("l%d", from+i))
			m.Text = text
			msgs[i] = m
		}
		return msgs
	}
	stored := 0
	var refusal error
	for refusal == nil {
		if stored > 20_000 {
			t.Fatalf("%d messages stored on a 48 MiB disk and no write refused", stored)
		}
		if _, refusal = s.AppendMessages(ctx, batch(stored), nil); refusal == nil {
			stored += 32
		}
	}
	if got := herald.ErrorCode(refusal); got != herald.CodeInternal {
		t.Fatalf("append on a nearly full disk = %v (code %s), want internal", refusal, got)
	}
	if n := disk.refused.Load(); n != 0 {
		t.Fatalf("Pebble met a full disk %d times: the guard let writes through", n)
	}
	t.Logf("%d messages stored before writes were refused: %v", stored, refusal)

	// Every kind of write is refused meanwhile; reads go on.
	refused := map[string]error{
		"AppendMessages": func() error { _, err := s.AppendMessages(ctx, batch(stored), nil); return err }(),
		"SaveCursors": s.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "phone",
			Cursors: map[string]int64{herald.PeerConversationKey("alice", "bob"): 1}}}),
		"SetConversationMuted": s.SetConversationMuted(ctx, "bob", herald.PeerConversationKey("alice", "bob"), true),
		"RegisterUsers":        func() error { _, err := s.RegisterUsers(ctx, []herald.User{{ID: "bob", RegisteredAt: t0}}); return err }(),
		"FinishPush":           s.FinishPush(ctx, nil, nil, []herald.PushAttempt{{At: t0, User: "bob", PushID: "p", MsgID: 1}}, nil),
		"Ping":                 s.Ping(ctx),
	}
	for what, err := range refused {
		if got := herald.ErrorCode(err); err == nil || got != herald.CodeInternal {
			t.Errorf("%s on a nearly full disk = %v, want an internal error", what, err)
		}
	}
	checkStored(t, s, stored)

	disk.capacity.Store(128 << 20) // space is freed
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after space was freed: %v", err)
	}
	if _, err := s.AppendMessages(ctx, batch(stored), nil); err != nil {
		t.Fatalf("append after space was freed: %v", err)
	}
	stored += 32
	checkStored(t, s, stored)
	if n := disk.refused.Load(); n != 0 {
		t.Fatalf("Pebble met a full disk %d times", n)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, dir, opts); err != nil {
		t.Fatal(err)
	}
	checkStored(t, s, stored)
}

// checkStored checks that alice's conversation with bob holds seqs 1..n.
func checkStored(t *testing.T, s *Store, n int) {
	t.Helper()
	conv := herald.PeerConversationKey("alice", "bob")
	var after int64
	for {
		msgs, err := s.MessagesAfter(context.Background(), conv, after, time.Time{}, 500)
		if err != nil {
			t.Fatalf("MessagesAfter(%d): %v", after, err)
		}
		for _, m := range msgs {
			if m.Seq != after+1 {
				t.Fatalf("seq %d after %d: a message is missing", m.Seq, after)
			}
			after = m.Seq
		}
		if len(msgs) < 500 {
			break
		}
	}
	if after != int64(n) {
		t.Fatalf("%d messages stored, want %d", after, n)
	}
}
