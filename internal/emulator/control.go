package emulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// The control API, for `herald emulator` users and the web console. It
// has no authentication: the emulator listens on loopback.
//
//	GET  /_emulator/inbox/<token>     the token's inbox, JSON list, oldest first: what the phone shows
//	GET  /_emulator/arrived/<token>   every push the token received, JSON list, oldest first
//	GET  /_emulator/stats             Stats
//	POST /_emulator/script/<token>    JSON list of steps (stepJSON), replacing pending ones
//	POST /_emulator/register/<token>  {"env": "development", "topic": "com.example.app"}
//	POST /_emulator/delay             {"delay": "20ms"}
//	POST /_emulator/goaway            GOAWAY on every connection
func (a *APNs) control(w http.ResponseWriter, r *http.Request) {
	route, arg, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, controlPrefix), "/")
	method := http.MethodPost
	if route == "inbox" || route == "arrived" || route == "stats" {
		method = http.MethodGet
	}
	needArg := route == "inbox" || route == "arrived" || route == "script" || route == "register"
	switch route {
	case "inbox", "arrived", "stats", "script", "register", "delay", "goaway":
	default:
		controlError(w, http.StatusNotFound, "no such control endpoint %q", r.URL.Path)
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		controlError(w, http.StatusMethodNotAllowed, "%s needs %s", r.URL.Path, method)
		return
	}
	if needArg && arg == "" {
		controlError(w, http.StatusNotFound, "%s: want /_emulator/%s/<token>", r.URL.Path, route)
		return
	}
	if !needArg && arg != "" {
		controlError(w, http.StatusNotFound, "%s: want /_emulator/%s", r.URL.Path, route)
		return
	}
	body := func(v any) bool {
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			controlError(w, http.StatusBadRequest, "%s: %v", r.URL.Path, err)
			return false
		}
		return true
	}
	switch route {
	case "inbox":
		controlJSON(w, a.Inbox(arg))
	case "arrived":
		controlJSON(w, a.Arrived(arg))
	case "stats":
		controlJSON(w, a.Stats())
	case "script":
		serveScript(w, r, func(steps []Step) { a.Script(arg, steps...) })
	case "register":
		var in struct {
			Env   Env    `json:"env"`
			Topic string `json:"topic"`
		}
		if !body(&in) {
			return
		}
		if in.Env != "" && in.Env != Production && in.Env != Development {
			controlError(w, http.StatusBadRequest, "env %q: want production, development or empty", in.Env)
			return
		}
		a.Register(arg, in.Env, in.Topic)
		controlJSON(w, in)
	case "delay":
		var in struct {
			Delay string `json:"delay"`
		}
		if !body(&in) {
			return
		}
		d, err := time.ParseDuration(in.Delay)
		if err != nil || d < 0 {
			controlError(w, http.StatusBadRequest, "delay %q: want a duration such as 20ms", in.Delay)
			return
		}
		a.SetDelay(d)
		controlJSON(w, in)
	case "goaway":
		a.GoAway()
		controlJSON(w, struct{}{})
	}
}

// stepJSON is a Step on the wire: durations as strings ("250ms"), the
// 410 timestamp in milliseconds as APNs sends it.
type stepJSON struct {
	Status      int    `json:"status,omitempty"`
	Reason      string `json:"reason,omitempty"`
	TimestampMs int64  `json:"timestamp,omitempty"`
	RetryAfter  string `json:"retry_after,omitempty"`
	Delay       string `json:"delay,omitempty"`
	Times       int    `json:"times,omitempty"`
	Forever     bool   `json:"forever,omitempty"`
	Abort       bool   `json:"abort,omitempty"`
	GoAway      bool   `json:"goaway,omitempty"`
}

func (s stepJSON) step() (Step, error) {
	st := Step{Status: s.Status, Reason: s.Reason, Times: s.Times, Forever: s.Forever, Abort: s.Abort, GoAway: s.GoAway}
	if s.Status != 0 && (s.Status < 200 || s.Status > 599) {
		return st, fmt.Errorf("status %d is not an HTTP status", s.Status)
	}
	if s.Times < 0 {
		return st, fmt.Errorf("times %d is negative", s.Times)
	}
	if s.TimestampMs != 0 {
		st.Timestamp = time.UnixMilli(s.TimestampMs)
	}
	for _, d := range []struct {
		name string
		in   string
		out  *time.Duration
	}{{"retry_after", s.RetryAfter, &st.RetryAfter}, {"delay", s.Delay, &st.Delay}} {
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil || v < 0 {
			return st, fmt.Errorf("%s %q: want a duration such as 2s", d.name, d.in)
		}
		*d.out = v
	}
	return st, nil
}

func controlJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func controlError(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{fmt.Sprintf(format, args...)})
}
