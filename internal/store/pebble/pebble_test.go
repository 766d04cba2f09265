package pebble

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/storetest"
)

// testOptions keep memtables small, so tests do not reserve 64 MiB each,
// and the free-space margin small, so they run on a small test disk.
var testOptions = Options{MemTableSize: 4 << 20, CacheSize: 8 << 20, MinFreeBytes: 64 << 20}

func openTemp(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "herald")
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	// Before TempDir's own cleanup: background compactions must not find
	// the folder gone. A second Close (tests that close) only returns an error.
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openTemp(t, testOptions)
		return s
	})
}

func BenchmarkAppend1(b *testing.B)    { benchmarkAppend(b, 1) }
func BenchmarkAppend16(b *testing.B)   { benchmarkAppend(b, 16) }
func BenchmarkAppend128(b *testing.B)  { benchmarkAppend(b, 128) }
func BenchmarkAppend1024(b *testing.B) { benchmarkAppend(b, 1024) }

func benchmarkAppend(b *testing.B, batch int) {
	storetest.BenchmarkAppend(b, func(b *testing.B) store.Store {
		s, _ := openTemp(b, Options{}) // the defaults, as a server runs them
		return s
	}, batch)
}

var t0 = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func msg(from, to, localID string) *herald.Message {
	return &herald.Message{
		ConvType: herald.ConversationPeer, Conv: herald.PeerConversationKey(from, to),
		From: from, To: to, LocalID: localID, Type: herald.MessageText, Text: "hi " + localID, CreatedAt: t0,
	}
}

func mustAppend(t *testing.T, s *Store, msgs ...*herald.Message) []store.Appended {
	t.Helper()
	res, err := s.AppendMessages(context.Background(), msgs, nil)
	if err != nil {
		t.Fatalf("AppendMessages: %v", err)
	}
	return res
}

func storedSeqs(t *testing.T, s *Store, conv string) []int64 {
	t.Helper()
	msgs, err := s.MessagesAfter(context.Background(), conv, 0, time.Time{}, 1000)
	if err != nil {
		t.Fatalf("MessagesAfter: %v", err)
	}
	var seqs []int64
	for _, m := range msgs {
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

func seqs(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestReopen(t *testing.T) {
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		s, err := Open(context.Background(), filepath.Join(dir, "herald"), testOptions)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}

// TestFailedCommitKeepsSeqsGapFree makes commits fail after the writer has
// advanced its cached seqs, then checks that nothing was stored and the
// next batch takes the seqs the failed one would have.
func TestFailedCommitKeepsSeqsGapFree(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, testOptions)
	defer s.Close()
	mustAppend(t, s, msg("alice", "bob", "1"), msg("alice", "bob", "2"))

	commit := s.w.commit
	s.w.commit = func(*pebbledb.Batch) error { return errors.New("disk on fire") }
	batch := []*herald.Message{msg("dave", "erin", "3"), msg("alice", "bob", "4"), msg("alice", "bob", "5")}
	jobs := []store.PushJob{{PushID: "pd_erin", Msg: 0, User: "erin", Due: t0}, {PushID: "pd_bob", Msg: 2, User: "bob", Due: t0}}
	if _, err := s.AppendMessages(ctx, batch, jobs); err == nil {
		t.Fatal("AppendMessages with a failing commit succeeded")
	}
	s.w.commit = commit
	if jobs, err := s.PendingPush(ctx, store.PushKey{}, 10); err != nil || len(jobs) != 0 {
		t.Errorf("failed batch left %d push jobs (%v), want none", len(jobs), err)
	}

	if got := storedSeqs(t, s, "p:dave:erin"); len(got) != 0 {
		t.Errorf("failed batch left seqs %v in a new conversation", got)
	}
	if convs, _ := s.Conversations(ctx, "dave", 10); len(convs) != 0 {
		t.Errorf("failed batch left %d conversations in dave's list", len(convs))
	}
	res := mustAppend(t, s, msg("dave", "erin", "3"), msg("alice", "bob", "4"), msg("alice", "bob", "5"))
	if got, want := []int64{res[0].Message.Seq, res[1].Message.Seq, res[2].Message.Seq}, []int64{1, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("seqs after the failure = %v, want %v", got, want)
	}
	for i, r := range res {
		if r.Duplicate {
			t.Errorf("message %d of the retried batch is a duplicate: the failed batch left its retry key", i)
		}
	}
	if convs, _ := s.Conversations(ctx, "erin", 10); len(convs) != 1 {
		t.Errorf("erin has %d conversations, want 1", len(convs))
	}
	if got, want := storedSeqs(t, s, "p:alice:bob"), seqs(1, 4); !slices.Equal(got, want) {
		t.Errorf("stored seqs = %v, want %v", got, want)
	}
}

func TestAppendRejects(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	defer s.Close()
	tests := []struct {
		name   string
		modify func(m *herald.Message)
	}{
		{"command message", func(m *herald.Message) { m.Type = herald.MessageCommand }},
		{"sender outside the conversation", func(m *herald.Message) { m.From = "mallory" }},
		{"receiver outside the conversation", func(m *herald.Message) { m.To = "mallory" }},
		{"malformed key", func(m *herald.Message) { m.Conv = "alice-bob" }},
		{"group conversation", func(m *herald.Message) { m.ConvType = herald.ConversationGroup }},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m *herald.Message
			if tt.modify != nil {
				m = msg("alice", "bob", "x")
				tt.modify(m)
			}
			_, err := s.AppendMessages(context.Background(), []*herald.Message{m}, nil)
			if got := herald.ErrorCode(err); got != herald.CodeInvalidArgument {
				t.Errorf("AppendMessages: error %v, want code %q", err, herald.CodeInvalidArgument)
			}
		})
	}
}

