package console_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/emulator"
)

// event is one Server-Sent Event.
type event struct {
	Name string
	Data map[string]any
}

// events reads an event stream, handing each event to each; it stops at
// the end of the stream or when each returns false.
func events(t *testing.T, resp *http.Response, each func(event) bool) {
	t.Helper()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var ev event
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Name == "" && data.Len() == 0 {
				continue
			}
			if err := json.Unmarshal([]byte(data.String()), &ev.Data); err != nil {
				t.Fatalf("event %s: data %q is not JSON: %v", ev.Name, data.String(), err)
			}
			if !each(ev) {
				return
			}
			ev, data = event{}, strings.Builder{}
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(line, "data: "))
		default:
			t.Fatalf("unexpected line in the event stream: %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the event stream: %v", err)
	}
}

// startRun posts the push form to api/push/test and returns the answer.
func startRun(t *testing.T, c *http.Client, base, csrf string, v url.Values) (*http.Response, map[string]string) {
	t.Helper()
	if csrf != "" {
		v.Set("csrf", csrf)
	}
	resp := postForm(t, c, base+"api/push/test", v)
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST api/push/test: %d, answer not JSON: %v", resp.StatusCode, err)
	}
	return resp, out
}

func label(ev event) string {
	if ev.Name != "stage" {
		return ev.Name
	}
	s := ev.Data["name"].(string)
	if p, _ := ev.Data["pending"].(bool); p {
		s += "(pending)"
	}
	return "stage " + s
}

