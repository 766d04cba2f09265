package push

import (
	"unicode/utf8"

	"github.com/herald-im/herald"
)

// Content-free mode keeps a message's text away from the vendors (Apple,
// Google, Huawei, the browser's push service): the push carries Herald's
// IDs (conversation, message ID, seq, sender) and a generic text, never
// the sender's title, content or payload, and the app fetches the message
// from Herald itself (a notification service extension on iOS, the
// FirebaseMessagingService on Android, the service worker on the web)
// with a fetch token (token.MintFetch) that reads nothing but that user's
// messages. It applies per app (ContentFree.Apps, the push configuration
// file's "content_free") or per message (herald.PushConfig.ContentFree).
// docs/push.md has each vendor's rendering.

// DefaultContentFreeText is the generic text of a content-free push when
// the configuration sets none.
const DefaultContentFreeText = "New message"

// MaxContentFreeText bounds ContentFree.Text and LocKey.
const MaxContentFreeText = 256

// ContentFree configures content-free mode.
type ContentFree struct {
	// Apps are the apps (bundle IDs, package names, Web Push app names)
	// whose every push is content-free; "*" is every app.
	Apps []string `json:"apps"`
	// Text is the generic text shown; empty means DefaultContentFreeText.
	Text string `json:"text"`
	// LocKey, when set, is the key of Text in the app's localised strings
	// (APNs alert loc-key, FCM data "loc_key", Huawei body_loc_key), so
	// the phone shows it in the user's language.
	LocKey string `json:"loc_key"`
}

// Validate checks c and names the field at fault.
func (c *ContentFree) Validate() error {
	for _, f := range []struct{ name, v string }{{"content_free.text", c.Text}, {"content_free.loc_key", c.LocKey}} {
		if len(f.v) > MaxContentFreeText || !utf8.ValidString(f.v) {
			return herald.Errorf(herald.CodeInvalidArgument, "%s must be valid UTF-8 of at most %d bytes", f.name, MaxContentFreeText)
		}
	}
	for _, app := range c.Apps {
		if app == "" {
			return herald.Errorf(herald.CodeInvalidArgument, "content_free.apps has an empty app")
		}
	}
	return nil
}

// appliesTo reports whether app's pushes are all content-free.
func (c *ContentFree) appliesTo(app string) bool {
	for _, a := range c.Apps {
		if a == app || a == Wildcard {
			return true
		}
	}
	return false
}

// contentFree makes c content-free when its push configuration asks or
// the device's app is content-free: the sender's title, content and
// payload (and a VoIP push's copies of them) are dropped, and the generic
// text takes their place. The CallKit handle of a VoIP push is kept:
// CallKit cannot ring without one.
func (s *Service) contentFree(c *Content, app string) {
	if !c.Config.ContentFree && !s.cfg.ContentFree.appliesTo(app) {
		return
	}
	c.ContentFree = true
	c.Config.Title, c.Config.Content, c.Config.Payload = "", "", ""
	c.GenericText = s.cfg.ContentFree.Text
	if c.GenericText == "" {
		c.GenericText = DefaultContentFreeText
	}
	c.LocKey = s.cfg.ContentFree.LocKey
}
