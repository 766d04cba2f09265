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

// Canonical header keys, indexed directly: http.Header.Get would
// canonicalize on every call.
const (
	hAuthorization = "Authorization"
	hTopic         = "Apns-Topic"
	hPushType      = "Apns-Push-Type"
	hPriority      = "Apns-Priority"
	hExpiration    = "Apns-Expiration"
	hCollapseID    = "Apns-Collapse-Id"
	hID            = "Apns-Id"
)

var checkedHeaders = [...]string{hAuthorization, hTopic, hPushType, hPriority, hExpiration, hCollapseID, hID}

var bodyPool = sync.Pool{New: func() any { b := make([]byte, maxPayloadVoIP+1); return &b }}

// ServeHTTP serves one request on c: the provider API, a vendor emulator
// mounted with Handle, or the control API under /_emulator/.
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

// push is a parsed provider API request.
type push struct {
	token, topic, pushType, collapseID string
	id                                 string // as sent, "" if none or malformed
	uuid                               [16]byte
	priority                           int
	expiration                         int64
	payload                            []byte // in a pooled buffer
	auth                               *tokenEntry
}

// answer is a non-200 verdict.
type answer struct {
	status int
	reason string
}

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
	now := a.now()

	bufp := bodyPool.Get().(*[]byte)
	defer bodyPool.Put(bufp)
	var p push
	ans, ok := a.check(c, r, &p, *bufp, now)
	if !ok {
		a.stats.unanswered.Add(1) // the request body broke off
		return
	}
	if ans.status != 0 {
		a.reply(w, p.id, ans.status, ans.reason, time.Time{}, 0)
		return
	}

	d := a.device(p.token, false)
	if d != nil {
		st, scripted, env, topic := d.take()
		if scripted {
			if st.Delay > 0 && !sleep(ctx, a.ctx, st.Delay) {
				a.stats.unanswered.Add(1)
				return
			}
			if st.Abort {
				a.stats.unanswered.Add(1)
				panic(http.ErrAbortHandler)
			}
			if st.GoAway {
				defer c.goAway()
			}
			if st.Status != 0 && st.Status != http.StatusOK {
				reason := st.Reason
				if reason == "" {
					reason = defaultReason(st.Status)
				}
				ts := st.Timestamp
				if st.Status == http.StatusGone && ts.IsZero() {
					ts = now
				}
				a.reply(w, p.id, st.Status, reason, ts, st.RetryAfter)
				return
			}
		}
		if env != "" && env != c.env {
			a.reply(w, p.id, http.StatusBadRequest, BadDeviceToken, time.Time{}, 0)
			return
		}
		if topic != "" && topic != p.topic {
			a.reply(w, p.id, http.StatusBadRequest, DeviceTokenNotForTopic, time.Time{}, 0)
			return
		}
	}

	// Accepted.
	given := p.id != ""
	if !given {
		p.id = newUUID()
	} else if a.seen.add(p.uuid) {
		a.stats.duplicates.Add(1)
	}
	hook := a.onAccept.load()
	if a.inboxMax > 0 || hook != nil {
		n := &Notification{
			ID:         p.id,
			Token:      p.token,
			Topic:      p.topic,
			PushType:   p.pushType,
			Priority:   p.priority,
			Expiration: p.expiration,
			CollapseID: p.collapseID,
			Payload:    append(json.RawMessage(nil), p.payload...),
			Env:        c.env,
			ReceivedAt: now,
		}
		if p.auth != nil {
			n.KeyID, n.TeamID, n.IssuedAt = p.auth.key.id, p.auth.key.TeamID, time.Unix(p.auth.iat, 0).UTC()
		} else {
			n.Certificate = c.certTopic
		}
		if a.inboxMax > 0 {
			if d == nil {
				d = a.device(p.token, true)
			}
			d.deliver(n, a.inboxMax)
		}
		if hook != nil {
			hook(n)
		}
	}
	a.stats.accepted.Add(1)
	w.Header()[hID] = []string{p.id}
	w.WriteHeader(http.StatusOK)
}

