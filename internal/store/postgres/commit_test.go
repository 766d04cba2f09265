package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Ways cutProxy breaks the connection of the writer's last round trip
// (the pipeline that ends with COMMIT).
const (
	cutAnswer = iota // PostgreSQL gets the round trip and runs it; its answer is lost
	cutSend          // the round trip never reaches PostgreSQL
)

// cutProxy forwards the store's connections to PostgreSQL and, when armed
// by the writer's tracer at the start of its last round trip, breaks that
// round trip's connection as mode says. It reads what clients send as
// PostgreSQL's messages, so that it cuts at the round trip's first Bind
// (its execution) and not at the Parse and Describe pgx sends first for a
// statement the connection has not prepared.
type cutProxy struct {
	ln     net.Listener
	target string
	mode   atomic.Int32 // cutAnswer or cutSend: what an armed round trip gets
	left   atomic.Int32 // how many more last round trips to cut
	armed  atomic.Bool  // set by the tracer: the next Bind starts a last round trip
	cuts   atomic.Int32
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

// TraceBatchStart arms the proxy at a pipeline ending with COMMIT.
func (p *cutProxy) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	if qs := d.Batch.QueuedQueries; len(qs) > 0 && qs[len(qs)-1].SQL == "COMMIT" && p.left.Load() > 0 {
		p.armed.Store(true)
	}
	return ctx
}
func (p *cutProxy) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (p *cutProxy) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
func (p *cutProxy) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (p *cutProxy) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (p *cutProxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	var muted atomic.Bool // the answers are dropped from here on
	closeBoth := func() { client.Close(); server.Close() }
	go func() { // PostgreSQL to the client
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !muted.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		closeBoth()
	}()
	// The client to PostgreSQL, a message at a time: the startup message
	// has no type byte, every later one has one and a length.
	defer closeBoth()
	var head [4]byte
	if _, err := io.ReadFull(client, head[:]); err != nil {
		return
	}
	start := make([]byte, binary.BigEndian.Uint32(head[:])-4)
	if _, err := io.ReadFull(client, start); err != nil {
		return
	}
	if _, err := server.Write(append(head[:], start...)); err != nil {
		return
	}
	for {
		var h [5]byte
		if _, err := io.ReadFull(client, h[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(h[1:])-4)
		if _, err := io.ReadFull(client, body); err != nil {
			return
		}
		if h[0] == 'B' && p.armed.Load() {
			p.armed.Store(false)
			p.cuts.Add(1)
			p.left.Add(-1)
			switch p.mode.Load() {
			case cutSend:
				return // nothing of the round trip reaches PostgreSQL
			default: // cutAnswer
				muted.Store(true)
				time.AfterFunc(300*time.Millisecond, closeBoth) // time to run it
			}
		}
		if _, err := server.Write(append(h[:], body...)); err != nil {
			return
		}
	}
}

// TestAppendCommitAnswerLost: the connection of an append transaction
// breaks once its last round trip (the messages' insert ... COMMIT) is
// sent, so the writer cannot know whether it committed: whether
// PostgreSQL ran it (its answer lost) or never got it, the writer runs the
// transaction again and answers the messages as stored now, not as
// duplicates, with gap-free seqs, so that chat delivers them live. When
// every run's answer is lost, the caller gets an error saying so, and its
// resend is a duplicate (the store's contract: once no caller waits).
func TestAppendCommitAnswerLost(t *testing.T) {
	testDatabase(t)
	ctx := context.Background()
	open := func(t *testing.T) (*Store, *cutProxy) {
		u, err := url.Parse(newSchema(t))
		if err != nil {
			t.Fatal(err)
		}
		p := newCutProxy(t, u.Host)
		u.Host = p.ln.Addr().String()
		q := u.Query()
		q.Set("sslmode", "disable") // the proxy reads PostgreSQL's messages in the clear
		u.RawQuery = q.Encode()
		return openURL(t, u.String(), Options{tracer: p}), p
	}
	answers := func(res []store.Appended) (out []string) {
		for _, r := range res {
			out = append(out, fmt.Sprintf("seq %d dup %v", r.Message.Seq, r.Duplicate))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		mode int32
		// DuplicateReruns: the run after a committed one meets its messages
		reruns int64
	}{
		{"answer lost", cutAnswer, 1},
		{"never sent", cutSend, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, p := open(t)
			defer s.Close()
			if _, err := s.AppendMessages(ctx, []*herald.Message{msg("carol", "dave", "warm")}, nil); err != nil {
				t.Fatal(err) // the connection's statements prepared
			}
			p.mode.Store(tc.mode)
			p.left.Store(1)
			res, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "l-1"), msg("alice", "bob", "l-2"), msg("alice", "bob", "l-1")}, nil)
			if err != nil {
				t.Fatalf("append: %v", err)
			}
			if p.cuts.Load() != 1 {
				t.Fatalf("the proxy cut %d round trips, want 1: the test did not test a lost answer", p.cuts.Load())
			}
			if got, want := answers(res), []string{"seq 1 dup false", "seq 2 dup false", "seq 1 dup true"}; !slices.Equal(got, want) {
				t.Errorf("answers %q, want %q (the copy in the batch a duplicate of the first)", got, want)
			}
			if got, want := retries(s.Stats()), (Stats{CommitsUnknown: 1, DuplicateReruns: tc.reruns}); got != want {
				t.Errorf("Stats %+v, want %+v", got, want)
			}
			again, err := s.AppendMessages(ctx, []*herald.Message{msg("alice", "bob", "l-1")}, nil)
			if err != nil {
				t.Fatalf("resend: %v", err)
			}
			if r := again[0]; !r.Duplicate || r.Message.ID != res[0].Message.ID {
				t.Errorf("a resend: duplicate %v, ID %d; want a duplicate of %d", r.Duplicate, r.Message.ID, res[0].Message.ID)
			}
			if got := storedSeqs(t, s, herald.PeerConversationKey("alice", "bob")); !slices.Equal(got, []int64{1, 2}) {
				t.Errorf("stored seqs %v, want [1 2]", got)
			}
		})
	}
	t.Run("every run", func(t *testing.T) {
		s, p := open(t)
		defer s.Close()
		if _, err := s.AppendMessages(ctx, []*herald.Message{msg("carol", "dave", "warm")}, nil); err != nil {
			t.Fatal(err)
		}
		p.mode.Store(cutAnswer)
		p.left.Store(3) // the first run commits; the next two meet its messages, their answers lost too
		batch := []*herald.Message{msg("alice", "bob", "e-1"), msg("alice", "bob", "e-2")}
		_, err := s.AppendMessages(ctx, batch, nil)
		if err == nil || !errors.As(err, new(*commitUnknownError)) {
			t.Fatalf("append whose every COMMIT answer was lost: %v, want the unknown outcome", err)
		}
		if got := s.Stats().CommitsUnknown; got != 3 {
			t.Errorf("CommitsUnknown %d, want 3", got)
		}
		res, err := s.AppendMessages(ctx, batch, nil) // the caller's resend
		if err != nil {
			t.Fatalf("resend: %v", err)
		}
		if got, want := answers(res), []string{"seq 1 dup true", "seq 2 dup true"}; !slices.Equal(got, want) {
			t.Errorf("the resend's answers %q, want %q", got, want)
		}
	})
}

