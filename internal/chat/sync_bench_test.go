package chat

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
)

// BenchmarkSync is a login's offline sync of a device that has everything
// (the common case of a login storm): the store reads that find nothing
// to send, for a user without conversations and for one with some.
func BenchmarkSync(b *testing.B) {
	for _, tt := range []struct {
		name          string
		peers, groups int
	}{
		{"empty", 0, 0},
		{"peers=20,groups=5", 20, 5},
	} {
		b.Run(tt.name, func(b *testing.B) {
			ctx := context.Background()
			st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "h.db"), sqlite.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			s := New(st, &recorder{}, Config{})
			s.Start()
			defer s.Close(ctx)
			acked := map[string]int64{}
			for i := range tt.peers {
				peer := fmt.Sprintf("p%02d", i)
				if _, err := send(s, peer, 1, text("me", "l"+peer, "x")); err != nil {
					b.Fatal(err)
				}
				acked[herald.PeerConversationKey("me", peer)] = 1
			}
			for i := range tt.groups {
				id := fmt.Sprintf("g%02d", i)
				if _, err := s.CreateGroup(ctx, "me", 0, NewGroup{Group: herald.Group{ID: id, Name: id}, Members: []string{"other"}}); err != nil {
					b.Fatal(err)
				}
				if _, err := send(s, "other", 1, groupMsg(id, "l"+id, "x")); err != nil {
					b.Fatal(err)
				}
				acked[herald.GroupConversationKey(id)] = 1
			}
			if err := s.SaveCursors(ctx, []store.DeviceCursors{{User: "me", Device: "phone", Cursors: acked}}); err != nil {
				b.Fatal(err)
			}
			page := func([]*herald.Message) error { return nil }
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, n, err := s.Sync(ctx, "me", "phone", nil, page); err != nil || n != 0 {
					b.Fatalf("sync: %d messages, %v; want none", n, err)
				}
			}
		})
	}
}
