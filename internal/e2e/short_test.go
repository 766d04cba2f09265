package e2e

import "testing"

// skipUnderShort skips one of the long cases (a real binary built, killed
// and restarted; a wait for a real timer of several seconds) under
// `go test -short`, the README's edit-test loop. The README's test
// command, which .ci/run runs, has no -short: CI runs every case.
func skipUnderShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("long end-to-end case: skipped under -short; go test -race ./... runs it")
	}
}
