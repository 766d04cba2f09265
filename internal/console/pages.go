package console

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/internal/store"
)

// pages are the templates, each rendered inside layout.html.
var pages = []string{"login", "overview", "push", "devices", "log", "message", "cluster", "strategies", "users", "groups", "conversation", "notfound"}

func parseTemplates() map[string]*template.Template {
	funcs := template.FuncMap{
		"time": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05.000Z")
		},
		"ms": func(d time.Duration) string {
			return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
		},
		"meaning":        outcomeMeaning,
		"statusMeaning":  statusMeaning,
		"reasonMeaning":  reasonMeaning,
		"pretty":         prettyJSON,
		"outcomeClass":   func(o string) string { return "outcome-" + o },
		"query":          func(k, v string) template.URL { return template.URL(k + "=" + urlEscape(v)) },
		"stageClass":     stageClass,
		"stageMeaning":   stageMeaning,
		"strategyString": func(s push.Strategy) string { b, _ := json.Marshal(s); return string(b) },
	}
	out := make(map[string]*template.Template, len(pages))
	for _, p := range pages {
		out[p] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html"))
	}
	return out
}

func stageClass(s push.Stage) string {
	switch {
	case s.Pending:
		return "pending"
	case s.OK:
		return "ok"
	}
	return "bad"
}

func urlEscape(s string) string {
	r := strings.NewReplacer("%", "%25", "&", "%26", "=", "%3D", "+", "%2B", " ", "%20", "#", "%23", "?", "%3F")
	return r.Replace(s)
}

// render executes page into a buffer first, so a template error is a 500,
// not half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, page string, data map[string]any) {
	data["Page"] = page
	data["Prefix"] = Prefix
	data["Build"] = h.build
	if s := sessionOf(r); s != nil {
		data["CSRF"] = s.csrf
		data["LoggedIn"] = true
	}
	var buf bytes.Buffer
	if err := h.tmpl[page].Execute(&buf, data); err != nil {
		h.log.Error("console: rendering a page failed", "page", page, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "overview", map[string]any{"Emulator": h.cfg.Emulator != nil})
}

// deviceRow is a device with its binding, for the tables.
type deviceRow struct {
	herald.PushDevice
	Bound bool
}

// strategies lists the strategies, by resources ID.
func (h *Handler) strategies() []push.NamedStrategy {
	if h.cfg.Strategies == nil {
		return nil
	}
	return h.cfg.Strategies.Strategies()
}

// pushForm is the push debugging form's fields.
type pushForm struct {
	User, PushID, Title, Content, Payload, ResourcesID, ThreadID string
	EnableBadge                                                  bool
	BadgeIncrement                                               int
	ContentFree                                                  bool
}

func (h *Handler) pushData(f pushForm) map[string]any {
	data := map[string]any{"Form": f, "Strategies": h.strategies(), "Emulator": h.cfg.Emulator != nil}
	if f.User != "" {
		if err := herald.ValidateUserID(f.User); err != nil {
			data["Error"] = "user: " + herald.ErrorMessage(err)
		} else {
			devs := h.cfg.Push.Devices(f.User)
			data["Devices"] = devs
			switch {
			case len(devs) == 0:
				data["NoDevices"] = true
			case len(devs) == 1 && f.PushID == "":
				// The only device is the one to test.
				f.PushID = devs[0].PushID
				data["Form"] = f
			}
		}
	}
	return data
}

func (h *Handler) pushPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := pushForm{User: strings.TrimSpace(q.Get("user_id")), PushID: strings.TrimSpace(q.Get("push_id")), Title: "Test push", Content: "Hello from the Herald console"}
	h.render(w, r, http.StatusOK, "push", h.pushData(f))
}

// phone is a notification as the phone would show it.
type phone struct {
	Kind       string // alert, silent (background), VoIP call
	App        string
	Title      string
	Subtitle   string
	Body       string
	Badge      string
	Sound      string
	Thread     string
	Category   string
	AppPayload string // the sender's payload string
	Herald     string // Herald's own keys (conversation, message)
	ReceivedAt time.Time
	Env        string
	ID         string
	Raw        string
}

