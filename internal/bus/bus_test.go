package bus

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pair opens a publisher and a subscriber bus: on NATS two connections
// (two nodes), in process the same bus. pending bounds the subscriber's
// queues (0: default).
type pair func(t *testing.T, pending int) (pub, sub Bus)

func TestLocal(t *testing.T) {
	testConformance(t, func(t *testing.T, pending int) (Bus, Bus) {
		b := NewLocal(pending)
		t.Cleanup(func() { b.Close() })
		return b, b
	})
}

// natsURL is the NATS server of the tests: HERALD_TEST_NATS (CI sets it).
func natsURL(t *testing.T) string {
	u := os.Getenv("HERALD_TEST_NATS")
	if u == "" {
		t.Skip("HERALD_TEST_NATS is not set (e.g. nats://127.0.0.1:4222): the NATS bus is not tested")
	}
	return u
}

func TestNATS(t *testing.T) {
	url := natsURL(t)
	testConformance(t, func(t *testing.T, pending int) (Bus, Bus) {
		open := func(name string) Bus {
			b, err := DialNATS(url, NATSOptions{Name: name, Pending: pending})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			waitFor(t, "connected to NATS", func() bool { return b.State() == Connected })
			return b
		}
		return open("pub"), open("sub")
	})
}

// uniq makes subjects unique per test, so runs sharing a NATS server do
// not hear each other.
func uniq(t *testing.T) string {
	return "test." + strconv.FormatInt(time.Now().UnixNano(), 36) + "." + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) handle(subject string, data []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, subject+"="+string(data))
	r.mu.Unlock()
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func testConformance(t *testing.T, open pair) {
	t.Run("PublishOrderKept", func(t *testing.T) {
		pub, sub := open(t, 0)
		subj := uniq(t)
		var r recorder
		if _, err := sub.Subscribe(subj, r.handle); err != nil {
			t.Fatal(err)
		}
		const n = 2000
		for i := range n {
			if err := pub.Publish(subj, []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "every message arrived", func() bool { return len(r.got()) >= n })
		for i, m := range r.got() {
			if want := subj + "=" + strconv.Itoa(i); m != want {
				t.Fatalf("message %d: got %q, want %q", i, m, want)
			}
		}
	})
	t.Run("Wildcards", func(t *testing.T) {
		pub, sub := open(t, 0)
		base := uniq(t)
		var all, one, end recorder
		for subj, r := range map[string]*recorder{base + ".>": &all, base + ".*.x": &one, base + ".end": &end} {
			if _, err := sub.Subscribe(subj, r.handle); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range []string{"a.x", "a.b.x", "b", "end"} {
			pub.Publish(base+"."+s, []byte("1"))
		}
		pub.Publish("other."+base, []byte("1"))
		waitFor(t, "the last message arrived", func() bool { return len(end.got()) == 1 && len(all.got()) == 4 })
		if got, want := fmt.Sprint(one.got()), fmt.Sprint([]string{base + ".a.x=1"}); got != want {
			t.Errorf("%s.*.x got %s, want %s", base, got, want)
		}
		if got := len(all.got()); got != 4 {
			t.Errorf("%s.> got %d messages, want 4", base, got)
		}
	})
	t.Run("NothingAfterUnsubscribe", func(t *testing.T) {
		pub, sub := open(t, 0)
		subj := uniq(t)
		var gone, marker recorder
		s, err := sub.Subscribe(subj, gone.handle)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sub.Subscribe(subj, marker.handle); err != nil {
			t.Fatal(err)
		}
		if err := s.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
		for range 100 {
			pub.Publish(subj, []byte("x"))
		}
		waitFor(t, "the other subscription got them", func() bool { return len(marker.got()) == 100 })
		if n := len(gone.got()); n != 0 {
			t.Errorf("the unsubscribed handler got %d messages, want 0", n)
		}
	})
	t.Run("DropsCounted", func(t *testing.T) {
		const pending, n = 10, 200
		pub, sub := open(t, pending)
		subj := uniq(t)
		release := make(chan struct{})
		var once sync.Once
		unblock := func() { once.Do(func() { close(release) }) }
		t.Cleanup(unblock) // before the buses close: Close waits for the handler
		var r recorder
		if _, err := sub.Subscribe(subj, func(s string, d []byte) {
			<-release
			r.handle(s, d)
		}); err != nil {
			t.Fatal(err)
		}
		before := sub.Stats()
		for i := range n {
			pub.Publish(subj, []byte(strconv.Itoa(i)))
		}
		waitFor(t, "the full queue dropped", func() bool { return sub.Stats().Dropped-before.Dropped >= n-pending-1 })
		unblock()
		waitFor(t, "every message handled or dropped", func() bool {
			return int64(len(r.got()))+sub.Stats().Dropped-before.Dropped == n
		})
		if got := sub.Stats().Received - before.Received; got != int64(len(r.got())) {
			t.Errorf("Stats.Received grew by %d, want %d", got, len(r.got()))
		}
	})
	t.Run("ClosedRefuses", func(t *testing.T) {
		_, sub := open(t, 0)
		states := make(chan State, 4)
		sub.Watch(func(s State) { states <- s })
		if got := sub.State(); got != Connected {
			t.Fatalf("State before Close: got %s, want connected", got)
		}
		before := sub.Stats().Dropped
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sub.Publish(uniq(t), []byte("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("Publish after Close: got %v, want ErrClosed", err)
		}
		if got := sub.Stats().Dropped - before; got != 1 {
			t.Errorf("a publish refused after Close: Dropped grew by %d, want 1", got)
		}
		if _, err := sub.Subscribe(uniq(t), func(string, []byte) {}); !errors.Is(err, ErrClosed) {
			t.Errorf("Subscribe after Close: got %v, want ErrClosed", err)
		}
		// A Connected may come first: NATS reports its first connection
		// asynchronously.
	wait:
		for {
			select {
			case s := <-states:
				if s == Closed {
					break wait
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Watch did not report the close")
			}
		}
		if got := sub.State(); got != Closed {
			t.Errorf("State after Close: got %s, want closed", got)
		}
	})
}

// TestNATSStartsWithoutServer: a node starts while NATS is down (a port
// nothing listens on): the bus is Disconnected, publishes are buffered
// rather than refused, and Close ends it.
func TestNATSStartsWithoutServer(t *testing.T) {
	b, err := DialNATS("nats://user:hunter2@127.0.0.1:1", NATSOptions{ReconnectWait: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.State(); got != Disconnected {
		t.Errorf("State: got %s, want disconnected", got)
	}
	if err := b.Publish("x", []byte("y")); err != nil {
		t.Errorf("Publish while disconnected: got %v, want buffered", err)
	}
	if got := b.MaxPayload(); got != DefaultMaxPayload {
		t.Errorf("MaxPayload before any connection: %d, want %d", got, DefaultMaxPayload)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNATSNoEcho: with NoEcho a bus's subscription does not get what the
// bus published, and another connection's does. The proof that the echo
// did not come is a message published by the other connection after it
// received the first: NATS routed the first before it, so an echo would
// have reached the subscription first.
func TestNATSNoEcho(t *testing.T) {
	url := natsURL(t)
	quiet, err := DialNATS(url, NATSOptions{Name: "quiet", NoEcho: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { quiet.Close() })
	other, err := DialNATS(url, NATSOptions{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	waitFor(t, "connected to NATS", func() bool { return quiet.State() == Connected && other.State() == Connected })
	subject := uniq(t)
	got := make(chan string, 10)
	if _, err := quiet.Subscribe(subject, func(_ string, data []byte) { got <- string(data) }); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Subscribe(subject, func(_ string, data []byte) {
		if string(data) == "from quiet" {
			other.Publish(subject, []byte("from other"))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := quiet.Publish(subject, []byte("from quiet")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "from other" {
			t.Errorf("the NoEcho bus's subscription got %q first, want only the other connection's message", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other connection's message did not come")
	}
}

// TestNATSMaxPayload: MaxPayload is the server's limit: a payload of that
// size is published, one byte more is refused.
func TestNATSMaxPayload(t *testing.T) {
	b, err := DialNATS(natsURL(t), NATSOptions{Name: "max"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	waitFor(t, "connected to NATS", func() bool { return b.State() == Connected })
	n := b.MaxPayload()
	subject := uniq(t)
	if err := b.Publish(subject, make([]byte, n)); err != nil {
		t.Errorf("a payload of MaxPayload (%d) bytes: %v, want published", n, err)
	}
	if err := b.Publish(subject, make([]byte, n+1)); err == nil {
		t.Errorf("a payload of MaxPayload+1 (%d) bytes was published, want refused", n+1)
	}
	if got := NewLocal(0).MaxPayload(); got != LocalMaxPayload {
		t.Errorf("the in-process bus's MaxPayload: %d, want %d", got, LocalMaxPayload)
	}
}

func TestRedactHidesCredentials(t *testing.T) {
	got := Redact("nats://alice:hunter2@a:4222,nats://s3cr3t@b:4222,nats://c:4222?token=t0k")
	for _, secret := range []string{"hunter2", "alice", "s3cr3t", "t0k"} {
		if strings.Contains(got, secret) {
			t.Errorf("Redact left %q in %q", secret, got)
		}
	}
	if !strings.Contains(got, "a:4222") || !strings.Contains(got, "c:4222") {
		t.Errorf("Redact lost the hosts: %q", got)
	}
}

func TestValidateURL(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"nats://127.0.0.1:4222", true},
		{"nats://a:4222,nats://b:4222", true},
		{"tls://u:p@a:4222", true},
		{"http://a:4222", false},
		{"nats://", false},
		{"nats://u:secretpw@a:4222, http://u:secretpw@b", false},
	} {
		err := ValidateURL(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateURL(%q): got %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("ValidateURL(%q) error shows the password: %v", tc.in, err)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"a.b", "a.b", true}, {"a.b", "a.c", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true}, {"a.>", "a", false}, {"*.b", "a.b", true}, {"a", "a.b", false},
	} {
		if got := match(tc.p, tc.s); got != tc.want {
			t.Errorf("match(%q, %q): got %v, want %v", tc.p, tc.s, got, tc.want)
		}
	}
}

// TestNATSReconnects: NATS restarts under a bus; the bus reports the loss
// and the return, counts them, and its subscription receives again
// without being made anew. It runs a private nats-server (not the shared
// one, which other tests use).
func TestNATSReconnects(t *testing.T) {
	natsURL(t) // CI runs it where NATS is installed
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nats-server"); err != nil {
			t.Skip("no nats-server binary to run a private server")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", port)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	srv := start()
	b, err := DialNATS("nats://127.0.0.1:"+port, NATSOptions{ReconnectWait: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var mu sync.Mutex
	var states []State
	b.Watch(func(s State) {
		mu.Lock()
		states = append(states, s)
		mu.Unlock()
	})
	seen := func(s State) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(states, s)
	}
	waitFor(t, "connected", func() bool { return b.State() == Connected })
	var r recorder
	if _, err := b.Subscribe("t.reconnect", r.handle); err != nil {
		t.Fatal(err)
	}
	srv.Process.Kill()
	srv.Wait()
	waitFor(t, "the loss was reported", func() bool { return seen(Disconnected) && b.State() == Disconnected })
	start()
	waitFor(t, "the return was reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(states) > 0 && states[len(states)-1] == Connected && slices.Contains(states, Disconnected)
	})
	waitFor(t, "a message after the return arrived", func() bool {
		b.Publish("t.reconnect", []byte("x"))
		b.nc.Flush()
		return len(r.got()) > 0
	})
	if s := b.Stats(); s.Disconnects != 1 || s.Reconnects != 1 {
		t.Errorf("Stats: %d disconnects, %d reconnects; want 1 and 1", s.Disconnects, s.Reconnects)
	}
}
