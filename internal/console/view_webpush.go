package console

import (
	"encoding/json"
	"net/url"
	"strconv"

	"github.com/herald-im/herald/internal/emulator"
)

// webpushView reads a Web Push emulator notification as a browser shows
// it: the payload is what the service worker receives (decrypted by the
// emulator), and Herald's worker passes title, body, badge and tag to
// showNotification; a "silent" push shows nothing. The tag (also the
// Topic header) stands where APNs' thread would: a push with the same tag
// replaces the one shown.
func webpushView(n emulator.Notification) phone {
	p := phone{App: "browser", ReceivedAt: n.ReceivedAt, ID: n.ID, Raw: prettyJSON(string(n.Payload)), Kind: "alert (browser notification)"}
	if u, err := url.Parse(n.Token); err == nil && u.Host != "" {
		p.App = "browser, push service " + u.Host
	}
	var doc struct {
		Title   string          `json:"title"`
		Body    string          `json:"body"`
		Badge   *int            `json:"badge"`
		Tag     string          `json:"tag"`
		Silent  bool            `json:"silent"`
		Payload string          `json:"payload"`
		Herald  json.RawMessage `json:"herald"`
	}
	if err := json.Unmarshal(n.Payload, &doc); err != nil {
		p.Kind = "unreadable payload"
		return p
	}
	p.Title, p.Body, p.Thread, p.AppPayload = doc.Title, doc.Body, doc.Tag, doc.Payload
	if doc.Badge != nil {
		p.Badge = strconv.Itoa(*doc.Badge)
	}
	if len(doc.Herald) > 0 {
		p.Herald = string(doc.Herald)
	}
	if doc.Silent || (doc.Title == "" && doc.Body == "") {
		p.Kind = "silent (data only): nothing is shown; the service worker gets the data"
	}
	return p
}
