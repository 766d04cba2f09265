package emulator

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits of Apple's provider API.
const (
	maxPayload      = 4096
	maxPayloadVoIP  = 5120
	maxCollapseID   = 64
	maxTokenHex     = 200
	devicePath      = "/3/device/"
	controlPrefix   = "/_emulator/"
	defaultPriority = 10
)

// pushTypes are the apns-push-type values and the topic suffix each needs.
var pushTypes = [...]struct{ name, suffix string }{
	{"alert", ""},
	{"background", ""},
	{"voip", ".voip"},
	{"complication", ".complication"},
	{"fileprovider", ".pushkit.fileprovider"},
	{"mdm", ""},
	{"liveactivity", ".push-type.liveactivity"},
	{"pushtotalk", ".voip-ptt"},
	{"location", ".location-query"},
}

// The headers the provider API checks, by index into pushRequest's arrays.
const (
	iAuthorization = iota
	iTopic
	iPushType
	iPriority
	iExpiration
	iCollapseID
	iID
	nChecked
)

// checkedNames are the checked headers as HTTP/2 carries them (lower case)
// and checkedKeys as net/http's Header holds them (canonical).
var (
	checkedNames = [nChecked]string{"authorization", "apns-topic", "apns-push-type", "apns-priority", "apns-expiration", "apns-collapse-id", "apns-id"}
	checkedKeys  = [nChecked]string{"Authorization", "Apns-Topic", "Apns-Push-Type", "Apns-Priority", "Apns-Expiration", "Apns-Collapse-Id", "Apns-Id"}
)

// hID is the apns-id key of an http.Header.
const hID = "Apns-Id"

var bodyPool = sync.Pool{New: func() any { b := make([]byte, maxPayloadVoIP+1); return &b }}

// ServeHTTP serves one request that came over net/http (HTTP/1.1, or a
// vendor's route on HTTP/2, see h2.go): a vendor emulator mounted with
// Handle, the control API under /_emulator/, or the provider API.
func (c *conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/3/") {
		if h, pattern := c.a.mux.Handler(r); pattern != "" {
			h.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, controlPrefix) {
			c.a.control(w, r)
			return
		}
	}
	c.a.push(c, w, r)
}

// pushRequest is a provider API request as a transport read it: the
// frame-level HTTP/2 server (h2.go) or net/http (HTTP/1.1).
type pushRequest struct {
	method, path  string
	h2            bool
	hdr           [nChecked]string // the first value of each checked header
	cnt           [nChecked]uint8  // how many times each was sent, at most 255
	contentLength int64            // -1 when not given
}

// pushRequestOf reads r's checked headers.
func pushRequestOf(r *http.Request) pushRequest {
	rq := pushRequest{method: r.Method, path: r.URL.Path, h2: r.ProtoMajor == 2, contentLength: r.ContentLength}
	for i, k := range checkedKeys {
		v := r.Header[k]
		rq.hdr[i], rq.cnt[i] = first(v), uint8(min(len(v), 255))
	}
	return rq
}

// push is a parsed provider API request.
type push struct {
	token, topic, pushType, collapseID string
	id                                 string // as sent, "" if none or malformed
	uuid                               [16]byte
	priority                           int
	expiration                         int64
	payload                            []byte // the request's body; owned says whether it may be kept
	owned                              bool
	auth                               *tokenEntry
}

// answer is a non-200 verdict.
type answer struct {
	status int
	reason string
}

// decision is what becomes of a push once it has been read: a
// validation answer, or the device's scripted step and declaration.
// Effects (counting, the inbox, OnAccept) wait for finish, which runs
// when the answer is due.
type decision struct {
	p        push
	ans      answer
	dev      *device
	step     Step
	scripted bool
	env      Env    // the device's declaration
	topic    string // the device's declaration
}

// reply is the answer finish decided.
type reply struct {
	status     int // 200 accepted
	id         string
	reason     string
	timestamp  time.Time
	retryAfter time.Duration
	abort      bool // reset the stream instead of answering
	goAway     bool // GOAWAY on the connection after answering
}

// decide looks the validated push's device up and takes its next
// scripted step.
func (a *APNs) decide(d *decision) {
	d.dev = a.device(d.p.token, false)
	if d.dev != nil {
		d.step, d.scripted, d.env, d.topic = d.dev.take()
	}
}

