package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestStrategiesPage: an operator stores a strategy from the console; it
// is listed with its source, offered on the push form, refused when bad
// (naming the field) and deleted. Without the CSRF token nothing changes.
func TestStrategiesPage(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	csrf := login(t, c, base)

	if resp := postForm(t, c, base+"strategies", url.Values{"action": {"put"}, "resources_id": {"chat"}, "strategy": {`{}`}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST without CSRF: %d, want 403", resp.StatusCode)
	}
	resp := postForm(t, c, base+"strategies", url.Values{"csrf": {csrf}, "action": {"put"}, "resources_id": {"chat"},
		"strategy": {`{"sound":"ping.caf","channel_id":"messages","importance":"high"}`}})
	page := body(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Strategy chat stored.") || !strings.Contains(page, `data-id="chat"`) {
		t.Fatalf("put: %d\n%s", resp.StatusCode, page)
	}
	if !strings.Contains(page, "ping.caf") || !strings.Contains(page, "<td>api</td>") {
		t.Errorf("the list does not show chat's fields and source:\n%s", page)
	}
	if got := srv.Push().Strategies(); len(got) != 1 || got[0].Strategy.ChannelID != "messages" {
		t.Errorf("the push service holds %+v; want chat with channel messages", got)
	}
	if push := body(t, get(t, c, base+"push")); !strings.Contains(push, `<option value="chat"`) {
		t.Error("the push form does not offer chat")
	}

	resp = postForm(t, c, base+"strategies", url.Values{"csrf": {csrf}, "action": {"put"}, "resources_id": {"bad"}, "strategy": {`{"importance":"loud"}`}})
	if page := body(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "importance") {
		t.Errorf("bad importance: %d, want 400 naming importance\n%s", resp.StatusCode, page)
	}
	resp = postForm(t, c, base+"strategies", url.Values{"csrf": {csrf}, "action": {"delete"}, "resources_id": {"chat"}})
	if page := body(t, resp); resp.StatusCode != http.StatusOK || strings.Contains(page, `data-id="chat"`) {
		t.Errorf("delete: %d, chat still listed\n%s", resp.StatusCode, page)
	}
	if got := srv.Push().Strategies(); len(got) != 0 {
		t.Errorf("after the delete the push service holds %+v", got)
	}
}
