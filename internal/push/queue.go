package push

import (
	"container/heap"

	"github.com/herald-im/herald/internal/store"
)

// jobQueue holds the dispatcher's jobs in memory in due order with both
// ends at hand: the loop takes the first, and a full queue gives up its
// latest to a job due sooner (dispatch.go). It is two heaps over the same
// entries, each entry knowing its place in both, so a push and a removal
// at either end are O(log n).
type jobQueue struct {
	first firstHeap
	last  lastHeap
}

type queued struct {
	job         store.PushJob
	first, last int // index in each heap
}

func (q *jobQueue) Len() int { return len(q.first) }

func (q *jobQueue) push(j store.PushJob) {
	e := &queued{job: j}
	heap.Push(&q.first, e)
	heap.Push(&q.last, e)
}

// peekFirst returns the job due first; the queue must not be empty.
func (q *jobQueue) peekFirst() *store.PushJob { return &q.first[0].job }

// peekLast returns the job due last; the queue must not be empty.
func (q *jobQueue) peekLast() *store.PushJob { return &q.last[0].job }

func (q *jobQueue) popFirst() store.PushJob {
	e := heap.Pop(&q.first).(*queued)
	heap.Remove(&q.last, e.last)
	return e.job
}

func (q *jobQueue) popLast() store.PushJob {
	e := heap.Pop(&q.last).(*queued)
	heap.Remove(&q.first, e.first)
	return e.job
}

// dueBefore orders jobs by due time, then message, then push ID: the
// order of the outbox's key (message, push ID) for the jobs due at once.
// A group message's thousands of device jobs are all due at the same
// time; sent in push ID order, their outcomes come back in about that
// order, so each FinishPush deletes neighbouring outbox rows (a few pages)
// instead of rows spread over every page of the message's jobs
// (BenchmarkGroupOutbox in internal/store/sqlite: docs/benchmarks.md, "A
// group message's jobs in push ID order").
func dueBefore(a, b *store.PushJob) bool {
	if !a.Due.Equal(b.Due) {
		return a.Due.Before(b.Due)
	}
	if a.MsgID != b.MsgID {
		return a.MsgID < b.MsgID
	}
	return a.PushID < b.PushID
}

// firstHeap has the job due first on top.
type firstHeap []*queued

func (h firstHeap) Len() int           { return len(h) }
func (h firstHeap) Less(i, j int) bool { return dueBefore(&h[i].job, &h[j].job) }
func (h firstHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].first, h[j].first = i, j
}
func (h *firstHeap) Push(x any) {
	e := x.(*queued)
	e.first = len(*h)
	*h = append(*h, e)
}
func (h *firstHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// lastHeap has the job due last on top.
type lastHeap []*queued

func (h lastHeap) Len() int           { return len(h) }
func (h lastHeap) Less(i, j int) bool { return dueBefore(&h[j].job, &h[i].job) }
func (h lastHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].last, h[j].last = i, j
}
func (h *lastHeap) Push(x any) {
	e := x.(*queued)
	e.last = len(*h)
	*h = append(*h, e)
}
func (h *lastHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
