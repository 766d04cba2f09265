package sqlite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// BenchmarkGroupOutbox stores a group message's device jobs the way an
// expansion does (EnqueuePush, writes of 1,024 jobs in member order, push
// IDs random), then their outcomes (FinishPush, 256 a write: the jobs
// deleted, a log row each), for 8,192 devices. insert is the order the
// jobs are written in: member (push IDs in random order), member-sorted
// (each write sorted by push ID) or push-id (all of them in push ID
// order). order is the order the outcomes come in: random (the
// dispatcher's, when one message's jobs all due at once were sent in any
// order) or by push ID. The outbox's key is (message, push ID): in push ID
// order, each write changes neighbouring rows, a few pages, where rows in
// random order are spread over every page of the message's jobs.
// cpu-ns/push is the process's CPU time (getrusage) per push;
// written-B/push the bytes it passed to write(2) per push (/proc/self/io's
// wchar: WAL frames and checkpoints), which the machine's load does not
// move.
func BenchmarkGroupOutbox(b *testing.B) {
	const devices, expand, finish = 8192, 1024, 256
	for _, v := range []struct{ insert, order string }{{"member", "random"}, {"member", "push-id"}, {"member-sorted", "push-id"}, {"push-id", "push-id"}} {
		order := v.order
		b.Run("insert="+v.insert+"/order="+order, func(b *testing.B) {
			s, _ := openTemp(b, Options{})
			defer s.Close()
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(1, 2))
			ids := make([]string, devices)
			for i := range ids {
				ids[i] = store.NewPushID()
			}
			data := make([]byte, 180)
			at := time.Now()
			msg := int64(0)
			one := func() {
				msg++
				jobs := make([]store.PushJob, devices)
				for i := range jobs {
					jobs[i] = store.PushJob{PushID: ids[i], MsgID: msg, User: fmt.Sprintf("user-%05d", i),
						Conv: "g:bench", Seq: msg, Due: at, Expires: at.Add(time.Hour), Data: data}
				}
				if v.insert == "push-id" {
					slices.SortFunc(jobs, func(a, b store.PushJob) int { return strings.Compare(a.PushID, b.PushID) })
				}
				for off := 0; off < devices; off += expand {
					if v.insert == "member-sorted" {
						slices.SortFunc(jobs[off:off+expand], func(a, b store.PushJob) int { return strings.Compare(a.PushID, b.PushID) })
					}
					if err := s.EnqueuePush(ctx, jobs[off:off+expand], nil); err != nil {
						b.Fatal(err)
					}
				}
				keys := make([]store.PushKey, devices)
				for i := range keys {
					keys[i] = jobs[i].Key()
				}
				if order == "random" {
					rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
				} else {
					slices.SortFunc(keys, func(a, b store.PushKey) int { return strings.Compare(a.PushID, b.PushID) })
				}
				log := make([]herald.PushAttempt, finish)
				for off := 0; off < devices; off += finish {
					for i := range log {
						k := keys[off+i]
						log[i] = herald.PushAttempt{At: at, PushID: k.PushID, User: "user-x", MsgID: k.MsgID,
							Conv: "g:bench", Provider: herald.ProviderAPNs, App: "com.example.app",
							Env: herald.EnvProduction, Attempt: 1, Outcome: "delivered", Status: 200,
							NotifID: fmt.Sprintf("%032x", off+i), Latency: time.Millisecond}
					}
					if err := s.FinishPush(ctx, keys[off:off+finish], nil, log, nil); err != nil {
						b.Fatal(err)
					}
				}
			}
			one()
			cpu0, w0 := cpuTime(), writtenBytes()
			b.ResetTimer()
			for i := 0; i < b.N; i += devices {
				one()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/push")
			b.ReportMetric(float64(writtenBytes()-w0)/float64(b.N), "written-B/push")
		})
	}
}

// writtenBytes is /proc/self/io's wchar (0 where there is none).
func writtenBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
