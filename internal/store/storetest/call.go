package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// The call part of the suite (SaveCall, Call, OpenCalls, UserCalls), and
// EnqueuePush, which stores jobs as SaveCall does.

// call returns a new ringing call from caller to invitees, created at the
// fixture's clock and timing out after timeout.
func (f *fixture) call(id string, timeout time.Duration, caller string, invitees ...string) *herald.Call {
	f.at = f.at.Add(time.Millisecond)
	c := &herald.Call{
		ID: id, Mode: herald.CallGeneral, Timeout: timeout, CreatedAt: f.at, Deadline: f.at.Add(timeout),
		Extended:     "call " + id,
		Participants: []herald.CallParticipant{{User: caller, State: herald.CallInviting, UpdatedAt: f.at}},
	}
	for _, u := range invitees {
		c.Participants = append(c.Participants, herald.CallParticipant{User: u, State: herald.CallNotYet, UpdatedAt: f.at})
	}
	return c
}

func (f *fixture) saveCall(t *testing.T, c *herald.Call, jobs []store.PushJob) {
	t.Helper()
	if err := f.s.SaveCall(context.Background(), c, jobs); err != nil {
		t.Fatalf("SaveCall(%q): %v", c.ID, err)
	}
}

// callString is c's stored form: every field, times as Unix ms.
func callString(t *testing.T, c *herald.Call) string {
	t.Helper()
	if c == nil {
		return "<nil>"
	}
	b, err := store.EncodeCall(c)
	if err != nil {
		t.Fatalf("EncodeCall: %v", err)
	}
	return string(b)
}

func sameCall(t *testing.T, f *fixture, want *herald.Call) {
	t.Helper()
	got, err := f.s.Call(context.Background(), want.ID)
	if err != nil {
		t.Errorf("Call(%q): %v", want.ID, err)
		return
	}
	if g, w := callString(t, got), callString(t, want); g != w {
		t.Errorf("Call(%q):\n got %s\nwant %s", want.ID, g, w)
	}
	if got.EndedAt.IsZero() != want.EndedAt.IsZero() {
		t.Errorf("Call(%q): EndedAt %v, want %v", want.ID, got.EndedAt, want.EndedAt)
	}
}

func callIDs(calls []*herald.Call) []string {
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.ID
	}
	return ids
}

// callJob is a push of call c to pushID for user, under message ID msgID.
func callJob(pushID string, msgID int64, user string, c *herald.Call) store.PushJob {
	return store.PushJob{
		PushID: pushID, MsgID: msgID, User: user, Conv: herald.CallConversationKey(c.ID), Due: c.CreatedAt,
		Expires: c.Deadline, Data: []byte("ring " + user),
	}
}

// testCallSaveAndGet: a call reads back as saved, and saving it again
// replaces it.
func testCallSaveAndGet(t *testing.T, f *fixture) {
	ctx := context.Background()
	if _, err := f.s.Call(ctx, "c1"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Call of a new store: %v, want not_found", err)
	}
	c := f.call("c1", 90*time.Second, "alice", "bob", "carol")
	c.Extended = `{"ünï":"çødé ✓ 🎉"}`
	c.Push = &herald.PushConfig{Title: "alice", Content: "calling", Payload: "p", EnableBadge: true, BadgeIncrement: 1,
		VoIP: &herald.VoIPConfig{Handle: "alice", HasVideo: true}}
	c.Participants[1].State, c.Participants[1].Extended = herald.CallReceived, "ringing"
	f.saveCall(t, c, nil)
	sameCall(t, f, c)
	other := f.call("c2", time.Minute, "bob", "alice")
	f.saveCall(t, other, nil)

	// The call goes on: bob accepts, carol rejects, the call ends.
	upd := *c
	upd.Participants = slices.Clone(c.Participants)
	at := c.CreatedAt.Add(5 * time.Second)
	upd.Participants[0].State, upd.Participants[0].UpdatedAt = herald.CallEnded, at
	upd.Participants[1].State, upd.Participants[1].UpdatedAt, upd.Participants[1].Extended = herald.CallAccepted, at, "ok"
	upd.Participants[2].State, upd.Participants[2].UpdatedAt = herald.CallRejected, at.Add(-time.Second)
	upd.EndedAt, upd.Push, upd.Extended = at, nil, ""
	f.saveCall(t, &upd, nil)
	sameCall(t, f, &upd)
	sameCall(t, f, other)

	// Invitees added later are kept in order.
	upd2 := upd
	upd2.Participants = append(slices.Clone(upd.Participants), herald.CallParticipant{User: "dave", State: herald.CallNotYet, UpdatedAt: at})
	f.saveCall(t, &upd2, nil)
	sameCall(t, f, &upd2)
	if _, err := f.s.Call(ctx, "c3"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Call(unknown): %v, want not_found", err)
	}
}