// finish makes d's effects (counters, dedup, the inbox, OnAccept) at now
// and returns the answer to send.
func (a *APNs) finish(c *conn, d *decision, now time.Time) reply {
	p := &d.p
	if d.ans.status != 0 {
		return a.reject(p.id, d.ans.status, d.ans.reason, time.Time{}, 0)
	}
	var goAway bool
	if d.scripted {
		st := d.step
		if st.Abort {
			a.stats.unanswered.Add(1)
			return reply{abort: true}
		}
		goAway = st.GoAway
		if st.Status != 0 && st.Status != http.StatusOK {
			reason := st.Reason
			if reason == "" {
				reason = defaultReason(st.Status)
			}
			ts := st.Timestamp
			if st.Status == http.StatusGone && ts.IsZero() {
				ts = now
			}
			r := a.reject(p.id, st.Status, reason, ts, st.RetryAfter)
			r.goAway = goAway
			return r
		}
	}
	if d.env != "" && d.env != c.env {
		r := a.reject(p.id, http.StatusBadRequest, BadDeviceToken, time.Time{}, 0)
		r.goAway = goAway
		return r
	}
	if d.topic != "" && d.topic != p.topic {
		r := a.reject(p.id, http.StatusBadRequest, DeviceTokenNotForTopic, time.Time{}, 0)
		r.goAway = goAway
		return r
	}

	// Accepted.
	if p.id == "" {
		p.id = newUUID()
	} else if a.seen.add(p.uuid) {
		a.stats.duplicates.Add(1)
	}
	hook := a.onAccept.load()
	if a.inboxMax > 0 || hook != nil {
		payload := json.RawMessage(p.payload)
		if !p.owned {
			payload = append(json.RawMessage(nil), p.payload...)
		}
		n := &Notification{
			ID:         p.id,
			Token:      p.token,
			Topic:      p.topic,
			PushType:   p.pushType,
			Priority:   p.priority,
			Expiration: p.expiration,
			CollapseID: p.collapseID,
			Payload:    payload,
			Env:        c.env,
			ReceivedAt: now,
		}
		if p.auth != nil {
			n.KeyID, n.TeamID, n.IssuedAt = p.auth.key.id, p.auth.key.TeamID, time.Unix(p.auth.iat, 0).UTC()
		} else {
			n.Certificate = c.certTopic
		}
		if a.inboxMax > 0 {
			dev := d.dev
			if dev == nil {
				dev = a.device(p.token, true)
			}
			dev.deliver(n, a.inboxMax)
		}
		if hook != nil {
			hook(n)
		}
	}
	a.stats.accepted.Add(1)
	return reply{status: http.StatusOK, id: p.id, goAway: goAway}
}

// reject counts a non-200 answer and returns it, with a new apns-id when
// the request had none.
func (a *APNs) reject(id string, status int, reason string, ts time.Time, after time.Duration) reply {
	if id == "" {
		id = newUUID()
	}
	a.stats.reject(reason)
	return reply{status: status, id: id, reason: reason, timestamp: ts, retryAfter: after}
}

