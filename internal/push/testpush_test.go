package push_test

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/emulator"
	"github.com/herald-im/herald/internal/push"
)

// streamed runs TestStream and returns what the observer saw, with the
// emulator's received count at each stage, and the report.
func streamed(t *testing.T, h *harness, pushID string, cfg herald.PushConfig) ([]push.Stage, []int64, *push.TestReport) {
	t.Helper()
	var seen []push.Stage
	var received []int64
	rep, err := h.svc.TestStream(context.Background(), pushID, cfg, func(s push.Stage) {
		seen = append(seen, s)
		received = append(received, h.emu.Stats().Received)
	})
	if err != nil {
		t.Fatalf("TestStream: %v", err)
	}
	return seen, received, rep
}

func stageNames(ss []push.Stage) []string {
	var out []string
	for _, s := range ss {
		n := s.Name
		if s.Pending {
			n += "(pending)"
		}
		out = append(out, n)
	}
	return out
}

// TestTestStreamStages: TestStream tells each stage as it is reached, in
// the report's order, with the send announced before the vendor request
// leaves, and returns the report Test returns.
func TestTestStreamStages(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	pushID := h.device("bob", 1)
	cfg := herald.PushConfig{Title: "Hi", Content: "stage by stage", Payload: `{"k":1}`}

	seen, received, rep := streamed(t, h, pushID, cfg)
	want := []string{"device", "binding", "provider", "strategy", "render", "send(pending)", "send"}
	if got := stageNames(seen); !reflect.DeepEqual(got, want) {
		t.Fatalf("observed stages %v, want %v", got, want)
	}
	// The pending send is seen before the request reaches the vendor, the
	// finished one after its answer.
	if received[5] != 0 || received[6] != 1 {
		t.Errorf("emulator had received %d requests at the pending send and %d at the answer, want 0 and 1", received[5], received[6])
	}
	var finished []push.Stage
	for _, s := range seen {
		if !s.Pending {
			finished = append(finished, s)
		}
	}
	if !reflect.DeepEqual(finished, rep.Stages) {
		t.Errorf("observed finished stages %+v, report's %+v", finished, rep.Stages)
	}
	if !rep.OK() || rep.Attempt.Status != 200 || rep.Attempt.Outcome != herald.PushSent {
		t.Errorf("report %+v: want every stage passed and a 200", rep)
	}

	// Test, the thin wrapper, reports the same (but for the notification's
	// ID, time and latency, which are the attempt's own).
	plain, err := h.svc.Test(context.Background(), pushID, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stageNames(plain.Stages), stageNames(rep.Stages)) || plain.Payload != rep.Payload || plain.PushID != rep.PushID {
		t.Errorf("Test's report %+v differs from TestStream's %+v", plain, rep)
	}
	for i := range plain.Stages[:len(plain.Stages)-1] {
		if plain.Stages[i] != rep.Stages[i] {
			t.Errorf("stage %d: Test %+v, TestStream %+v", i, plain.Stages[i], rep.Stages[i])
		}
	}
	a, b := plain.Attempt, rep.Attempt
	if a.Status != b.Status || a.Outcome != b.Outcome || a.PushID != b.PushID || a.Provider != b.Provider || a.App != b.App || a.Env != b.Env || a.User != b.User {
		t.Errorf("Test's attempt %+v differs from TestStream's %+v", a, b)
	}

	// A vendor refusal ends with a failed send, seen as it comes.
	h.emu.Script(token(1), emulator.Step{Status: http.StatusGone})
	seen, _, rep = streamed(t, h, pushID, cfg)
	if got := stageNames(seen); !reflect.DeepEqual(got, want) {
		t.Fatalf("observed stages of a refused push %v, want %v", got, want)
	}
	if last := seen[len(seen)-1]; last.OK || rep.OK() || rep.Attempt.Status != http.StatusGone || rep.Attempt.Reason != "Unregistered" {
		t.Errorf("refused push: last stage %+v, attempt %+v; want a failed send, 410 Unregistered", last, rep.Attempt)
	}
}

func TestTestStreamStops(t *testing.T) {
	h := newHarness(t, push.Config{}, nil)
	// An unknown push ID stops at the first stage, the same for both.
	seen, _, rep := streamed(t, h, "pd_nobody", herald.PushConfig{Title: "x"})
	plain, err := h.svc.Test(context.Background(), "pd_nobody", herald.PushConfig{Title: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].Name != "device" || seen[0].OK || !reflect.DeepEqual(rep, plain) || !reflect.DeepEqual(seen, rep.Stages) {
		t.Errorf("unknown push ID: observed %+v, report %+v, Test's %+v; want one failed device stage, the same reports", seen, rep, plain)
	}
	// An invalid request is an error before any stage.
	called := false
	if _, err := h.svc.TestStream(context.Background(), "", herald.PushConfig{}, func(push.Stage) { called = true }); err == nil || called {
		t.Errorf("empty push ID: err %v, observer called %v; want an error and no stage", err, called)
	}
}
