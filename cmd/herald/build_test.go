package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionPrintsRevision builds herald as the README's install line
// does and checks that `herald version` names the commit it was built
// from (go test's own binary carries no VCS stamp).
func TestVersionPrintsRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git: the build carries no revision")
	}
	head, err := exec.Command(git, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	top, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err == nil && !fi.IsDir() {
		t.Skip("a git worktree: the go command stamps no revision there (it does in a clone)")
	}
	bin := filepath.Join(t.TempDir(), "herald")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=true") // the default, whatever the machine's go env says
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil {
			t.Fatalf("herald %s: %v", arg, err)
		}
		if want := "revision " + strings.TrimSpace(string(head)); !strings.Contains(string(out), want) {
			t.Errorf("herald %s printed %q, want it to contain %q", arg, out, want)
		}
	}
}
