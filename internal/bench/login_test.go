package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestConnRestart: bench conn times the logins (each with a push
// registration) and, with Restart, restarts its server under the sessions;
// every session comes back by itself with the push ID it had.
func TestConnRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("a server process restarted under load: skipped under -short")
	}
	exe, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	target, err := StartServer(ctx, exe, nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Stop()
	oldPID := target.PID
	res, err := Conn(ctx, target, ConnOptions{Conns: 40, Concurrency: 8, Settle: 10 * time.Millisecond, Restart: true, RestartDeadline: 30 * time.Second, Push: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.LoginsPerSec <= 0 || res.FirstLoginsPerSec <= 0 || res.LoginP50ms <= 0 || res.LoginP99ms < res.LoginP50ms {
		t.Errorf("logins %.0f/s p50 %.1f ms p99 %.1f ms: want a rate and 0 < p50 <= p99", res.LoginsPerSec, res.LoginP50ms, res.LoginP99ms)
	}
	r := res.Restart
	if r == nil {
		t.Fatal("no restart result")
	}
	if target.PID == oldPID {
		t.Errorf("server PID still %d after the restart", oldPID)
	}
	if r.Back != 40 || r.NotBack != 0 {
		t.Errorf("restart %+v: want 40 back, none missing", *r)
	}
	if r.Attempts < 40 || r.BackSec <= 0 || r.ReadyMs <= 0 {
		t.Errorf("restart %+v: want at least one attempt per session and positive times", *r)
	}
}
