package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// The outbox's claims and leases (store.Store's ClaimPush). testClaimDue
// is in Run: what every backend does. RunLeases holds what only a backend
// with leases promises (postgres: several nodes on one outbox).

// testClaimDue: ClaimPush returns the due jobs only, in PendingPush's
// order, from after, at most limit; the jobs it returned are finished by
// their keys (which name the claimer) on every backend.
func testClaimDue(t *testing.T, f *fixture) {
	ctx := context.Background()
	msgs := f.texts(4, "alice", "bob")
	now := baseTime.Add(time.Minute)
	jobs := []store.PushJob{
		job("pb", 0, msgs[0], now.Add(-time.Second)),
		job("pa", 1, msgs[1], now),
		job("pa", 2, msgs[2], now.Add(-2*time.Second)),
		job("pa", 3, msgs[3], now.Add(time.Millisecond)), // not due yet
	}
	res := f.appendJobs(t, msgs, jobs)
	var due []store.PushJob
	for _, j := range jobs[:3] {
		due = append(due, storedJob(j, res[j.Msg].Message))
	}
	sortJobs(due)
	claim := func(after store.PushKey, limit int) []store.PushJob {
		t.Helper()
		got, err := f.s.ClaimPush(ctx, "node-a", true, after, now, time.Minute, limit)
		if err != nil {
			t.Fatalf("ClaimPush: %v", err)
		}
		return got
	}
	sameJobs(t, "ClaimPush of everything due", claim(store.PushKey{}, 10), due)
	sameJobs(t, "ClaimPush limited to 2", claim(store.PushKey{}, 2), due[:2])
	sameJobs(t, "ClaimPush after the first", claim(due[0].Key(), 10), due[1:])

	for _, tt := range []struct {
		name  string
		owner string
		lease time.Duration
		limit int
	}{{"empty owner", "", time.Minute, 1}, {"zero lease", "a", 0, 1}, {"zero limit", "a", time.Minute, 0}} {
		_, err := f.s.ClaimPush(ctx, tt.owner, true, store.PushKey{}, now, tt.lease, tt.limit)
		wantCode(t, "ClaimPush with "+tt.name, err, herald.CodeInvalidArgument)
	}
	_, err := f.s.RenewPush(ctx, "", []store.PushKey{due[0].Key()}, now, time.Minute)
	wantCode(t, "RenewPush with an empty owner", err, herald.CodeInvalidArgument)
	_, err = f.s.RenewPush(ctx, "node-a", []store.PushKey{due[0].Key()}, now, 0)
	wantCode(t, "RenewPush with a zero lease", err, herald.CodeInvalidArgument)
	wantCode(t, "ReleasePush with an empty owner", f.s.ReleasePush(ctx, "", nil), herald.CodeInvalidArgument)

	got := claim(store.PushKey{}, 10)
	var done []store.PushKey
	for _, j := range got {
		done = append(done, j.Key())
	}
	f.finish(t, done, nil, nil, nil)
	sameJobs(t, "outbox after the claimed jobs are finished by their claimer", f.pending(t), []store.PushJob{storedJob(jobs[3], res[3].Message)})
}

// RunLeases checks the promises of a backend with leases (store.Store's
// ClaimPush and FinishPush): jobs owned from their insert, claims that
// never take a job whose lease runs, and a former owner that cannot
// finish a job another owner took. open is as Run's.
func RunLeases(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, f *fixture)
	}{
		{"OwnedFromInsert", testLeaseFromInsert},
		{"ClaimTakesOnlyRunOut", testLeaseClaim},
		{"FinishByFormerOwner", testLeaseFinishByFormerOwner},
		{"EnqueueDoneNotHeld", testLeaseEnqueueDoneNotHeld},
		{"ConcurrentClaimsExclusive", testLeaseConcurrentClaims},
		{"RenewOwnedOnly", testLeaseRenew},
		{"ReleaseLetsOthersClaim", testLeaseRelease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			tt.fn(t, &fixture{s: s, at: baseTime})
		})
	}
}

