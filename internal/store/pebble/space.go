package pebble

import (
	"fmt"

	"github.com/herald-im/herald"
)

// The free-space guard. Pebble treats a failed WAL write as fatal: the
// commit pipeline is broken for good and Logger.Fatalf ends the process
// (pebble issue 3427: "crash as quickly as possible" is its design), so a
// full disk cannot be survived once a write has reached it. SQLite refuses
// the write and goes on; to behave the same, this store checks the free
// space of its volume before every write and refuses the write, with
// CodeInternal, while it is below the margin (Options.MinFreeBytes). The
// check is one statfs per write transaction, beside a commit's fsync.
//
// What still writes under the margin: Pebble's own flushes and
// compactions, the WAL of the write that crossed the line, Open (a WAL
// replay and its flush) and PrunePushLog's small deletes. The margin is
// sized for them. Another process filling the volume can still take the
// margin away: the guard protects from Herald's own writes.

// checkSpace refuses a write while the volume is below the margin. It logs
// the change of state, not each refusal: the refusals' errors reach the
// edges, which log them.
func (s *Store) checkSpace() error {
	u, err := s.fs.GetDiskUsage(s.dir)
	if err != nil {
		// Unknown free space: writing could be what ends the process.
		if !s.full.Swap(true) {
			s.log.Error("pebble: free disk space unknown; refusing writes", "err", err)
		}
		return fmt.Errorf("read free disk space: %w", err)
	}
	free := int64(u.AvailBytes)
	if u.AvailBytes > 1<<62 {
		free = 1 << 62
	}
	if free < s.minFree {
		s.setFull(true, free)
		// No byte count here: identical failures log as one (the count is
		// in setFull's line).
		return herald.Errorf(herald.CodeInternal, "disk nearly full: less free space than the store's margin of %d bytes; writes resume once space is freed", s.minFree)
	}
	s.setFull(false, free)
	return nil
}

func (s *Store) setFull(full bool, free int64) {
	if s.full.Swap(full) == full {
		return
	}
	if full {
		s.log.Error("pebble: disk nearly full; refusing writes until space is freed", "free_bytes", free, "min_free_bytes", s.minFree)
	} else {
		s.log.Info("pebble: disk space is back; writes resume", "free_bytes", free, "min_free_bytes", s.minFree)
	}
}
