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
	"github.com/herald-im/herald/token"
)

// inbox collects what a client's handler receives.
type inbox struct {
	mu     sync.Mutex
	msgs   []*herald.Message
	states []client.ConnectionEvent
	offl   []bool
	more   chan struct{}
}

func newInbox() *inbox { return &inbox{more: make(chan struct{}, 1024)} }

func (in *inbox) handlers() client.Handlers {
	return client.Handlers{
		MessageReceived: func(msgs []*herald.Message, info client.ReceiveInfo) {
			in.mu.Lock()
			for _, m := range msgs {
				in.msgs = append(in.msgs, m)
				in.offl = append(in.offl, info.Offline)
			}
			in.mu.Unlock()
			select {
			case in.more <- struct{}{}:
			default:
			}
		},
		ConnectionStateChanged: func(_ client.ConnectionState, ev client.ConnectionEvent, _ error) {
			in.mu.Lock()
			in.states = append(in.states, ev)
			in.mu.Unlock()
		},
	}
}

// wait blocks until n messages have arrived and returns them.
func (in *inbox) wait(t *testing.T, n int) []*herald.Message {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		in.mu.Lock()
		if len(in.msgs) >= n {
			out := append([]*herald.Message(nil), in.msgs...)
			in.mu.Unlock()
			return out
		}
		have := len(in.msgs)
		in.mu.Unlock()
		select {
		case <-in.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("received %d messages, want %d", have, n)
		}
	}
}

func newClient(t *testing.T, url, device string, in *inbox) *client.Client {
	t.Helper()
	c := client.New(url, client.Options{DeviceID: device, Handlers: in.handlers(), ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond})
	t.Cleanup(c.Close)
	return c
}

func login(t *testing.T, c *client.Client, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Login(ctx, user, mint(t, user, time.Hour)); err != nil {
		t.Fatalf("Login %s: %v", user, err)
	}
}

func TestSDKEndToEnd(t *testing.T) {
	srv := startServer(t, nil)
	ctx := context.Background()
	alice := newClient(t, srv.URL(), "alice-phone", newInbox())
	login(t, alice, "alice")

	// bob is offline; alice sends three messages.
	for i := 1; i <= 3; i++ {
		if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage(fmt.Sprint("offline ", i))); err != nil {
			t.Fatal(err)
		}
	}
	bobIn := newInbox()
	bob := newClient(t, srv.URL(), "bob-phone", bobIn)
	login(t, bob, "bob")
	got := bobIn.wait(t, 3)
	if len(got) != 3 {
		t.Fatalf("bob got %d messages at login, want exactly 3", len(got))
	}
	for i, m := range got {
		if m.Text != fmt.Sprint("offline ", i+1) || m.Seq != int64(i+1) || m.From != "alice" || !bobIn.offl[i] {
			t.Errorf("message %d = %q seq %d from %s offline %v; want %q seq %d from alice, offline",
				i, m.Text, m.Seq, m.From, bobIn.offl[i], fmt.Sprint("offline ", i+1), i+1)
		}
	}

	// bob on a second device: each live message reaches both.
	bob2In := newInbox()
	bob2 := newClient(t, srv.URL(), "bob-laptop", bob2In)
	login(t, bob2, "bob")
	bob2In.wait(t, 3) // the laptop is a new device: it syncs the three too
	live, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("live"))
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*inbox{"phone": bobIn, "laptop": bob2In} {
		msgs := in.wait(t, 4)
		if m := msgs[3]; m.Text != "live" || m.Seq != 4 || in.offl[3] {
			t.Errorf("bob's %s got %q seq %d offline %v; want the live message, seq 4", name, m.Text, m.Seq, in.offl[3])
		}
	}

	// A resend with the same local ID is deduplicated.
	again := client.TextMessage("live, resent")
	again.LocalID = live.LocalID
	dup, err := alice.SendPeerMessage(ctx, "bob", again)
	if err != nil {
		t.Fatal(err)
	}
	if dup.ID != live.ID || dup.Seq != live.Seq || dup.Text != "live" {
		t.Errorf("resend returned %+v, want the original %+v", dup, live)
	}
	next, _ := alice.SendPeerMessage(ctx, "bob", client.TextMessage("after"))
	if msgs := bobIn.wait(t, 5); len(msgs) != 5 || msgs[4].Seq != 5 || next.Seq != 5 {
		t.Errorf("after a resend bob has %d messages (last seq %d), want 5 with seq 5: the resend is not delivered again", len(msgs), msgs[len(msgs)-1].Seq)
	}

	// An expired token is refused, with its own error.
	expired, _ := token.Mint(testSecret, "carol", time.Now().Add(-2*time.Hour), time.Hour)
	carol := newClient(t, srv.URL(), "carol-phone", newInbox())
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := carol.Login(lctx, "carol", expired); !errors.Is(err, client.ErrTokenExpired) {
		t.Errorf("Login with an expired token = %v, want ErrTokenExpired", err)
	}
	if carol.State() != client.StateDisconnected {
		t.Errorf("state after a refused login = %v, want disconnected", carol.State())
	}
}

// TestSDKReconnectAcrossRestart stops the server while messages flow and
// starts it again on the same address and data: the SDK reconnects and bob
// sees every message once, in order.
func TestSDKReconnectAcrossRestart(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	srv := startServerWith(t, cfg)
	cfg.Addr = srv.Addr()
	url := srv.URL()

	alice := newClient(t, url, "alice-phone", newInbox())
	login(t, alice, "alice")
	bobIn := newInbox()
	bob := newClient(t, url, "bob-phone", bobIn)
	login(t, bob, "bob")

	const n = 40
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage(fmt.Sprint(i)))
			cancel()
			if err != nil {
				done <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		done <- nil
	}()
	bobIn.wait(t, n/4)
	srv.stop(t) // clients are told to reconnect (4000)
	time.Sleep(300 * time.Millisecond)
	startServerWith(t, cfg)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	bobIn.wait(t, n)
	// A duplicate (a resync after the restart) would arrive before a
	// message sent after every other was answered.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage(fmt.Sprint(n+1))); err != nil {
		t.Fatal(err)
	}
	got := bobIn.wait(t, n+1)
	if len(got) != n+1 || got[n].Text != fmt.Sprint(n+1) {
		t.Fatalf("bob got %d messages, the last %q; want %d, the last %q (no duplicates)", len(got), got[len(got)-1].Text, n+1, fmt.Sprint(n+1))
	}
	for i, m := range got {
		if m.Text != fmt.Sprint(i+1) || m.Seq != int64(i+1) {
			t.Fatalf("message %d is %q seq %d, want %q seq %d", i, m.Text, m.Seq, fmt.Sprint(i+1), i+1)
		}
	}
	if s := bob.State(); s != client.StateConnected {
		t.Errorf("bob's state = %v, want connected", s)
	}
}
