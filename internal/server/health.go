package server

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// writeFailHold is how long /readyz stays not ready after a write failed,
// even when the store's probe (Ping) passes meanwhile: a small probe
// write can pass on a disk too full for real ones (SQLite reuses its WAL
// from the start after a checkpoint), and a load balancer should not be
// sent traffic back on every probe. docs/operations.md says the same.
const writeFailHold = 10 * time.Second

// writeHealth is the store every component uses, recording whether its
// writes fail: /readyz is not ready while the latest write failed with an
// internal error (a full disk, an I/O error), so a load balancer stops
// sending traffic that would only fail. Only a message append that
// succeeds clears it (the write that needs the most room: smaller ones,
// such as acks, can pass on a disk too full for messages, and would make
// /readyz flap); without messages, Ping's probe does, writeFailHold after
// the failure.
// Errors of the caller's making (codes other than internal) and cancelled
// contexts say nothing of the store and are not recorded.
type writeHealth struct {
	store.Store
	now      func() time.Time
	failedAt atomic.Int64 // UnixNano of the latest failed write; 0 once cleared
	failures atomic.Int64
}

// writeStats are /metrics' herald_store_* figures.
type writeStats struct {
	WriteFailures int64 // store writes that failed with an internal error
	WritesFailing int64 // 1 from a failed write until a message append succeeds or the probe clears it (/readyz says so meanwhile), else 0
}

func (h *writeHealth) Stats() writeStats {
	st := writeStats{WriteFailures: h.failures.Load()}
	if h.failedAt.Load() != 0 {
		st.WritesFailing = 1
	}
	return st
}

func newWriteHealth(st store.Store, now func() time.Time) *writeHealth {
	return &writeHealth{Store: st, now: now}
}

// errWritesFailing is /readyz's reason while writes fail.
var errWritesFailing = errors.New("store writes are failing")

// check reports whether the store can serve requests and take writes.
func (h *writeHealth) check(ctx context.Context) error {
	if err := h.Store.Ping(ctx); err != nil {
		return err
	}
	at := h.failedAt.Load()
	if at == 0 {
		return nil
	}
	if h.now().Sub(time.Unix(0, at)) < writeFailHold {
		return errWritesFailing
	}
	// The probe passes, and no write has failed for a while: give writes
	// their chance again. A write failing since keeps it not ready.
	h.failedAt.CompareAndSwap(at, 0)
	return nil
}

// note records a write's outcome and returns err; clears: the write was
// a message append, whose success clears a failure.
func (h *writeHealth) note(err error, clears bool) error {
	switch {
	case err == nil:
		if clears && h.failedAt.Load() != 0 {
			h.failedAt.Store(0)
		}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
	case herald.ErrorCode(err) == herald.CodeInternal:
		h.failures.Add(1)
		h.failedAt.Store(h.now().UnixNano())
	}
	return err
}

func (h *writeHealth) AppendMessages(ctx context.Context, msgs []*herald.Message, jobs []store.PushJob) ([]store.Appended, error) {
	res, err := h.Store.AppendMessages(ctx, msgs, jobs)
	return res, h.note(err, true)
}

func (h *writeHealth) EnqueuePush(ctx context.Context, jobs []store.PushJob, done []store.PushKey) error {
	return h.note(h.Store.EnqueuePush(ctx, jobs, done), false)
}

func (h *writeHealth) SetConversationMuted(ctx context.Context, user, conv string, muted bool) error {
	return h.note(h.Store.SetConversationMuted(ctx, user, conv, muted), false)
}

func (h *writeHealth) SetReadSeq(ctx context.Context, user, conv string, seq int64) error {
	return h.note(h.Store.SetReadSeq(ctx, user, conv, seq), false)
}

func (h *writeHealth) SaveCursors(ctx context.Context, batch []store.DeviceCursors) error {
	return h.note(h.Store.SaveCursors(ctx, batch), false)
}

func (h *writeHealth) FinishPush(ctx context.Context, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) error {
	return h.note(h.Store.FinishPush(ctx, done, retry, log, badges), false)
}

func (h *writeHealth) PrunePushLog(ctx context.Context, before time.Time) (int, error) {
	n, err := h.Store.PrunePushLog(ctx, before)
	return n, h.note(err, false)
}

func (h *writeHealth) RegisterPushDevice(ctx context.Context, d herald.PushDevice) (herald.PushDevice, error) {
	out, err := h.Store.RegisterPushDevice(ctx, d)
	return out, h.note(err, false)
}

func (h *writeHealth) UnregisterPushDevice(ctx context.Context, user, pushID string) error {
	return h.note(h.Store.UnregisterPushDevice(ctx, user, pushID), false)
}

func (h *writeHealth) UnbindPushDevices(ctx context.Context, user, device string) ([]string, error) {
	ids, err := h.Store.UnbindPushDevices(ctx, user, device)
	return ids, h.note(err, false)
}

func (h *writeHealth) DropPushDevice(ctx context.Context, pushID string, at time.Time) (bool, error) {
	ok, err := h.Store.DropPushDevice(ctx, pushID, at)
	return ok, h.note(err, false)
}

func (h *writeHealth) PruneUnboundPushDevices(ctx context.Context, before time.Time) (int, error) {
	n, err := h.Store.PruneUnboundPushDevices(ctx, before)
	return n, h.note(err, false)
}

func (h *writeHealth) CreateGroup(ctx context.Context, g herald.Group, members []herald.GroupMember) error {
	return h.note(h.Store.CreateGroup(ctx, g, members), false)
}

func (h *writeHealth) UpdateGroup(ctx context.Context, g herald.Group) error {
	return h.note(h.Store.UpdateGroup(ctx, g), false)
}

func (h *writeHealth) DismissGroup(ctx context.Context, id string) error {
	return h.note(h.Store.DismissGroup(ctx, id), false)
}

func (h *writeHealth) AddGroupMembers(ctx context.Context, id string, members []herald.GroupMember) ([]herald.GroupMember, error) {
	out, err := h.Store.AddGroupMembers(ctx, id, members)
	return out, h.note(err, false)
}

func (h *writeHealth) RemoveGroupMembers(ctx context.Context, id string, users []string) ([]string, error) {
	out, err := h.Store.RemoveGroupMembers(ctx, id, users)
	return out, h.note(err, false)
}

func (h *writeHealth) SetGroupRoles(ctx context.Context, id string, roles map[string]herald.GroupRole) error {
	return h.note(h.Store.SetGroupRoles(ctx, id, roles), false)
}

func (h *writeHealth) SaveCall(ctx context.Context, c *herald.Call, jobs []store.PushJob) error {
	return h.note(h.Store.SaveCall(ctx, c, jobs), false)
}

func (h *writeHealth) RegisterUsers(ctx context.Context, users []herald.User) ([]herald.User, error) {
	out, err := h.Store.RegisterUsers(ctx, users)
	return out, h.note(err, false)
}

func (h *writeHealth) UnregisterUser(ctx context.Context, id string) error {
	return h.note(h.Store.UnregisterUser(ctx, id), false)
}
