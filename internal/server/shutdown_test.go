package server

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
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

// useStalledStore wraps the store of the servers the test makes next in
// a stalledStore; release lets its writes go on (once; at the latest when
// the test ends).
func useStalledStore(t *testing.T) (st *stalledStore, release func()) {
	st = &stalledStore{stall: make(chan struct{}), release: make(chan struct{}), stalled: make(chan struct{})}
	testWrapStore = func(s store.Store) store.Store { st.Store = s; return st }
	var once sync.Once
	release = func() { once.Do(func() { close(st.release) }) }
	t.Cleanup(func() { testWrapStore = nil; release() })
	return st, release
}

// holdInStore makes c send a message whose write blocks in st (a hung
// disk) and waits until it does.
func holdInStore(ctx context.Context, t *testing.T, st *stalledStore, c *client.Client) {
	t.Helper()
	close(st.stall)
	go c.SendPeerMessage(ctx, "bob", client.TextMessage("held in the store"))
	select {
	case <-st.stalled:
	case <-ctx.Done():
		t.Fatal("the send never reached the store")
	}
}

// startDrain starts srv's Shutdown and waits until it has stopped serving
// (Serve returned: nothing accepts from here); done gets Shutdown's result.
func startDrain(ctx context.Context, t *testing.T, srv *Server) (done chan error) {
	t.Helper()
	done = make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	select {
	case <-srv.Done():
	case <-ctx.Done():
		t.Fatal("Shutdown never stopped accepting")
	}
	return done
}

// TestShutdownMeetsItsDeadlineWithAStalledStore: a send is stuck in a
// store write that never returns (a hung disk); Shutdown still returns by
// its context's deadline, with an error saying what it gave up on, instead
// of waiting for the store for ever.
func TestShutdownMeetsItsDeadlineWithAStalledStore(t *testing.T) {
	st, _ := useStalledStore(t) // the store's goroutines end with the test

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
	holdInStore(ctx, t, st, alice)

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

// TestShutdownKeepsConnectionsQueuedUntilItEnds: while Shutdown drains (a
// store write holds it here), a new connection is not refused: it waits in
// the listening socket's queue, unanswered, and is reset when Shutdown
// ends; then the port is free (a dial is refused), for the next process.
func TestShutdownKeepsConnectionsQueuedUntilItEnds(t *testing.T) {
	st, release := useStalledStore(t)
	defer release() // before the server's cleanup shuts it down, should the test fail first
	srv, login := startDevServer(t)
	alice := login("alice", "phone")
	defer alice.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holdInStore(ctx, t, st, alice)
	addr := srv.Addr()
	done := startDrain(ctx, t, srv)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("a connection during the drain was refused (%v); want it queued", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var buf [256]byte
	if n, err := c.Read(buf[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection during the drain read %q, %v; want no answer while draining", buf[:n], err)
	}
	release()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Shutdown did not end once the store write went on")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf[:]); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the queued connection read %q, %v after Shutdown; want it reset or closed", buf[:n], err)
	}
	if c2, err := net.Dial("tcp", addr); err == nil {
		c2.Close()
		t.Fatal("the port still accepts connections after Shutdown; want it closed")
	}
}

// TestServeOnAListenerOpenedBeforeNew: a connection made after Listen,
// before the server (and its store) exists, waits and is served once the
// server starts on that listener.
func TestServeOnAListenerOpenedBeforeNew(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	ln, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	srv, err := New(context.Background(), cfg, []byte("0123456789abcdef0123456789abcdef"), slog.New(slog.DiscardHandler))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	if err := srv.StartOn(ln); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the connection made before New got no answer: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz answered %s", resp.Status)
	}
}