// leaseString shows a job's key and lease.
func leaseString(j store.PushJob) string {
	lease := int64(0)
	if !j.LeaseUntil.IsZero() {
		lease = j.LeaseUntil.UnixMilli()
	}
	return fmt.Sprintf("%s/%d due=%d attempt=%d owner=%q lease=%d", j.PushID, j.MsgID, j.Due.UnixMilli(), j.Attempt, j.Owner, lease)
}

func leaseStrings(jobs []store.PushJob) string {
	var b []string
	for _, j := range jobs {
		b = append(b, leaseString(j))
	}
	if len(b) == 0 {
		return " none"
	}
	return "\n\t" + strings.Join(b, "\n\t")
}

func sameLeases(t *testing.T, what string, got, want []store.PushJob) {
	t.Helper()
	if g, w := leaseStrings(got), leaseStrings(want); g != w {
		t.Errorf("%s:\ngot%s\nwant%s", what, g, w)
	}
}

func leased(j store.PushJob, owner string, until time.Time) store.PushJob {
	j.Owner, j.LeaseUntil = owner, until
	return j
}

func (f *fixture) claim(t *testing.T, owner string, now time.Time, lease time.Duration) []store.PushJob {
	t.Helper()
	got, err := f.s.ClaimPush(context.Background(), owner, true, store.PushKey{}, now, lease, 1000)
	if err != nil {
		t.Fatalf("ClaimPush(%s): %v", owner, err)
	}
	return got
}

// testLeaseFromInsert: the jobs AppendMessages, EnqueuePush and SaveCall
// store keep the owner and lease they were given, and nobody else takes
// them before the lease ends.
func testLeaseFromInsert(t *testing.T, f *fixture) {
	ctx := context.Background()
	m := f.text("alice", "bob")
	due := baseTime
	appended := leased(job("pd_1", 0, m, due), "node-a", due.Add(time.Minute))
	res := f.appendJobs(t, []*herald.Message{m}, []store.PushJob{appended})
	enqueued := leased(job("pd_2", 0, m, due), "node-a", due.Add(time.Minute))
	enqueued.MsgID = res[0].Message.ID
	if err := f.s.EnqueuePush(ctx, []store.PushJob{enqueued}, nil); err != nil {
		t.Fatalf("EnqueuePush: %v", err)
	}
	c := f.call("c1", 30*time.Second, "alice", "bob")
	called := leased(callJob("pd_3", 1001, "bob", c), "node-a", c.CreatedAt.Add(time.Minute))
	f.saveCall(t, c, []store.PushJob{called})
	free := job("pd_4", 0, m, due) // nobody's
	free.MsgID = res[0].Message.ID
	if err := f.s.EnqueuePush(ctx, []store.PushJob{free}, nil); err != nil {
		t.Fatalf("EnqueuePush: %v", err)
	}
	want := []store.PushJob{storedJob(appended, res[0].Message), enqueued, called, free}
	sortJobs(want)
	sameLeases(t, "outbox", f.pending(t), want)

	now := due.Add(time.Minute - time.Millisecond)
	sameLeases(t, "node-b's claim before the leases end", f.claim(t, "node-b", now, time.Minute),
		[]store.PushJob{leased(free, "node-b", now.Add(time.Minute))})
}