// testCallJobs: SaveCall stores its jobs with the call; a job already
// pending is left as it is.
func testCallJobs(t *testing.T, f *fixture) {
	c := f.call("c1", 30*time.Second, "alice", "bob", "carol")
	jobs := []store.PushJob{callJob("pd_bob", 1001, "bob", c), callJob("pd_carol", 1001, "carol", c), callJob("pd_carol2", 1001, "carol", c)}
	jobs[2].Attempt, jobs[2].Data = 1, nil
	jobs[0].Msg = 3 // SaveCall ignores Msg
	f.saveCall(t, c, jobs)
	want := slices.Clone(jobs)
	want[0].Msg = 0
	sortJobs(want)
	sameJobs(t, "outbox after SaveCall", f.pending(t), want)
	sameCall(t, f, c)

	// The call is cancelled: the cancel pushes replace nothing pending.
	cancelled := *c
	cancelled.EndedAt = c.CreatedAt.Add(time.Second)
	again := callJob("pd_bob", 1001, "bob", c)
	again.Data, again.Due = []byte("changed"), c.CreatedAt.Add(time.Minute)
	cancel := callJob("pd_bob", 1002, "bob", c)
	cancel.Data = []byte("cancel")
	f.saveCall(t, &cancelled, []store.PushJob{again, cancel})
	want = append(want, cancel)
	sortJobs(want)
	sameJobs(t, "outbox after a second SaveCall", f.pending(t), want)
	sameCall(t, f, &cancelled)
}

// testCallVersion: a call with a version is stored only over the
// version before it (none stored counts as zero), checked with the write:
// of writers racing from one version, one wins, and a refused write
// stores nothing, its jobs included. Version zero writes unconditionally.
func testCallVersion(t *testing.T, f *fixture) {
	ctx := context.Background()
	at := func(c *herald.Call, v int64, extended string) *herald.Call {
		n := *c
		n.Participants = slices.Clone(c.Participants)
		n.Version, n.Extended = v, extended
		return &n
	}
	c := f.call("c1", 30*time.Second, "alice", "bob")
	v1 := at(c, 1, "v1")
	f.saveCall(t, v1, nil)
	sameCall(t, f, v1)
	for _, tt := range []struct {
		name string
		v    int64
	}{{"the same version again", 1}, {"a version ahead", 3}} {
		err := f.s.SaveCall(ctx, at(c, tt.v, "refused"), []store.PushJob{callJob("pd_bob", 1001, "bob", c)})
		wantCode(t, "SaveCall of "+tt.name, err, herald.CodeConflict)
	}
	sameCall(t, f, v1)
	sameJobs(t, "outbox after refused saves", f.pending(t), nil)
	fresh := f.call("c2", 30*time.Second, "alice", "bob")
	wantCode(t, "SaveCall of a new call at version 2", f.s.SaveCall(ctx, at(fresh, 2, ""), nil), herald.CodeConflict)
	if _, err := f.s.Call(ctx, "c2"); herald.ErrorCode(err) != herald.CodeNotFound {
		t.Errorf("Call of a refused new call: %v, want not_found", err)
	}

	// Writers racing from version 1 (nodes timing the call out at once).
	const racers = 8
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() { errs[i] = f.s.SaveCall(ctx, at(c, 2, fmt.Sprint("racer ", i)), nil) })
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Errorf("racers %d and %d both stored version 2", won, i)
		case err == nil:
			won = i
		default:
			wantCode(t, fmt.Sprint("racer ", i), err, herald.CodeConflict)
		}
	}
	if won < 0 {
		t.Fatal("no racer stored version 2")
	}
	sameCall(t, f, at(c, 2, fmt.Sprint("racer ", won)))

	// Version zero (a tool, an older server) overwrites; versions go on
	// from zero.
	f.saveCall(t, at(c, 0, "v0"), nil)
	sameCall(t, f, at(c, 0, "v0"))
	f.saveCall(t, at(c, 1, "after v0"), nil)
	sameCall(t, f, at(c, 1, "after v0"))
}

