//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// fileLock keeps a second Store off a database: the writer's in-memory seq
// cache is only right while it is the database's only writer.
type fileLock struct{ f *os.File }

// lockFile takes an exclusive, non-blocking flock on name, creating it.
// flock locks belong to the open file, so a second Open in the same process
// is refused too.
func lockFile(name string) (*fileLock, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("database is in use: another Store holds %s", name)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return &fileLock{f: f}, nil
}

func (l *fileLock) unlock() error {
	// Closing the file releases the lock. The file stays: removing it
	// would race with another process that has just opened it.
	return l.f.Close()
}
