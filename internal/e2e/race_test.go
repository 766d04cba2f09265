//go:build race

package e2e

// raceBuild is set when the tests run with -race: the server binary the
// kill tests start is then built with it too, so a race in the process
// that is killed fails the test as one in the test binary would.
const raceBuild = true
