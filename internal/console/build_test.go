package console_test

import (
	"html"
	"net/http"
	"strings"
	"testing"

	"github.com/herald-im/herald/internal/version"
)

// TestFooterNamesTheBuild: every page a logged-in operator sees ends with
// the build that runs (`herald version`'s fields); the login page, which
// anyone who reaches the console sees, does not say it.
func TestFooterNamesTheBuild(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.Addr() + "/console/"
	c := browserless(t)
	if b := body(t, get(t, c, base+"login")); strings.Contains(b, `id="build"`) {
		t.Error("the login page shows the build to someone not logged in")
	}
	login(t, c, base)
	v := version.Get()
	want := html.EscapeString("herald " + v.Version + " · revision " + v.Revision + " · " + v.GoVersion)
	for _, page := range []string{"", "push", "devices", "log", "message", "cluster"} {
		resp := get(t, c, base+page)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", page, resp.StatusCode)
			continue
		}
		if b := body(t, resp); !strings.Contains(b, `<footer class="build" id="build">`+want+`</footer>`) {
			t.Errorf("GET %s: no footer saying %q", page, want)
		}
	}
}