// readPushForm reads the push form (the page's POST and api/push/test
// alike) into the form, for showing it again, and the push configuration.
func readPushForm(r *http.Request) (pushForm, herald.PushConfig, error) {
	f := pushForm{
		User: strings.TrimSpace(r.PostFormValue("user_id")), PushID: strings.TrimSpace(r.PostFormValue("push_id")),
		Title: r.PostFormValue("title"), Content: r.PostFormValue("content"), Payload: r.PostFormValue("payload"),
		ResourcesID: strings.TrimSpace(r.PostFormValue("resources_id")), ThreadID: strings.TrimSpace(r.PostFormValue("thread_id")),
		EnableBadge: r.PostFormValue("enable_badge") != "",
		ContentFree: r.PostFormValue("content_free") != "",
	}
	var err error
	if v := strings.TrimSpace(r.PostFormValue("badge_increment")); v != "" {
		n, aerr := strconv.Atoi(v)
		if aerr != nil {
			err = herald.Errorf(herald.CodeInvalidArgument, "badge increment %q is not a number", v)
		}
		f.BadgeIncrement = n
	}
	cfg := herald.PushConfig{Title: f.Title, Content: f.Content, Payload: f.Payload, ResourcesID: f.ResourcesID,
		ThreadID: f.ThreadID, EnableBadge: f.EnableBadge, BadgeIncrement: f.BadgeIncrement, ContentFree: f.ContentFree}
	return f, cfg, err
}

// reportView is the result section: the stages so far, how it ended, and
// the vendor's answer once there is one.
type reportView struct {
	Running bool
	OK      bool
	Took    time.Duration
	Stages  []push.Stage
	Answer  *answerView
}

// answerView is the vendor's answer to a test push and the payload sent.
type answerView struct {
	Sent    bool
	Attempt herald.PushAttempt
	Payload string // indented
}

// acceptedStage is the console's own first stage.
func acceptedStage(pushID string) push.Stage {
	return push.Stage{Name: "accepted", OK: true, Detail: "the console took the request for push ID " + pushID}
}

// outcomeOf reads a finished test push: the vendor's answer and, for a
// device of the built-in emulator, the notification as the phone shows it
// (or, when the emulator has none with the notification ID, missing).
func (h *Handler) outcomeOf(rep *push.TestReport) (a *answerView, ph *phone, missing bool) {
	a = &answerView{Sent: rep.Attempt.NotifID != "", Attempt: rep.Attempt, Payload: prettyJSON(rep.Payload)}
	if h.cfg.Emulator == nil || !a.Sent {
		return a, nil, false
	}
	dev, ok := h.cfg.Push.Device(rep.PushID)
	if !ok {
		return a, nil, false
	}
	inbox, ok := h.cfg.Emulator.Inbox(dev.Provider, dev.Token)
	if !ok {
		return a, nil, false
	}
	if n, ok := findNotification(inbox, rep.Attempt.NotifID); ok {
		v := deviceView(n)
		return a, &v, false
	}
	return a, nil, true
}

// deviceView reads a notification as its platform would present it.
func deviceView(n emulator.Notification) phone {
	switch n.Vendor {
	case "fcm":
		return fcmView(n)
	case "hms":
		return hmsView(n)
	case "webpush":
		return webpushView(n)
	}
	return phoneView(n)
}

// pushTest is the push form's POST: it sends the test push and renders
// the whole result at once. Without JavaScript this is the push debugging
// page's path; with it, the page streams the stages instead (stream.go).
func (h *Handler) pushTest(w http.ResponseWriter, r *http.Request) {
	f, cfg, err := readPushForm(r)
	data := h.pushData(f)
	if err != nil {
		data["Error"] = herald.ErrorMessage(err)
		h.render(w, r, http.StatusBadRequest, "push", data)
		return
	}
	started := h.cfg.Now()
	rep, err := h.cfg.Push.Test(r.Context(), f.PushID, cfg)
	if err != nil {
		data["Error"] = string(herald.ErrorCode(err)) + ": " + herald.ErrorMessage(err)
		h.render(w, r, http.StatusBadRequest, "push", data)
		return
	}
	h.log.Info("console test push", "push_id", f.PushID, "ok", rep.OK(), "status", rep.Attempt.Status, "reason", rep.Attempt.Reason)
	a, ph, missing := h.outcomeOf(rep)
	data["Report"] = &reportView{
		OK: rep.OK(), Took: h.cfg.Now().Sub(started),
		Stages: append([]push.Stage{acceptedStage(f.PushID)}, rep.Stages...), Answer: a,
	}
	if ph != nil {
		data["Phone"] = ph
	}
	data["PhoneMissing"] = missing
	h.render(w, r, http.StatusOK, "push", data)
}

