package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/client"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/console"
	"github.com/herald-im/herald/internal/store"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
	"github.com/herald-im/herald/token"
)

// hookSink is one node's callback receiver: the events it got, by the
// counter that ends their ID (each node numbers its events 1, 2, 3 ...).
type hookSink struct {
	mu     sync.Mutex
	events map[int]map[string]any
}

func newHookSink(t *testing.T) (*hookSink, string) {
	h := &hookSink{events: map[int]map[string]any{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var e map[string]any
		if json.Unmarshal(body, &e) == nil {
			id, _ := e["id"].(string)
			n, err := strconv.Atoi(id[strings.LastIndex(id, "_")+1:])
			if err == nil {
				h.mu.Lock()
				h.events[n] = e
				h.mu.Unlock()
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// upTo waits until the sink holds every event numbered 1 to the one whose
// type and message local ID match, and returns them in order.
func (h *hookSink) upTo(t *testing.T, typ, localID string) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		last := 0
		for n, e := range h.events {
			if m, _ := e["message"].(map[string]any); e["type"] == typ && m != nil && m["local_id"] == localID {
				last = n
			}
		}
		var all []map[string]any
		for n := 1; n <= last && h.events[n] != nil; n++ {
			all = append(all, h.events[n])
		}
		h.mu.Unlock()
		if last > 0 && len(all) == last {
			return all
		}
		if time.Now().After(deadline) {
			t.Fatalf("the callbacks up to %s %s did not all arrive", typ, localID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTwoNodesShared: two nodes on one PostgreSQL database and NATS. A
// signed API request accepted by node A is refused as a replay by node B;
// a console session opened on A is valid on B, and a logout on A ends it
// on B; each node counts two nodes for the API's rate split; and a
// message sent on B and delivered live on A fires its callback on B only.
func TestTwoNodesShared(t *testing.T) {
	busURL := natsForTest(t)
	storeURL := pgtest.Schema(t, pgtest.Database(t, "to run the two-node test on PostgreSQL"))
	secret := []byte("0123456789abcdef0123456789abcdef")
	prefix := "test.shared." + strconv.Itoa(os.Getpid()) + "." + strconv.FormatInt(time.Now().UnixNano(), 36) // the two nodes' own
	start := func(node, hookURL string) *Server {
		cfg := config.Default()
		cfg.Addr, cfg.DataDir, cfg.PushEmulatorAddr = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
		cfg.Bus, cfg.NodeID, cfg.Store, cfg.WebhookURL = busURL, node, storeURL, hookURL
		cfg.BusPrefix = prefix
		cfg.APIRate, cfg.APIBurst = 2, 2 // the cluster's: 1 a second, burst 1, on each of two nodes
		srv, err := New(context.Background(), cfg, secret, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv
	}
	hooksA, urlA := newHookSink(t)
	hooksB, urlB := newHookSink(t)
	a, b := start("node-a", urlA), start("node-b", urlB)
	base := func(s *Server) string { return "http://" + s.Addr() }

	send := func(s *Server, ts int64, nonce string) (int, apiclient.ErrorBody) {
		path := apiclient.PathPushStatus
		req, _ := http.NewRequest("GET", base(s)+path, nil)
		req.Header.Set(apiclient.HeaderApp, apiclient.DefaultAppID)
		req.Header.Set(apiclient.HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(apiclient.HeaderNonce, nonce)
		req.Header.Set(apiclient.HeaderSignature, apiclient.Sign(secret, apiclient.DefaultAppID, ts, nonce, "GET", path, nil))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e apiclient.ErrorBody
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}

	t.Run("replay", func(t *testing.T) {
		ts, nonce := time.Now().Unix(), apiclient.NewNonce()
		if st, e := send(a, ts, nonce); st != http.StatusOK {
			t.Fatalf("node A: %d %+v", st, e)
		}
		if st, e := send(b, ts, nonce); st != http.StatusUnauthorized || e.Reason != apiclient.ReasonNonceReused {
			t.Fatalf("the same request on node B: %d %+v, want 401 %s", st, e, apiclient.ReasonNonceReused)
		}
	})

	t.Run("console", func(t *testing.T) {
		jar := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		admin, err := token.MintAdmin(secret, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := jar.PostForm(base(a)+console.Prefix+"login", url.Values{"token": {admin}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var cookie *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == console.CookieName {
				cookie = c
			}
		}
		if cookie == nil {
			t.Fatalf("login on node A: %d without a session cookie", resp.StatusCode)
		}
		get := func(s *Server) int {
			req, _ := http.NewRequest("GET", base(s)+console.Prefix+"api/figures", nil)
			req.AddCookie(cookie)
			resp, err := jar.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if st := get(b); st != http.StatusOK {
			t.Fatalf("node B with node A's console session: %d, want 200", st)
		}
		sum := sha256.Sum256([]byte(cookie.Value))
		e, err := a.store.GetShared(context.Background(), store.SharedConsoleSession, hex.EncodeToString(sum[:]), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", base(a)+console.Prefix+"logout", nil)
		req.AddCookie(cookie)
		csrf, _, _ := strings.Cut(string(e.Value), " ") // the CSRF token, then the session's slot
		req.Header.Set("X-CSRF-Token", csrf)
		if resp, err = jar.Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if st := get(b); st != http.StatusUnauthorized {
			t.Fatalf("node B after the logout on node A: %d, want 401", st)
		}
	})

	t.Run("node count", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for a.cluster.nodes.Count() != 2 || b.cluster.nodes.Count() != 2 {
			if time.Now().After(deadline) {
				t.Fatalf("live nodes counted: A %d, B %d; want 2 each", a.cluster.nodes.Count(), b.cluster.nodes.Count())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	// Each node's bucket is half the cluster's once it counts two nodes:
	// the 429 says so.
	t.Run("rate split", func(t *testing.T) {
		for range 5 {
			st, e := send(a, time.Now().Unix(), apiclient.NewNonce())
			if st == http.StatusOK {
				continue
			}
			if st != http.StatusTooManyRequests || !strings.Contains(e.Message, "this node takes 1 a second (burst 1)") {
				t.Fatalf("over the rate on node A: %d %+v, want 429 naming the node's share of two", st, e)
			}
			return
		}
		t.Fatal("node A took 5 requests at once with a cluster burst of 2")
	})

	t.Run("callbacks", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		login := func(s *Server, user string, h client.Handlers) *client.Client {
			c := client.New(s.URL(), client.Options{DeviceID: "phone", Handlers: h})
			t.Cleanup(c.Close)
			tok, _ := token.Mint(secret, user, time.Now(), time.Hour)
			if err := c.Login(ctx, user, tok); err != nil {
				t.Fatal(err)
			}
			return c
		}
		got := make(chan *herald.Message, 4)
		login(a, "bob", client.Handlers{MessageReceived: func(msgs []*herald.Message, _ client.ReceiveInfo) {
			for _, m := range msgs {
				got <- m
			}
		}})
		alice := login(b, "alice", client.Handlers{})
		carol := login(a, "carol", client.Handlers{})
		sent, err := alice.SendPeerMessage(ctx, "bob", client.TextMessage("from node B"))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.LocalID != sent.LocalID {
				t.Fatalf("bob got %q, want alice's", m.LocalID)
			}
		case <-ctx.Done():
			t.Fatal("bob on node A did not get alice's message from node B")
		}
		// A barrier: carol's message, sent on node A after bob got alice's.
		// Node A numbers its events in emission order, so once it has
		// delivered every event up to carol's, any callback of alice's
		// message there would be among them.
		mark, err := carol.SendPeerMessage(ctx, "dave", client.TextMessage("barrier"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range hooksA.upTo(t, "message_sent", mark.LocalID) {
			if m, _ := e["message"].(map[string]any); e["type"] == "message_sent" && m["local_id"] == sent.LocalID {
				t.Fatalf("node A fired message_sent for alice's message, sent on node B: %v", e)
			}
		}
		fromB := 0
		for _, e := range hooksB.upTo(t, "message_sent", sent.LocalID) {
			if m, _ := e["message"].(map[string]any); e["type"] == "message_sent" && m["local_id"] == sent.LocalID {
				fromB++
			}
		}
		if fromB != 1 {
			t.Fatalf("node B fired message_sent for alice's message %d times, want once", fromB)
		}
	})
}
