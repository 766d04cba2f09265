package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// loginApp is the app the conn scenario's devices register for: any bundle
// ID is accepted by the built-in emulators a bench server pushes to.
const loginApp = "com.herald.bench.conn"

// loginDevice is what a phone does when it comes online: connect, log in,
// register its push token (as the SDK does after every login; not when
// pushToken is empty) and wait for the end of the offline sync. It returns
// the logged-in client and the push ID the server gave the token.
func loginDevice(ctx context.Context, t *Target, user, pushToken string) (*client, string, error) {
	d := ws.Dialer{Protocols: []string{proto.Subprotocol}, Timeout: 10 * time.Second, NetDial: t.dial}
	conn, br, _, err := d.Dial(ctx, t.URL)
	if err != nil {
		return nil, "", err
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	c := &client{conn: conn, br: br}
	fail := func(err error) (*client, string, error) {
		conn.Close()
		return nil, "", fmt.Errorf("login %s: %w", user, err)
	}
	tok, err := token.Mint(t.Secret, user, time.Now(), 2*time.Hour)
	if err != nil {
		return fail(err)
	}
	loginID, err := c.request(proto.OpLogin, proto.LoginRequest{Version: proto.Version, UserID: user, Token: tok, DeviceID: "bench"}, true)
	if err != nil {
		return fail(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var regID uint64
	var pushID string
	synced := false
	for !synced || (pushToken != "" && pushID == "") {
		f, err := c.read()
		if err != nil {
			return fail(err)
		}
		if f.Err != nil {
			return fail(fmt.Errorf("%s: %s", f.Err.Code, f.Err.Message))
		}
		switch {
		case f.Ev == proto.EvSyncDone:
			synced = true
		case f.ID == loginID && regID == 0 && pushToken != "":
			regID, err = c.request(proto.OpRegisterPush, proto.RegisterPushRequest{
				Provider: "apns", Token: pushToken, App: loginApp, Environment: "production",
			}, true)
			if err != nil {
				return fail(err)
			}
		case f.ID == regID && regID != 0:
			var reply proto.RegisterPushReply
			if err := json.Unmarshal(f.Data, &reply); err != nil {
				return fail(fmt.Errorf("register_push reply: %w", err))
			}
			if reply.PushID == "" {
				return fail(fmt.Errorf("register_push: empty push ID"))
			}
			pushID = reply.PushID
		}
	}
	conn.SetReadDeadline(time.Time{})
	return c, pushID, nil
}

// benchPushToken is user i's APNs device token: 32 bytes in hex, distinct
// per user.
func benchPushToken(i int) string {
	return fmt.Sprintf("b0%062x", i)
}

// loginStats gathers login durations (connect to synced, push registered).
type loginStats struct {
	mu  sync.Mutex
	dur []time.Duration
}

func (s *loginStats) add(d time.Duration) {
	s.mu.Lock()
	s.dur = append(s.dur, d)
	s.mu.Unlock()
}

// percentiles returns p50 and p99 in milliseconds.
func (s *loginStats) percentiles() (p50, p99 float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.dur) == 0 {
		return 0, 0
	}
	sort.Slice(s.dur, func(i, j int) bool { return s.dur[i] < s.dur[j] })
	at := func(q float64) float64 {
		return float64(s.dur[int(q*float64(len(s.dur)-1))]) / float64(time.Millisecond)
	}
	return at(0.50), at(0.99)
}

// RestartResult is what the conn scenario's --restart measured: the server
// stopped (SIGTERM) under every session, started again on the same data
// folder and address, and the sessions coming back by themselves, each
// with the SDK's reconnect backoff.
type RestartResult struct {
	StopMs     float64 `json:"stop_ms"`      // SIGTERM to the old process's exit
	ReadyMs    float64 `json:"ready_ms"`     // new process started to /readyz answering
	BackSec    float64 `json:"back_s"`       // new process started to the last session logged in and synced
	Back       int     `json:"back"`         // sessions back within the deadline
	NotBack    int     `json:"not_back"`     // sessions not back within the deadline: must be 0
	Attempts   int64   `json:"attempts"`     // connection attempts, all sessions together
	LoginP50ms float64 `json:"login_p50_ms"` // the attempt that succeeded: connect to synced
	LoginP99ms float64 `json:"login_p99_ms"`
	// ServerCPUSec is the new process's CPU time (user plus system) from
	// its start to the end of the wait for the sessions.
	ServerCPUSec float64 `json:"server_cpu_s"`
}

// reconnect backoff as the SDK's defaults (client.Options ReconnectMin and
// ReconnectMax): attempt n waits a random duration in [0, min(max, min*2^n)].
const (
	reconnectMin = 500 * time.Millisecond
	reconnectMax = 30 * time.Second
)

func reconnectDelay(n int) time.Duration {
	ceil := reconnectMax
	if n < 16 {
		if d := reconnectMin << n; d < ceil {
			ceil = d
		}
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

// restartUnder restarts t's server while clients are logged in, and waits
// (at most deadline) for each client to reconnect as the SDK does: once
// closed[i] says its connection ended, dial and log in again with backoff
// and full jitter, and sync (the SDK's reconnect does not register its push
// token again: an explicit Login does). clients[i] and closed[i] are
// replaced by the new connection's.
func restartUnder(ctx context.Context, t *Target, clients []*client, closed []chan struct{}, deadline time.Duration) (RestartResult, error) {
	var res RestartResult
	var stats loginStats
	var back, attempts atomic.Int64
	var lastBack atomic.Int64 // unix nanos of the latest session back
	var wg sync.WaitGroup
	wctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	sessions := 0
	for i, c := range clients {
		if c == nil {
			continue
		}
		sessions++
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-closed[i]: // the server closed it
			case <-wctx.Done():
				return
			}
			c.close()
			user := fmt.Sprintf("bench-idle-%d", i)
			for n := 0; ; n++ {
				select { // the SDK waits before every attempt, the first included
				case <-time.After(reconnectDelay(n)):
				case <-wctx.Done():
					return
				}
				attempts.Add(1)
				t0 := time.Now()
				nc, _, err := loginDevice(wctx, t, user, "")
				if err != nil {
					continue
				}
				if wctx.Err() != nil { // back, but after the deadline
					nc.close()
					return
				}
				stats.add(time.Since(t0))
				now := time.Now().UnixNano()
				for old := lastBack.Load(); now > old && !lastBack.CompareAndSwap(old, now); old = lastBack.Load() {
				}
				back.Add(1)
				nc.onFrame = func([]byte) {}
				done := make(chan struct{})
				go func() { nc.readLoop(); close(done) }()
				closed[i] = done
				clients[i] = nc
				return
			}
		}()
	}
	stop, start, ready, err := t.restart(ctx)
	if err != nil {
		cancel()
		wg.Wait()
		return res, fmt.Errorf("restart: %w", err)
	}
	wg.Wait()
	res.ServerCPUSec = t.CPU().Seconds()
	res.StopMs = float64(stop) / float64(time.Millisecond)
	res.ReadyMs = float64(ready.Sub(start)) / float64(time.Millisecond)
	res.Back = int(back.Load())
	res.NotBack = sessions - res.Back
	res.Attempts = attempts.Load()
	if l := lastBack.Load(); l > 0 {
		res.BackSec = time.Unix(0, l).Sub(start).Seconds()
	}
	res.LoginP50ms, res.LoginP99ms = stats.percentiles()
	return res, nil
}
