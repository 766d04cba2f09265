package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/token"
)

// stalledStore is a store on a disk that stopped answering: once stall is
// set, message writes block until release; like the real engines, Close
// waits for the write in progress.
type stalledStore struct {
	store.Store
	stall    chan struct{} // closed: writes from now on block
	release  chan struct{} // closed: they go on
	inWrite  sync.WaitGroup
	stalling sync.Once
	stalled  chan struct{} // closed when a write is blocked
}

func (s *stalledStore) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	s.inWrite.Add(1)
	defer s.inWrite.Done()
	select {
	case <-s.stall:
		s.stalling.Do(func() { close(s.stalled) })
		<-s.release
	default:
	}
	return s.Store.AppendMessages(ctx, msgs, jobs)
}

func (s *stalledStore) Close() error {
	s.inWrite.Wait()
	return s.Store.Close()
}

// TestShutdownMeetsItsDeadlineWithAStalledStore: a send is stuck in a
// store write that never returns (a hung disk); Shutdown still returns by
// its context's deadline, with an error saying what it gave up on, instead
// of waiting for the store for ever.
func TestShutdownMeetsItsDeadlineWithAStalledStore(t *testing.T) {
	st := &stalledStore{stall: make(chan struct{}), release: make(chan struct{}), stalled: make(chan struct{})}
	testWrapStore = func(s store.Store) store.Store { st.Store = s; return st }
	t.Cleanup(func() { testWrapStore = nil })
	defer close(st.release) // the store's goroutines end with the test

	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	secret := []byte("0123456789abcdef0123456789abcdef")
	srv, err := New(context.Background(), cfg, secret, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	alice := client.New(srv.URL(), client.Options{DeviceID: "phone"})
	defer alice.Close()
	tok, err := token.Mint(secret, "alice", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := alice.Login(ctx, "alice", tok); err != nil {
		t.Fatal(err)
	}
	close(st.stall)
	go alice.SendPeerMessage(ctx, "bob", client.TextMessage("into the void"))
	select {
	case <-st.stalled:
	case <-ctx.Done():
		t.Fatal("the send never reached the store")
	}

	const deadline = time.Second
	sctx, scancel := context.WithTimeout(context.Background(), deadline)
	defer scancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(sctx) }()
	select {
	case err = <-done:
	case <-time.After(deadline + 5*time.Second):
		t.Fatalf("Shutdown has not returned %v after its %v deadline", 5*time.Second, deadline)
	}
	if took := time.Since(start); took > deadline+500*time.Millisecond {
		t.Errorf("Shutdown took %v with a %v deadline", took, deadline)
	}
	if err == nil {
		t.Error("Shutdown returned nil with a write still stuck in the store; want an error that says so")
	}
}
