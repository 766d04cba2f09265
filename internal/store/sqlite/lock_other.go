//go:build !unix

package sqlite

// fileLock is a no-op where flock is missing: there, keeping a second
// Store off the database is up to the operator.
type fileLock struct{}

func lockFile(string) (*fileLock, error) { return &fileLock{}, nil }

func (*fileLock) unlock() error { return nil }
