package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGet(t *testing.T) {
	stamped := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/herald-im/herald", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	tests := []struct {
		name               string
		bi                 *debug.BuildInfo
		ldV, ldRev, ldTime string
		want               Info
	}{
		{"no build info", nil, "", "", "",
			Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}},
		{"go run: no stamp", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "", "", "",
			Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}},
		{"toolchain stamp", stamped, "", "", "",
			Info{Version: "v0.3.0", Revision: "abc123", Time: "2026-12-01T10:00:00Z", Modified: true, GoVersion: runtime.Version()}},
		{"release: linker values win", stamped, "v1.0.0", "def456", "2026-12-02T10:00:00Z",
			Info{Version: "v1.0.0", Revision: "def456", Time: "2026-12-02T10:00:00Z", GoVersion: runtime.Version()}},
		{"release without a stamp", nil, "v1.0.0-SNAPSHOT-def456", "def456", "",
			Info{Version: "v1.0.0-SNAPSHOT-def456", Revision: "def456", GoVersion: runtime.Version()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := get(tt.bi, tt.ldV, tt.ldRev, tt.ldTime); got != tt.want {
				t.Errorf("get() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	i := Info{Version: "v1.0.0", Revision: "def456", Time: "2026-12-02T10:00:00Z", Modified: true, GoVersion: "go1.26.8"}
	if got, want := i.String(), "herald v1.0.0 (revision def456, modified, 2026-12-02T10:00:00Z, go1.26.8)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