// check authenticates and validates r into p. ok is false when the body
// could not be read (the client went away); otherwise a zero answer
// means the push is well-formed.
func (a *APNs) check(c *conn, r *http.Request, p *push, buf []byte, now time.Time) (_ answer, ok bool) {
	h := r.Header
	// The echoed apns-id is parsed first so every answer can carry it.
	if v := h[hID]; len(v) == 1 {
		if u, ok := parseUUID(v[0]); ok {
			p.id, p.uuid = v[0], u
		}
	}
	path := r.URL.Path
	if !strings.HasPrefix(path, devicePath) {
		return answer{http.StatusNotFound, BadPath}, true
	}
	if r.Method != http.MethodPost {
		return answer{http.StatusMethodNotAllowed, MethodNotAllowed}, true
	}
	if r.ProtoMajor != 2 {
		return answer{http.StatusHTTPVersionNotSupported, HTTP2Required}, true
	}
	tok := path[len(devicePath):]
	if tok == "" {
		return answer{http.StatusBadRequest, MissingDeviceToken}, true
	}
	if !isHexToken(tok) {
		return answer{http.StatusBadRequest, BadDeviceToken}, true
	}
	p.token = normToken(tok)
	for _, k := range checkedHeaders {
		if len(h[k]) > 1 {
			return answer{http.StatusBadRequest, DuplicateHeaders}, true
		}
	}

	// Authentication: a provider token, else a client certificate.
	p.topic = first(h[hTopic])
	if v := h[hAuthorization]; len(v) == 1 {
		e, status, reason := a.authToken(c, v[0], now)
		if status != 0 {
			return answer{status, reason}, true
		}
		if e.key.Env != "" && e.key.Env != c.env {
			return answer{http.StatusForbidden, BadEnvironmentKeyIdInToken}, true
		}
		p.auth = e
		if p.topic == "" {
			return answer{http.StatusBadRequest, MissingTopic}, true
		}
		if len(e.key.Topics) > 0 && !anyTopicAllowed(e.key.Topics, p.topic) {
			return answer{http.StatusBadRequest, TopicDisallowed}, true
		}
	} else if c.certTopic != "" {
		if (c.env == Production && !c.certProd) || (c.env == Development && !c.certDev) {
			return answer{http.StatusForbidden, BadCertificateEnvironment}, true
		}
		if p.topic == "" {
			p.topic = c.certTopic // a single-topic certificate needs none
		} else if !topicAllowed(c.certTopic, p.topic) {
			return answer{http.StatusBadRequest, TopicDisallowed}, true
		}
	} else {
		return answer{http.StatusForbidden, MissingProviderToken}, true
	}

	// Headers.
	suffix, known := "", false
	p.pushType = first(h[hPushType])
	for _, t := range pushTypes {
		if t.name == p.pushType {
			p.pushType, suffix, known = t.name, t.suffix, true // the constant: no reference into the header
			break
		}
	}
	if !known {
		return answer{http.StatusBadRequest, InvalidPushType}, true
	}
	if suffix != "" && !strings.HasSuffix(p.topic, suffix) {
		return answer{http.StatusBadRequest, BadTopic}, true
	}
	switch v := first(h[hPriority]); v {
	case "":
		p.priority = defaultPriority
	case "10", "5", "1":
		p.priority, _ = strconv.Atoi(v)
	default:
		return answer{http.StatusBadRequest, BadPriority}, true
	}
	if p.pushType == "background" && p.priority != 5 {
		return answer{http.StatusBadRequest, BadPriority}, true
	}
	if v := first(h[hExpiration]); v != "" {
		exp, err := strconv.ParseInt(v, 10, 64)
		if err != nil || exp < 0 {
			return answer{http.StatusBadRequest, BadExpirationDate}, true
		}
		p.expiration = exp
	}
	p.collapseID = first(h[hCollapseID])
	if len(p.collapseID) > maxCollapseID {
		return answer{http.StatusBadRequest, BadCollapseId}, true
	}
	if v := h[hID]; len(v) == 1 && p.id == "" {
		return answer{http.StatusBadRequest, BadMessageId}, true
	}

	// Payload.
	limit := maxPayload
	if p.pushType == "voip" {
		limit = maxPayloadVoIP
	}
	if r.ContentLength > int64(limit) {
		return answer{http.StatusRequestEntityTooLarge, PayloadTooLarge}, true
	}
	n, err := readBody(r.Body, buf[:limit+1])
	if err != nil {
		return answer{}, false
	}
	switch {
	case n == 0:
		return answer{http.StatusBadRequest, PayloadEmpty}, true
	case n > limit:
		return answer{http.StatusRequestEntityTooLarge, PayloadTooLarge}, true
	}
	p.payload = buf[:n]
	// Apple documents no reason for malformed JSON; PayloadEmpty is the
	// nearest of those it does ("the message payload was empty").
	if !validPayload(p.payload) {
		return answer{http.StatusBadRequest, PayloadEmpty}, true
	}
	return answer{}, true
}

// reply writes a non-200 answer.
func (a *APNs) reply(w http.ResponseWriter, id string, status int, reason string, ts time.Time, after time.Duration) {
	if id == "" {
		id = newUUID()
	}
	h := w.Header()
	h[hID] = []string{id}
	a.stats.reject(reason)
	h["Content-Type"] = []string{"application/json"}
	if after > 0 {
		h["Retry-After"] = []string{retryAfter(after)}
	}
	body := struct {
		Reason    string `json:"reason"`
		Timestamp int64  `json:"timestamp,omitempty"`
	}{Reason: reason}
	if !ts.IsZero() {
		body.Timestamp = ts.UnixMilli()
	}
	b, _ := json.Marshal(body)
	w.WriteHeader(status)
	w.Write(b)
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