// TestStreamedTestPush: the push debugging page's stream tells each stage
// of a test push, then the vendor's answer and the phone's view; it needs
// a session, its start needs the CSRF token, and a run streams once, for
// its own session only.
func TestStreamedTestPush(t *testing.T) {
	srv := startServer(t, nil)
	pushID, _ := registerDevice(t, srv, "dave", 4)
	base := "http://" + srv.Addr() + "/console/"

	anon := browserless(t)
	if resp := postForm(t, anon, base+"api/push/test", url.Values{"push_id": {pushID}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST api/push/test without a session: %d, want 401", resp.StatusCode)
	}
	if resp := get(t, anon, base+"api/push/events?run=x"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET api/push/events without a session: %d, want 401", resp.StatusCode)
	}

	c := browserless(t)
	csrf := login(t, c, base)
	if resp := postForm(t, c, base+"api/push/test", url.Values{"push_id": {pushID}, "csrf": {"wrong"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST api/push/test with a wrong CSRF token: %d, want 403", resp.StatusCode)
	}
	for _, bad := range []url.Values{{"push_id": {""}}, {"push_id": {pushID}, "badge_increment": {"many"}}} {
		if resp, out := startRun(t, c, base, csrf, bad); resp.StatusCode != http.StatusBadRequest || out["code"] != "invalid_argument" {
			t.Errorf("POST api/push/test %v: %d %v, want 400 invalid_argument", bad, resp.StatusCode, out)
		}
	}

	resp, run := startRun(t, c, base, csrf, url.Values{"push_id": {pushID}, "title": {"Streamed"}, "content": {"stage by stage"}})
	if resp.StatusCode != http.StatusOK || run["run"] == "" || !strings.HasPrefix(run["events"], "/console/api/push/events?run=") {
		t.Fatalf("POST api/push/test: %d %v, want 200 with a run and its events URL", resp.StatusCode, run)
	}
	stream := "http://" + srv.Addr() + run["events"]

	// Another operator's session cannot stream this run.
	other := browserless(t)
	login(t, other, base)
	if resp := get(t, other, stream); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another session's GET of the run: %d, want 404", resp.StatusCode)
	}

	resp = get(t, c, stream)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET events: %d %s, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got []string
	byName := map[string]event{}
	events(t, resp, func(ev event) bool {
		got = append(got, label(ev))
		byName[ev.Name] = ev
		if ev.Name == "stage" {
			if html, _ := ev.Data["html"].(string); !strings.Contains(html, `data-stage="`+ev.Data["name"].(string)+`"`) {
				t.Errorf("stage %v: html %q lacks its data-stage", ev.Data["name"], html)
			}
			if m, _ := ev.Data["meaning"].(string); m == "" {
				t.Errorf("stage %v has no meaning", ev.Data["name"])
			}
		}
		return true
	})
	want := []string{"start", "stage accepted", "stage device", "stage binding", "stage provider", "stage strategy",
		"stage render", "stage send(pending)", "stage send", "answer", "phone", "done"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if a := byName["answer"].Data; a["status"] != 200.0 || a["outcome"] != "sent" || a["status_meaning"] != "accepted by the vendor" ||
		!strings.Contains(a["html"].(string), `id="vendor-status" class="ok">200<`) {
		t.Errorf("answer %v: want status 200, sent, its meaning and the vendor table", a)
	}
	if p := byName["phone"].Data; p["title"] != "Streamed" || p["body"] != "stage by stage" || !strings.Contains(p["html"].(string), `id="phone-title">Streamed<`) {
		t.Errorf("phone %v: want the notification's title and body", p)
	}
	if d := byName["done"].Data; d["ok"] != true || !strings.Contains(d["html"].(string), "all passed") {
		t.Errorf("done %v: want ok, all passed", d)
	}

	// A run streams once.
	if resp := get(t, c, stream); resp.StatusCode != http.StatusNotFound {
		t.Errorf("second GET of a run: %d, want 404", resp.StatusCode)
	}

	// An unknown push ID stops at the device stage.
	_, run = startRun(t, c, base, csrf, url.Values{"push_id": {"pd_nobody"}})
	got = nil
	events(t, get(t, c, "http://"+srv.Addr()+run["events"]), func(ev event) bool {
		got = append(got, label(ev))
		if ev.Name == "done" && ev.Data["ok"] != false {
			t.Errorf("done %v for an unknown push ID, want not ok", ev.Data)
		}
		return true
	})
	if want := []string{"start", "stage accepted", "stage device", "done"}; !reflect.DeepEqual(got, want) {
		t.Errorf("events for an unknown push ID %v, want %v", got, want)
	}
}

// TestStreamsPerSessionAreBounded: a session streams at most 3 test pushes
// at once; a refused stream leaves its run for later.
func TestStreamsPerSessionAreBounded(t *testing.T) {
	srv := startServer(t, nil)
	pushID, tok := registerDevice(t, srv, "erin", 5)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)
	srv.Emulator().Script(tok, emulator.Step{Delay: 700 * time.Millisecond, Times: 3})

	var runs []string
	for range 4 {
		resp, run := startRun(t, c, base, csrf, url.Values{"push_id": {pushID}, "title": {"slow"}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST api/push/test: %d %v", resp.StatusCode, run)
		}
		runs = append(runs, "http://"+srv.Addr()+run["events"])
	}
	// Three streams, each held at its vendor request (the emulator
	// answers late): the pending send arrives while the push is under way.
	var open []*http.Response
	for _, u := range runs[:3] {
		resp := get(t, c, u)
		events(t, resp, func(ev event) bool { return label(ev) != "stage send(pending)" })
		open = append(open, resp)
	}
	if resp := get(t, c, runs[3]); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a fourth stream at once: %d, want 429", resp.StatusCode)
	}
	if resp, out := startRun(t, c, base, csrf, url.Values{"push_id": {pushID}}); resp.StatusCode != http.StatusTooManyRequests || out["code"] != "rate_limited" {
		t.Errorf("starting a run with three streaming: %d %v, want 429 rate_limited", resp.StatusCode, out)
	}
	for _, resp := range open {
		var last string
		events(t, resp, func(ev event) bool { last = ev.Name; return true })
		if last != "done" {
			t.Errorf("a held stream ended with %q, want done", last)
		}
	}
	// The streams ended: the refused run streams now.
	var last string
	resp := get(t, c, runs[3])
	events(t, resp, func(ev event) bool { last = ev.Name; return true })
	if resp.StatusCode != http.StatusOK || last != "done" {
		t.Errorf("the refused run after the others ended: %d, last event %q; want 200 ending with done", resp.StatusCode, last)
	}
}
