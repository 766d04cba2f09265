package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
)

// stateWatch reports a client's connection events on a channel.
type stateWatch struct{ events chan client.ConnectionEvent }

func newStateWatch() *stateWatch {
	return &stateWatch{events: make(chan client.ConnectionEvent, 64)}
}

func (w *stateWatch) handler(_ client.ConnectionState, ev client.ConnectionEvent, _ error) {
	select {
	case w.events <- ev:
	default:
	}
}

// await waits for ev.
func (w *stateWatch) await(t *testing.T, ev client.ConnectionEvent) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case got := <-w.events:
			if got == ev {
				return
			}
		case <-deadline:
			t.Fatalf("no %v event within 15s", ev)
		}
	}
}

// TestSDKSendsDuringReconnectKeepCallOrder makes eight sends, 50 ms apart,
// while the server is down and the SDK reconnecting: once the server is
// back on the same data, they are stored in the order they were made (the
// SDK writes queued sends in call order, not in the order the waiting
// goroutines wake).
func TestSDKSendsDuringReconnectKeepCallOrder(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	srv := startServerWith(t, cfg)
	cfg.Addr = srv.Addr()

	w := newStateWatch()
	alice := client.New(srv.URL(), client.Options{
		DeviceID:     "alice-phone",
		Handlers:     client.Handlers{ConnectionStateChanged: w.handler},
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
	})
	t.Cleanup(alice.Close)
	login(t, alice, "alice")
	w.await(t, client.EventSuccess)

	srv.stop(t)
	w.await(t, client.EventLoginInterrupted) // alice is reconnecting

	const n = 8
	var wg sync.WaitGroup
	sent := make([]*herald.Message, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sent[i], errs[i] = alice.SendPeerMessage(ctx, "bob", client.TextMessage(fmt.Sprint("m", i+1)))
		}()
		time.Sleep(50 * time.Millisecond) // pacing: the calls are made 50 ms apart
	}
	if s := alice.State(); s != client.StateReconnecting {
		t.Fatalf("alice's state after the sends = %v, want reconnecting: the sends must wait for the reconnect", s)
	}
	startServerWith(t, cfg)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("send m%d: %v", i+1, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hist, _, err := alice.QueryHistoryMessage(ctx, client.ConvPeer, "bob", client.HistoryQuery{Forward: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range hist {
		got = append(got, fmt.Sprintf("%s@%d", m.Text, m.Seq))
	}
	if len(hist) != n {
		t.Fatalf("history has %d messages %v, want %d", len(hist), got, n)
	}
	for i, m := range hist {
		if m.ConvType != client.ConvPeer || m.ConvID != "bob" || sent[i].ConvID != "bob" {
			t.Errorf("alice's message %d is in %v/%q (sent as %q), want peer/bob: ConvID is the other user", i, m.ConvType, m.ConvID, sent[i].ConvID)
		}
		if want := fmt.Sprint("m", i+1); m.Text != want || sent[i].Seq != m.Seq {
			t.Fatalf("stored order (text@seq) = %v; want m1..m%d in call order (send %d returned seq %d)", got, n, i+1, sent[i].Seq)
		}
	}
}

// TestSDKCloseFlushesAcks closes a client right after its offline sync, with
// acks coalesced over an hour so that none has gone out by itself: Close
// sends them, and the next login from the same device syncs nothing again.
func TestSDKCloseFlushesAcks(t *testing.T) {
	srv := startServer(t, nil)
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	const n = 5
	for i := range n {
		if _, err := alice.SendPeerMessage(context.Background(), "bob", client.TextMessage(fmt.Sprint("m", i+1))); err != nil {
			t.Fatal(err)
		}
	}

	startBob := func(in *inbox) *client.Client {
		c := client.New(srv.URL(), client.Options{DeviceID: "bob-phone", Handlers: in.handlers(), AckInterval: time.Hour})
		t.Cleanup(c.Close)
		login(t, c, "bob")
		return c
	}
	first := newInbox()
	bob := startBob(first)
	// Login returns once the sync was handed to the handler.
	got := first.wait(t, n)
	if len(got) != n {
		t.Fatalf("first login synced %d messages, want %d", len(got), n)
	}
	if m := got[0]; m.ConvType != client.ConvPeer || m.ConvID != "alice" || m.Conv != "p:alice:bob" {
		t.Errorf("bob's message is in %v/%q (key %q), want peer/alice (p:alice:bob): ConvID is the other user", m.ConvType, m.ConvID, m.Conv)
	}
	bob.Close()

	again := newInbox()
	startBob(again)
	again.mu.Lock()
	defer again.mu.Unlock()
	if len(again.msgs) != 0 {
		t.Errorf("the login after Close synced %d messages again (first %q), want 0: Close must send the acks it owes", len(again.msgs), again.msgs[0].Text)
	}
}

// TestSDKLogoutDuringLoginSync has bob's handler log out while Login's
// offline sync is being handed over: Login returns nil (it succeeded; the
// logout followed), and bob is logged out.
func TestSDKLogoutDuringLoginSync(t *testing.T) {
	srv := startServer(t, nil)
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")
	for i := range 3 {
		if _, err := alice.SendPeerMessage(context.Background(), "bob", client.TextMessage(fmt.Sprint("m", i+1))); err != nil {
			t.Fatal(err)
		}
	}

	var bob *client.Client
	logoutErr := make(chan error, 1)
	var once sync.Once
	bob = client.New(srv.URL(), client.Options{
		DeviceID: "bob-phone",
		Handlers: client.Handlers{MessageReceived: func(_ []*herald.Message, info client.ReceiveInfo) {
			if info.Offline {
				once.Do(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					logoutErr <- bob.Logout(ctx)
				})
			}
		}},
	})
	t.Cleanup(bob.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bob.Login(ctx, "bob", mint(t, "bob", time.Hour)); err != nil {
		t.Errorf("Login with a handler that logs out during the sync = %v, want nil", err)
	}
	select {
	case err := <-logoutErr:
		if err != nil {
			t.Errorf("Logout from the handler = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's Logout did not return")
	}
	if s := bob.State(); s != client.StateDisconnected {
		t.Errorf("state after the handler's Logout = %v, want disconnected", s)
	}
	if _, err := bob.SendPeerMessage(ctx, "alice", client.TextMessage("after")); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Errorf("send after the handler's Logout = %v, want ErrNotLoggedIn", err)
	}
}
