package chat

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/sqlite"
)

// recorder is a Deliverer that records every delivery.
type recorder struct {
	mu     sync.Mutex
	got    []delivery
	events []GroupEvent
	seen   map[string][]string // per user, what reached them in order: "event <action>" or "message <conv>/<seq>"
}

type delivery struct {
	seq    int64
	conv   string
	to     []string
	origin SessionID
	loop   bool // made from the fan-out goroutine
}

func (r *recorder) DeliverMessage(m *herald.Message, to []string, origin SessionID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var stack [8 << 10]byte
	loop := strings.Contains(string(stack[:runtime.Stack(stack[:], false)]), "chat.(*Service).fanoutLoop")
	r.got = append(r.got, delivery{m.Seq, m.Conv, append([]string(nil), to...), origin, loop})
	r.saw(to, fmt.Sprintf("message %s/%d", m.Conv, m.Seq))
}

// saw records what reached each of users; r.mu is held.
func (r *recorder) saw(users []string, what string) {
	if r.seen == nil {
		r.seen = make(map[string][]string)
	}
	for _, u := range users {
		r.seen[u] = append(r.seen[u], what)
	}
}

// seenBy returns what reached user, in order.
func (r *recorder) seenBy(user string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen[user])
}

// wait returns the deliveries once there are at least n.
func (r *recorder) wait(t *testing.T, n int) []delivery {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if d := r.all(); len(d) >= n {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries after 5s, want %d: %+v", len(r.all()), n, r.all())
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *recorder) DeliverGroupEvent(e *GroupEvent, to []string, origin SessionID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, *e)
	r.saw(to, "event "+string(e.Action))
}

func (r *recorder) all() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "h.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newService(t *testing.T, st Store, cfg Config) (*Service, *recorder) {
	t.Helper()
	rec := &recorder{}
	s := New(st, rec, cfg)
	s.Start()
	t.Cleanup(func() { s.Close(context.Background()) })
	return s, rec
}

// send sends synchronously.
func send(s *Service, from string, origin SessionID, m *herald.Message) (SendResult, error) {
	type out struct {
		r   SendResult
		err error
	}
	c := make(chan out, 1)
	s.Send(from, origin, m, func(r SendResult, err error) { c <- out{r, err} })
	o := <-c
	return o.r, o.err
}

func text(to, local, body string) *herald.Message {
	return &herald.Message{Type: herald.MessageText, To: to, LocalID: local, Text: body}
}

