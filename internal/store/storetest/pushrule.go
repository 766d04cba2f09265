package storetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/herald-im/herald"
)

func (f *fixture) pushRules(t *testing.T) map[string]herald.PushRule {
	t.Helper()
	got, err := f.s.PushRules(context.Background())
	if err != nil {
		t.Fatalf("PushRules: %v", err)
	}
	if got == nil {
		t.Fatal("PushRules returned a nil map")
	}
	return got
}

func (f *fixture) setPushRule(t *testing.T, user string, r herald.PushRule) {
	t.Helper()
	if err := f.s.SetPushRule(context.Background(), user, r); err != nil {
		t.Fatalf("SetPushRule(%q): %v", user, err)
	}
}

func ruleString(m map[string]herald.PushRule) string {
	out := "{"
	for _, u := range slices.Sorted(maps.Keys(m)) {
		r := m[u]
		out += fmt.Sprintf("%s:%v/%v", u, r.OnlinePlatforms, r.NotToReceiveOfflinePushPlatforms)
		if d := r.DoNotDisturb; d != nil {
			out += fmt.Sprintf("/dnd %s-%s %s %s", d.Start, d.End, d.TimeZone, d.Mode)
		}
		out += " "
	}
	return out + "}"
}

var (
	desktopRule = herald.PushRule{OnlinePlatforms: []string{"macos", "web"}, NotToReceiveOfflinePushPlatforms: []string{"ios"}}
	nightRule   = herald.PushRule{DoNotDisturb: &herald.DoNotDisturb{Start: "22:00", End: "07:00", TimeZone: "Europe/Berlin", Mode: "hold"}}
)

// testPushRuleSetAndList: a rule replaces the user's last one, a zero
// rule deletes it, and PushRules returns every user's rule as set.
func testPushRuleSetAndList(t *testing.T, f *fixture) {
	if got := f.pushRules(t); len(got) != 0 {
		t.Errorf("PushRules of a new store = %v, want empty", got)
	}
	both := desktopRule
	both.DoNotDisturb = nightRule.DoNotDisturb
	steps := []struct {
		name string
		user string
		rule herald.PushRule
		want map[string]herald.PushRule
	}{
		{"set one", "alice", desktopRule, map[string]herald.PushRule{"alice": desktopRule}},
		{"another user's is their own", "bob", nightRule, map[string]herald.PushRule{"alice": desktopRule, "bob": nightRule}},
		{"replace", "alice", both, map[string]herald.PushRule{"alice": both, "bob": nightRule}},
		{"clear", "bob", herald.PushRule{}, map[string]herald.PushRule{"alice": both}},
		{"clear one never set", "carol", herald.PushRule{}, map[string]herald.PushRule{"alice": both}},
	}
	for _, st := range steps {
		f.setPushRule(t, st.user, st.rule)
		if got, want := ruleString(f.pushRules(t)), ruleString(st.want); got != want {
			t.Errorf("%s: PushRules = %s, want %s", st.name, got, want)
		}
	}
}

// testPushRuleInvalid: an empty user is refused.
func testPushRuleInvalid(t *testing.T, f *fixture) {
	err := f.s.SetPushRule(context.Background(), "", desktopRule)
	wantCode(t, "SetPushRule with no user", err, herald.CodeInvalidArgument)
	if got := f.pushRules(t); len(got) != 0 {
		t.Errorf("PushRules after a refused set = %v, want empty", got)
	}
}

// reopenPushRules sets rules and returns the check that they are there
// after a reopen.
func reopenPushRules(t *testing.T, f *fixture) func() {
	f.setPushRule(t, "rita", desktopRule)
	f.setPushRule(t, "sam", nightRule)
	f.setPushRule(t, "sam", herald.PushRule{})
	return func() {
		t.Helper()
		want := map[string]herald.PushRule{"rita": desktopRule}
		if got, want := ruleString(f.pushRules(t)), ruleString(want); got != want {
			t.Errorf("PushRules after reopen = %s, want %s", got, want)
		}
	}
}
