package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herald-im/herald/apiclient"
)

// signedRequest is one signed server API request, kept to be sent again
// byte for byte, as an attacker who captured it would.
type signedRequest struct {
	method, path, body string
	header             http.Header
}

func signRequest(method, path, body, nonce string, ts time.Time) signedRequest {
	h := http.Header{}
	h.Set(apiclient.HeaderApp, "herald")
	h.Set(apiclient.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(apiclient.HeaderNonce, nonce)
	h.Set(apiclient.HeaderSignature, apiclient.Sign(testSecret, "herald", ts.Unix(), nonce, method, path, []byte(body)))
	if body != "" {
		h.Set("Content-Type", "application/json")
	}
	return signedRequest{method: method, path: path, body: body, header: h}
}

// send sends r to the server at addr and returns the status and the
// error body's reason.
func (r signedRequest) send(t *testing.T, addr string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(r.method, "http://"+addr+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = r.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	var e apiclient.ErrorBody
	if resp.StatusCode != http.StatusOK {
		json.NewDecoder(resp.Body).Decode(&e)
	}
	return resp.StatusCode, e.Reason
}

// TestAPIReplayRefusedAfterRestart: a signed request accepted before a
// restart is refused as a replay after it, on the same data folder, while
// its timestamp is still inside the window; a freshly signed request is
// served at once (the journal, not a pause after the start, refuses the
// replay). Register is the request replayed: a replay would register the
// user again after the backend had unregistered them.
func TestAPIReplayRefusedAfterRestart(t *testing.T) {
	srv := startServer(t, nil)
	cfg := srv.cfg
	// A timestamp ahead of the clock (within the window) as well: a
	// request so signed must stay refused after a restart too.
	now := time.Now()
	reqs := map[string]signedRequest{
		"now":   signRequest(http.MethodPost, apiclient.PathUsers, `{"users":[{"user_id":"mallory"}]}`, "captured-nonce-0001", now),
		"ahead": signRequest(http.MethodGet, apiclient.PathPushStatus, "", "captured-nonce-0002", now.Add(2*time.Minute)),
	}
	for name, r := range reqs {
		if st, reason := r.send(t, srv.Addr()); st != http.StatusOK {
			t.Fatalf("%s: first send: %d %s, want 200", name, st, reason)
		}
		if st, reason := r.send(t, srv.Addr()); st != http.StatusUnauthorized || reason != apiclient.ReasonNonceReused {
			t.Fatalf("%s: replay before the restart: %d %q, want 401 %s", name, st, reason, apiclient.ReasonNonceReused)
		}
	}
	srv.stop(t)

	again := startServerWith(t, cfg) // same data folder
	for name, r := range reqs {
		if st, reason := r.send(t, again.Addr()); st != http.StatusUnauthorized || reason != apiclient.ReasonNonceReused {
			t.Errorf("%s: replay after the restart: %d %q, want 401 %s", name, st, reason, apiclient.ReasonNonceReused)
		}
	}
	fresh := signRequest(http.MethodGet, apiclient.PathPushStatus, "", apiclient.NewNonce(), time.Now())
	if st, reason := fresh.send(t, again.Addr()); st != http.StatusOK {
		t.Errorf("a fresh request right after the restart: %d %s, want 200", st, reason)
	}
}

// TestAPIReplayRefusedAfterSIGKILL: the same across a crash of the real
// binary: a served request's nonce was synced before it was served.
func TestAPIReplayRefusedAfterSIGKILL(t *testing.T) {
	skipUnderShort(t)
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	addr, data := freeAddr(t), t.TempDir()
	cmd := startProcess(t, bin, addr, data)
	captured := signRequest(http.MethodPost, apiclient.PathUsers, `{"users":[{"user_id":"mallory"}]}`, "captured-nonce-kill", time.Now())
	if st, reason := captured.send(t, addr); st != http.StatusOK {
		t.Fatalf("first send: %d %s, want 200", st, reason)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	addr = freeAddr(t)
	startProcess(t, bin, addr, data)
	if st, reason := captured.send(t, addr); st != http.StatusUnauthorized || reason != apiclient.ReasonNonceReused {
		t.Errorf("replay after SIGKILL and restart: %d %q, want 401 %s", st, reason, apiclient.ReasonNonceReused)
	}
}
