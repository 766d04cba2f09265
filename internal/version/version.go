// Package version reports which build of Herald is running: the module
// version and the VCS revision the Go toolchain stamps into the binary
// (runtime/debug.ReadBuildInfo), or that a release build sets with the
// linker (-X, see .goreleaser.yaml). `herald version` prints it, the
// server logs it when it starts, the herald_build_info metric and the
// console's footer carry it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by a release build with -ldflags "-X <this package>.version=v1.2.3
// -X <this package>.revision=<commit> -X <this package>.commitTime=<RFC 3339>":
// a release is built from a tag the toolchain may not see (a shallow or
// worktree checkout, GOFLAGS=-buildvcs=false), and the release must say
// what it is whatever the build machine's git state. Empty means "ask the
// toolchain's stamp".
var (
	version    string
	revision   string
	commitTime string
)

// Info describes one build.
type Info struct {
	Version   string // module version: a tag, a pseudo-version, or "(devel)"
	Revision  string // VCS commit ("unknown" when the build recorded none, as in go run and tests)
	Time      string // commit time, RFC 3339, or ""
	Modified  bool   // the working tree had uncommitted changes
	GoVersion string // the toolchain that built the binary, as runtime.Version() says
}

// Get reads the running binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return get(bi, version, revision, commitTime)
}

// get merges the toolchain's stamp (bi, nil when there is none) with the
// linker-set values, which win when set.
func get(bi *debug.BuildInfo, ldVersion, ldRevision, ldTime string) Info {
	info := Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	if bi != nil {
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
	}
	if ldVersion != "" {
		info.Version = ldVersion
	}
	if ldRevision != "" {
		// The linker's revision describes the tree the release was built
		// from; the toolchain's "modified" flag is about a possibly
		// different stamp, so it goes with it.
		info.Revision, info.Modified = ldRevision, false
		info.Time = ldTime
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