// testCallInvalid: a call without ID, caller and invitee, participant user
// or creation time, or with a bad job, stores nothing.
func testCallInvalid(t *testing.T, f *fixture) {
	ctx := context.Background()
	tests := []struct {
		name   string
		break_ func(c *herald.Call) *herald.Call
		jobs   []store.PushJob
	}{
		{"nil", func(*herald.Call) *herald.Call { return nil }, nil},
		{"no ID", func(c *herald.Call) *herald.Call { c.ID = ""; return c }, nil},
		{"no participants", func(c *herald.Call) *herald.Call { c.Participants = nil; return c }, nil},
		{"caller only", func(c *herald.Call) *herald.Call { c.Participants = c.Participants[:1]; return c }, nil},
		{"empty participant", func(c *herald.Call) *herald.Call { c.Participants[1].User = ""; return c }, nil},
		{"no CreatedAt", func(c *herald.Call) *herald.Call { c.CreatedAt = time.Time{}; return c }, nil},
		{"job without push ID", func(c *herald.Call) *herald.Call { return c },
			[]store.PushJob{{PushID: "pd_ok", MsgID: 1, User: "bob", Due: baseTime}, {PushID: "", MsgID: 1, User: "bob", Due: baseTime}}},
		{"job without user", func(c *herald.Call) *herald.Call { return c },
			[]store.PushJob{{PushID: "pd_ok", MsgID: 1, User: "bob", Due: baseTime}, {PushID: "pd_x", MsgID: 1, Due: baseTime}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.break_(f.call("c1", time.Minute, "alice", "bob"))
			err := f.s.SaveCall(ctx, c, tt.jobs)
			wantCode(t, "SaveCall", err, herald.CodeInvalidArgument)
			if _, err := f.s.Call(ctx, "c1"); herald.ErrorCode(err) != herald.CodeNotFound {
				t.Errorf("Call after a refused SaveCall: %v, want not_found", err)
			}
			sameJobs(t, "outbox after a refused SaveCall", f.pending(t), nil)
		})
	}
	open, err := f.s.OpenCalls(ctx)
	if err != nil || len(open) != 0 {
		t.Errorf("OpenCalls after refused calls = %q, %v; want none", callIDs(open), err)
	}
	// A refused call leaves its ID free; a bad replacement leaves the call
	// as it was.
	c := f.call("c1", time.Minute, "alice", "bob")
	f.saveCall(t, c, nil)
	bad := *c
	bad.Participants = bad.Participants[:1]
	wantCode(t, "SaveCall of a bad replacement", f.s.SaveCall(ctx, &bad, nil), herald.CodeInvalidArgument)
	ended := *c
	ended.EndedAt = c.CreatedAt.Add(time.Second)
	wantCode(t, "SaveCall with a bad job", f.s.SaveCall(ctx, &ended, []store.PushJob{{PushID: "pd_x"}}), herald.CodeInvalidArgument)
	sameCall(t, f, c)
}