// findNotification finds the notification Herald sent with ID id: APNs
// keeps it as apns-id, the other vendors' emulators as the replace key
// Herald derives from it (Web Push's Topic drops the dashes).
func findNotification(inbox []emulator.Notification, id string) (emulator.Notification, bool) {
	bare := strings.ReplaceAll(id, "-", "")
	for i := len(inbox) - 1; i >= 0; i-- {
		if n := &inbox[i]; strings.EqualFold(n.ID, id) || strings.EqualFold(strings.ReplaceAll(n.ID, "-", ""), bare) || strings.EqualFold(n.CollapseID, id) {
			return inbox[i], true
		}
	}
	return emulator.Notification{}, false
}

// phoneView reads an APNs payload as iOS would present it.
func phoneView(n emulator.Notification) phone {
	p := phone{App: n.Topic, ReceivedAt: n.ReceivedAt, Env: string(n.Env), ID: n.ID, Raw: prettyJSON(string(n.Payload)), Kind: "alert"}
	var doc struct {
		APS struct {
			Alert            json.RawMessage `json:"alert"`
			Badge            *int            `json:"badge"`
			Sound            json.RawMessage `json:"sound"`
			ThreadID         string          `json:"thread-id"`
			Category         string          `json:"category"`
			ContentAvailable int             `json:"content-available"`
		} `json:"aps"`
		Payload string          `json:"payload"`
		Herald  json.RawMessage `json:"herald"`
		VoIP    *struct {
			Title   string `json:"title"`
			Content string `json:"content"`
			Handle  string `json:"handle"`
		} `json:"voip"`
	}
	if err := json.Unmarshal(n.Payload, &doc); err != nil {
		p.Kind = "unreadable payload"
		return p
	}
	a := doc.APS
	var s string
	if json.Unmarshal(a.Alert, &s) == nil {
		p.Body = s
	} else {
		var al struct{ Title, Subtitle, Body string }
		json.Unmarshal(a.Alert, &al)
		p.Title, p.Subtitle, p.Body = al.Title, al.Subtitle, al.Body
	}
	if a.Badge != nil {
		p.Badge = strconv.Itoa(*a.Badge)
	}
	if json.Unmarshal(a.Sound, &s) == nil {
		p.Sound = s
	} else if len(a.Sound) > 0 {
		var snd struct{ Name string }
		json.Unmarshal(a.Sound, &snd)
		p.Sound = snd.Name
	}
	p.Thread, p.Category, p.AppPayload = a.ThreadID, a.Category, doc.Payload
	if len(doc.Herald) > 0 {
		p.Herald = string(doc.Herald)
	}
	switch {
	case n.PushType == "voip" || doc.VoIP != nil:
		p.Kind = "VoIP call (CallKit)"
		if doc.VoIP != nil {
			p.Title, p.Body = doc.VoIP.Title, doc.VoIP.Content
			if p.Title == "" {
				p.Title = doc.VoIP.Handle
			}
		}
	case a.ContentAvailable == 1 && p.Title == "" && p.Body == "":
		p.Kind = "silent (background): nothing is shown; the app is woken"
	}
	return p
}

func prettyJSON(s string) string {
	if s == "" {
		return ""
	}
	var buf bytes.Buffer
	if json.Indent(&buf, []byte(s), "", "  ") != nil {
		return s
	}
	return buf.String()
}

func (h *Handler) devicesPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	user, pushID := strings.TrimSpace(q.Get("user_id")), strings.TrimSpace(q.Get("push_id"))
	data := map[string]any{"User": user, "PushID": pushID}
	var rows []deviceRow
	switch {
	case pushID != "":
		if d, ok := h.cfg.Push.Device(pushID); ok {
			rows = append(rows, deviceRow{d, d.User != ""})
		} else {
			data["Error"] = "push ID " + pushID + " is not registered"
		}
	case user != "":
		if err := herald.ValidateUserID(user); err != nil {
			data["Error"] = "user: " + herald.ErrorMessage(err)
			break
		}
		for _, d := range h.cfg.Push.Devices(user) {
			rows = append(rows, deviceRow{d, d.User != ""})
		}
		if len(rows) == 0 {
			data["Error"] = "user " + user + " has no push device bound: it never registered one, logged out, or unregistered"
		}
	}
	data["Devices"] = rows
	h.render(w, r, http.StatusOK, "devices", data)
}

// logFilter is the delivery log's filters.
type logFilter struct {
	User, PushID, MsgID, Outcome string
	Limit                        int
}

var outcomes = []string{herald.PushSent, herald.PushRetry, herald.PushHeld, herald.PushDropped, herald.PushFailed, herald.PushExpired, herald.PushSkipped}