// push serves a provider API request that came over net/http: HTTP/1.1
// (answered 505) and the handler benchmark. HTTP/2 pushes are served by
// h2.go, which shares check, decide and finish.
func (a *APNs) push(c *conn, w http.ResponseWriter, r *http.Request) {
	a.stats.received.Add(1)
	a.stats.inFlight.Add(1)
	a.stats.noteInFlight(int64(c.inFlight.Add(1)))
	defer func() {
		c.inFlight.Add(-1)
		a.stats.inFlight.Add(-1)
	}()
	ctx := r.Context()
	if d := time.Duration(a.delay.Load()); d > 0 && !sleep(ctx, a.ctx, d) {
		a.stats.unanswered.Add(1)
		return
	}

	rq := pushRequestOf(r)
	var d decision
	d.ans = a.checkHeaders(c, &rq, &d.p, a.now())
	if d.ans.status == 0 {
		limit := payloadLimit(d.p.pushType)
		if rq.contentLength > int64(limit) {
			d.ans = answer{http.StatusRequestEntityTooLarge, PayloadTooLarge}
		} else {
			bufp := bodyPool.Get().(*[]byte)
			defer bodyPool.Put(bufp)
			n, err := readBody(r.Body, (*bufp)[:limit+1])
			if err != nil {
				a.stats.unanswered.Add(1) // the request body broke off
				return
			}
			d.ans = checkPayload(&d.p, (*bufp)[:n], limit)
		}
	}
	if d.ans.status == 0 {
		a.decide(&d)
		if d.scripted && d.step.Delay > 0 && !sleep(ctx, a.ctx, d.step.Delay) {
			a.stats.unanswered.Add(1)
			return
		}
	}
	rep := a.finish(c, &d, a.now())
	if rep.abort {
		panic(http.ErrAbortHandler)
	}
	if rep.goAway {
		defer c.goAway()
	}
	h := w.Header()
	h[hID] = []string{rep.id}
	if rep.status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	h["Content-Type"] = []string{"application/json"}
	if rep.retryAfter > 0 {
		h["Retry-After"] = []string{retryAfter(rep.retryAfter)}
	}
	w.WriteHeader(rep.status)
	w.Write(appendReasonJSON(nil, rep.reason, rep.timestamp))
}

// checkHeaders authenticates and validates everything but the payload of
// rq into p; a zero answer means the push may go on to its payload.
func (a *APNs) checkHeaders(c *conn, rq *pushRequest, p *push, now time.Time) answer {
	h := &rq.hdr
	// The echoed apns-id is parsed first so every answer can carry it.
	if rq.cnt[iID] == 1 {
		if u, ok := parseUUID(h[iID]); ok {
			p.id, p.uuid = h[iID], u
		}
	}
	path := rq.path
	if !strings.HasPrefix(path, devicePath) {
		return answer{http.StatusNotFound, BadPath}
	}
	if rq.method != http.MethodPost {
		return answer{http.StatusMethodNotAllowed, MethodNotAllowed}
	}
	if !rq.h2 {
		return answer{http.StatusHTTPVersionNotSupported, HTTP2Required}
	}
	tok := path[len(devicePath):]
	if tok == "" {
		return answer{http.StatusBadRequest, MissingDeviceToken}
	}
	if !isHexToken(tok) {
		return answer{http.StatusBadRequest, BadDeviceToken}
	}
	p.token = normToken(tok)
	for _, n := range rq.cnt {
		if n > 1 {
			return answer{http.StatusBadRequest, DuplicateHeaders}
		}
	}

	// Authentication: a provider token, else a client certificate.
	p.topic = h[iTopic]
	if rq.cnt[iAuthorization] == 1 {
		e, status, reason := a.authToken(c, h[iAuthorization], now)
		if status != 0 {
			return answer{status, reason}
		}
		if e.key.Env != "" && e.key.Env != c.env {
			return answer{http.StatusForbidden, BadEnvironmentKeyIdInToken}
		}
		p.auth = e
		if p.topic == "" {
			return answer{http.StatusBadRequest, MissingTopic}
		}
		if len(e.key.Topics) > 0 && !anyTopicAllowed(e.key.Topics, p.topic) {
			return answer{http.StatusBadRequest, TopicDisallowed}
		}
	} else if c.certTopic != "" {
		if (c.env == Production && !c.certProd) || (c.env == Development && !c.certDev) {
			return answer{http.StatusForbidden, BadCertificateEnvironment}
		}
		if p.topic == "" {
			p.topic = c.certTopic // a single-topic certificate needs none
		} else if !topicAllowed(c.certTopic, p.topic) {
			return answer{http.StatusBadRequest, TopicDisallowed}
		}
	} else {
		return answer{http.StatusForbidden, MissingProviderToken}
	}

	// Headers.
	suffix, known := "", false
	for _, t := range pushTypes {
		if t.name == h[iPushType] {
			p.pushType, suffix, known = t.name, t.suffix, true // the constant: no reference into the header
			break
		}
	}
	if !known {
		return answer{http.StatusBadRequest, InvalidPushType}
	}
	if suffix != "" && !strings.HasSuffix(p.topic, suffix) {
		return answer{http.StatusBadRequest, BadTopic}
	}
	switch v := h[iPriority]; v {
	case "":
		p.priority = defaultPriority
	case "10", "5", "1":
		p.priority, _ = strconv.Atoi(v)
	default:
		return answer{http.StatusBadRequest, BadPriority}
	}
	if p.pushType == "background" && p.priority != 5 {
		return answer{http.StatusBadRequest, BadPriority}
	}
	if v := h[iExpiration]; v != "" {
		exp, err := strconv.ParseInt(v, 10, 64)
		if err != nil || exp < 0 {
			return answer{http.StatusBadRequest, BadExpirationDate}
		}
		p.expiration = exp
	}
	p.collapseID = h[iCollapseID]
	if len(p.collapseID) > maxCollapseID {
		return answer{http.StatusBadRequest, BadCollapseId}
	}
	if rq.cnt[iID] == 1 && p.id == "" {
		return answer{http.StatusBadRequest, BadMessageId}
	}
	return answer{}
}

