package emulator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The other vendors' emulators (FCM, Huawei, Web Push) are http.Handlers
// mounted on the APNs emulator's listeners with Handle, so one address
// (and one certificate to trust) serves every vendor. Each owns a path
// prefix of its own and its control API under /_emulator/<vendor>/,
// served by serveVendorControl; each keeps its tokens in a tokens value
// (scripts, inbox, arrived) and its totals in counters, as APNs does.

// Handle mounts h on the emulator's listeners for pattern (an
// http.ServeMux pattern). APNs' own paths (/3/device/) always go to APNs;
// a request under /_emulator/ that matches no mounted pattern goes to
// APNs' control API. Handle may be called before or after Start.
func (a *APNs) Handle(pattern string, h http.Handler) {
	a.mux.Handle(pattern, h)
}

// vendor is what the shared control API needs of a vendor emulator.
type vendor interface {
	Inbox(token string) []Notification
	Arrived(token string) []Notification
	Script(token string, steps ...Step)
	Stats() Stats
}

// serveVendorControl serves a vendor's control API, r's path less prefix
// (e.g. "/_emulator/fcm/"):
//
//	GET  inbox/<token>    the token's inbox, JSON list, oldest first: what the device shows
//	GET  arrived/<token>  every push the token received, JSON list, oldest first
//	GET  stats            Stats
//	POST script/<token>   JSON list of steps (stepJSON), replacing pending ones
//
// extra, when not nil, is offered every other route first and reports
// whether it served it.
func serveVendorControl(w http.ResponseWriter, r *http.Request, prefix string, v vendor, extra func(w http.ResponseWriter, r *http.Request, route, arg string) bool) {
	route, arg, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, prefix), "/")
	switch route {
	case "inbox", "arrived", "stats", "script":
	default:
		if extra != nil && extra(w, r, route, arg) {
			return
		}
		controlError(w, http.StatusNotFound, "no such control endpoint %q", r.URL.Path)
		return
	}
	method := http.MethodGet
	if route == "script" {
		method = http.MethodPost
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		controlError(w, http.StatusMethodNotAllowed, "%s needs %s", r.URL.Path, method)
		return
	}
	if (route == "stats") != (arg == "") {
		controlError(w, http.StatusNotFound, "%s: want %s%s%s", r.URL.Path, prefix, route, map[bool]string{true: "", false: "/<token>"}[route == "stats"])
		return
	}
	switch route {
	case "inbox":
		controlJSON(w, v.Inbox(arg))
	case "arrived":
		controlJSON(w, v.Arrived(arg))
	case "stats":
		controlJSON(w, v.Stats())
	case "script":
		serveScript(w, r, func(steps []Step) { v.Script(arg, steps...) })
	}
}

// tokens is a vendor emulator's per-token state: scripts, what the device
// shows and what arrived. Tokens are case-sensitive (FCM, Huawei and Web
// Push tokens are opaque). Limit is the inbox bound (Config.InboxLimit's
// meaning: zero means 100, negative keeps none).
type tokens struct {
	m     sync.Map // string -> *device
	limit int
}

func (t *tokens) device(token string, create bool) *device {
	if d, ok := t.m.Load(token); ok {
		return d.(*device)
	}
	if !create {
		return nil
	}
	d, _ := t.m.LoadOrStore(token, &device{})
	return d.(*device)
}

// Script sets the answers for token's next pushes, replacing pending ones.
func (t *tokens) Script(token string, steps ...Step) {
	d := t.device(token, true)
	d.mu.Lock()
	d.steps = append([]Step(nil), steps...)
	d.mu.Unlock()
}

// take returns token's next scripted step, if any.
func (t *tokens) take(token string) (Step, bool) {
	d := t.device(token, false)
	if d == nil {
		return Step{}, false
	}
	st, ok, _, _ := d.take()
	return st, ok
}

// deliver records an accepted push: n.CollapseID replaces an earlier entry
// with the same Topic and CollapseID in the inbox, as APNs' does.
func (t *tokens) deliver(token string, n *Notification) {
	switch {
	case t.limit < 0:
	case t.limit == 0:
		t.device(token, true).deliver(n, 100)
	default:
		t.device(token, true).deliver(n, t.limit)
	}
}

// Inbox returns copies of what token's device shows, oldest first.
func (t *tokens) Inbox(token string) []Notification { return t.device(token, false).inboxCopy() }

// Arrived returns copies of every push token received, oldest first.
func (t *tokens) Arrived(token string) []Notification { return t.device(token, false).arrivedCopy() }

func (d *device) inboxCopy() []Notification {
	if d == nil {
		return []Notification{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Notification, len(d.inbox))
	for i, e := range d.inbox {
		out[i] = *e.n
		out[i].Deliveries = e.deliveries
	}
	return out
}

func (d *device) arrivedCopy() []Notification {
	if d == nil {
		return []Notification{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Notification, len(d.arrived))
	for i, n := range d.arrived {
		out[i] = *n
	}
	return out
}

// sleep waits d on a real timer (every vendor's Delay and a step's Delay):
// it reports false, early, when ctx (the request's: the client went away)
// or stop (the emulator's, cancelled by Close) ends first.
func sleep(ctx, stop context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop.Done():
		return false
	}
}

// retryAfter is d as a Retry-After header value: whole seconds, rounded
// up, so a scripted 1.5s is "2" and never "0" or "1".
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// acceptHook is an emulator's OnAccept hook: set from any goroutine, read
// on each accepted push.
type acceptHook struct {
	p atomic.Pointer[func(*Notification)]
}

// set installs f; nil removes the hook.
func (h *acceptHook) set(f func(*Notification)) {
	if f == nil {
		h.p.Store(nil)
		return
	}
	h.p.Store(&f)
}

// load returns the hook, nil when none is set.
func (h *acceptHook) load() func(*Notification) {
	if f := h.p.Load(); f != nil {
		return *f
	}
	return nil
}

// NotificationKey reads a notification ID in any form a vendor carries it
// (APNs' apns-id and Android's tag: a UUID; Web Push's Topic: the same 32
// hex digits without dashes) as its 16 bytes: hex digits of either case,
// dashes anywhere ignored; anything else, or not 32 digits, is not one.
func NotificationKey(s string) (id [16]byte, ok bool) {
	j := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' {
			continue
		}
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return id, false
		}
		if j >= 32 {
			return id, false
		}
		if j%2 == 0 {
			id[j/2] = v << 4
		} else {
			id[j/2] |= v
		}
		j++
	}
	return id, j == 32
}

// serveScript reads a control request's JSON list of steps (stepJSON),
// hands them to script, and answers how many it took; a malformed list is
// 400 naming what is wrong, and nothing is scripted.
func serveScript(w http.ResponseWriter, r *http.Request, script func([]Step)) {
	var in []stepJSON
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		controlError(w, http.StatusBadRequest, "%s: %v", r.URL.Path, err)
		return
	}
	steps := make([]Step, len(in))
	for i, s := range in {
		st, err := s.step()
		if err != nil {
			controlError(w, http.StatusBadRequest, "step %d: %v", i, err)
			return
		}
		steps[i] = st
	}
	script(steps)
	controlJSON(w, struct {
		Steps int `json:"steps"`
	}{len(steps)})
}
