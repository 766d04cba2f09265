package sqlite

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

// logRecorder keeps the store's log records, Debug ones included.
type logRecorder struct {
	mu    sync.Mutex
	recs  []slog.Record
	added chan struct{} // signalled after each record
}

func newLogRecorder() *logRecorder { return &logRecorder{added: make(chan struct{}, 1)} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	select {
	case l.added <- struct{}{}:
	default:
	}
	return nil
}

// await waits until more than n records with message msg are kept, or
// until deadline: false then.
func (l *logRecorder) await(msg string, n int, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for len(l.find(msg)) <= n {
		select {
		case <-l.added:
		case <-timer.C:
			return false
		}
	}
	return true
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// find returns the records with message msg, as attribute maps.
func (l *logRecorder) find(msg string) []map[string]slog.Value {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]slog.Value
	for _, r := range l.recs {
		if r.Message != msg {
			continue
		}
		attrs := make(map[string]slog.Value)
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// restarts returns the checkpoint rounds that ended with a RESTART, and the
// number of rounds.
func (l *logRecorder) restarts() (restarts []map[string]slog.Value, rounds int) {
	all := l.find("sqlite: checkpoint")
	for _, r := range all {
		if r["held"].Duration() > 0 {
			restarts = append(restarts, r)
		}
	}
	return restarts, len(all)
}

// TestCheckpointRestartsWAL: once the WAL passes WALPages, the checkpointer
// (after its second PASSIVE) restarts it, and the next commit writes from
// the start of the file again.
func TestCheckpointRestartsWAL(t *testing.T) {
	const walPages = 64
	logs := newLogRecorder()
	s, _ := openTemp(t, Options{WALPages: walPages, CheckpointInterval: 5 * time.Millisecond, Logger: slog.New(logs)})
	defer s.Close()
	n := 0
	appendSome := func(k int) {
		msgs := make([]*herald.Message, k)
		for i := range msgs {
			n++
			msgs[i] = msg(fmt.Sprintf("u%03d", n%100), "bob", fmt.Sprint(n))
		}
		mustAppend(t, s, msgs...)
	}
	// Batches over 100 conversations write well past walPages frames.
	deadline := time.Now().Add(30 * time.Second)
	var restarts []map[string]slog.Value
	for len(restarts) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no RESTART after %d messages", n)
		}
		appendSome(100)
		restarts, _ = logs.restarts()
	}
	r := restarts[0]
	if frames := r["log_frames"].Int64(); r["busy"].Int64() != 0 || frames < walPages || r["checkpointed"].Int64() != frames {
		t.Fatalf("RESTART: busy %v, WAL frames %v, checkpointed %v; want 0, at least %d, all", r["busy"], r["log_frames"], r["checkpointed"], walPages)
	}
	// One message at a time, each after a checkpoint round: the WAL's
	// frame count, which only grows while the file is not reused, falls
	// below walPages.
	for {
		all := logs.find("sqlite: checkpoint")
		if all[len(all)-1]["log_frames"].Int64() < walPages {
			break
		}
		appendSome(1)
		if !logs.await("sqlite: checkpoint", len(all), deadline) {
			t.Fatal("the WAL was not reused after the RESTART")
		}
	}
}

// TestWALFileKeepsItsLength: the commit after a WAL restart writes the file
// again from its start and leaves its length alone, as long as the WAL
// stayed within twice WALPages frames. Cut back to WALPages pages, which is
// shorter than WALPages frames, the file was cut at every restart, and its
// end allocated again in the commits after it.
func TestWALFileKeepsItsLength(t *testing.T) {
	const walPages, frame = 256, 4096 + 24
	logs := newLogRecorder()
	s, path := openTemp(t, Options{WALPages: walPages, CheckpointInterval: 5 * time.Millisecond, Logger: slog.New(logs)})
	defer s.Close()
	n := 0
	appendSome := func() { // 10 conversations: a few dozen frames
		msgs := make([]*herald.Message, 10)
		for i := range msgs {
			n++
			msgs[i] = msg(fmt.Sprintf("u%03d", n%10), "bob", fmt.Sprint(n))
		}
		mustAppend(t, s, msgs...)
	}
	deadline := time.Now().Add(30 * time.Second)
	for seen := 0; ; {
		if time.Now().After(deadline) {
			t.Fatalf("no RESTART of a WAL within %d frames after %d messages", 2*walPages, n)
		}
		appendSome()
		restarts, _ := logs.restarts()
		if len(restarts) == seen {
			continue
		}
		seen = len(restarts)
		frames := restarts[seen-1]["log_frames"].Int64()
		if frames > 2*walPages {
			continue // the writer checkpointed by itself: the file may be cut
		}
		appendSome() // the first commit after the restart
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		if want := 32 + frames*frame; fi.Size() < want {
			t.Fatalf("WAL file %d bytes after a restart at %d frames; want at least %d", fi.Size(), frames, want)
		}
		return
	}
}