// testOpenCalls: the calls not ended, in Deadline order.
func testOpenCalls(t *testing.T, f *fixture) {
	ctx := context.Background()
	open := func() []string {
		t.Helper()
		calls, err := f.s.OpenCalls(ctx)
		if err != nil {
			t.Fatalf("OpenCalls: %v", err)
		}
		return callIDs(calls)
	}
	if got := open(); len(got) != 0 {
		t.Errorf("OpenCalls of a new store = %q, want none", got)
	}
	calls := []*herald.Call{
		f.call("a", 30*time.Second, "alice", "bob"),
		f.call("b", 10*time.Second, "bob", "carol"),
		f.call("c", 20*time.Second, "carol", "alice"),
		f.call("d", 5*time.Second, "dave", "alice", "bob"),
		f.call("e", time.Hour, "erin", "alice"),
	}
	calls[2].EndedAt = calls[2].CreatedAt.Add(time.Second) // ended before it was saved
	for _, c := range calls {
		f.saveCall(t, c, nil)
	}
	if got, want := open(), []string{"d", "b", "a", "e"}; !slices.Equal(got, want) {
		t.Errorf("OpenCalls = %q, want %q", got, want)
	}
	got, err := f.s.OpenCalls(ctx)
	if err != nil || len(got) == 0 {
		t.Fatalf("OpenCalls: %d calls, %v", len(got), err)
	}
	if g, w := callString(t, got[0]), callString(t, calls[3]); g != w {
		t.Errorf("OpenCalls' first call:\n got %s\nwant %s", g, w)
	}
	end := *calls[1]
	end.EndedAt = end.Deadline
	f.saveCall(t, &end, nil)
	if got, want := open(), []string{"d", "a", "e"}; !slices.Equal(got, want) {
		t.Errorf("OpenCalls after b ended = %q, want %q", got, want)
	}
}

