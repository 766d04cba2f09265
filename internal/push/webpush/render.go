package webpush

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// document is the payload a service worker receives (event.data.json()):
//
//	{"title", "body", "badge", "tag", "payload", "herald": {...}}
//
// An alert carries title and body (Config.Title, Config.Content) and the
// badge when enabled; a data-only push (background, call invitation)
// carries none of them but "silent": true, with tag, payload and herald,
// so the worker knows to show nothing. "tag" is the Topic header's value:
// showNotification({tag}) replaces a shown notification with the same
// tag, as the push service replaces a queued one with the same Topic. A
// content-free push carries the generic text as its body and no title or
// payload; its herald block says "content_free": true.
type document struct {
	Title   string          `json:"title,omitempty"`
	Body    string          `json:"body,omitempty"`
	Badge   *int            `json:"badge,omitempty"`
	Silent  bool            `json:"silent,omitempty"` // data-only: show nothing
	Tag     string          `json:"tag,omitempty"`
	Payload string          `json:"payload,omitempty"`
	Herald  push.HeraldKeys `json:"herald,omitzero"`
}

// Render builds the plaintext payload of c (see document). It fails with
// herald.CodeTooLarge over MaxPlaintext bytes, which is what one 4096-byte
// aes128gcm record carries.
func (p *Provider) Render(c *push.Content, d *herald.PushDevice) ([]byte, error) {
	return render(c)
}

func render(c *push.Content) ([]byte, error) {
	doc := document{
		Tag:     Topic(c.Strategy.CollapseKey, c.NotifID),
		Payload: c.Config.Payload,
		Herald:  c.HeraldKeys(),
	}
	switch {
	case c.DataOnly():
		doc.Silent = true
	case c.ContentFree:
		doc.Body = c.GenericText // the worker may fetch the message and show it instead
		if c.HasBadge {
			b := c.Badge
			doc.Badge = &b
		}
	default:
		doc.Title, doc.Body = c.Config.Title, c.Config.Content
		if c.HasBadge {
			b := c.Badge
			doc.Badge = &b
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("webpush: encoding the payload: %w", err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxPlaintext {
		return nil, herald.Errorf(herald.CodeTooLarge, "push payload is %d bytes; the Web Push limit is %d (one 4096-byte aes128gcm record)", len(b), MaxPlaintext)
	}
	return b, nil
}

// maxTopic is RFC 8030 §5.4's limit on the Topic header.
const maxTopic = 32

// Topic is the Web Push Topic (and the payload's tag) of a push: the
// strategy's collapse key if set, else the notification ID without its
// dashes (a UUID's 32 hex digits). A collapse key that is not already a
// valid Topic (at most 32 characters of the base64url alphabet) is
// replaced by the first 32 characters of its SHA-256, base64url: stable,
// so pushes with one key still replace one another.
func Topic(collapseKey, notifID string) string {
	if collapseKey != "" {
		if validTopic(collapseKey) {
			return collapseKey
		}
		sum := sha256.Sum256([]byte(collapseKey))
		return base64.RawURLEncoding.EncodeToString(sum[:])[:maxTopic]
	}
	t := strings.ReplaceAll(notifID, "-", "")
	if !validTopic(t) {
		return ""
	}
	return t
}

func validTopic(t string) bool {
	if t == "" || len(t) > maxTopic {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
