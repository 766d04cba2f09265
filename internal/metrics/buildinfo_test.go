package metrics

import (
	"fmt"
	"strings"
	"testing"

	"github.com/herald-im/herald/internal/version"
)

// herald_build_info carries the running build's version, revision and Go
// version, as `herald version` prints them.
func TestBuildInfo(t *testing.T) {
	v := version.Get()
	want := fmt.Sprintf("herald_build_info{goversion=%q,revision=%q,version=%q} 1\n", v.GoVersion, v.Revision, v.Version)
	if out := scrape(t, New()); !strings.Contains(out, want) {
		t.Errorf("scrape lacks %q", want)
	}
}