// testUserCalls: a user's calls as caller or invitee, newest first (ties by
// ID, descending), created before a time, limit at a time.
func testUserCalls(t *testing.T, f *fixture) {
	ctx := context.Background()
	mk := func(id string, at time.Time, caller string, invitees ...string) *herald.Call {
		c := f.call(id, time.Minute, caller, invitees...)
		c.CreatedAt, c.Deadline = at, at.Add(time.Minute)
		f.saveCall(t, c, nil)
		return c
	}
	t1 := baseTime.Add(time.Second)
	sec := func(n int) time.Time { return t1.Add(time.Duration(n) * time.Second) }
	// Saved out of order: UserCalls orders by CreatedAt, not by saving.
	mk("c4", sec(4), "alice", "dave")
	mk("c1", sec(1), "alice", "bob")
	c2 := mk("c2", sec(2), "carol", "alice", "bob")
	mk("c3", sec(3), "bob", "carol")
	mk("c6", sec(5), "bob", "alice")
	mk("c5", sec(5), "alice", "bob") // the same CreatedAt as c6: ID decides
	mk("c0", sec(-100), "frank", "gina")

	userCalls := func(user string, before time.Time, limit int) []string {
		t.Helper()
		calls, err := f.s.UserCalls(ctx, user, before, limit)
		if err != nil {
			t.Fatalf("UserCalls(%q, %v, %d): %v", user, before, limit, err)
		}
		return callIDs(calls)
	}
	tests := []struct {
		name   string
		user   string
		before time.Time
		limit  int
		want   []string
	}{
		{"caller and invitee", "alice", time.Time{}, 10, []string{"c6", "c5", "c4", "c2", "c1"}},
		{"another user", "bob", time.Time{}, 10, []string{"c6", "c5", "c3", "c2", "c1"}},
		{"invitee of one", "dave", time.Time{}, 10, []string{"c4"}},
		{"caller and invitee of one each", "carol", time.Time{}, 10, []string{"c3", "c2"}},
		{"nobody", "erin", time.Time{}, 10, nil},
		{"limit", "alice", time.Time{}, 2, []string{"c6", "c5"}},
		{"before is exclusive", "alice", sec(5), 10, []string{"c4", "c2", "c1"}},
		{"before and limit", "alice", sec(4), 1, []string{"c2"}},
		{"before inside a millisecond", "alice", sec(4).Add(500 * time.Microsecond), 10, []string{"c4", "c2", "c1"}},
		{"before everything", "alice", sec(1), 10, nil},
		{"before 1970", "frank", time.UnixMilli(-1), 10, nil},
		{"after everything", "alice", sec(3600), 10, []string{"c6", "c5", "c4", "c2", "c1"}},
	}
	for _, tt := range tests {
		if got := userCalls(tt.user, tt.before, tt.limit); !slices.Equal(got, tt.want) && len(got)+len(tt.want) > 0 {
			t.Errorf("%s: UserCalls(%q, %v, %d) = %q, want %q", tt.name, tt.user, tt.before, tt.limit, got, tt.want)
		}
	}
	got, err := f.s.UserCalls(ctx, "dave", time.Time{}, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("UserCalls(dave): %d calls, %v", len(got), err)
	}
	if g, w := callString(t, got[0]), callString(t, f.mustCall(t, "c4")); g != w {
		t.Errorf("UserCalls' call:\n got %s\nwant %s", g, w)
	}

	// A replacement is the same call, and an invitee added to it has it.
	upd := *c2
	upd.Participants = append(slices.Clone(c2.Participants), herald.CallParticipant{User: "erin", State: herald.CallNotYet, UpdatedAt: sec(2)})
	upd.EndedAt = sec(3)
	f.saveCall(t, &upd, nil)
	if got, want := userCalls("alice", time.Time{}, 10), []string{"c6", "c5", "c4", "c2", "c1"}; !slices.Equal(got, want) {
		t.Errorf("UserCalls(alice) after a replacement = %q, want %q", got, want)
	}
	if got, want := userCalls("erin", time.Time{}, 10), []string{"c2"}; !slices.Equal(got, want) {
		t.Errorf("UserCalls(erin) after she was invited = %q, want %q", got, want)
	}

	// Paging by the last call's CreatedAt.
	var paged []string
	before := time.Time{}
	for range 10 {
		page, err := f.s.UserCalls(ctx, "bob", before, 2)
		if err != nil {
			t.Fatalf("UserCalls: %v", err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, callIDs(page)...)
		before = page[len(page)-1].CreatedAt
	}
	// The first page ends at c5, which shares its CreatedAt with c6: the
	// next page starts before both.
	if want := []string{"c6", "c5", "c3", "c2", "c1"}; !slices.Equal(paged, want) {
		t.Errorf("UserCalls(bob) in pages of 2 = %q, want %q", paged, want)
	}
	_, err = f.s.UserCalls(ctx, "alice", time.Time{}, 0)
	wantCode(t, "UserCalls(limit 0)", err, herald.CodeInvalidArgument)
}

func (f *fixture) mustCall(t *testing.T, id string) *herald.Call {
	t.Helper()
	c, err := f.s.Call(context.Background(), id)
	if err != nil {
		t.Fatalf("Call(%q): %v", id, err)
	}
	return c
}

// testEnqueuePush: a group message's single job is replaced by its members'
// jobs in one write; jobs already pending are left as they are; a bad job
// stores nothing and removes nothing.
func testEnqueuePush(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.createGroup(t, "g1", "alice", "bob", "carol")
	m := f.gtext("alice", "g1")
	due := baseTime.Add(time.Second)
	single := job("pd_group", 0, m, due)
	single.User = "alice"
	res := f.appendJobs(t, []*herald.Message{m}, []store.PushJob{single})
	stored := res[0].Message
	sameJobs(t, "outbox after the group message", f.pending(t), []store.PushJob{storedJob(single, stored)})

	member := func(pushID, user string, due time.Time) store.PushJob {
		return store.PushJob{PushID: pushID, MsgID: stored.ID, Msg: 7, User: user, Conv: stored.Conv, Seq: stored.Seq,
			Due: due, Expires: due.Add(time.Hour), Attempt: 0, Data: []byte("push to " + user)}
	}
	expanded := []store.PushJob{member("pd_bob_phone", "bob", due), member("pd_bob_tablet", "bob", due.Add(time.Millisecond)), member("pd_carol", "carol", due)}
	expanded[2].Attempt, expanded[2].Data = 2, nil
	done := []store.PushKey{{PushID: "pd_group", MsgID: stored.ID}} // no Due: done keys need none
	if err := f.s.EnqueuePush(ctx, expanded, done); err != nil {
		t.Fatalf("EnqueuePush: %v", err)
	}
	want := slices.Clone(expanded)
	for i := range want {
		want[i].Msg = 0
	}
	sortJobs(want)
	sameJobs(t, "outbox after the expansion", f.pending(t), want)

	t.Run("replayed", func(t *testing.T) {
		again := slices.Clone(expanded)
		for i := range again {
			again[i].Data, again[i].Due = []byte("replayed"), due.Add(time.Hour)
		}
		if err := f.s.EnqueuePush(ctx, again, done); err != nil {
			t.Fatalf("EnqueuePush: %v", err)
		}
		sameJobs(t, "outbox after the same expansion again", f.pending(t), want)
	})

	t.Run("twice in one call", func(t *testing.T) {
		a, b := member("pd_dave", "dave", due), member("pd_dave", "dave", due.Add(time.Minute))
		a.Data, b.Data = []byte("first"), []byte("second")
		if err := f.s.EnqueuePush(ctx, []store.PushJob{a, b}, nil); err != nil {
			t.Fatalf("EnqueuePush: %v", err)
		}
		a.Msg = 0
		want = append(want, a)
		sortJobs(want)
		sameJobs(t, "outbox", f.pending(t), want)
	})

	t.Run("invalid job", func(t *testing.T) {
		for _, bad := range []store.PushJob{{MsgID: stored.ID, User: "erin"}, {PushID: "pd_erin", MsgID: stored.ID}} {
			ok := member("pd_frank", "frank", due)
			err := f.s.EnqueuePush(ctx, []store.PushJob{ok, bad}, []store.PushKey{expanded[0].Key()})
			wantCode(t, "EnqueuePush with a bad job", err, herald.CodeInvalidArgument)
			sameJobs(t, "outbox after a refused EnqueuePush", f.pending(t), want)
		}
	})

	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := f.s.EnqueuePush(cctx, []store.PushJob{member("pd_gina", "gina", due)}, []store.PushKey{expanded[0].Key()}); err == nil {
			t.Errorf("EnqueuePush with a cancelled context succeeded")
		}
		sameJobs(t, "outbox after a cancelled EnqueuePush", f.pending(t), want)
	})

	t.Run("done only", func(t *testing.T) {
		if err := f.s.EnqueuePush(ctx, nil, []store.PushKey{expanded[1].Key(), {PushID: "pd_nobody", MsgID: 424242}}); err != nil {
			t.Fatalf("EnqueuePush: %v", err)
		}
		want = slices.DeleteFunc(want, func(j store.PushJob) bool { return j.PushID == expanded[1].PushID })
		sameJobs(t, "outbox", f.pending(t), want)
		if err := f.s.EnqueuePush(ctx, nil, nil); err != nil {
			t.Errorf("EnqueuePush(nil, nil): %v", err)
		}
	})

	t.Run("a job of no stored message", func(t *testing.T) {
		// Call pushes name no message: the MsgID is the caller's.
		j := store.PushJob{PushID: "pd_call", MsgID: 1 << 50, User: "bob", Conv: "c:x", Due: due}
		if err := f.s.EnqueuePush(ctx, []store.PushJob{j}, nil); err != nil {
			t.Fatalf("EnqueuePush: %v", err)
		}
		want = append(want, j)
		sortJobs(want)
		sameJobs(t, "outbox", f.pending(t), want)
	})

	// The dispatcher sees the expanded jobs like any other.
	f.finish(t, []store.PushKey{expanded[0].Key()}, nil, nil, nil)
	want = slices.DeleteFunc(want, func(j store.PushJob) bool { return j.PushID == expanded[0].PushID })
	sameJobs(t, "outbox after FinishPush", f.pending(t), want)
}

