// Package version reports which build of Herald is running: the module
// version and the VCS revision the Go toolchain stamps into the binary
// (runtime/debug.ReadBuildInfo). `herald version` prints it and the
// herald_build_info metric carries it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info describes one build.
type Info struct {
	Version   string // module version: a tag, a pseudo-version, or "(devel)"
	Revision  string // VCS commit ("unknown" when the build recorded none, as in go run and tests)
	Time      string // commit time, RFC 3339, or ""
	Modified  bool   // the working tree had uncommitted changes
	GoVersion string
}

// Get reads the running binary's build information.
func Get() Info {
	info := Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the one line `herald version` prints.
func (i Info) String() string {
	s := fmt.Sprintf("herald %s (revision %s", i.Version, i.Revision)
	if i.Modified {
		s += ", modified"
	}
	if i.Time != "" {
		s += ", " + i.Time
	}
	return s + ", " + i.GoVersion + ")"
}