func (h *Handler) query(r *http.Request, f logFilter) ([]herald.PushAttempt, error) {
	q := store.PushLogQuery{User: f.User, PushID: f.PushID, Limit: f.Limit}
	if f.MsgID != "" {
		n, err := strconv.ParseInt(f.MsgID, 10, 64)
		if err != nil || n <= 0 {
			return nil, herald.Errorf(herald.CodeInvalidArgument, "message ID %q is not a positive integer", f.MsgID)
		}
		q.MsgID = n
	}
	entries, err := h.cfg.Push.Log(r.Context(), q)
	if err != nil {
		return nil, err
	}
	if f.Outcome != "" {
		entries = slices.DeleteFunc(entries, func(e herald.PushAttempt) bool { return e.Outcome != f.Outcome })
	}
	return entries, nil
}

func (h *Handler) logPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := logFilter{User: strings.TrimSpace(q.Get("user_id")), PushID: strings.TrimSpace(q.Get("push_id")),
		MsgID: strings.TrimSpace(q.Get("msg_id")), Outcome: q.Get("outcome"), Limit: 200}
	if v := q.Get("limit"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			f.Limit = n
		}
	}
	data := map[string]any{"Filter": f, "Outcomes": outcomes}
	// Without a filter, the newest entries of the whole log: what a
	// first-time operator wants to see after sending something.
	data["Latest"] = f.User == "" && f.PushID == "" && f.MsgID == ""
	entries, err := h.query(r, f)
	if err != nil {
		data["Error"] = herald.ErrorMessage(err)
	}
	data["Entries"] = entries
	data["Searched"] = true
	h.render(w, r, http.StatusOK, "log", data)
}

// timelineDevice is one device's part of a message's push timeline.
type timelineDevice struct {
	PushID, User string
	Provider     herald.PushProvider
	Final        herald.PushAttempt
	Attempts     []herald.PushAttempt
}

func (h *Handler) messagePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, conv, seq := strings.TrimSpace(q.Get("msg_id")), strings.TrimSpace(q.Get("conv")), strings.TrimSpace(strings.TrimPrefix(q.Get("seq"), "#"))
	data := map[string]any{"MsgID": id, "Conv": conv, "Seq": seq}
	var msg *herald.Message
	if id == "" && (conv != "" || seq != "") {
		// The chat shows a message's seq in its conversation (#12); the
		// delivery log names the server-wide message ID.
		n, err := strconv.ParseInt(seq, 10, 64)
		switch {
		case conv == "" || seq == "":
			data["Error"] = "name the conversation and the seq (#) together, or give the message ID"
		case err != nil || n <= 0:
			data["Error"] = "seq " + strconv.Quote(seq) + " is not a positive number"
		default:
			m, err := h.messageBySeq(r.Context(), conv, n)
			if err != nil {
				data["Error"] = h.failed("finding the message", err)
				break
			}
			id = strconv.FormatInt(m.ID, 10)
			data["MsgID"], data["Message"] = id, m
			msg = m
		}
	}
	if id != "" {
		entries, err := h.query(r, logFilter{MsgID: id, Limit: 1000})
		if err != nil {
			data["Error"] = herald.ErrorMessage(err)
		}
		if n, _ := strconv.ParseInt(id, 10, 64); msg == nil && err == nil {
			// By ID alone: the message is in the conversation its log
			// entries name.
			m, ok, err := h.timelineMessage(r.Context(), n, entries)
			switch {
			case !ok:
				data["Unresolved"] = true
			case err != nil:
				data["Error"] = h.failed("finding the message", err)
			case m != nil:
				data["Message"], msg = m, m
			}
		}
		// Oldest first, grouped by device; a device's decision is its
		// latest entry.
		slices.SortStableFunc(entries, func(a, b herald.PushAttempt) int { return a.At.Compare(b.At) })
		byID := map[string]*timelineDevice{}
		var devs []*timelineDevice
		for _, e := range entries {
			d := byID[e.PushID]
			if d == nil {
				d = &timelineDevice{PushID: e.PushID, User: e.User, Provider: e.Provider}
				byID[e.PushID] = d
				devs = append(devs, d)
			}
			d.Attempts = append(d.Attempts, e)
			d.Final = e
		}
		data["Entries"] = entries
		data["Devices"] = devs
		data["Searched"] = true
	}
	if msg != nil {
		if v := h.mediaOf(r.Context(), msg); v != nil {
			data["Media"] = v
		}
	}
	h.render(w, r, http.StatusOK, "message", data)
}