// TestRetriesAcrossFlushes resends messages while memtables keep being
// flushed, so retry keys are found both among the recent ones kept in
// memory and in sstables, and checks that flushed keys leave memory.
func TestRetriesAcrossFlushes(t *testing.T) {
	s, _ := openTemp(t, Options{MemTableSize: 256 << 10, CacheSize: 1 << 20})
	defer s.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	var sent []*herald.Message // results, by LocalID order
	text := strings.Repeat("x", 300)
	for b := range 150 {
		var batch []*herald.Message
		var wantDup []*herald.Message
		for i := range 40 {
			if len(sent) > 0 && i%8 == 0 {
				// A resend: of a recent message or of any earlier one.
				j := len(sent) - 1 - rng.IntN(min(len(sent), 60))
				if i%16 == 0 {
					j = rng.IntN(len(sent))
				}
				m := *sent[j]
				m.Text = "resent"
				batch, wantDup = append(batch, &m), append(wantDup, sent[j])
				continue
			}
			from, to := fmt.Sprintf("u%d", rng.IntN(20)), fmt.Sprintf("v%d", rng.IntN(20))
			m := msg(from, to, fmt.Sprintf("%d-%d", b, i))
			m.Text = text
			batch, wantDup = append(batch, m), append(wantDup, nil)
		}
		if b%37 == 36 {
			if err := s.db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range mustAppend(t, s, batch...) {
			switch orig := wantDup[i]; {
			case orig == nil && r.Duplicate:
				t.Fatalf("batch %d message %d: new message taken for a duplicate of %d", b, i, r.Message.ID)
			case orig != nil && (!r.Duplicate || r.Message.ID != orig.ID || r.Message.Text != orig.Text):
				t.Fatalf("batch %d message %d: resend of %d gave Duplicate %v ID %d", b, i, orig.ID, r.Duplicate, r.Message.ID)
			case orig == nil:
				sent = append(sent, r.Message)
			}
		}
	}
	if m := s.db.Metrics(); m.Flush.Count < 5 {
		t.Errorf("%d flushes; the test wants many", m.Flush.Count)
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 150 / pruneBatches {
		mustAppend(t, s, msg("alice", "bob", fmt.Sprint("last", i))) // prunes what the flush moved
	}
	if got, want := len(s.dedup.recent), 150/pruneBatches; got != want {
		t.Errorf("%d retry keys kept in memory after a flush and %d messages, want %[2]d", got, want)
	}
}

// TestConversationWithOneself: one list entry, nothing unread.
func TestConversationWithOneself(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	defer s.Close()
	mustAppend(t, s, msg("alice", "alice", "1"), msg("alice", "alice", "2"))
	convs, err := s.Conversations(context.Background(), "alice", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].Key != "p:alice:alice" || convs[0].ID != "alice" || convs[0].Unread != 0 {
		t.Errorf("Conversations = %+v, want p:alice:alice with nothing unread", convs)
	}
}

// TestUnreadCounts checks the unread arithmetic (counts of the first
// participant's messages kept along seq) against counting.
func TestUnreadCounts(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t, testOptions)
	defer s.Close()
	senders := "aabbbababbbaaaab" // a: alice, b: bob
	var batch []*herald.Message
	for i, c := range senders {
		if c == 'a' {
			batch = append(batch, msg("alice", "bob", strconv.Itoa(i)))
		} else {
			batch = append(batch, msg("bob", "alice", strconv.Itoa(i)))
		}
	}
	mustAppend(t, s, batch...)
	for _, user := range []string{"alice", "bob"} {
		for read := range len(senders) + 1 {
			if read > 0 {
				if err := s.SetReadSeq(ctx, user, "p:alice:bob", int64(read)); err != nil {
					t.Fatal(err)
				}
			}
			want := 0
			for _, c := range senders[read:] {
				if string(c) != user[:1] {
					want++
				}
			}
			convs, err := s.Conversations(ctx, user, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := convs[0].Unread; got != want {
				t.Errorf("%s read to %d: unread %d, want %d", user, read, got, want)
			}
		}
	}
}

func TestSecondOpenRefused(t *testing.T) {
	s, dir := openTemp(t, testOptions)
	if _, err := Open(context.Background(), dir, testOptions); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open: %v, want an in-use error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), dir, testOptions)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

func TestCloseTwice(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); herald.ErrorCode(err) != herald.CodeUnavailable {
		t.Errorf("second Close: %v, want code %q", err, herald.CodeUnavailable)
	}
	_, err := s.AppendMessages(context.Background(), []*herald.Message{msg("alice", "bob", "1")}, nil)
	if herald.ErrorCode(err) != herald.CodeUnavailable {
		t.Errorf("AppendMessages after Close: %v, want code %q", err, herald.CodeUnavailable)
	}
}

