package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"github.com/herald-im/herald/proto"
)

// TestResyncAfterSIGKILLShowsNothingTwice: bob's phone receives live
// traffic, acknowledging each message, when the server is SIGKILLed (its
// last second of acks unsaved). After the restart:
//   - the SDK app, which reconnects by itself, is shown every stored
//     message exactly once and in order;
//   - a login that names how far the device got (its cursor, as the SDK
//     sends on reconnect) is synced exactly what follows, nothing twice;
//   - a login without one is synced from the last saved ack: never past
//     what the phone acknowledged, and nothing missing up to the newest.
//
// The SDK drops what it has seen, so the raw logins are what check the
// server. Both embedded stores.
func TestResyncAfterSIGKILLShowsNothingTwice(t *testing.T) {
	skipUnderShort(t)
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) { testResyncAfterSIGKILL(t, engine) })
	}
}

func testResyncAfterSIGKILL(t *testing.T, engine string) {
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	addr, data := freeAddr(t), t.TempDir()
	url := "ws://" + addr + proto.Path
	cmd := startProcess(t, bin, addr, data, "--store", engine)

	var mu sync.Mutex
	bobIn := newInbox()
	bob := newClient(t, url, "bob-app", bobIn)
	login(t, bob, "bob")
	// bob's phone: a raw session that acknowledges each message it reads.
	phone := dialRaw(t, url)
	phone.login("bob", "phone")
	var seen []int64
	phoneDone := make(chan struct{})
	go func() {
		defer close(phoneDone)
		for {
			b, err := wsutil.ReadServerText(phone.conn)
			if err != nil {
				return
			}
			f, err := proto.JSON.DecodeFrame(b)
			if err != nil || f.Ev != proto.EvMessage {
				continue
			}
			var m proto.Message
			json.Unmarshal(f.Data, &m)
			mu.Lock()
			seen = append(seen, m.Seq)
			mu.Unlock()
			ack, _ := json.Marshal(proto.AckRequest{ConvType: "peer", ConvID: "alice", Seq: m.Seq})
			b, _ = proto.JSON.EncodeFrame(nil, &proto.Frame{Op: proto.OpAck, Data: ack})
			if wsutil.WriteClientText(phone.conn, b) != nil {
				return
			}
		}
	}()

	// alice sends, pipelined, until the server dies; acked records the
	// seq of every send answered.
	alice := dialRaw(t, url)
	alice.login("alice", "phone")
	acked := map[int64]bool{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			b, err := wsutil.ReadServerText(alice.conn)
			if err != nil {
				return
			}
			f, err := proto.JSON.DecodeFrame(b)
			if err != nil || f.ID == 0 || f.Err != nil {
				continue
			}
			var r proto.SendReply
			json.Unmarshal(f.Data, &r)
			mu.Lock()
			acked[r.Message.Seq] = true
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			data, _ := json.Marshal(text("bob", fmt.Sprint(i), fmt.Sprint(i)))
			b, _ := proto.JSON.EncodeFrame(nil, &proto.Frame{ID: uint64(i), Op: proto.OpSend, Data: data})
			if wsutil.WriteClientText(alice.conn, b) != nil {
				return
			}
			time.Sleep(5 * time.Millisecond) // under the rate limit
		}
	}()
	bobIn.wait(t, 300) // 1.5 s of traffic at least: acks were saved (every second) meanwhile
	for {              // and the phone has read some too
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	wg.Wait()
	<-phoneDone
	startProcess(t, bin, addr, data, "--store", engine)

	// A last message, sent once the server is back: bob's client has
	// reconnected and resynced when it shows it.
	again := dialRaw(t, url)
	again.login("alice", "phone")
	var last proto.SendReply
	again.call(proto.OpSend, text("bob", "last", "last"), &last)
	n := int(last.Message.Seq)
	var got []int64
	for want := 1; ; want = len(got) + 1 {
		msgs := bobIn.wait(t, want)
		got = got[:0]
		for _, m := range msgs {
			got = append(got, m.Seq)
		}
		if slices.Contains(got, int64(n)) {
			break
		}
	}
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("bob was shown seq %d as message %d, want %d (shown %v ...)", s, i+1, i+1, got[max(i-3, 0):min(i+5, len(got))])
		}
	}
	if len(got) != n {
		t.Fatalf("bob was shown %d messages, want %d", len(got), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for s := range acked {
		if s > int64(n) {
			t.Errorf("acknowledged seq %d is past the last stored (%d)", s, n)
		}
	}
	if len(seen) == 0 || seen[len(seen)-1] != int64(len(seen)) {
		t.Fatalf("bob's phone read %d messages before the kill, the last seq %v; want 1.. in order", len(seen), seen[max(len(seen)-1, 0):])
	}
	had := int64(len(seen))

	// Without a cursor: from the last saved ack, which the crash may have
	// left behind what the phone acknowledged, but never ahead of it.
	fresh := seqs(dialRawLogin(t, url, nil))
	if len(fresh) == 0 || fresh[0] < 1 || fresh[0] > had+1 || fresh[len(fresh)-1] != int64(n) || int64(len(fresh)) != int64(n)-fresh[0]+1 {
		t.Errorf("a login without a cursor synced %d messages from seq %v to %v; want from at most %d, each once, to %d",
			len(fresh), fresh[:min(1, len(fresh))], fresh[max(len(fresh)-1, 0):], had+1, n)
	}
	if len(fresh) > 0 && fresh[0] == 1 {
		t.Errorf("a login without a cursor synced from seq 1: none of the phone's %d acks, over 1.5 s, was saved before the kill", had)
	}
	// With the phone's cursor: exactly what follows it.
	resumed := seqs(dialRawLogin(t, url, []proto.Cursor{{ConvType: "peer", ConvID: "alice", Seq: had}}))
	if int64(len(resumed)) != int64(n)-had || (len(resumed) > 0 && resumed[0] != had+1) {
		t.Errorf("a login with cursor %d synced %d messages from %v; want the %d after it", had, len(resumed), resumed[:min(1, len(resumed))], int64(n)-had)
	}
	t.Logf("%s: %d sends acknowledged before the kill, the phone had read %d, a fresh login synced from %v; %d stored",
		engine, len(acked), had, fresh[:min(1, len(fresh))], n)
}

// dialRawLogin logs bob's phone in on a new connection, naming cursors,
// and returns what its sync carried.
func dialRawLogin(t *testing.T, url string, cursors []proto.Cursor) []proto.Message {
	t.Helper()
	c := dialRaw(t, url)
	c.call(proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: "bob", Token: mint(t, "bob", time.Hour), DeviceID: "phone", Cursors: cursors}, nil)
	var synced []proto.Message
	for {
		f := c.until(func(f proto.Frame) bool { return f.Ev == proto.EvSync || f.Ev == proto.EvSyncDone })
		if f.Ev == proto.EvSyncDone {
			c.conn.Close()
			return synced
		}
		var ev proto.SyncEvent
		json.Unmarshal(f.Data, &ev)
		synced = append(synced, ev.Messages...)
	}
}
