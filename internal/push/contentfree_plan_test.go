package push

import (
	"context"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// enqueued is a Store that keeps what EnqueuePush stores (and serves
// nothing else).
type enqueued struct {
	Store
	jobs []store.PushJob
}

func (e *enqueued) EnqueuePush(ctx context.Context, jobs []store.PushJob, remove []store.PushKey) error {
	e.jobs = append(e.jobs, jobs...)
	return nil
}

type oneMember struct{ user string }

func (g oneMember) EachMember(ctx context.Context, group string, seq int64, fn func(string)) error {
	fn(g.user)
	return nil
}

// TestContentFreeDecidedAtPlanning: a device whose app is content-free by
// the push configuration file gets jobs that say so (job data v3), for a
// peer message, a group message's expanded jobs and a call, so that a
// server build that does not know the mode refuses them in a rolling
// upgrade instead of pushing the text; another app's device gets v2.
func TestContentFreeDecidedAtPlanning(t *testing.T) {
	st := &enqueued{}
	s := New(st, nil, nil, Config{ContentFree: ContentFree{Apps: []string{"com.example.private"}}})
	s.SetGroups(oneMember{"bob"})
	s.reg.put(herald.PushDevice{PushID: "pd_private", Provider: herald.ProviderAPNs, App: "com.example.private", Token: "t1", User: "bob", Device: "phone"})
	s.reg.put(herald.PushDevice{PushID: "pd_plain", Provider: herald.ProviderAPNs, App: "com.example.plain", Token: "t2", User: "bob", Device: "tablet"})
	now := time.Now()
	cfg := herald.PushConfig{Title: "Alice", Content: "the text"}

	check := func(t *testing.T, jobs []store.PushJob) {
		t.Helper()
		seen := 0
		for _, j := range jobs {
			var d jobData
			if err := d.unmarshal(j.Data); err != nil {
				t.Fatalf("%s: %v", j.PushID, err)
			}
			want, version := j.PushID == "pd_private", byte(jobDataV2)
			if want {
				version = jobDataV3
			}
			if d.Config.ContentFree != want || j.Data[0] != version {
				t.Errorf("%s: content_free %v, job data v%d; want %v, v%d", j.PushID, d.Config.ContentFree, j.Data[0], want, version)
			}
			seen++
		}
		if seen != 2 {
			t.Errorf("%d jobs, want one per device (2): %+v", seen, jobs)
		}
	}
	t.Run("peer", func(t *testing.T) {
		m := &herald.Message{ConvType: herald.ConversationPeer, Conv: "p:alice:bob", From: "alice", To: "bob", Type: herald.MessageText, CreatedAt: now, Push: &cfg}
		check(t, s.Plan(m, 0, nil))
	})
	t.Run("group", func(t *testing.T) {
		m := &herald.Message{ConvType: herald.ConversationGroup, Conv: "g:team", From: "alice", Type: herald.MessageText, CreatedAt: now, Push: &cfg}
		fan := s.Plan(m, 0, nil)
		if len(fan) != 1 {
			t.Fatalf("group plan: %+v; want one fan-out job", fan)
		}
		fan[0].Seq, fan[0].MsgID = 1, 1
		st.jobs = nil
		s.expand(fan[0])
		check(t, st.jobs)
	})
	t.Run("call", func(t *testing.T) {
		c := &herald.Call{ID: "c1", Deadline: now.Add(time.Minute), Participants: []herald.CallParticipant{{User: "alice"}, {User: "bob"}}}
		check(t, s.PlanCall(c, []string{"bob"}, false, &cfg, nil))
	})
}
