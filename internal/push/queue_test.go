package push

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/store"
)

// memOutbox is an outbox in memory, in the store's order, that times how
// long its caller holds commitMu: from each PendingPush's return to the
// next call (a refill reads each page under the lock and releases it after
// taking the page).
type memOutbox struct {
	Store // nil: only PendingPush is called
	mu    sync.Mutex
	jobs  []store.PushJob
	after []store.PushKey // of each PendingPush
	calls int
	ret   time.Time
	holds []time.Duration
}

func keyCmp(a, b store.PushKey) int {
	if c := a.Due.Compare(b.Due); c != 0 {
		return c
	}
	if a.PushID != b.PushID {
		if a.PushID < b.PushID {
			return -1
		}
		return 1
	}
	switch {
	case a.MsgID < b.MsgID:
		return -1
	case a.MsgID > b.MsgID:
		return 1
	}
	return 0
}

func (o *memOutbox) put(jobs ...store.PushJob) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.jobs = append(o.jobs, jobs...)
	slices.SortFunc(o.jobs, func(a, b store.PushJob) int { return keyCmp(a.Key(), b.Key()) })
}

func (o *memOutbox) PendingPush(_ context.Context, after store.PushKey, limit int) ([]store.PushJob, error) {
	o.mu.Lock()
	defer func() { o.ret = time.Now(); o.mu.Unlock() }()
	if o.calls > 0 {
		o.holds = append(o.holds, time.Since(o.ret))
	}
	o.calls++
	o.after = append(o.after, after)
	i := 0
	if after != (store.PushKey{}) {
		i = sort.Search(len(o.jobs), func(i int) bool { return keyCmp(o.jobs[i].Key(), after) > 0 })
	}
	return slices.Clone(o.jobs[i:min(i+limit, len(o.jobs))]), nil
}

// held returns the median time commitMu was held per page since the last
// call, the last page's hold ending at end.
func (o *memOutbox) held(end time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := append(o.holds, end.Sub(o.ret))
	o.holds, o.calls = nil, 0
	slices.Sort(h)
	return h[len(h)/2]
}

func farJobs(n int, due time.Time, prefix string) []store.PushJob {
	out := make([]store.PushJob, n)
	for i := range out {
		out[i] = store.PushJob{PushID: fmt.Sprintf("%s%06d", prefix, i), MsgID: int64(i + 1), User: "u", Due: due, Expires: due.Add(time.Hour)}
	}
	return out
}

// A heap of 100,000 jobs, full, with jobs due sooner than all of it
// waiting in the store: reading them back displaces the heap's latest jobs,
// and must not hold commitMu (which every chat commit with pushes takes)
// for more than a moment per page.
func TestRefillDisplacesQuicklyFromAFullHeap(t *testing.T) {
	const max = 100_000
	out := &memOutbox{}
	s := New(out, nil, nil, Config{MaxPending: max})
	d := &s.dsp
	now := time.Now()
	out.put(farJobs(max, now.Add(time.Hour), "far")...)
	if _, err := d.refill(context.Background(), time.Time{}, false); err != nil {
		t.Fatal(err)
	}
	out.put(farJobs(1000, now, "now")...)
	d.mu.Lock()
	d.overflow = true // as if they had overflowed
	next := d.q.peekFirst().Due
	d.mu.Unlock()
	out.held(time.Now())
	if _, err := d.refill(context.Background(), next, false); err != nil {
		t.Fatal(err)
	}
	held := out.held(time.Now())
	t.Logf("commitMu held %s per page", held)
	if held > 5*time.Millisecond {
		t.Errorf("a refill held commitMu %s per page of %d displacements (a heap of %d)", held, 100, max)
	}
	if got := d.pendingCount(); got != max {
		t.Errorf("%d jobs in memory, want %d", got, max)
	}
	for _, j := range farJobs(1000, now, "now") {
		if _, ok := d.known[jobID{j.PushID, j.MsgID}]; !ok {
			t.Fatalf("job %s due now was not taken in", j.PushID)
		}
	}
}

