package pebble

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/storetest"
)

// A power cut keeps what was fsynced and nothing else; a SIGKILL keeps the
// page cache, so the kill tests cannot tell a synced write from one that
// is not. These tests run the store on Pebble's crashable in-memory
// filesystem and open it again on a crash clone of it: a copy that holds
// only what had been synced when the clone was taken, as the disk would
// after a power cut. A write that returned must be in it.

// roomy is a crashable MemFS that reports free space (a MemFS has no
// usage of its own, and the free-space guard refuses writes without one).
type roomy struct{ *vfs.MemFS }

func (roomy) GetDiskUsage(string) (vfs.DiskUsage, error) {
	return vfs.DiskUsage{AvailBytes: 1 << 40, TotalBytes: 1 << 40}, nil
}

// newDisk returns a crashable MemFS holding dir, created and synced as a
// data folder that existed before the test (Open does not sync the
// parents of a folder it creates: a power cut before the first start
// completes may lose the folder itself).
func newDisk(t *testing.T, dir string) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewCrashableMem()
	if err := fs.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		f, err := fs.OpenDir(filepath.Dir(d))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if filepath.Dir(d) == d {
			return fs
		}
	}
}

func openOn(t *testing.T, fs *vfs.MemFS, dir string) *Store {
	t.Helper()
	opts := testOptions
	opts.FS = roomy{fs}
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Open after the power cut: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// cutAtClose is a store whose Close first takes the power-cut image of its
// filesystem: the reopen then sees what a power cut at that moment leaves,
// not what a clean close flushes.
type cutAtClose struct {
	*Store
	cut func()
}

func (c cutAtClose) Close() error {
	c.cut()
	return c.Store.Close()
}

// Everything the reopen suite checks (messages, seqs, dedup, cursors, read
// seqs, mutes, push devices, outbox and log, groups, calls, users) is
// still there after a power cut instead of a clean close.
func TestPowerCutReopen(t *testing.T) {
	var after *vfs.MemFS
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		if after != nil {
			return openOn(t, after, dir)
		}
		mem := newDisk(t, dir)
		s := openOn(t, mem, dir)
		return cutAtClose{Store: s, cut: func() { after = mem.CrashClone(vfs.CrashCloneCfg{}) }}
	})
}

// Each kind of write is synced by the call that made it, not by a later
// one: the power cut comes right after it returns.
func TestPowerCutAfterEachWrite(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	conv := herald.PeerConversationKey("alice", "bob")
	steps := []struct {
		name  string
		write func(s *Store) error
		check func(t *testing.T, s *Store)
	}{
		{"message", func(s *Store) error {
			_, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "m1")}, nil)
			return err
		}, func(t *testing.T, s *Store) {
			if got := storedSeqs(t, s, conv); len(got) != 1 {
				t.Errorf("seqs after the power cut = %v, want [1]", got)
			}
		}},
		{"cursors", func(s *Store) error {
			return s.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "phone", Cursors: map[string]int64{conv: 1}}})
		}, func(t *testing.T, s *Store) {
			if got, err := s.Cursors(ctx, "bob", "phone"); err != nil || got[conv] != 1 {
				t.Errorf("cursors after the power cut = %v, %v; want %s at 1", got, err, conv)
			}
		}},
		{"mute", func(s *Store) error {
			return s.SetConversationMuted(ctx, "bob", conv, true)
		}, func(t *testing.T, s *Store) {
			if got, err := s.MutedConversations(ctx); err != nil || len(got["bob"]) != 1 {
				t.Errorf("muted after the power cut = %v, %v; want bob's", got, err)
			}
		}},
		{"push device", func(s *Store) error {
			_, err := s.RegisterPushDevice(ctx, herald.PushDevice{Provider: herald.ProviderAPNs, Token: "b0b0",
				App: "im.herald.demo", Env: herald.EnvProduction, User: "bob", Device: "phone"})
			return err
		}, func(t *testing.T, s *Store) {
			if got, err := s.PushDevices(ctx); err != nil || len(got) != 1 {
				t.Errorf("push devices after the power cut = %v, %v; want bob's phone", got, err)
			}
		}},
		{"group", func(s *Store) error {
			return s.CreateGroup(ctx, herald.Group{ID: "g1", Name: "g", JoinMode: herald.GroupJoinInvite,
				InviteMode: herald.GroupInviteAny, CreatedAt: at}, []herald.GroupMember{{User: "alice", Role: herald.RoleOwner}})
		}, func(t *testing.T, s *Store) {
			if _, err := s.Group(ctx, "g1"); err != nil {
				t.Errorf("group after the power cut: %v", err)
			}
		}},
		{"user", func(s *Store) error {
			_, err := s.RegisterUsers(ctx, []herald.User{{ID: "carol", Name: "Carol", RegisteredAt: at}})
			return err
		}, func(t *testing.T, s *Store) {
			if _, err := s.User(ctx, "carol"); err != nil {
				t.Errorf("user after the power cut: %v", err)
			}
		}},
	}
	dir := filepath.Join(t.TempDir(), "herald")
	mem := newDisk(t, dir)
	s := openOn(t, mem, dir)
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.write(s); err != nil {
				t.Fatalf("write: %v", err)
			}
			after := openOn(t, mem.CrashClone(vfs.CrashCloneCfg{}), dir)
			st.check(t, after)
			after.Close()
		})
	}
}

// The engine's own settings: the WAL is on, and no sync is deferred.
func TestPebbleSyncSettings(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	po := s.pebbleOptions(testOptions.withDefaults())
	if po.DisableWAL {
		t.Error("DisableWAL is set: a commit is not durable")
	}
	if po.WALMinSyncInterval != nil {
		t.Error("WALMinSyncInterval is set: a Sync commit returns before its fsync")
	}
}