// TestUnsureSettle: what an unanswered COMMIT stored is answered as stored
// now only for the message sent with its key, in its conversation, with
// an ID that run gave, and once: a copy later in the group, a message
// another writer stored under the key (another ID), and a key reused in
// another conversation stay duplicates.
func TestUnsureSettle(t *testing.T) {
	ab := herald.PeerConversationKey("alice", "bob")
	stored := func(localID, conv string, id int64) store.Appended {
		return store.Appended{Message: &herald.Message{From: "alice", LocalID: localID, Conv: conv, ID: id}, Duplicate: true}
	}
	group := []*appendReq{
		{msgs: []*herald.Message{msg("alice", "bob", "k1"), msg("alice", "bob", "k2"), msg("alice", "bob", "k1")}},
		{msgs: []*herald.Message{msg("alice", "bob", "k3"), msg("alice", "carol", "k4")}},
	}
	res := [][]store.Appended{
		{stored("k1", ab, 10), stored("k2", ab, 99), stored("k1", ab, 10)},
		{stored("k3", ab, 12), stored("k4", ab, 13)},
	}
	u := unsureSet{}
	u.add(msgKey{"alice", "k1"}, 7)
	u.add(msgKey{"alice", "k1"}, 10) // a second unanswered run gave another ID
	u.add(msgKey{"alice", "k2"}, 11) // stored by another writer as 99
	u.add(msgKey{"alice", "k3"}, 12)
	u.add(msgKey{"alice", "k4"}, 13) // sent in alice-carol, stored in alice-bob
	u.settle(group, res)
	var got []bool
	for _, b := range res {
		for _, a := range b {
			got = append(got, a.Duplicate)
		}
	}
	if want := []bool{false, true, true, false, true}; !slices.Equal(got, want) {
		t.Errorf("duplicates after settle %v, want %v", got, want)
	}
}