// testLeaseClaim: a claim takes due jobs whose lease ran out, or (held)
// that the claimer holds (renewing them); never one another owner holds.
func testLeaseClaim(t *testing.T, f *fixture) {
	msgs := f.texts(2, "alice", "bob")
	due := baseTime
	jobs := []store.PushJob{leased(job("pd_a", 0, msgs[0], due), "node-a", due.Add(time.Minute)), job("pd_free", 1, msgs[1], due)}
	res := f.appendJobs(t, msgs, jobs)
	a, free := storedJob(jobs[0], res[0].Message), storedJob(jobs[1], res[1].Message)

	now := due.Add(time.Second)
	sameLeases(t, "node-b's first claim", f.claim(t, "node-b", now, time.Minute), []store.PushJob{leased(free, "node-b", now.Add(time.Minute))})
	sameLeases(t, "node-c's claim while the leases run", f.claim(t, "node-c", now, time.Minute), nil)
	now = now.Add(time.Second)
	got, err := f.s.ClaimPush(context.Background(), "node-a", false, store.PushKey{}, now, time.Minute, 10)
	if err != nil {
		t.Fatalf("ClaimPush(node-a, not held): %v", err)
	}
	sameLeases(t, "node-a's claim of run-out leases only, while its own runs", got, nil)
	sameLeases(t, "node-a's claim renews its own job only", f.claim(t, "node-a", now, time.Minute), []store.PushJob{leased(a, "node-a", now.Add(time.Minute))})

	now = now.Add(time.Minute) // both leases ran out
	want := []store.PushJob{leased(a, "node-c", now.Add(time.Second)), leased(free, "node-c", now.Add(time.Second))}
	sortJobs(want)
	sameLeases(t, "node-c's claim once the leases ran out", f.claim(t, "node-c", now, time.Second), want)
	sameLeases(t, "outbox", f.pending(t), want)
}

// testLeaseFinishByFormerOwner: a node whose job another node took since
// its lease ran out neither deletes nor reschedules it; its attempts and
// badges are stored all the same. The new owner finishes it.
func testLeaseFinishByFormerOwner(t *testing.T, f *fixture) {
	dev := f.register(t, pushDevice("bob", "phone", "b0b0"))
	msgs := f.texts(2, "alice", "bob")
	due := baseTime
	jobs := []store.PushJob{
		leased(job(dev.PushID, 0, msgs[0], due), "node-a", due.Add(time.Second)),
		leased(job(dev.PushID, 1, msgs[1], due), "node-a", due.Add(time.Second)),
	}
	res := f.appendJobs(t, msgs, jobs)
	j0, j1 := storedJob(jobs[0], res[0].Message), storedJob(jobs[1], res[1].Message)
	now := due.Add(time.Second)
	took := f.claim(t, "node-b", now, time.Minute)
	if len(took) != 2 {
		t.Fatalf("node-b took %d jobs, want 2", len(took))
	}
	retry := j1
	retry.Due, retry.Attempt, retry.LeaseUntil = now.Add(time.Hour), 1, now.Add(time.Hour+time.Minute)
	log := []herald.PushAttempt{{At: now, PushID: dev.PushID, User: "bob", MsgID: j0.MsgID, Conv: j0.Conv, Attempt: 1, Outcome: herald.PushSent, Reason: "by node-a"}}
	f.finish(t, []store.PushKey{j0.Key()}, []store.PushJob{retry}, log, map[string]store.Badge{dev.PushID: {Count: 7, Kind: herald.BadgeCounted}})
	sameLeases(t, "outbox after node-a's late FinishPush", f.pending(t), took)
	if got := reasons(f.pushLog(t, store.PushLogQuery{PushID: dev.PushID, Limit: 10})); len(got) != 1 || got[0] != "by node-a" {
		t.Errorf("delivery log after node-a's late FinishPush: %q, want its attempt", got)
	}
	if d, _ := f.device(t, dev.PushID); d.Badge != 7 {
		t.Errorf("badge after node-a's late FinishPush: %d, want 7", d.Badge)
	}

	// node-b reschedules one (its lease moves with it) and finishes the other.
	retry = took[1]
	retry.Due, retry.Attempt, retry.LeaseUntil = now.Add(time.Hour), 1, now.Add(time.Hour+time.Minute)
	f.finish(t, []store.PushKey{took[0].Key()}, []store.PushJob{retry}, nil, nil)
	sameLeases(t, "outbox after node-b's FinishPush", f.pending(t), []store.PushJob{retry})
	// An empty owner finishes whoever holds it.
	k := retry.Key()
	k.Owner = ""
	f.finish(t, []store.PushKey{k}, nil, nil, nil)
	sameLeases(t, "outbox after a FinishPush with no owner", f.pending(t), nil)
}

