package server

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// repeatWindow is how long identical warnings and errors are counted
// instead of written (docs/operations.md, "Logs").
const repeatWindow = 10 * time.Second

// maxRepeatKeys bounds the distinct warnings and errors tracked at once;
// beyond it records pass through uncounted.
const maxRepeatKeys = 4096

// repeatHandler rate-limits repeated warnings and errors: a record at
// level Warn or above that has the same level, message and "err" value as
// one written less than a window ago is counted instead of written, and
// when the window ends one record (the last one left out, with its
// attributes) says how many were: "repeated"=N. A full disk fails every
// write with the same error; without this, each sender's failure was a
// line of its own (118k lines in 47 s). Records without an "err"
// attribute, and those below Warn, always pass.
type repeatHandler struct {
	next slog.Handler
	st   *repeatState // shared by the handlers WithAttrs and WithGroup derive
}

type repeatState struct {
	window time.Duration
	now    func() time.Time
	mu     sync.Mutex
	seen   map[repeatKey]*repeated
}

type repeatKey struct {
	level    slog.Level
	msg, err string
}

// repeated is one key's window: since start, count records were left out,
// the last of them being last, for handler h.
type repeated struct {
	start time.Time
	count int
	last  slog.Record
	h     slog.Handler
	timer *time.Timer
}

func newRepeatHandler(next slog.Handler, window time.Duration, now func() time.Time) *repeatHandler {
	return &repeatHandler{next: next, st: &repeatState{window: window, now: now, seen: make(map[repeatKey]*repeated)}}
}

func (h *repeatHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *repeatHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &repeatHandler{next: h.next.WithAttrs(as), st: h.st}
}

func (h *repeatHandler) WithGroup(name string) slog.Handler {
	return &repeatHandler{next: h.next.WithGroup(name), st: h.st}
}

func (h *repeatHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	var errText string
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			errText, found = a.Value.String(), true
			return false
		}
		return true
	})
	if !found {
		return h.next.Handle(ctx, r)
	}
	k := repeatKey{r.Level, r.Message, errText}
	st := h.st
	now := st.now()
	st.mu.Lock()
	e := st.seen[k]
	if e == nil || (e.count == 0 && now.Sub(e.start) >= st.window) {
		if e == nil && len(st.seen) >= maxRepeatKeys && !st.pruneLocked(now) {
			st.mu.Unlock()
			return h.next.Handle(ctx, r) // too many distinct errors to track: write them all
		}
		st.seen[k] = &repeated{start: now}
		st.mu.Unlock()
		return h.next.Handle(ctx, r)
	}
	e.count++
	e.last, e.h = r.Clone(), h.next
	if e.timer == nil {
		e.timer = time.AfterFunc(st.window-now.Sub(e.start), func() { st.flush(k, e) })
	}
	st.mu.Unlock()
	return nil
}

// pruneLocked forgets the keys whose window has passed with nothing left
// out, and reports whether there is room now; st.mu must be held.
func (st *repeatState) pruneLocked(now time.Time) bool {
	for k, e := range st.seen {
		if e.count == 0 && now.Sub(e.start) >= st.window {
			delete(st.seen, k)
		}
	}
	return len(st.seen) < maxRepeatKeys
}

// flush ends k's window e, unless flushAll ended it first: it writes how
// many records were left out.
func (st *repeatState) flush(k repeatKey, e *repeated) {
	st.mu.Lock()
	if st.seen[k] != e {
		st.mu.Unlock()
		return
	}
	delete(st.seen, k)
	st.mu.Unlock()
	st.write(e)
}

// flushAll ends every window (at shutdown, so no count is lost).
func (st *repeatState) flushAll() {
	st.mu.Lock()
	all := st.seen
	st.seen = make(map[repeatKey]*repeated)
	st.mu.Unlock()
	for _, e := range all {
		st.write(e)
	}
}

func (st *repeatState) write(e *repeated) {
	if e == nil || e.count == 0 {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
	}
	r := e.last
	r.AddAttrs(slog.Int("repeated", e.count))
	e.h.Handle(context.Background(), r)
}
