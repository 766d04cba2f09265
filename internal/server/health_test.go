package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// faultStore fails what the test says: its writes (AppendMessages) and its
// probe (Ping). Other methods are not used.
type faultStore struct {
	store.Store
	writeErr, pingErr error
}

func (f *faultStore) AppendMessages(context.Context, []*herald.Message, []store.PushJob) ([]store.Appended, error) {
	return nil, f.writeErr
}

func (f *faultStore) Ping(context.Context) error { return f.pingErr }

// SaveCursors is a small write that passes on a disk too full for
// messages.
func (f *faultStore) SaveCursors(context.Context, []store.DeviceCursors) error { return nil }

// TestReadyzWhileWritesFail: /readyz is not ready while the store refuses
// writes, though it still answers reads and its probe may pass; it is
// ready again after a message append succeeds, or, without one, once the
// probe passes writeFailHold after the last failure. Smaller writes that
// pass do not make it ready: before, an ack write did, at once, and
// /readyz flapped on a full disk.
func TestReadyzWhileWritesFail(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fs := &faultStore{}
	s := &Server{log: slog.New(slog.DiscardHandler), store: newWriteHealth(fs, func() time.Time { return now })}
	s.ready.Store(true)
	ctx := context.Background()
	write := func(err error) {
		fs.writeErr = err
		s.store.AppendMessages(ctx, nil, nil)
	}
	diskFull := fmt.Errorf("sqlite: append messages: %w", errors.New("database or disk is full (13)"))
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"healthy", func() {}, http.StatusOK},
		{"a write fails", func() { write(diskFull) }, http.StatusServiceUnavailable},
		{"probe passes, failure recent", func() { now = now.Add(writeFailHold - time.Second) }, http.StatusServiceUnavailable},
		{"probe passes, failure old", func() { now = now.Add(2 * time.Second) }, http.StatusOK},
		{"fails again", func() { write(diskFull) }, http.StatusServiceUnavailable},
		{"a small write passes", func() { s.store.SaveCursors(ctx, nil) }, http.StatusServiceUnavailable},
		{"a message append succeeds", func() { write(nil) }, http.StatusOK},
		{"caller's error", func() { write(herald.Errorf(herald.CodeInvalidArgument, "bad")) }, http.StatusOK},
		{"caller gave up", func() { write(context.Canceled) }, http.StatusOK},
		{"probe fails", func() { fs.pingErr = herald.Errorf(herald.CodeInternal, "disk nearly full") }, http.StatusServiceUnavailable},
		{"space freed", func() { fs.pingErr = nil }, http.StatusOK},
		{"store refuses a write", func() { write(herald.Errorf(herald.CodeInternal, "disk nearly full")) }, http.StatusServiceUnavailable},
	}
	for _, st := range steps {
		st.do()
		rec := httptest.NewRecorder()
		s.readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code != st.want {
			t.Errorf("%s: /readyz = %d %q, want %d", st.name, rec.Code, rec.Body.String(), st.want)
		}
	}
	if got, want := s.store.Stats(), (writeStats{WriteFailures: 3, WritesFailing: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}