// testLeaseEnqueueDoneNotHeld: EnqueuePush that replaces a job its owner
// no longer holds stores nothing (CodeConflict): one node expands a group
// message's job, not two.
func testLeaseEnqueueDoneNotHeld(t *testing.T, f *fixture) {
	ctx := context.Background()
	m := f.text("alice", "bob")
	due := baseTime
	fan := leased(job("*group", 0, m, due), "node-a", due.Add(time.Second))
	res := f.appendJobs(t, []*herald.Message{m}, []store.PushJob{fan})
	fan = storedJob(fan, res[0].Message)
	took := f.claim(t, "node-b", due.Add(time.Second), time.Minute)
	expanded := leased(job("pd_x", 0, m, due), "node-a", due.Add(time.Minute))
	expanded.MsgID = fan.MsgID
	err := f.s.EnqueuePush(ctx, []store.PushJob{expanded}, []store.PushKey{fan.Key()})
	wantCode(t, "node-a's EnqueuePush replacing node-b's job", err, herald.CodeConflict)
	sameLeases(t, "outbox after the refused EnqueuePush", f.pending(t), took)

	expanded.Owner = "node-b"
	if err := f.s.EnqueuePush(ctx, []store.PushJob{expanded}, []store.PushKey{took[0].Key()}); err != nil {
		t.Fatalf("node-b's EnqueuePush: %v", err)
	}
	sameLeases(t, "outbox after node-b's EnqueuePush", f.pending(t), []store.PushJob{expanded})
}

// testLeaseConcurrentClaims: owners claiming at once, in small pages,
// take every due job once.
func testLeaseConcurrentClaims(t *testing.T, f *fixture) {
	const n, owners = 300, 4
	msgs := f.texts(n, "alice", "bob")
	var jobs []store.PushJob
	for i, m := range msgs {
		jobs = append(jobs, job(fmt.Sprintf("pd_%03d", i%7), i, m, baseTime))
	}
	f.appendJobs(t, msgs, jobs)
	now := baseTime.Add(time.Second)
	got := make([][]store.PushJob, owners)
	errs := make(chan error, owners)
	for o := range owners {
		go func() {
			// Each owner walks the outbox once, in pages (a claim from
			// the start would take its own jobs again: it holds them).
			after := store.PushKey{}
			for {
				page, err := f.s.ClaimPush(context.Background(), fmt.Sprint("node-", o), true, after, now, time.Minute, 7)
				if err != nil || len(page) == 0 {
					errs <- err
					return
				}
				got[o] = append(got[o], page...)
				after = page[len(page)-1].Key()
			}
		}()
	}
	for range owners {
		if err := <-errs; err != nil {
			t.Fatalf("ClaimPush: %v", err)
		}
	}
	seen := map[store.PushKey]string{}
	for o, js := range got {
		for _, j := range js {
			k := store.PushKey{PushID: j.PushID, MsgID: j.MsgID}
			if other, ok := seen[k]; ok {
				t.Errorf("job %s/%d claimed by %s and node-%d", j.PushID, j.MsgID, other, o)
			}
			seen[k] = fmt.Sprint("node-", o)
			if j.Owner != seen[k] {
				t.Errorf("job %s/%d returned to node-%d with owner %q", j.PushID, j.MsgID, o, j.Owner)
			}
		}
	}
	if len(seen) != n {
		t.Errorf("%d jobs claimed, want %d", len(seen), n)
	}
}