func TestSendStoresThenDelivers(t *testing.T) {
	s, rec := newService(t, openStore(t), Config{})
	r, err := send(s, "alice", 7, text("bob", "l1", "hi"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Message.Seq != 1 || r.Message.From != "alice" || r.Message.Conv != "p:alice:bob" || r.Duplicate {
		t.Errorf("result %+v, want seq 1 from alice in p:alice:bob", r)
	}
	got := rec.all()
	if len(got) != 1 || fmt.Sprint(got[0].to) != "[bob alice]" || got[0].origin != 7 {
		t.Errorf("deliveries %+v, want one to bob and alice's other sessions (not 7)", got)
	}
	// done ran after the store had the message: a history read sees it.
	msgs, _, err := s.History(context.Background(), "bob", herald.ConversationPeer, "alice", store.HistoryQuery{})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("history = %d messages, %v; want 1", len(msgs), err)
	}

	dup, err := send(s, "alice", 7, text("bob", "l1", "again"))
	if err != nil || !dup.Duplicate || dup.Message.ID != r.Message.ID {
		t.Errorf("resend = %+v, %v; want the original marked duplicate", dup, err)
	}
	if n := len(rec.all()); n != 1 {
		t.Errorf("deliveries after a duplicate = %d, want 1: duplicates are not delivered again", n)
	}
}

func TestCommandIsDeliveredNotStored(t *testing.T) {
	st := openStore(t)
	s, rec := newService(t, st, Config{})
	r, err := send(s, "alice", 1, &herald.Message{Type: herald.MessageCommand, To: "bob", LocalID: "c", Data: []byte{1}})
	if err != nil || r.Message.Seq != 0 {
		t.Fatalf("command = %+v, %v; want no seq", r, err)
	}
	if got := rec.all(); len(got) != 1 || got[0].seq != 0 {
		t.Errorf("deliveries %+v, want the command once", got)
	}
	if last, _ := st.LastSeqs(context.Background(), "bob"); len(last) != 0 {
		t.Errorf("bob's conversations %v, want none: commands are not stored", last)
	}
}

func TestConcurrentSendsStayOrdered(t *testing.T) {
	s, rec := newService(t, openStore(t), Config{MaxBatch: 32})
	const senders, each = 16, 50
	var wg sync.WaitGroup
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := fmt.Sprintf("u%d", i)
			to := fmt.Sprintf("u%d", (i+1)%4+100) // several senders share receivers
			for j := 0; j < each; j++ {
				if _, err := send(s, from, SessionID(i), text(to, fmt.Sprint(j), "x")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	last := map[string]int64{}
	for _, d := range rec.all() {
		if d.seq != last[d.conv]+1 {
			t.Fatalf("conversation %s delivered seq %d after %d: deliveries must follow commit order without gaps", d.conv, d.seq, last[d.conv])
		}
		last[d.conv] = d.seq
	}
	if len(rec.all()) != senders*each {
		t.Errorf("%d deliveries, want %d", len(rec.all()), senders*each)
	}
}

// batchStore records the size of every message write; the first waits
// until release is closed.
type batchStore struct {
	Store
	entered chan struct{} // closed when the first write starts
	release chan struct{}
	mu      sync.Mutex
	sizes   []int
}

func (b *batchStore) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	b.mu.Lock()
	b.sizes = append(b.sizes, len(msgs))
	first := len(b.sizes) == 1
	b.mu.Unlock()
	if first {
		close(b.entered)
		<-b.release
	}
	return b.Store.AppendMessages(ctx, msgs, jobs)
}

// TestBacklogIsStoredInOneTransaction: the sends that wait while a
// transaction commits go into the next one together, up to MaxBatch (256
// by default), spread over many conversations as in the peer benchmark.
func TestBacklogIsStoredInOneTransaction(t *testing.T) {
	bs := &batchStore{Store: openStore(t), entered: make(chan struct{}), release: make(chan struct{})}
	s, _ := newService(t, bs, Config{})
	const backlog = 256
	if cap(s.in) < backlog {
		t.Fatalf("the queue holds %d sends, want room for a backlog of %d", cap(s.in), backlog)
	}
	answers := make(chan error, backlog+1)
	answer := func(_ SendResult, err error) { answers <- err }
	s.Send("alice", 1, text("bob", "first", "x"), answer)
	<-bs.entered
	for i := range backlog {
		from := fmt.Sprintf("u%d", i%100) // 100 conversations, as in the peer benchmark
		s.Send(from, SessionID(i+2), text("bob", fmt.Sprint(i), "x"), answer)
	}
	close(bs.release)
	for range backlog + 1 {
		if err := <-answers; err != nil {
			t.Fatal(err)
		}
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if want := []int{1, backlog}; !slices.Equal(bs.sizes, want) {
		t.Errorf("transactions of %v messages, want %v: the backlog in one", bs.sizes, want)
	}
}

// failingStore fails every append; reads go to the real store.
type failingStore struct{ Store }

func (failingStore) AppendMessages(context.Context, []*herald.Message, []store.PushJob) ([]store.Appended, error) {
	return nil, errors.New("disk full")
}

func TestStoreFailureReachesSenderAndDeliversNothing(t *testing.T) {
	s, rec := newService(t, failingStore{openStore(t)}, Config{})
	_, err := send(s, "alice", 1, text("bob", "l", "x"))
	if herald.ErrorCode(err) != herald.CodeInternal {
		t.Errorf("error = %v, want internal", err)
	}
	if len(rec.all()) != 0 {
		t.Errorf("delivered %v, want nothing when the store failed", rec.all())
	}
}

// refusingStore refuses, as data (invalid_argument), any write holding a
// message whose text is "refused", as PostgreSQL refuses a value its types
// cannot keep; the first write waits for release, so that a backlog builds.
type refusingStore struct {
	batchStore
	diskFull bool // every write after the first refusal fails as a full disk would
	refused  bool
}

func (r *refusingStore) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	r.mu.Lock()
	full := r.diskFull && r.refused
	if full {
		r.sizes = append(r.sizes, len(msgs))
	}
	r.mu.Unlock()
	if full {
		return nil, errors.New("disk full")
	}
	for _, m := range msgs {
		if m.Text == "refused" {
			r.mu.Lock()
			r.sizes = append(r.sizes, len(msgs))
			r.refused = true
			r.mu.Unlock()
			return nil, fmt.Errorf("engine: %w", herald.Errorf(herald.CodeInvalidArgument, "a value the store cannot keep"))
		}
	}
	return r.batchStore.AppendMessages(ctx, msgs, jobs)
}

// TestRefusedMessageFailsAlone: a message the store refuses as data fails
// with invalid_argument (not "retry"), and the other messages of its batch
// are stored and delivered: the batch's halves are stored apart, down to
// the refused message.
func TestRefusedMessageFailsAlone(t *testing.T) {
	rs := &refusingStore{batchStore: batchStore{Store: openStore(t), entered: make(chan struct{}), release: make(chan struct{})}}
	s, rec := newService(t, rs, Config{})
	answers := make(chan error, 10)
	s.Send("alice", 1, text("bob", "first", "x"), func(_ SendResult, err error) { answers <- err })
	<-rs.entered
	results := make(map[string]chan error)
	for i, lid := range []string{"a", "bad", "b", "c"} {
		body := "fine"
		if lid == "bad" {
			body = "refused"
		}
		ch := make(chan error, 1)
		results[lid] = ch
		s.Send(fmt.Sprintf("u%d", i), SessionID(i+2), text("bob", lid, body), func(_ SendResult, err error) { ch <- err })
	}
	close(rs.release)
	if err := <-answers; err != nil {
		t.Fatal(err)
	}
	for lid, ch := range results {
		err := <-ch
		switch {
		case lid == "bad" && herald.ErrorCode(err) != herald.CodeInvalidArgument:
			t.Errorf("the refused message: %v, want invalid_argument", err)
		case lid != "bad" && err != nil:
			t.Errorf("message %s, in the refused one's batch: %v, want stored", lid, err)
		}
	}
	if got := len(rec.all()); got != 4 {
		t.Errorf("%d deliveries, want 4 (the first and the three stored with the refused one)", got)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if want := []int{1, 4, 2, 1, 1, 2}; !slices.Equal(rs.sizes, want) {
		t.Errorf("writes of %v messages, want %v: the batch, then its halves, the refused one's down to one", rs.sizes, want)
	}
}

// TestRefusedBatchStopsAtAnotherFailure: when, while a refused batch is
// stored in halves, the store fails otherwise (a full disk), the rest of
// the batch fails with it at once, as an internal error to retry, with no
// write per remaining message.
func TestRefusedBatchStopsAtAnotherFailure(t *testing.T) {
	rs := &refusingStore{batchStore: batchStore{Store: openStore(t), entered: make(chan struct{}), release: make(chan struct{})}, diskFull: true}
	s, _ := newService(t, rs, Config{})
	first := make(chan error, 1)
	s.Send("alice", 1, text("bob", "first", "x"), func(_ SendResult, err error) { first <- err })
	<-rs.entered
	var answers []chan error
	for i := range 8 {
		body := "fine"
		if i == 0 {
			body = "refused"
		}
		ch := make(chan error, 1)
		answers = append(answers, ch)
		s.Send(fmt.Sprintf("u%d", i), SessionID(i+2), text("bob", fmt.Sprint(i), body), func(_ SendResult, err error) { ch <- err })
	}
	close(rs.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, ch := range answers {
		if err := <-ch; herald.ErrorCode(err) != herald.CodeInternal {
			t.Errorf("message %d: %v, want internal (the disk failed before it was stored)", i, err)
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if want := []int{1, 8, 4}; !slices.Equal(rs.sizes, want) {
		t.Errorf("writes of %v messages, want %v: the batch, its first half, then none", rs.sizes, want)
	}
}

func TestSendValidation(t *testing.T) {
	s, _ := newService(t, openStore(t), Config{})
	tests := []struct {
		name string
		m    *herald.Message
		want herald.Code
	}{
		{"to yourself", text("alice", "1", "x"), herald.CodeInvalidArgument},
		{"bad recipient", text("", "1", "x"), herald.CodeInvalidArgument},
		{"unknown group", &herald.Message{ConvType: herald.ConversationGroup, Type: herald.MessageText, To: "g", LocalID: "1", Text: "x"}, herald.CodeNotFound},
		{"bad group ID", &herald.Message{ConvType: herald.ConversationGroup, Type: herald.MessageText, To: "g:1", LocalID: "1", Text: "x"}, herald.CodeInvalidArgument},
		{"mentions in a peer message", &herald.Message{Type: herald.MessageText, To: "bob", LocalID: "1", Text: "x", Mentions: []string{"bob"}}, herald.CodeInvalidArgument},
		{"too large", text("bob", "1", string(make([]byte, 9000))), herald.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := send(s, "alice", 1, tt.m); herald.ErrorCode(err) != tt.want {
				t.Errorf("error = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestCloseDrainsThenRefuses(t *testing.T) {
	rec := &recorder{}
	s := New(openStore(t), rec, Config{})
	s.Start()
	var wg sync.WaitGroup
	var stored sync.Map
	for i := 0; i < 100; i++ {
		wg.Add(1)
		s.Send("alice", 1, text("bob", fmt.Sprint(i), "x"), func(r SendResult, err error) {
			if err == nil {
				stored.Store(r.Message.Seq, true)
			}
			wg.Done()
		})
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	n := 0
	stored.Range(func(any, any) bool { n++; return true })
	if n != 100 || len(rec.all()) != 100 {
		t.Errorf("after Close: %d stored, %d delivered; want every accepted send finished (100)", n, len(rec.all()))
	}
	if _, err := send(s, "alice", 1, text("bob", "late", "x")); herald.ErrorCode(err) != herald.CodeUnavailable {
		t.Errorf("send after Close = %v, want unavailable", err)
	}
}

func TestSyncCursorsAndRetention(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	s, _ := newService(t, openStore(t), Config{Now: clock, SyncPage: 2, OfflineRetention: time.Hour})
	for i := 0; i < 3; i++ { // old messages: outside the window later
		send(s, "alice", 1, text("bob", fmt.Sprint("old", i), "old"))
	}
	now = now.Add(2 * time.Hour)
	for i := 0; i < 5; i++ {
		send(s, "alice", 1, text("bob", fmt.Sprint("new", i), "new"))
	}
	send(s, "carol", 2, text("bob", "c1", "from carol"))
	ctx := context.Background()

	var pages [][]int64
	covered, count, err := s.Sync(ctx, "bob", "phone", nil, func(msgs []*herald.Message) error {
		var seqs []int64
		for _, m := range msgs {
			seqs = append(seqs, m.Seq)
		}
		pages = append(pages, seqs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// alice's conversation: seqs 4-8 (1-3 are outside the window) in pages of 2; carol's: 1.
	if fmt.Sprint(pages) != "[[4 5] [6 7] [8] [1]]" || count != 6 {
		t.Errorf("pages %v count %d, want [[4 5] [6 7] [8] [1]] and 6", pages, count)
	}
	if covered["p:alice:bob"] != 8 || covered["p:bob:carol"] != 1 {
		t.Errorf("covered %v, want alice 8 and carol 1", covered)
	}

	// A device's acks and a client's explicit cursors move the start.
	s.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "phone", Cursors: map[string]int64{"p:alice:bob": 6}}})
	pages = nil
	s.Sync(ctx, "bob", "phone", map[string]int64{"p:bob:carol": 1}, func(msgs []*herald.Message) error {
		pages = append(pages, []int64{msgs[0].Seq, msgs[len(msgs)-1].Seq})
		return nil
	})
	if fmt.Sprint(pages) != "[[7 8]]" {
		t.Errorf("pages after acks = %v, want [[7 8]]", pages)
	}
}

func TestHistoryPaging(t *testing.T) {
	s, _ := newService(t, openStore(t), Config{})
	for i := 0; i < 5; i++ {
		send(s, "alice", 1, text("bob", fmt.Sprint(i), "x"))
	}
	ctx := context.Background()
	msgs, more, err := s.History(ctx, "bob", herald.ConversationPeer, "alice", store.HistoryQuery{Limit: 2})
	if err != nil || len(msgs) != 2 || msgs[0].Seq != 5 || !more {
		t.Errorf("newest page = %d msgs (first seq %d), more %v, %v; want 5,4 and more", len(msgs), msgs[0].Seq, more, err)
	}
	msgs, more, _ = s.History(ctx, "bob", herald.ConversationPeer, "alice", store.HistoryQuery{FromSeq: 3, Direction: store.Forward, Limit: 2})
	if len(msgs) != 2 || msgs[0].Seq != 4 || more {
		t.Errorf("forward page = %d msgs, more %v; want 4,5 and no more", len(msgs), more)
	}
	for _, q := range []store.HistoryQuery{{Limit: 201}, {Limit: -1}, {FromSeq: -1}} {
		if _, _, err := s.History(ctx, "bob", herald.ConversationPeer, "alice", q); herald.ErrorCode(err) != herald.CodeInvalidArgument {
			t.Errorf("History(%+v) = %v, want invalid_argument", q, err)
		}
	}
}

func TestAcksPastTheEndAreClamped(t *testing.T) {
	st := openStore(t)
	s, _ := newService(t, st, Config{})
	for i := 0; i < 3; i++ {
		send(s, "alice", 1, text("bob", fmt.Sprint(i), "x"))
	}
	ctx := context.Background()
	if err := s.SaveCursors(ctx, []store.DeviceCursors{{User: "bob", Device: "phone", Cursors: map[string]int64{"p:alice:bob": 1000, "p:bob:nobody": 5}}}); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Cursors(ctx, "bob", "phone")
	if fmt.Sprint(got) != "map[p:alice:bob:3]" {
		t.Fatalf("cursors = %v, want alice's clamped to 3 and none for a conversation without messages", got)
	}
	// A message sent after the over-eager ack still reaches the device.
	send(s, "alice", 1, text("bob", "later", "x"))
	var synced []int64
	s.Sync(ctx, "bob", "phone", nil, func(msgs []*herald.Message) error {
		for _, m := range msgs {
			synced = append(synced, m.Seq)
		}
		return nil
	})
	if fmt.Sprint(synced) != "[4]" {
		t.Errorf("sync after the clamped ack = %v, want [4]", synced)
	}
}

func TestCommandsKeepOrderWithMessages(t *testing.T) {
	s, rec := newService(t, openStore(t), Config{})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(2)
		s.Send("alice", 1, text("bob", fmt.Sprint("t", i), "x"), func(SendResult, error) { wg.Done() })
		s.Send("alice", 1, &herald.Message{Type: herald.MessageCommand, To: "bob", LocalID: fmt.Sprint("c", i), Data: []byte{byte(i)}}, func(SendResult, error) { wg.Done() })
	}
	wg.Wait()
	got := rec.all()
	if len(got) != 100 {
		t.Fatalf("%d deliveries, want 100", len(got))
	}
	for i, d := range got {
		wantCommand := i%2 == 1
		if (d.seq == 0) != wantCommand || (!wantCommand && d.seq != int64(i/2+1)) {
			t.Fatalf("delivery %d has seq %d: a command must come right after the message sent before it", i, d.seq)
		}
	}
}

// stallingStore is a store whose message writes stop, ignoring their
// context, until release is closed: a disk that no longer answers.
type stallingStore struct {
	Store
	entered chan struct{} // receives once per write that stalls
	release chan struct{}
}

func (p *stallingStore) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	p.entered <- struct{}{}
	<-p.release
	return p.Store.AppendMessages(ctx, msgs, jobs)
}

// waitGoroutine waits until some goroutine's stack holds fn and its state
// is one of states (as runtime.Stack prints it, e.g. "select").
func waitGoroutine(t *testing.T, fn string, states ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			head, _, _ := strings.Cut(g, "\n")
			for _, st := range states {
				if strings.Contains(head, "["+st) && strings.Contains(g, fn) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %s %v within 5s", fn, states)
		}
		runtime.Gosched()
	}
}

// TestCloseMeetsItsDeadlineWithAStalledStore: a Send blocked on the full
// queue of a store that stopped answering does not hold Close past its
// deadline, and is answered unavailable (issue 15 item 19: Close waited
// for a lock that the blocked Send held, for ever).
func TestCloseMeetsItsDeadlineWithAStalledStore(t *testing.T) {
	ps := &stallingStore{Store: openStore(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	t.Cleanup(func() { close(ps.release) })
	s := New(ps, &recorder{}, Config{MaxBatch: 1})
	s.Start()
	answers := make(chan error, 16)
	answer := func(_ SendResult, err error) { answers <- err }
	s.Send("alice", 1, text("bob", "first", "x"), answer)
	<-ps.entered // the writer is stuck in the store
	for i := range cap(s.in) {
		s.Send("alice", 1, text("bob", fmt.Sprint(i), "x"), answer)
	}
	go s.Send("alice", 1, text("bob", "blocked", "x"), answer)
	waitGoroutine(t, "chat.(*Service).Send(", "select", "chan send") // waiting for room in the queue

	closed := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		closed <- s.Close(ctx)
	}()
	select {
	case err := <-closed:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close = %v, want the deadline's error", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Close returned after %v; its deadline was 100ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s; its deadline was 100ms")
	}
	select {
	case err := <-answers:
		if herald.ErrorCode(err) != herald.CodeUnavailable {
			t.Errorf("the send blocked on the full queue: %v, want unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the send blocked on the full queue got no answer")
	}
}

// readCountingStore counts the messages the sync reads.
type readCountingStore struct {
	Store
	mu   sync.Mutex
	read map[string]int // by conversation
}

func (c *readCountingStore) MessagesAfter(ctx context.Context, conv string, after int64, since time.Time, limit int) ([]*herald.Message, error) {
	msgs, err := c.Store.MessagesAfter(ctx, conv, after, since, limit)
	c.mu.Lock()
	c.read[conv] += len(msgs)
	c.mu.Unlock()
	return msgs, err
}

func (c *readCountingStore) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.read
	c.read = map[string]int{}
	return r
}

// TestSyncStoresCursorPastOwnSends (issue 15 item 3, review): the sync
// leaves a device's own sends out, and stores the device's cursor past
// those that lead its conversations, so the next login does not read
// them again; it never moves the cursor past a message the device was
// handed (only its ack does).
func TestSyncStoresCursorPastOwnSends(t *testing.T) {
	st := &readCountingStore{Store: openStore(t), read: map[string]int{}}
	s, _ := newService(t, st, Config{SyncPage: 2})
	ctx := context.Background()
	sendFrom := func(from, device, to, local string) {
		t.Helper()
		m := text(to, local, "x")
		m.FromDevice = device
		if _, err := send(s, from, 1, m); err != nil {
			t.Fatal(err)
		}
	}
	// Only alice's phone writes to bob: 5 messages, over 3 sync pages.
	for i := range 5 {
		sendFrom("alice", "phone", "bob", fmt.Sprint("b", i))
	}
	// To carol: two of the phone's, then one of carol's, then the phone's.
	sendFrom("alice", "phone", "carol", "c1")
	sendFrom("alice", "phone", "carol", "c2")
	sendFrom("carol", "laptop", "alice", "c3")
	sendFrom("alice", "phone", "carol", "c4")

	sync := func(device string) (int, map[string]int) {
		t.Helper()
		_, count, err := s.Sync(ctx, "alice", device, nil, func([]*herald.Message) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return count, st.take()
	}
	toBob, toCarol := herald.PeerConversationKey("alice", "bob"), herald.PeerConversationKey("alice", "carol")
	if count, read := sync("phone"); count != 1 || read[toBob] != 5 || read[toCarol] != 4 {
		t.Errorf("first sync: %d synced, read %v; want carol's message, all 9 read", count, read)
	}
	// Again, without an ack: nothing of bob's conversation is read, and
	// carol's from her message on, which the phone has not acked.
	if count, read := sync("phone"); count != 1 || read[toBob] != 0 || read[toCarol] != 2 {
		t.Errorf("second sync: %d synced, read %v; want carol's message again, 0 read of bob's, 2 of carol's", count, read)
	}
	// Another device of alice's gets the phone's messages.
	if count, read := sync("tablet"); count != 9 || read[toBob] != 5 {
		t.Errorf("tablet's sync: %d synced, read %v; want all 9", count, read)
	}
	if count, _ := sync("tablet"); count != 9 {
		t.Errorf("tablet's second sync: %d synced, want all 9 again (nothing acked)", count)
	}
}

// TestSyncCursorNotPastOldMessages: a conversation whose messages after
// the cursor are older than the retention window but for the device's own
// sends gets no cursor stored past them: the old ones were never handed to
// the device, and a sync with a longer window must still find them.
func TestSyncCursorNotPastOldMessages(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	st := openStore(t)
	s, _ := newService(t, st, Config{Now: clock, OfflineRetention: time.Hour})
	if _, err := send(s, "bob", 1, text("alice", "old", "from long ago")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	m := text("bob", "mine", "recent")
	m.FromDevice = "phone"
	if _, err := send(s, "alice", 1, m); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, count, err := s.Sync(ctx, "alice", "phone", nil, func([]*herald.Message) error { return nil }); err != nil || count != 0 {
		t.Fatalf("sync: %d synced, %v; want nothing (bob's is too old, the other is the phone's own)", count, err)
	}
	cur, err := st.Cursors(ctx, "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	if got := cur[herald.PeerConversationKey("alice", "bob")]; got != 0 {
		t.Errorf("phone's cursor stored at %d, past bob's message it never got; want none", got)
	}
}

// TestCloseNeverStarted: a service whose Start never ran (a server that
// failed to start) closes at once instead of waiting out the deadline, so
// the shutdown after a failed start still has time to close the store.
func TestCloseNeverStarted(t *testing.T) {
	s := New(openStore(t), &recorder{}, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close of a service never started: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close of a service never started took %v", took)
	}
	var got error
	s.Send("alice", 0, text("bob", "l1", "hi"), func(_ SendResult, err error) { got = err })
	if herald.ErrorCode(got) != herald.CodeUnavailable {
		t.Errorf("send after Close: %v, want unavailable", got)
	}
}
