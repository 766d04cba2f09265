package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// The push debugging page streams a test push's stages as they happen, in
// two requests:
//
//  1. POST api/push/test takes the form, like the page's own POST (session
//     cookie, CSRF token, same-origin check), checks it, and answers a run
//     ID: nothing is sent yet.
//  2. GET api/push/events?run=ID (an EventSource) sends the push and tells
//     each stage as Server-Sent Events while push.Service.TestStream
//     reaches it, then the vendor's answer and the phone's view.
//
// The CSRF token stays where it was, on the POST: a run ID is random,
// single-use, bound to the session that asked for it and short-lived, so a
// GET from elsewhere cannot start a push (and SameSite=Strict keeps the
// session cookie off cross-site requests anyway). Carrying the form or the
// CSRF token in the GET's URL instead would put them in access logs and
// the browser's history. The push runs inside the stream's request, so a
// run nobody listens to sends nothing and a closed tab cancels it.
//
// Runs wait in this node's memory (Handler.runs), not in the store's
// shared table: on several nodes the GET must reach the node that took
// the POST, or it answers 404 (nothing is sent). The page therefore needs
// sticky routing (docs/operations.md); sharing a run would mean sending
// the form through the store and streaming the stages back over the bus,
// for a debugging page one operator uses at a time.
//
// A session holds at most maxStreams streams at once and maxRuns runs
// waiting for theirs.
const (
	streamWriteTimeout = 30 * time.Second // to write one event to a stalled browser
	maxStreams         = 3
	maxRuns            = 8
	runTTL             = time.Minute
)

// pushRun is a test push a session asked for and has not streamed yet.
type pushRun struct {
	id      string
	session string
	pushID  string
	cfg     herald.PushConfig
	expires time.Time
}

// startPushRun is POST api/push/test: it checks the form and answers the
// run ID and the URL of its event stream.
func (h *Handler) startPushRun(w http.ResponseWriter, r *http.Request) {
	s := sessionOf(r)
	f, cfg, err := readPushForm(r)
	if err == nil && f.PushID == "" {
		err = herald.Errorf(herald.CodeInvalidArgument, "push_id is empty")
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"code": string(herald.ErrorCode(err)), "message": herald.ErrorMessage(err)})
		return
	}
	run := &pushRun{id: randomID(), session: s.id, pushID: f.PushID, cfg: cfg}
	h.mu.Lock()
	now := h.cfg.Now()
	run.expires = now.Add(runTTL)
	if s.streams >= maxStreams {
		h.mu.Unlock()
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"code": string(herald.CodeRateLimited),
			"message": fmt.Sprintf("this session already streams %d test pushes: wait for one to finish", maxStreams)})
		return
	}
	// Drop expired runs, and this session's oldest past maxRuns.
	var oldest *pushRun
	n := 0
	for id, o := range h.runs {
		if !now.Before(o.expires) {
			delete(h.runs, id)
			continue
		}
		if o.session == s.id {
			n++
			if oldest == nil || o.expires.Before(oldest.expires) {
				oldest = o
			}
		}
	}
	if n >= maxRuns {
		delete(h.runs, oldest.id)
	}
	h.runs[run.id] = run
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"run": run.id, "events": Prefix + "api/push/events?run=" + run.id})
}

// takeRun claims the run for a stream of session s: it is removed (a run
// streams once) and the session's stream count raised; done lowers it.
func (h *Handler) takeRun(s *session, id string) (run *pushRun, status int, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	run = h.runs[id]
	if run == nil || run.session != s.id || !h.cfg.Now().Before(run.expires) {
		return nil, http.StatusNotFound, "no such test push waiting for this session: it ran already, expired, or was never started"
	}
	if s.streams >= maxStreams {
		return nil, http.StatusTooManyRequests, fmt.Sprintf("this session already streams %d test pushes: wait for one to finish", maxStreams)
	}
	delete(h.runs, id)
	s.streams++
	return run, 0, ""
}

func (h *Handler) streamDone(s *session) {
	h.mu.Lock()
	s.streams--
	h.mu.Unlock()
}