// TestCloseWhileBusy closes the store under concurrent writers and
// readers: every call either works or fails with CodeUnavailable.
func TestCloseWhileBusy(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	ctx := context.Background()
	const callers = 8
	var started sync.WaitGroup
	started.Add(callers)
	done := make(chan error, callers)
	for c := range callers {
		go func() {
			for i := 0; ; i++ {
				var err error
				if c%2 == 0 {
					_, err = s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", fmt.Sprintf("%d-%d", c, i))}, nil)
				} else {
					_, err = s.Conversations(ctx, "alice", 10)
				}
				if i == 0 {
					started.Done()
				}
				if err != nil {
					if herald.ErrorCode(err) == herald.CodeUnavailable {
						err = nil
					}
					done <- err
					return
				}
			}
		}()
	}
	started.Wait() // every caller is under way
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range callers {
		if err := <-done; err != nil {
			t.Errorf("call during Close: %v, want success or code %q", err, herald.CodeUnavailable)
		}
	}
}

func TestNewerFormatRefused(t *testing.T) {
	s, dir := openTemp(t, testOptions)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebbledb.Open(dir, &pebbledb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(keyFormat, uvarintBytes(formatVersion+1), pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), dir, testOptions); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a newer format: %v, want a format version error", err)
	}
}