// testCallAdvanced: an advanced-mode call keeps its mode, Joinable, EndBy,
// Answered
// and each invitee's own deadline; a user added by a later write (a
// calling_invite, a join) lists the call among their calls, and the call
// stays open past its first deadline until it is written ended, with
// every participant's final state.
func testCallAdvanced(t *testing.T, f *fixture) {
	ctx := context.Background()
	c := f.call("adv", 30*time.Second, "alice", "bob", "carol")
	c.Mode, c.Joinable, c.EndBy = herald.CallAdvanced, true, herald.CallEndByParticipant
	c.Participants[0].State = herald.CallAccepted
	for i := 1; i < len(c.Participants); i++ {
		c.Participants[i].Deadline = c.Deadline
	}
	c.Version = 1
	f.saveCall(t, c, nil)
	sameCall(t, f, c)

	// bob accepts; alice invites dave, whose invitation has its own deadline.
	next := *c
	next.Participants = slices.Clone(c.Participants)
	at := c.CreatedAt.Add(10 * time.Second)
	next.Participants[1].State, next.Participants[1].UpdatedAt = herald.CallAccepted, at
	next.Participants = append(next.Participants, herald.CallParticipant{User: "dave", State: herald.CallNotYet, UpdatedAt: at, Deadline: at.Add(c.Timeout)})
	next.Answered = true
	next.Version = 2
	f.saveCall(t, &next, nil)
	sameCall(t, f, &next)
	got, err := f.s.Call(ctx, "adv")
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if d := got.Participants[3].Deadline; !d.Equal(at.Add(c.Timeout)) {
		t.Errorf("dave's deadline = %v, want %v", d, at.Add(c.Timeout))
	}
	if got.Mode != herald.CallAdvanced || !got.Joinable || got.EndBy != herald.CallEndByParticipant || !got.Answered {
		t.Errorf("read back mode %q joinable %v end_by %q answered %v, want advanced true participant true", got.Mode, got.Joinable, got.EndBy, got.Answered)
	}
	daves, err := f.s.UserCalls(ctx, "dave", time.Time{}, 10)
	if err != nil || !slices.Equal(callIDs(daves), []string{"adv"}) {
		t.Errorf("UserCalls(dave) = %q, %v; want [adv]", callIDs(daves), err)
	}
	open, err := f.s.OpenCalls(ctx)
	if err != nil || !slices.Contains(callIDs(open), "adv") {
		t.Errorf("OpenCalls = %q, %v; want adv listed", callIDs(open), err)
	}

	// The caller ends it: everyone's final state is kept.
	end := next
	end.Participants = slices.Clone(next.Participants)
	endAt := at.Add(time.Minute)
	end.Participants[0].State = herald.CallEnded
	end.Participants[1].State = herald.CallEnded
	end.Participants[2].State = herald.CallTimeout
	end.Participants[3].State = herald.CallQuit
	end.EndedAt, end.Version = endAt, 3
	f.saveCall(t, &end, nil)
	sameCall(t, f, &end)
	open, err = f.s.OpenCalls(ctx)
	if err != nil || slices.Contains(callIDs(open), "adv") {
		t.Errorf("OpenCalls after the end = %q, %v; want adv gone", callIDs(open), err)
	}
	daves, err = f.s.UserCalls(ctx, "dave", time.Time{}, 10)
	if err != nil || len(daves) != 1 || daves[0].Participants[3].State != herald.CallQuit {
		t.Errorf("UserCalls(dave) after the end = %v, %v; want adv with dave quit", daves, err)
	}
}
