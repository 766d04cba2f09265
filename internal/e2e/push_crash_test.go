package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// TestPushSIGKILLWithPushesInFlight kills the server, several times, while
// senders keep it saturated and pushes are in flight to APNs (the emulator,
// in this process, outlives the server). After the last restart it counts
// what each phone shows: every acknowledged message exactly once, nothing
// twice. A push whose outcome the crash lost is sent again (docs/push.md:
// at most push-in-flight per crash), with the same apns-id and collapse
// ID, so the phone replaces the first copy instead of adding a second.
//
// It logs the resends per kill: docs/benchmarks.md's crash-resend figures
// come from `go test -run TestPushSIGKILLWithPushesInFlight -v ./internal/e2e/`
// (HERALD_E2E_KILLS sets the kills per engine, default 2).
func TestPushSIGKILLWithPushesInFlight(t *testing.T) {
	skipUnderShort(t)
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) { testPushSIGKILL(t, engine) })
	}
}

func testPushSIGKILL(t *testing.T, engine string) {
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	kills := 2
	if n, err := strconv.Atoi(os.Getenv("HERALD_E2E_KILLS")); err == nil && n > 0 {
		kills = n
	}
	const (
		users     = 200
		perKill   = 2000 // pushes accepted between a start and its kill
		inFlight  = 512  // the server's default push-in-flight: the documented bound
		senders   = 8
		window    = 64 // unacknowledged sends per sender
		inboxSize = 2000
	)
	emu, file := standaloneEmulator(t, func(c *emulator.Config) { c.InboxLimit = inboxSize })
	emu.SetDelay(5 * time.Millisecond) // a round trip, so pushes are in flight
	addr, data := freeAddr(t), t.TempDir()
	url := "ws://" + addr + proto.Path
	args := []string{"--store", engine, "--push-config", file, "--sends-per-second", "100000", "--send-burst", "100000"}
	cmd := startProcess(t, bin, addr, data, args...)

	toks := make([]string, users)
	pushIDs := make(map[string]string, users) // user -> push ID
	for i := range toks {
		toks[i] = apnsToken(1000 + i)
		u := fmt.Sprintf("u%d", i)
		c := dialRaw(t, url)
		c.login(u, "phone")
		var rep proto.RegisterPushReply
		c.call(proto.OpRegisterPush, proto.RegisterPushRequest{Provider: "apns", Token: toks[i], App: testApp, Environment: "production"}, &rep)
		pushIDs[u] = rep.PushID
		c.conn.Close()
	}

	var mu sync.Mutex
	acked := make(map[int64]string) // message ID -> recipient
	next := 0                       // local IDs across restarts
	resends := make([]int64, 0, kills)
	dupsAtStart := int64(0)
	for k := 0; k < kills; k++ {
		base := emu.Stats().Accepted
		var wg sync.WaitGroup
		for s := 0; s < senders; s++ {
			c := dialRaw(t, url)
			c.login(fmt.Sprintf("sender%d", s), "desk")
			slots := make(chan struct{}, window)
			dead := make(chan struct{})
			wg.Add(2)
			go func() { // reader: record acked messages until the connection dies
				defer wg.Done()
				defer close(dead)
				for {
					b, err := wsutil.ReadServerText(c.conn)
					if err != nil {
						return
					}
					f, err := proto.JSON.DecodeFrame(b)
					if err != nil || f.ID == 0 {
						continue
					}
					<-slots
					if f.Err != nil {
						continue
					}
					var r proto.SendReply
					json.Unmarshal(f.Data, &r)
					mu.Lock()
					acked[r.Message.ID] = r.Message.To
					mu.Unlock()
				}
			}()
			go func() { // writer: pipelined sends, window at a time
				defer wg.Done()
				for i := 1; ; i++ {
					select {
					case slots <- struct{}{}:
					case <-dead:
						return
					}
					mu.Lock()
					next++
					n := next
					mu.Unlock()
					d, _ := json.Marshal(proto.SendRequest{To: fmt.Sprintf("u%d", n%users), LocalID: fmt.Sprint("m", n), Type: "text", Text: "hi",
						Push: &herald.PushConfig{Title: "t", Content: fmt.Sprint(n)}})
					b, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: uint64(i), Op: proto.OpSend, Data: d})
					if err := wsutil.WriteClientText(c.conn, b); err != nil {
						return
					}
				}
			}()
		}
		// Kill with pushes in flight at the emulator, once enough were
		// accepted since this start.
		deadline := time.Now().Add(60 * time.Second)
		for st := emu.Stats(); st.Accepted-base < perKill || st.InFlight == 0; st = emu.Stats() {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: only %d pushes accepted in 60s", k+1, st.Accepted-base)
			}
			time.Sleep(time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		wg.Wait()
		for deadline := time.Now().Add(10 * time.Second); emu.Stats().InFlight > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if k > 0 {
			resends = append(resends, emu.Stats().Duplicates-dupsAtStart)
		}
		dupsAtStart = emu.Stats().Duplicates
		cmd = startProcess(t, bin, addr, data, args...)
	}

	// After the last restart: every acknowledged message shown once.
	mu.Lock()
	want := make(map[string]map[string]int64, users) // token -> apns-id -> message
	for id, u := range acked {
		var i int
		fmt.Sscanf(u, "u%d", &i)
		if want[toks[i]] == nil {
			want[toks[i]] = make(map[string]int64)
		}
		want[toks[i]][push.NotificationID(pushIDs[u], id)] = id
	}
	nAcked := len(acked)
	mu.Unlock()
	missing := 0
	deadline := time.Now().Add(60 * time.Second)
	for _, tok := range toks {
		for {
			shown := map[string]bool{}
			for _, n := range emu.Inbox(tok) {
				shown[n.ID] = true
			}
			missing = 0
			for id := range want[tok] {
				if !shown[id] {
					missing++
				}
			}
			if missing == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if missing > 0 {
			t.Errorf("token %s…: %d acknowledged messages never shown", tok[:8], missing)
		}
	}
	// The outbox is empty once nothing is pending: then every resend has
	// arrived and the counts are final.
	waitOutboxEmpty(t, addr)
	resends = append(resends, emu.Stats().Duplicates-dupsAtStart)

	var shownTwice, arrivals, shownTotal int
	for _, tok := range toks {
		in := emu.Inbox(tok)
		shownTotal += len(in)
		seen := map[string]bool{}
		for _, n := range in {
			if seen[n.ID] {
				shownTwice++
			}
			seen[n.ID] = true
		}
		// What arrived twice (a resend) kept its apns-id and collapse ID:
		// one message, one ID.
		byMsg := map[string]string{} // herald.msg_id -> apns-id
		for _, n := range emu.Arrived(tok) {
			arrivals++
			var p struct {
				Herald struct {
					MsgID int64 `json:"msg_id"`
				} `json:"herald"`
			}
			json.Unmarshal(n.Payload, &p)
			key := fmt.Sprint(p.Herald.MsgID)
			if n.CollapseID != n.ID {
				t.Errorf("push %s for message %s has collapse ID %q, want its apns-id", n.ID, key, n.CollapseID)
			}
			if id, ok := byMsg[key]; ok && id != n.ID {
				t.Errorf("message %s reached token %s… with apns-ids %s and %s: a resend must keep its ID", key, tok[:8], id, n.ID)
			}
			byMsg[key] = n.ID
		}
	}
	if shownTwice > 0 {
		t.Errorf("%d notifications shown twice", shownTwice)
	}
	for k, n := range resends {
		if n > inFlight {
			t.Errorf("kill %d: %d pushes sent again; the documented bound is push-in-flight (%d)", k+1, n, inFlight)
		}
	}
	if nAcked < kills*perKill/2 {
		t.Errorf("only %d acknowledged messages: the test did not load the server", nAcked)
	}
	t.Logf("%s: %d kills, %d messages acknowledged, %d pushes arrived, %d shown, %d shown twice; resent per kill: %v",
		engine, kills, nAcked, arrivals, shownTotal, shownTwice, resends)
}

// waitOutboxEmpty waits until the server at addr has no push pending, in
// memory or in flight (its push status).
func waitOutboxEmpty(t *testing.T, addr string) {
	t.Helper()
	admin, err := token.MintAdmin(testSecret, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/v1/push/status", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		var st struct {
			Stats push.Stats `json:"stats"`
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil && st.Stats.Pending == 0 && st.Stats.Unrecorded == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("push status: %+v, %v; want nothing pending", st.Stats, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