// TestMessagesSinceLongConversation checks the since search over many
// messages, with a clock that steps back part of the way.
func TestMessagesSinceLongConversation(t *testing.T) {
	s, _ := openTemp(t, testOptions)
	defer s.Close()
	var batch []*herald.Message
	for i := range 1000 {
		m := msg("alice", "bob", strconv.Itoa(i))
		at := i
		if i >= 500 && i < 600 {
			at = i - 300 // stepped back
		}
		m.CreatedAt = t0.Add(time.Duration(at) * time.Second)
		batch = append(batch, m)
	}
	mustAppend(t, s, batch...)
	tests := []struct {
		after int64
		since int // seconds after t0
		limit int
		want  []int64
	}{
		{0, 998, 10, []int64{999, 1000}},
		{0, 450, 3, []int64{451, 452, 453}},
		{0, 590, 3, []int64{601, 602, 603}}, // seqs 501..600 hold 200..299 s
		{520, 250, 3, []int64{551, 552, 553}},
		{700, 0, 2, []int64{701, 702}},
		{995, 10, 100, []int64{996, 997, 998, 999, 1000}},
		{0, 1000, 10, nil},
	}
	for _, tt := range tests {
		got, err := s.MessagesAfter(context.Background(), "p:alice:bob", tt.after, t0.Add(time.Duration(tt.since)*time.Second), tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, m := range got {
			seqs = append(seqs, m.Seq)
		}
		if !slices.Equal(seqs, tt.want) {
			t.Errorf("after %d since %ds limit %d: seqs %v, want %v", tt.after, tt.since, tt.limit, seqs, tt.want)
		}
	}
}

// TestKillKeepsAcknowledged runs a writer in a child process, kills it
// with SIGKILL mid-stream, and checks every acknowledged message is there
// and seqs continue without a gap.
func TestKillKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := filepath.Join(t.TempDir(), "herald")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$")
	cmd.Env = append(os.Environ(), "HERALD_PEBBLE_KILL_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() && acked < 200 {
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			acked = n
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if acked == 0 {
		t.Fatal("the child acknowledged nothing")
	}

	s, err := Open(context.Background(), dir, testOptions)
	if err != nil {
		t.Fatalf("Open after SIGKILL: %v", err)
	}
	defer s.Close()
	got := storedSeqs(t, s, "p:alice:bob")
	if len(got) < acked || !slices.Equal(got, seqs(1, int64(len(got)))) {
		t.Fatalf("after SIGKILL: %d messages stored (seqs %v...), %d acknowledged", len(got), got[:min(5, len(got))], acked)
	}
	res := mustAppend(t, s, msg("alice", "bob", "after"), msg("alice", "bob", "1"))
	if res[0].Message.Seq != int64(len(got)+1) || !res[1].Duplicate {
		t.Errorf("after SIGKILL: next seq %d (want %d), resend duplicate %v", res[0].Message.Seq, len(got)+1, res[1].Duplicate)
	}
}

// TestKillHelper is the child of TestKillKeepsAcknowledged: it appends
// one message per call and prints how many calls returned.
func TestKillHelper(t *testing.T) {
	dir := os.Getenv("HERALD_PEBBLE_KILL_DIR")
	if dir == "" {
		t.Skip("run by TestKillKeepsAcknowledged")
	}
	s, err := Open(context.Background(), dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; ; i++ {
		if _, err := s.AppendMessages(context.Background(), []*herald.Message{msg("alice", "bob", strconv.Itoa(i))}, nil); err != nil {
			t.Fatal(err)
		}
		fmt.Println(i)
	}
}

// TestRetryOfALargeBatch: a batch over about half a memtable is committed
// as its own flushable; a retry of one of its messages must still be found.
func TestRetryOfALargeBatch(t *testing.T) {
	s, _ := openTemp(t, Options{MemTableSize: 4 << 20})
	// Push the flushed sequence number well past the batch's own count.
	for i := 0; i < 200; i++ {
		mustAppend(t, s, msg("carol", "dave", fmt.Sprint("small", i)))
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	big := make([]*herald.Message, 80)
	for i := range big {
		m := msg("alice", "bob", fmt.Sprint("big", i))
		m.Type, m.Text, m.Data = herald.MessageCustom, "", make([]byte, 40<<10)
		big[i] = m
	}
	orig := mustAppend(t, s, big...)
	mustAppend(t, s, msg("carol", "dave", "after")) // prunes what the dedup log thinks is on disk
	retry := msg("alice", "bob", "big6")
	retry.Type, retry.Text, retry.Data = herald.MessageCustom, "", make([]byte, 40<<10)
	got := mustAppend(t, s, retry)
	if !got[0].Duplicate || got[0].Message.Seq != orig[6].Message.Seq {
		t.Errorf("retry of a message from a large batch = seq %d duplicate %v; want the original seq %d, duplicate",
			got[0].Message.Seq, got[0].Duplicate, orig[6].Message.Seq)
	}
}

// TestDeviceEncodingV1: a push device written before format 8 (encoding
// 1, no badge kind) is still read, with none; encoding 2 keeps the kind.
func TestDeviceEncodingV1(t *testing.T) {
	d := herald.PushDevice{PushID: "pd_x", Provider: herald.ProviderAPNs, Token: "aa", App: "app", Env: herald.EnvProduction,
		User: "bob", Device: "phone", RegisteredAt: time.UnixMilli(1000).UTC(), Badge: 3, BadgeKind: herald.BadgeCounted}
	v2 := encodeDevice(nil, &d)
	got, err := decodeDevice(d.PushID, v2)
	if err != nil || got != d {
		t.Errorf("encoding 2 read back as %+v, %v; want %+v", got, err, d)
	}
	v1 := append([]byte{deviceVersionV1}, v2[1:len(v2)-1-len(d.BadgeKind)]...)
	want := d
	want.BadgeKind = herald.BadgeNone
	got, err = decodeDevice(d.PushID, v1)
	if err != nil || got != want {
		t.Errorf("encoding 1 read as %+v, %v; want %+v", got, err, want)
	}
	if _, err := decodeDevice(d.PushID, append([]byte{deviceVersion + 1}, v2[1:]...)); err == nil {
		t.Error("a device of an unknown encoding was read")
	}
}