// payloadLimit is the largest payload of a push type.
func payloadLimit(pushType string) int {
	if pushType == "voip" {
		return maxPayloadVoIP
	}
	return maxPayload
}

// checkPayload checks a push's body: read up to limit+1 bytes, so a
// longer one shows. p keeps body (not owned).
func checkPayload(p *push, body []byte, limit int) answer {
	switch {
	case len(body) == 0:
		return answer{http.StatusBadRequest, PayloadEmpty}
	case len(body) > limit:
		return answer{http.StatusRequestEntityTooLarge, PayloadTooLarge}
	}
	p.payload = body
	// Apple documents no reason for malformed JSON; PayloadEmpty is the
	// nearest of those it does ("the message payload was empty").
	if !validPayload(body) {
		return answer{http.StatusBadRequest, PayloadEmpty}
	}
	if p.pushType == "background" && !backgroundPayload(body) {
		return answer{http.StatusBadRequest, BadBackgroundPush}
	}
	return answer{}
}

// backgroundPayload reports whether b, a valid payload, is one Apple
// delivers as a background push: aps has "content-available": 1 and
// nothing to show (no alert, badge or sound). Apple does not refuse the
// others but treats them as misconfigured (it may drop or throttle them,
// or show them as alerts); the emulator refuses them, to stand in
// strictly.
func backgroundPayload(b []byte) bool {
	var v struct {
		APS map[string]json.RawMessage `json:"aps"`
	}
	if json.Unmarshal(b, &v) != nil {
		return false
	}
	for _, k := range [...]string{"alert", "badge", "sound"} {
		if _, ok := v.APS[k]; ok {
			return false
		}
	}
	return string(v.APS["content-available"]) == "1"
}

// appendReasonJSON appends an error answer's body: {"reason": ...}, and
// the 410 timestamp in milliseconds when ts is set.
func appendReasonJSON(b []byte, reason string, ts time.Time) []byte {
	b = append(b, `{"reason":`...)
	q, _ := json.Marshal(reason)
	b = append(b, q...)
	if !ts.IsZero() {
		b = append(b, `,"timestamp":`...)
		b = strconv.AppendInt(b, ts.UnixMilli(), 10)
	}
	return append(b, '}')
}

func readBody(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// isHexToken reports whether t is an even number of hex digits, at most
// maxTokenHex.
func isHexToken(t string) bool {
	if len(t) > maxTokenHex || len(t)%2 != 0 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if unhex(t[i]) < 0 {
			return false
		}
	}
	return true
}

func anyTopicAllowed(bundles []string, topic string) bool {
	for _, b := range bundles {
		if topicAllowed(b, topic) {
			return true
		}
	}
	return false
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// parseUUID parses the 8-4-4-4-12 hex form, either case.
func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, lo := unhex(s[i]), unhex(s[i+1])
		if hi < 0 || lo < 0 {
			return u, false
		}
		u[j] = byte(hi<<4 | lo)
		j++
		i += 2
	}
	return u, true
}

// newUUID returns a random (version 4) UUID in lower-case 8-4-4-4-12 form.
// It need not be unpredictable, only unique.
func newUUID() string {
	var u [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		u[i], u[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const digits = "0123456789abcdef"
	var b [36]byte
	j := 0
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j], b[j+1] = digits[x>>4], digits[x&0xf]
		j += 2
	}
	return string(b[:])
}