// The queue gives its jobs back in due order (then message, then push ID)
// from either end, whatever the order of pushes and pops.
func TestJobQueueBothEnds(t *testing.T) {
	var q jobQueue
	var ref []store.PushJob // sorted
	base := time.Now()
	for i := range 5000 {
		switch op := rand.N(5); {
		case op < 3 || len(ref) == 0:
			j := store.PushJob{PushID: fmt.Sprintf("pd_%d", rand.N(1000)), MsgID: int64(rand.N(50)), Due: base.Add(time.Duration(rand.N(100)) * time.Second)}
			q.push(j)
			k, _ := slices.BinarySearchFunc(ref, j, func(a, b store.PushJob) int {
				if dueBefore(&a, &b) {
					return -1
				}
				return 1
			})
			ref = slices.Insert(ref, k, j)
		case op == 3:
			got := q.popFirst()
			if got.Due != ref[0].Due || got.MsgID != ref[0].MsgID || got.PushID != ref[0].PushID {
				t.Fatalf("op %d: popFirst %v/%d/%s, want %v/%d/%s", i, got.Due, got.MsgID, got.PushID, ref[0].Due, ref[0].MsgID, ref[0].PushID)
			}
			ref = ref[1:]
		default:
			got, want := q.popLast(), ref[len(ref)-1]
			if got.Due != want.Due || got.MsgID != want.MsgID || got.PushID != want.PushID {
				t.Fatalf("op %d: popLast %v/%d/%s, want %v/%d/%s", i, got.Due, got.MsgID, got.PushID, want.Due, want.MsgID, want.PushID)
			}
			ref = ref[:len(ref)-1]
		}
		if q.Len() != len(ref) {
			t.Fatalf("op %d: len %d, want %d", i, q.Len(), len(ref))
		}
		if len(ref) > 0 && (q.peekFirst().Due != ref[0].Due || q.peekLast().Due != ref[len(ref)-1].Due) {
			t.Fatalf("op %d: ends %v %v, want %v %v", i, q.peekFirst().Due, q.peekLast().Due, ref[0].Due, ref[len(ref)-1].Due)
		}
	}
}

// The dispatcher knows from which due time jobs may be only in the store,
// reads the outbox from there, and knows where it stopped.
func TestStoreMinBoundsTheJobsLeftToTheStore(t *testing.T) {
	out := &memOutbox{}
	s := New(out, nil, nil, Config{MaxPending: 3})
	d := &s.dsp
	t0 := time.Now().Truncate(time.Second)
	at := func(sec int) store.PushJob {
		return store.PushJob{PushID: fmt.Sprintf("p%03d", sec), MsgID: int64(sec), User: "u", Due: t0.Add(time.Duration(sec) * time.Second)}
	}
	hand := func(js ...store.PushJob) { // stored, then handed over
		out.put(js...)
		stored := s.Committing()
		stored(js)
	}
	check := func(step string, overflow bool, storeMin int, first, last int) {
		t.Helper()
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.overflow != overflow || overflow && !d.storeMin.Equal(t0.Add(time.Duration(storeMin)*time.Second)) {
			t.Errorf("%s: overflow %v from %v; want %v from +%ds", step, d.overflow, d.storeMin.Sub(t0), overflow, storeMin)
		}
		if f, l := d.q.peekFirst().MsgID, d.q.peekLast().MsgID; f != int64(first) || l != int64(last) {
			t.Errorf("%s: queue from %d to %d, want %d to %d", step, f, l, first, last)
		}
	}
	hand(at(10), at(20), at(30))
	check("full", false, 0, 10, 30)
	hand(at(40))
	check("later job", true, 40, 10, 30)
	hand(at(5))
	check("sooner job", true, 30, 5, 20)
	// The loop takes 5 and 10, and their outcomes are written.
	d.mu.Lock()
	for range 2 {
		j := d.q.popFirst()
		delete(d.known, jobID{j.PushID, j.MsgID})
		out.jobs = slices.DeleteFunc(out.jobs, func(o store.PushJob) bool { return o.PushID == j.PushID })
	}
	d.mu.Unlock()
	out.after = nil
	// The idle pass, for the jobs due before the next, 35 (a retry).
	hand(at(35))
	check("retry", true, 30, 20, 35)
	if _, err := d.refill(context.Background(), t0.Add(35*time.Second), false); err != nil {
		t.Fatal(err)
	}
	check("idle pass", true, 35, 20, 35) // it stopped at 35: the rest are due at or after it
	if len(out.after) == 0 || out.after[0].Due.Before(t0.Add(29*time.Second)) {
		t.Errorf("the idle pass read the outbox after %v; want from the jobs left to it (30 s)", out.after)
	}
	d.mu.Lock()
	for d.q.Len() > 0 {
		j := d.q.popFirst()
		delete(d.known, jobID{j.PushID, j.MsgID})
		out.jobs = slices.DeleteFunc(out.jobs, func(o store.PushJob) bool { return o.PushID == j.PushID })
	}
	d.mu.Unlock()
	if _, err := d.refill(context.Background(), time.Time{}, false); err != nil {
		t.Fatal(err)
	}
	check("all read", false, 0, 40, 40)
}

// BenchmarkAddToFullQueue hands over jobs due now to a queue of 100,000
// later jobs: each takes the latest one's place, under commitMu.
func BenchmarkAddToFullQueue(b *testing.B) {
	const max = 100_000
	out := &memOutbox{}
	s := New(out, nil, nil, Config{MaxPending: max})
	d := &s.dsp
	now := time.Now()
	out.put(farJobs(max, now.Add(time.Hour), "far")...)
	if _, err := d.refill(context.Background(), time.Time{}, false); err != nil {
		b.Fatal(err)
	}
	jobs := farJobs(b.N, now, "now")
	b.ResetTimer()
	for i := range jobs {
		stored := s.Committing()
		stored(jobs[i : i+1])
	}
}