// eventStream writes Server-Sent Events, each flushed at once. After a
// failed write (the browser went away) it writes nothing more.
type eventStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (e *eventStream) send(event string, v any) {
	if e.err != nil {
		return
	}
	b, err := json.Marshal(v) // one line: JSON escapes newlines
	if err != nil {
		e.err = err
		return
	}
	// The server's write timeout counts from the request; a stream lasts
	// as long as the push, so each event gets its own time to be written.
	// (ErrNotSupported from a test recorder leaves the deadline as it is.)
	_ = e.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, e.err = fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, b); e.err == nil {
		e.err = e.rc.Flush()
	}
}

// stageEvent is a "stage" event's data.
type stageEvent struct {
	push.Stage
	Meaning string `json:"meaning"`
	HTML    string `json:"html"`
}

// pushEvents is GET api/push/events?run=ID: it sends the run's test push
// and streams, as Server-Sent Events:
//
//	start   {html}: the result section, empty, replacing any earlier one
//	stage   {name, ok, pending, detail, meaning, html}: one per stage as it
//	        is reached, "accepted" first; a pending "send" is replaced by
//	        the finished one (same name)
//	answer  {status, reason, outcome, status_meaning, reason_meaning, html}:
//	        the vendor's answer and the payload sent
//	phone   {title, body, missing, html}: for the built-in emulator's
//	        devices, the notification as the phone shows it
//	done    {ok, took_ms, html}: the end; html is the section's new heading
//	failed  {code, message}: the request was refused before any stage
//
// Each html is the fragment the whole result page (the form's POST) shows.
func (h *Handler) pushEvents(w http.ResponseWriter, r *http.Request) {
	s := sessionOf(r)
	run, status, msg := h.takeRun(s, r.URL.Query().Get("run"))
	if run == nil {
		code := herald.CodeNotFound
		if status == http.StatusTooManyRequests {
			code = herald.CodeRateLimited
		}
		writeJSON(w, status, map[string]string{"code": string(code), "message": msg})
		return
	}
	defer h.streamDone(s)

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	hd.Set("X-Accel-Buffering", "no") // nginx: pass each event on as it comes
	w.WriteHeader(http.StatusOK)
	es := &eventStream{w: w, rc: http.NewResponseController(w)}
	started := h.cfg.Now()

	es.send("start", map[string]string{"html": h.fragment("report", &reportView{Running: true})})
	stage := func(st push.Stage) {
		es.send("stage", stageEvent{Stage: st, Meaning: stageMeaning(st), HTML: h.fragment("stage", st)})
	}
	stage(acceptedStage(run.pushID))
	rep, err := h.cfg.Push.TestStream(r.Context(), run.pushID, run.cfg, stage)
	if err != nil {
		es.send("failed", map[string]string{"code": string(herald.ErrorCode(err)), "message": herald.ErrorMessage(err)})
		return
	}
	h.log.Info("console test push", "push_id", run.pushID, "ok", rep.OK(), "status", rep.Attempt.Status, "reason", rep.Attempt.Reason, "streamed", true)
	a, ph, missing := h.outcomeOf(rep)
	if a.Sent || a.Payload != "" {
		es.send("answer", map[string]any{
			"status": a.Attempt.Status, "reason": a.Attempt.Reason, "outcome": a.Attempt.Outcome,
			"status_meaning": statusMeaning(a.Attempt.Provider, a.Attempt.Status), "reason_meaning": reasonMeaning(a.Attempt.Reason),
			"html": h.fragment("answer", a),
		})
	}
	switch {
	case ph != nil:
		es.send("phone", map[string]any{"title": ph.Title, "body": ph.Body, "html": h.fragment("phone", ph)})
	case missing:
		es.send("phone", map[string]any{"missing": true, "html": h.fragment("phone-missing", nil)})
	}
	took := h.cfg.Now().Sub(started)
	es.send("done", map[string]any{
		"ok": rep.OK(), "took_ms": float64(took) / float64(time.Millisecond),
		"html": h.fragment("verdict", &reportView{OK: rep.OK(), Took: took}),
	})
}

// fragment renders one of the push page's parts.
func (h *Handler) fragment(name string, data any) string {
	var buf bytes.Buffer
	if err := h.tmpl["push"].ExecuteTemplate(&buf, name, data); err != nil {
		h.log.Error("console: rendering a fragment failed", "fragment", name, "err", err)
		return `<p class="error">internal error rendering this part</p>`
	}
	return buf.String()
}
