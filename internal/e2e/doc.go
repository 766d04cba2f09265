// Package e2e holds Herald's end-to-end tests: real servers on port 0 with
// temporary data folders, driven over the wire (raw protocol frames, for what
// clients in any language see) and through the public Go SDK. The crash test
// runs the real binary and kills it with SIGKILL.
package e2e