// testLeaseRenew: RenewPush extends the lease of the named jobs the owner
// holds, and of no other (another owner's, one not named, one gone).
func testLeaseRenew(t *testing.T, f *fixture) {
	ctx := context.Background()
	msgs := f.texts(3, "alice", "bob")
	due := baseTime
	jobs := []store.PushJob{
		leased(job("pd_a", 0, msgs[0], due), "node-a", due.Add(time.Minute)),
		leased(job("pd_b", 1, msgs[1], due), "node-b", due.Add(time.Minute)),
		leased(job("pd_c", 2, msgs[2], due), "node-a", due.Add(time.Minute)),
	}
	res := f.appendJobs(t, msgs, jobs)
	a, b, c := storedJob(jobs[0], res[0].Message), storedJob(jobs[1], res[1].Message), storedJob(jobs[2], res[2].Message)
	now := due.Add(40 * time.Second)
	gone := store.PushKey{PushID: "pd_gone", MsgID: a.MsgID}
	got, err := f.s.RenewPush(ctx, "node-a", []store.PushKey{b.Key(), a.Key(), gone}, now, time.Minute)
	if err != nil {
		t.Fatalf("RenewPush: %v", err)
	}
	if len(got) != 1 || got[0].PushID != a.PushID || got[0].MsgID != a.MsgID {
		t.Errorf("RenewPush returned %v, want only %s/%d", got, a.PushID, a.MsgID)
	}
	want := []store.PushJob{leased(a, "node-a", now.Add(time.Minute)), b, c}
	sortJobs(want)
	sameLeases(t, "outbox after node-a renewed pd_a (and named node-b's pd_b)", f.pending(t), want)
	for _, tt := range []struct {
		name  string
		owner string
		lease time.Duration
	}{{"empty owner", "", time.Minute}, {"zero lease", "a", 0}} {
		_, err := f.s.RenewPush(ctx, tt.owner, []store.PushKey{a.Key()}, now, tt.lease)
		wantCode(t, "RenewPush with "+tt.name, err, herald.CodeInvalidArgument)
	}
}

// testLeaseRelease: ReleasePush ends the owner's lease on the named jobs
// (or all it holds), so another node's claim takes them at once; another
// owner's job is left alone.
func testLeaseRelease(t *testing.T, f *fixture) {
	ctx := context.Background()
	msgs := f.texts(3, "alice", "bob")
	due := baseTime
	jobs := []store.PushJob{
		leased(job("pd_a", 0, msgs[0], due), "node-a", due.Add(time.Minute)),
		leased(job("pd_b", 1, msgs[1], due), "node-b", due.Add(time.Minute)),
		leased(job("pd_c", 2, msgs[2], due), "node-a", due.Add(time.Minute)),
	}
	res := f.appendJobs(t, msgs, jobs)
	a, c := storedJob(jobs[0], res[0].Message), storedJob(jobs[2], res[2].Message)
	now := due.Add(time.Second)
	if err := f.s.ReleasePush(ctx, "node-a", []store.PushKey{a.Key(), {PushID: "pd_b", MsgID: res[1].Message.ID}}); err != nil {
		t.Fatalf("ReleasePush: %v", err)
	}
	sameLeases(t, "node-c's claim after node-a released pd_a", f.claim(t, "node-c", now, time.Minute),
		[]store.PushJob{leased(a, "node-c", now.Add(time.Minute))})
	if err := f.s.ReleasePush(ctx, "node-a", nil); err != nil {
		t.Fatalf("ReleasePush(all): %v", err)
	}
	sameLeases(t, "node-c's claim after node-a released all it holds", f.claim(t, "node-c", now, time.Minute),
		[]store.PushJob{leased(a, "node-c", now.Add(time.Minute)), leased(c, "node-c", now.Add(time.Minute))})
	wantCode(t, "ReleasePush with an empty owner", f.s.ReleasePush(ctx, "", nil), herald.CodeInvalidArgument)
}
