package push_test

import (
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

// TestPlanCallAdvancedDeadlines: an advanced-mode invitation's pushes
// expire at each invitee's own deadline, under a message ID of that round
// (a user invited again is pushed again); a general call's expire at the
// call's deadline under CallMsgID, as before.
func TestPlanCallAdvancedDeadlines(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	h.device("dave", 1)
	h.device("erin", 2)
	now := time.Now().Truncate(time.Millisecond)
	first, later := now.Add(30*time.Second), now.Add(50*time.Second)
	c := &herald.Call{
		ID: "adv1", Mode: herald.CallAdvanced, Timeout: 30 * time.Second, CreatedAt: now, Deadline: first,
		Participants: []herald.CallParticipant{
			{User: "alice", State: herald.CallAccepted, UpdatedAt: now},
			{User: "dave", State: herald.CallNotYet, UpdatedAt: now, Deadline: first},
			{User: "erin", State: herald.CallNotYet, UpdatedAt: now.Add(20 * time.Second), Deadline: later},
		},
	}
	cfg := &herald.PushConfig{Title: "Alice", Content: "Incoming call"}
	jobs := h.svc.PlanCall(c, []string{"dave", "erin"}, false, cfg, nil)
	if len(jobs) != 2 {
		t.Fatalf("%d jobs, want one per invitee's device", len(jobs))
	}
	want := map[string]time.Time{"dave": first, "erin": later}
	for _, j := range jobs {
		if !j.Expires.Equal(want[j.User]) {
			t.Errorf("%s's push expires %v, want their own deadline %v", j.User, j.Expires, want[j.User])
		}
		if got := push.CallRoundMsgID(c.ID, want[j.User]); j.MsgID != got || j.MsgID == push.CallMsgID(c.ID, false) {
			t.Errorf("%s's push msg_id %d, want the round's %d (not the call's)", j.User, j.MsgID, got)
		}
	}
	if jobs[0].MsgID == jobs[1].MsgID {
		t.Errorf("two rounds share msg_id %d", jobs[0].MsgID)
	}
	cancel := h.svc.PlanCall(c, []string{"dave"}, true, cfg, nil)
	if len(cancel) != 1 || cancel[0].MsgID != push.CallMsgID(c.ID, true) {
		t.Errorf("the end's alert %+v, want the call's cancel msg_id", cancel)
	}

	g := *c
	g.Mode = herald.CallGeneral
	gj := h.svc.PlanCall(&g, []string{"erin"}, false, cfg, nil)
	if len(gj) != 1 || !gj[0].Expires.Equal(g.Deadline) || gj[0].MsgID != push.CallMsgID(g.ID, false) {
		t.Errorf("general call's push %+v, want the call's deadline %v and CallMsgID", gj, g.Deadline)
	}
}
