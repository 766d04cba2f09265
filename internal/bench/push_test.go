package bench

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/push/webpush"
	"github.com/herald-im/herald/proto"
)

func TestPushSendFrameIsTheProtocol(t *testing.T) {
	b := appendPushSend(nil, 7, "bench-pr3", 42)
	f, err := proto.JSON.DecodeFrame(b)
	if err != nil {
		t.Fatalf("DecodeFrame(%s): %v", b, err)
	}
	var req proto.SendRequest
	if err := json.Unmarshal(f.Data, &req); err != nil {
		t.Fatal(err)
	}
	if f.ID != 7 || f.Op != proto.OpSend || req.To != "bench-pr3" || req.LocalID != "42" || req.Type != "text" || req.Push == nil {
		t.Fatalf("frame %s decodes to %+v %+v", b, f, req)
	}
	if err := req.Push.Validate(); err != nil {
		t.Errorf("push config %+v: %v", req.Push, err)
	}
	if got := len(req.Push.Title) + len(req.Push.Content); got < 80 || got > 120 {
		t.Errorf("title and content are %d bytes, want about 100", got)
	}
}

// TestPushAgainstAServer runs the push scenario against an in-process
// server that pushes to the bench's emulator: every acknowledged send must
// arrive exactly once, with and without an emulated round trip.
func TestPushAgainstAServer(t *testing.T) {
	if testing.Short() {
		t.Skip("a load scenario against a server: skipped under -short")
	}
	apns, err := StartEmulator("apns", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer apns.Close()
	target := startTarget(t, func(c *config.Config) { c.PushConfig = apns.ConfigFile })

	for _, tc := range []struct {
		name string
		o    PushOptions
	}{
		{"rtt 0, as fast as acked", PushOptions{Recipients: 20, Messages: 200, Senders: 4, Users: "fast"}},
		{"rtt 20ms, paced", PushOptions{Recipients: 20, Messages: 200, Senders: 4, Rate: 400, RTT: 20 * time.Millisecond, Users: "slow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Drain = 10 * time.Second
			res, err := Push(context.Background(), target, apns, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != 200 || res.Errors != 0 || res.Pushes != 200 {
				t.Errorf("sent %d, errors %d, pushes %d; want 200 sent and acknowledged", res.Sent, res.Errors, res.Pushes)
			}
			if res.Delivered != res.Pushes || res.Missed != 0 || res.Duplicated != 0 || res.Unexpected != 0 || res.EmulatorDuplicates != 0 {
				t.Errorf("result %+v: want every push delivered exactly once", res)
			}
			if res.EmulatorAccepted != res.Delivered {
				t.Errorf("emulator accepted %d, bench counted %d delivered", res.EmulatorAccepted, res.Delivered)
			}
			rtt := float64(tc.o.RTT) / 1e6
			if res.P50ms < rtt || res.P99ms < res.P50ms || res.P999ms < res.P99ms || res.P99ms > rtt+2000 {
				t.Errorf("latencies p50 %.2f p99 %.2f p999 %.2f ms: want %.0f ms <= p50 <= p99 <= p999, p99 within 2 s", res.P50ms, res.P99ms, res.P999ms, rtt)
			}
			if res.PushesPerS <= 0 || res.RTTms != rtt {
				t.Errorf("pushes/s %.0f, rtt %.0f ms: want a rate and rtt %.0f", res.PushesPerS, res.RTTms, rtt)
			}
			if _, err := os.Stat("/proc/stat"); err == nil && res.Machine == nil {
				t.Error("machine: nil, want the machine's CPU over the run")
			}
		})
	}
}

// TestPushEveryProviderExactlyOnce runs a small push bench through each
// vendor's emulator, the server configured by the push file StartEmulator
// writes: every acknowledged send must arrive exactly once, matched by its
// notification ID as that vendor carries it. Small enough for -short.
func TestPushEveryProviderExactlyOnce(t *testing.T) {
	for _, provider := range Providers {
		t.Run(provider, func(t *testing.T) {
			emu, err := StartEmulator(provider, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer emu.Close()
			target := startTarget(t, func(c *config.Config) { c.PushConfig = emu.ConfigFile })
			res, err := Push(context.Background(), target, emu, PushOptions{
				Recipients: 50, Messages: 200, Senders: 4, RTT: 5 * time.Millisecond, Drain: 10 * time.Second, Users: provider,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Provider != provider || res.Sent != 200 || res.Errors != 0 || res.Pushes != 200 {
				t.Fatalf("provider %q, sent %d, errors %d, pushes %d; want %s, 200 sent and acknowledged", res.Provider, res.Sent, res.Errors, res.Pushes, provider)
			}
			if res.Delivered != 200 || res.Missed != 0 || res.Duplicated != 0 || res.Unexpected != 0 || res.EmulatorDuplicates != 0 {
				t.Errorf("delivered %d, missed %d, duplicated %d, unexpected %d, emulator duplicates %d: want 200 delivered exactly once",
					res.Delivered, res.Missed, res.Duplicated, res.Unexpected, res.EmulatorDuplicates)
			}
			if res.EmulatorAccepted != res.Delivered || res.EmulatorRejected != 0 {
				t.Errorf("emulator accepted %d, rejected %d; bench counted %d delivered", res.EmulatorAccepted, res.EmulatorRejected, res.Delivered)
			}
			if res.P50ms < 5 || res.P99ms < res.P50ms || res.Connections < 1 {
				t.Errorf("p50 %.2f ms, p99 %.2f ms, connections %d: want p50 at least the 5 ms round trip, a connection", res.P50ms, res.P99ms, res.Connections)
			}
		})
	}
}

// A backlog that the server is still pushing when the senders are done is
// waited for, not counted missed: the drain gives up only when pushes
// stop arriving. Here 2 pushes in flight at 50 ms each take about 5 s for
// 200 messages, more than twice the drain time of 2 s. The drain is not
// shorter: on a loaded machine nothing may arrive for several hundred
// milliseconds (the first push waits for a TLS handshake).
func TestPushDrainWaitsForABacklog(t *testing.T) {
	emu, err := StartEmulator("apns", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	target := startTarget(t, func(c *config.Config) { c.PushConfig, c.PushInFlight = emu.ConfigFile, 2 })
	const drain = 2 * time.Second
	res, err := Push(context.Background(), target, emu, PushOptions{
		Recipients: 20, Messages: 200, Senders: 4, RTT: 50 * time.Millisecond, Drain: drain, Users: "backlog",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pushes != 200 || res.Delivered != 200 || res.Missed != 0 {
		t.Fatalf("pushes %d, delivered %d, missed %d: want all 200 delivered after the backlog drained", res.Pushes, res.Delivered, res.Missed)
	}
	if res.DurationSec < 2*drain.Seconds() {
		t.Errorf("pushes took %.2fs: want a backlog over twice the %v drain (about 5 s)", res.DurationSec, drain)
	}
}

// The notification IDs of every vendor match the one Herald derives,
// whatever the case and dashes; anything else matches nothing.
func TestNotifKeyNormalises(t *testing.T) {
	id := push.NotificationID("p1", 42) // upper case, dashes: APNs, FCM, HMS
	want, ok := notifKey(id)
	if !ok {
		t.Fatalf("notifKey(%q) is not a key", id)
	}
	for _, form := range []string{strings.ToLower(id), strings.ReplaceAll(id, "-", ""), webpush.Topic("", id)} {
		if got, ok := notifKey(form); !ok || got != want {
			t.Errorf("notifKey(%q) = %x, %v; want %x as for %q", form, got, ok, want, id)
		}
	}
	for _, bad := range []string{"", id[:35], id + "0", strings.Replace(id, "A", "G", 1) + "G", "not-an-id"} {
		if _, ok := notifKey(bad); ok {
			t.Errorf("notifKey(%q) is a key, want none", bad)
		}
	}
}

// TestGroupAgainstAServer runs the group scenario: every acknowledged
// message reaches every online member once and plans one push per offline
// device, each of which the emulator receives once.
func TestGroupAgainstAServer(t *testing.T) {
	if testing.Short() {
		t.Skip("a load scenario against a server: skipped under -short")
	}
	apns, err := StartEmulator("apns", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer apns.Close()
	target := startTarget(t, func(c *config.Config) { c.PushConfig = apns.ConfigFile })
	res, err := Group(context.Background(), target, apns, GroupOptions{
		Members: 50, Online: 0.4, Devices: 0.5, Senders: 2, Rate: 40, Duration: time.Second, Users: "grp",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Online != 19 || res.OfflineDevs != 15 {
		t.Fatalf("online %d, offline devices %d; want 19 and 15 of 48 members", res.Online, res.OfflineDevs)
	}
	if res.Acked == 0 || res.Errors != 0 || res.Acked != res.Sent {
		t.Fatalf("sent %d, acked %d, errors %d", res.Sent, res.Acked, res.Errors)
	}
	if res.Deliveries != res.Acked*19 || res.Lost != 0 || res.Duplicated != 0 {
		t.Errorf("result %+v: want every message delivered once to each of 19 members", res)
	}
	if res.PushesQueued != res.Acked*15 {
		t.Errorf("pushes queued %d, want %d (one per offline device per message)", res.PushesQueued, res.Acked*15)
	}
	if res.P50ms <= 0 || res.P99ms < res.P50ms || res.DeliveriesPS <= 0 {
		t.Errorf("p50 %.2f p99 %.2f deliveries/s %.0f", res.P50ms, res.P99ms, res.DeliveriesPS)
	}
	var bySecond int64
	for _, s := range res.BySecond {
		bySecond += s.Count
	}
	if bySecond != res.Deliveries {
		t.Errorf("by_second %+v counts %d deliveries, want the %d of the run", res.BySecond, bySecond, res.Deliveries)
	}
	if _, err := os.Stat("/proc/stat"); err == nil && res.Machine == nil {
		t.Error("machine: nil, want the machine's CPU over the run")
	}
	// Group waits for the pushes planned before it reports.
	if res.PushesSent != res.PushesQueued || res.PushesDup != 0 {
		t.Errorf("pushes sent %d (duplicates %d), want %d once each", res.PushesSent, res.PushesDup, res.PushesQueued)
	}
	if st := apns.Stats(); st.Accepted != res.PushesSent || st.Duplicates != 0 {
		t.Errorf("emulator accepted %d (duplicates %d), want the %d reported", st.Accepted, st.Duplicates, res.PushesSent)
	}
	if res.PushesPerSec <= 0 {
		t.Errorf("pushes/s %.0f for %d pushes", res.PushesPerSec, res.PushesSent)
	}
}

// TestPushEmulatorProcess runs the push scenario with the emulator in a
// child process, as `herald bench push` does: receipts cross the pipe
// exactly once each, the child's stats and Web Push subscriptions are
// reached through it, and its CPU is reported apart from the server's.
func TestPushEmulatorProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the herald binary: skipped under -short")
	}
	exe, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	for _, provider := range []string{"apns", "webpush"} {
		t.Run(provider, func(t *testing.T) {
			emu, err := StartEmulatorProcess(context.Background(), exe, provider, 0, 0, "", os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			defer emu.Close()
			if emu.PID == 0 || emu.APNs != nil {
				t.Fatalf("PID %d, in-process emulator %v: want a child process only", emu.PID, emu.APNs)
			}
			target := startTarget(t, func(c *config.Config) { c.PushConfig = emu.ConfigFile })
			res, err := Push(context.Background(), target, emu, PushOptions{
				// Enough pushes for the child's CPU to show in /proc, which
				// counts in 10 ms ticks (~12 µs per push here).
				Recipients: 20, Messages: 3000, Senders: 4, RTT: 5 * time.Millisecond, Drain: 10 * time.Second, Users: "child" + provider,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Pushes != 3000 || res.Delivered != 3000 || res.Missed != 0 || res.Duplicated != 0 || res.Unexpected != 0 {
				t.Errorf("pushes %d, delivered %d, missed %d, duplicated %d, unexpected %d: want 3000 delivered exactly once",
					res.Pushes, res.Delivered, res.Missed, res.Duplicated, res.Unexpected)
			}
			if res.EmulatorAccepted != 3000 || res.RTTms != 5 || res.P50ms < 5 {
				t.Errorf("emulator accepted %d, rtt %.0f ms, p50 %.2f ms: want 3000 accepted after the child's 5 ms delay", res.EmulatorAccepted, res.RTTms, res.P50ms)
			}
			if res.EmulatorCPUusPerPush <= 0 || res.ServerCPUusPerPush != 0 {
				// startTarget runs the server in this process: no PID, no server figure.
				t.Errorf("emulator CPU %.1f µs/push, server %.1f: want the child's figure only", res.EmulatorCPUusPerPush, res.ServerCPUusPerPush)
			}
		})
	}
}
