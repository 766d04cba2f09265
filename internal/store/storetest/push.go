package storetest

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// The offline push part of the suite: outbox, delivery log, devices.

const testApp = "im.herald.demo"

// pushDevice is a registration of an APNs token.
func pushDevice(user, device, token string) herald.PushDevice {
	return herald.PushDevice{
		Provider: herald.ProviderAPNs, Token: token, App: testApp, Env: herald.EnvProduction,
		User: user, Device: device,
	}
}

// job is a push of msgs[i], m, to pushID, due at due.
func job(pushID string, i int, m *herald.Message, due time.Time) store.PushJob {
	return store.PushJob{
		PushID: pushID, Msg: i, User: m.To, Conv: m.Conv, Due: due,
		Expires: due.Add(time.Hour), Data: []byte("push of " + m.LocalID),
	}
}

// storedJob is j as PendingPush returns it once m, its message, is stored.
func storedJob(j store.PushJob, m *herald.Message) store.PushJob {
	j.MsgID, j.Seq, j.Msg = m.ID, m.Seq, 0
	return j
}

func (f *fixture) appendJobs(t *testing.T, msgs []*herald.Message, jobs []store.PushJob) []store.Appended {
	t.Helper()
	res, err := f.s.AppendMessages(context.Background(), msgs, jobs)
	if err != nil {
		t.Fatalf("AppendMessages(%d messages, %d jobs): %v", len(msgs), len(jobs), err)
	}
	if len(res) != len(msgs) {
		t.Fatalf("AppendMessages(%d messages) returned %d results", len(msgs), len(res))
	}
	return res
}

func (f *fixture) pendingAfter(t *testing.T, after store.PushKey, limit int) []store.PushJob {
	t.Helper()
	jobs, err := f.s.PendingPush(context.Background(), after, limit)
	if err != nil {
		t.Fatalf("PendingPush(%v, %d): %v", keyString(after), limit, err)
	}
	return jobs
}

// pending returns the whole outbox.
func (f *fixture) pending(t *testing.T) []store.PushJob {
	t.Helper()
	return f.pendingAfter(t, store.PushKey{}, 1<<20)
}

func (f *fixture) finish(t *testing.T, done []store.PushKey, retry []store.PushJob, log []herald.PushAttempt, badges map[string]store.Badge) {
	t.Helper()
	if err := f.s.FinishPush(context.Background(), done, retry, log, badges); err != nil {
		t.Fatalf("FinishPush: %v", err)
	}
}

func (f *fixture) register(t *testing.T, d herald.PushDevice) herald.PushDevice {
	t.Helper()
	got, err := f.s.RegisterPushDevice(context.Background(), d)
	if err != nil {
		t.Fatalf("RegisterPushDevice(%s/%s %s): %v", d.User, d.Device, d.Token, err)
	}
	return got
}

func (f *fixture) devices(t *testing.T) []herald.PushDevice {
	t.Helper()
	ds, err := f.s.PushDevices(context.Background())
	if err != nil {
		t.Fatalf("PushDevices: %v", err)
	}
	return ds
}

// device returns the stored device pushID, or false.
func (f *fixture) userDevices(t *testing.T, user string) []herald.PushDevice {
	t.Helper()
	ds, err := f.s.UserPushDevices(context.Background(), user)
	if err != nil {
		t.Fatalf("UserPushDevices(%q): %v", user, err)
	}
	return ds
}

func (f *fixture) device(t *testing.T, pushID string) (herald.PushDevice, bool) {
	t.Helper()
	for _, d := range f.devices(t) {
		if d.PushID == pushID {
			return d, true
		}
	}
	return herald.PushDevice{}, false
}

func (f *fixture) pushLog(t *testing.T, q store.PushLogQuery) []herald.PushAttempt {
	t.Helper()
	log, err := f.s.PushLog(context.Background(), q)
	if err != nil {
		t.Fatalf("PushLog(%+v): %v", q, err)
	}
	return log
}

func keyString(k store.PushKey) string {
	return fmt.Sprintf("(%s %q %d)", k.Due.Format(time.RFC3339Nano), k.PushID, k.MsgID)
}

// jobString shows every field of j; times as Unix ms (what is stored).
func jobString(j store.PushJob) string {
	return fmt.Sprintf("%s/%d msg=%d user=%s conv=%s seq=%d due=%d expires=%d attempt=%d data=%q",
		j.PushID, j.MsgID, j.Msg, j.User, j.Conv, j.Seq, j.Due.UnixMilli(), j.Expires.UnixMilli(), j.Attempt, j.Data)
}

func jobStrings(jobs []store.PushJob) string {
	var b strings.Builder
	for _, j := range jobs {
		b.WriteString("\n\t" + jobString(j))
	}
	if len(jobs) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

// sameJobs fails unless got and want hold the same jobs in the same order.
func sameJobs(t *testing.T, what string, got, want []store.PushJob) {
	t.Helper()
	if g, w := jobStrings(got), jobStrings(want); g != w {
		t.Errorf("%s:\ngot%s\nwant%s", what, g, w)
	}
}

// sortJobs sorts jobs into PendingPush's order.
func sortJobs(jobs []store.PushJob) {
	slices.SortFunc(jobs, func(a, b store.PushJob) int { return compareKeys(a.Key(), b.Key()) })
}

func compareKeys(a, b store.PushKey) int {
	return cmp.Or(a.Due.Compare(b.Due), cmp.Compare(a.PushID, b.PushID), cmp.Compare(a.MsgID, b.MsgID))
}

func deviceString(d herald.PushDevice) string {
	return fmt.Sprintf("%s %s/%s/%s token=%s user=%q device=%q registered=%d badge=%d kind=%q",
		d.PushID, d.Provider, d.App, d.Env, d.Token, d.User, d.Device, d.RegisteredAt.UnixMilli(), d.Badge, d.BadgeKind)
}

func deviceStrings(ds []herald.PushDevice) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString("\n\t" + deviceString(d))
	}
	if len(ds) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

// attemptString shows every field of a, At to the nanosecond.
func attemptString(a herald.PushAttempt) string {
	at := a.At
	a.At = time.Time{}
	return fmt.Sprintf("%s %+v", at.UTC().Format(time.RFC3339Nano), a)
}

// reasons lists the Reason of each entry: the tests name entries by it.
func reasons(log []herald.PushAttempt) []string {
	rs := make([]string, len(log))
	for i, a := range log {
		rs[i] = a.Reason
	}
	return rs
}

func testJobsStored(t *testing.T, f *fixture) {
	msgs := []*herald.Message{f.text("alice", "bob"), f.text("bob", "alice"), f.text("alice", "carol")}
	due := baseTime.Add(time.Second)
	jobs := []store.PushJob{
		job("pd_bob", 0, msgs[0], due),
		job("pd_alice_phone", 1, msgs[1], due),
		job("pd_alice_tablet", 1, msgs[1], due.Add(time.Millisecond)),
		job("pd_carol", 2, msgs[2], due.Add(-time.Minute)),
	}
	jobs[1].Data = nil
	jobs[2].Data = make([]byte, 300)
	for i := range jobs[2].Data {
		jobs[2].Data[i] = byte(i) // every byte value, NUL included
	}
	jobs[3].Attempt, jobs[3].Expires = 2, time.Time{}
	res := f.appendJobs(t, msgs, jobs)

	var want []store.PushJob
	for _, j := range jobs {
		want = append(want, storedJob(j, res[j.Msg].Message))
	}
	sortJobs(want)
	got := f.pending(t)
	sameJobs(t, "PendingPush after AppendMessages with jobs", got, want)
	for _, j := range got {
		if j.PushID == "pd_carol" && !j.Expires.IsZero() {
			t.Errorf("zero Expires read back as %v, want the zero time", j.Expires)
		}
		if j.PushID == "pd_alice_phone" && len(j.Data) != 0 {
			t.Errorf("empty Data read back as %q", j.Data)
		}
	}

	f.appendJobs(t, []*herald.Message{f.text("alice", "bob")}, nil)
	sameJobs(t, "PendingPush after an append without jobs", f.pending(t), want)
}

func testJobsAllOrNothing(t *testing.T, f *fixture) {
	seed := f.text("alice", "bob")
	f.append(t, seed)
	due := baseTime.Add(time.Second)
	tests := []struct {
		name     string
		cancel   bool
		msgs     int // messages in the batch, the first valid
		breakMsg bool
		jobs     func(msgs []*herald.Message) []store.PushJob
		wantCode herald.Code // "" for any error
	}{
		{"job index past the end", false, 2, false, func(m []*herald.Message) []store.PushJob {
			return []store.PushJob{job("pd_1", 0, m[0], due), job("pd_1", 2, m[1], due)}
		}, herald.CodeInvalidArgument},
		{"negative job index", false, 2, false, func(m []*herald.Message) []store.PushJob {
			return []store.PushJob{job("pd_1", 0, m[0], due), job("pd_1", -1, m[1], due)}
		}, herald.CodeInvalidArgument},
		{"job without push ID", false, 2, false, func(m []*herald.Message) []store.PushJob {
			return []store.PushJob{job("pd_1", 0, m[0], due), job("", 1, m[1], due)}
		}, herald.CodeInvalidArgument},
		{"job without user", false, 2, false, func(m []*herald.Message) []store.PushJob {
			j := job("pd_1", 1, m[1], due)
			j.User = ""
			return []store.PushJob{job("pd_1", 0, m[0], due), j}
		}, herald.CodeInvalidArgument},
		{"job without messages", false, 0, false, func([]*herald.Message) []store.PushJob {
			return []store.PushJob{{PushID: "pd_1", User: "bob", Due: due}}
		}, herald.CodeInvalidArgument},
		{"invalid message", false, 2, true, func(m []*herald.Message) []store.PushJob {
			return []store.PushJob{job("pd_1", 0, m[0], due)}
		}, herald.CodeInvalidArgument},
		{"cancelled context", true, 2, false, func(m []*herald.Message) []store.PushJob {
			return []store.PushJob{job("pd_1", 0, m[0], due), job("pd_1", 1, m[1], due)}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := f.texts(tt.msgs, "alice", "bob")
			if tt.breakMsg {
				msgs[1].LocalID = ""
			}
			ctx, cancel := context.WithCancel(context.Background())
			if tt.cancel {
				cancel()
			}
			defer cancel()
			_, err := f.s.AppendMessages(ctx, msgs, tt.jobs(msgs))
			if err == nil {
				t.Fatalf("AppendMessages succeeded, want an error")
			}
			if tt.wantCode != "" {
				wantCode(t, "AppendMessages", err, tt.wantCode)
			}
			if got := seqsOf(f.all(t, seed.Conv)); !slices.Equal(got, []int64{1}) {
				t.Errorf("stored seqs = %v, want [1]: the failed batch stored messages", got)
			}
			sameJobs(t, "outbox after the failed batch", f.pending(t), nil)
		})
	}
}

func testNoJobForDuplicate(t *testing.T, f *fixture) {
	due := baseTime.Add(time.Second)
	m1 := f.text("alice", "bob")
	first := f.appendJobs(t, []*herald.Message{m1}, []store.PushJob{job("pd_a", 0, m1, due)})

	m2, m3 := f.text("alice", "bob"), f.text("alice", "bob")
	batch := []*herald.Message{retry(m1), m2, m3, retry(m3)}
	jobs := []store.PushJob{
		job("pd_b", 0, batch[0], due), // a resend of a stored message
		job("pd_b", 1, m2, due),
		job("pd_c", 2, m3, due),
		job("pd_d", 3, batch[3], due), // a resend of a message earlier in the batch
	}
	res := f.appendJobs(t, batch, jobs)
	if !res[0].Duplicate || !res[3].Duplicate {
		t.Fatalf("Duplicate flags %v %v, want true true", res[0].Duplicate, res[3].Duplicate)
	}
	want := []store.PushJob{
		storedJob(job("pd_a", 0, m1, due), first[0].Message),
		storedJob(jobs[1], res[1].Message),
		storedJob(jobs[2], res[2].Message),
	}
	sortJobs(want)
	sameJobs(t, "outbox after resends with jobs", f.pending(t), want)
}

func testJobIdempotent(t *testing.T, f *fixture) {
	due := baseTime.Add(time.Second)
	m := f.text("alice", "bob")
	a, b := job("pd_a", 0, m, due), job("pd_a", 0, m, due.Add(time.Minute))
	a.Data, b.Data = []byte("first"), []byte("second")
	res := f.appendJobs(t, []*herald.Message{m}, []store.PushJob{a, b})
	want := storedJob(a, res[0].Message)
	t.Run("twice in one batch", func(t *testing.T) {
		sameJobs(t, "outbox", f.pending(t), []store.PushJob{want})
	})

	want.Due, want.Attempt = due.Add(5*time.Minute), 1
	f.finish(t, nil, []store.PushJob{want}, nil, nil)
	t.Run("again with a resend of its message", func(t *testing.T) {
		c := job("pd_a", 0, m, due)
		c.Data = []byte("third")
		f.appendJobs(t, []*herald.Message{retry(m)}, []store.PushJob{c})
		sameJobs(t, "outbox after a resend", f.pending(t), []store.PushJob{want})
	})
}

func testPendingOrder(t *testing.T, f *fixture) {
	msgs := f.texts(6, "alice", "bob")
	t1 := baseTime.Add(time.Second)
	negative := time.UnixMilli(-1500).UTC() // before 1970: dues sort as signed numbers
	jobs := []store.PushJob{
		job("pb", 0, msgs[0], t1.Add(time.Second)),
		job("pab", 1, msgs[1], t1),
		job("pa", 2, msgs[2], t1),
		job("pa", 0, msgs[0], t1),
		job("pz", 3, msgs[3], negative),
		job("pb", 4, msgs[4], t1),
		job("pa", 5, msgs[5], t1.Add(2*time.Second)),
		job("pab", 2, msgs[2], t1), // "pab" after "pa", before "pb": not by length
	}
	res := f.appendJobs(t, msgs, jobs)
	var all []store.PushJob
	for _, j := range jobs {
		all = append(all, storedJob(j, res[j.Msg].Message))
	}
	sortJobs(all)
	sameJobs(t, "PendingPush from the start", f.pending(t), all)

	for _, limit := range []int{1, 2, 3, 8} {
		t.Run(fmt.Sprintf("pages of %d", limit), func(t *testing.T) {
			var got []store.PushJob
			after := store.PushKey{}
			for range len(all) + 1 {
				page := f.pendingAfter(t, after, limit)
				if len(page) > limit {
					t.Fatalf("page of %d jobs, limit %d", len(page), limit)
				}
				if len(page) == 0 {
					break
				}
				got = append(got, page...)
				after = page[len(page)-1].Key()
			}
			sameJobs(t, "pages put together", got, all)
		})
	}

	tests := []struct {
		name  string
		after store.PushKey
	}{
		{"zero key", store.PushKey{}},
		{"after the first", all[0].Key()},
		{"after one in the middle", all[3].Key()},
		{"after the last", all[len(all)-1].Key()},
		{"a key not stored", store.PushKey{Due: t1, PushID: "paa", MsgID: 1}},
		{"a stored key with a stale message ID", store.PushKey{Due: t1, PushID: "pa", MsgID: res[0].Message.ID + 1}},
		{"a due inside a millisecond", store.PushKey{Due: t1.Add(500 * time.Microsecond)}},
		{"a due inside a millisecond with a push ID", store.PushKey{Due: t1.Add(-500 * time.Microsecond), PushID: "zz", MsgID: 1 << 40}},
		{"a due before 1970", store.PushKey{Due: negative, PushID: "pz", MsgID: res[3].Message.ID}},
		{"past every due", store.PushKey{Due: t1.Add(time.Hour)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []store.PushJob
			for _, j := range all {
				if compareKeys(j.Key(), tt.after) > 0 {
					want = append(want, j)
				}
			}
			sameJobs(t, "PendingPush after "+keyString(tt.after), f.pendingAfter(t, tt.after, 100), want)
		})
	}
	t.Run("invalid limit", func(t *testing.T) {
		_, err := f.s.PendingPush(context.Background(), store.PushKey{}, 0)
		wantCode(t, "PendingPush(limit 0)", err, herald.CodeInvalidArgument)
	})
}

func testFinishPush(t *testing.T, f *fixture) {
	dev := f.register(t, pushDevice("bob", "phone", "b0b0"))
	msgs := f.texts(6, "alice", "bob")
	var jobs []store.PushJob
	for i, m := range msgs {
		jobs = append(jobs, job(dev.PushID, i, m, baseTime.Add(time.Duration(i)*time.Second)))
	}
	jobs = append(jobs, job("pd_other", 0, msgs[0], baseTime))
	res := f.appendJobs(t, msgs, jobs)
	// model is what the outbox should hold, by push ID and message index.
	model := map[string]store.PushJob{}
	name := func(pushID string, i int) string { return fmt.Sprint(pushID, "/", i) }
	for _, j := range jobs {
		model[name(j.PushID, j.Msg)] = storedJob(j, res[j.Msg].Message)
	}
	stored := func(i int) store.PushJob { return model[name(dev.PushID, i)] }
	moved := func(i int, due time.Duration, attempt int) store.PushJob {
		j := jobs[i]
		j = storedJob(j, res[i].Message)
		j.Due, j.Attempt = baseTime.Add(due), attempt
		return j
	}
	attempt := func(reason string, i int) herald.PushAttempt {
		return herald.PushAttempt{At: baseTime.Add(time.Duration(i) * time.Millisecond), PushID: dev.PushID, User: "bob",
			MsgID: res[i].Message.ID, Conv: msgs[i].Conv, Provider: herald.ProviderAPNs, App: testApp,
			Env: herald.EnvProduction, Attempt: 1, Outcome: herald.PushSent, Status: 200, Reason: reason}
	}
	stale := keyOf(stored(0))
	stale.Due = stale.Due.Add(time.Hour) // done ignores the due

	tests := []struct {
		name      string
		done      []store.PushKey
		retry     []store.PushJob
		log       []herald.PushAttempt
		badges    map[string]store.Badge
		gone      []string                 // model entries that leave
		set       map[string]store.PushJob // model entries that change
		wantBadge int
		wantKind  herald.BadgeKind
		wantLog   []string // reasons, newest first, of dev's log
	}{
		{name: "nothing"},
		{name: "done with a stale due", done: []store.PushKey{stale}, gone: []string{name(dev.PushID, 0)}},
		{name: "retry moves the job later", retry: []store.PushJob{moved(1, 10*time.Second, 1)},
			set: map[string]store.PushJob{name(dev.PushID, 1): moved(1, 10*time.Second, 1)}},
		{name: "retry moves the job earlier", retry: []store.PushJob{moved(5, -time.Second, 2)},
			set: map[string]store.PushJob{name(dev.PushID, 5): moved(5, -time.Second, 2)}},
		{name: "retry of a job done before is ignored", retry: []store.PushJob{moved(0, time.Minute, 1)}},
		{name: "retry of a job never stored is ignored", retry: []store.PushJob{{PushID: "pd_nobody", MsgID: 12345, User: "x", Due: baseTime, Attempt: 1}}},
		{name: "done of a job not pending", done: []store.PushKey{keyOf(stored(0)), {PushID: "pd_nobody", MsgID: 12345}}},
		{name: "done and retry of one job", done: []store.PushKey{keyOf(stored(2))}, retry: []store.PushJob{moved(2, time.Minute, 1)},
			gone: []string{name(dev.PushID, 2)}},
		{name: "two retries of one job: the last wins", retry: []store.PushJob{moved(3, 20*time.Second, 1), moved(3, 30*time.Second, 2)},
			set: map[string]store.PushJob{name(dev.PushID, 3): moved(3, 30*time.Second, 2)}},
		{name: "badges", badges: map[string]store.Badge{dev.PushID: {Count: 7, Kind: herald.BadgeCounted}, "pd_gone": {Count: 3}},
			wantBadge: 7, wantKind: herald.BadgeCounted},
		{name: "log", log: []herald.PushAttempt{attempt("first", 1), attempt("second", 2)}, wantBadge: 7, wantKind: herald.BadgeCounted,
			wantLog: []string{"second", "first"}},
		{name: "a total replaces a count", badges: map[string]store.Badge{dev.PushID: {Count: 2, Kind: herald.BadgeTotal}},
			wantBadge: 2, wantKind: herald.BadgeTotal, wantLog: []string{"second", "first"}},
		{name: "everything at once", done: []store.PushKey{keyOf(stored(4))}, retry: []store.PushJob{moved(1, 40*time.Second, 2)},
			log: []herald.PushAttempt{attempt("third", 4)}, badges: map[string]store.Badge{dev.PushID: {}},
			gone: []string{name(dev.PushID, 4)}, set: map[string]store.PushJob{name(dev.PushID, 1): moved(1, 40*time.Second, 2)},
			wantLog: []string{"third", "second", "first"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.finish(t, tt.done, tt.retry, tt.log, tt.badges)
			for _, k := range tt.gone {
				delete(model, k)
			}
			for k, j := range tt.set {
				model[k] = j
			}
			var want []store.PushJob
			for _, j := range model {
				want = append(want, j)
			}
			sortJobs(want)
			sameJobs(t, "outbox", f.pending(t), want)
			d, ok := f.device(t, dev.PushID)
			if !ok || d.Badge != tt.wantBadge || d.BadgeKind != tt.wantKind {
				t.Errorf("device badge = %d %q (found %v), want %d %q", d.Badge, d.BadgeKind, ok, tt.wantBadge, tt.wantKind)
			}
			if ds := f.userDevices(t, "bob"); len(ds) != 1 || ds[0].Badge != tt.wantBadge || ds[0].BadgeKind != tt.wantKind {
				t.Errorf("UserPushDevices(bob) = %s, want the device with badge %d %q", deviceStrings(ds), tt.wantBadge, tt.wantKind)
			}
			if _, ok := f.device(t, "pd_gone"); ok {
				t.Errorf("a badge for a device that is gone created it")
			}
			log := f.pushLog(t, store.PushLogQuery{PushID: dev.PushID, Limit: 10})
			if got := reasons(log); !slices.Equal(got, tt.wantLog) && len(got)+len(tt.wantLog) > 0 {
				t.Errorf("log = %q, want %q", got, tt.wantLog)
			}
		})
	}
}

func testPushLog(t *testing.T, f *fixture) {
	at := baseTime
	entry := func(reason string, when time.Time, user, pushID string, msgID int64) herald.PushAttempt {
		return herald.PushAttempt{At: when, User: user, PushID: pushID, MsgID: msgID, Reason: reason,
			Provider: herald.ProviderAPNs, Outcome: herald.PushSent}
	}
	ms := time.Millisecond
	f.finish(t, nil, nil, []herald.PushAttempt{
		entry("e1", at, "alice", "pd_1", 10),
		entry("e2", at.Add(ms), "alice", "pd_2", 10),
		entry("e3", at.Add(ms), "bob", "pd_3", 11),
		entry("e4", at.Add(-time.Second), "alice", "pd_1", 12), // older, written later
	}, nil)
	f.finish(t, nil, nil, []herald.PushAttempt{
		entry("e5", at.Add(ms), "alice", "pd_1", 10),
		entry("e6", at.Add(2*ms), "carol", "pd_4", 13),
		entry("e7", at, "", "pd_1", 14), // the device was unbound
	}, nil)
	// Newest first: by At, then the last written first.
	tests := []struct {
		name string
		q    store.PushLogQuery
		want []string
	}{
		{"user", store.PushLogQuery{User: "alice", Limit: 100}, []string{"e5", "e2", "e1", "e4"}},
		{"push ID", store.PushLogQuery{PushID: "pd_1", Limit: 100}, []string{"e5", "e7", "e1", "e4"}},
		{"message", store.PushLogQuery{MsgID: 10, Limit: 100}, []string{"e5", "e2", "e1"}},
		{"user and push ID", store.PushLogQuery{User: "alice", PushID: "pd_1", Limit: 100}, []string{"e5", "e1", "e4"}},
		{"user and message", store.PushLogQuery{User: "alice", MsgID: 10, Limit: 100}, []string{"e5", "e2", "e1"}},
		{"push ID and message", store.PushLogQuery{PushID: "pd_1", MsgID: 10, Limit: 100}, []string{"e5", "e1"}},
		{"all three", store.PushLogQuery{User: "alice", PushID: "pd_2", MsgID: 10, Limit: 100}, []string{"e2"}},
		{"fields that match apart but not together", store.PushLogQuery{User: "bob", PushID: "pd_1", Limit: 100}, nil},
		{"limit", store.PushLogQuery{User: "alice", Limit: 2}, []string{"e5", "e2"}},
		{"limit with a filter", store.PushLogQuery{PushID: "pd_1", MsgID: 10, Limit: 1}, []string{"e5"}},
		{"unknown user", store.PushLogQuery{User: "dave", Limit: 100}, nil},
		{"unknown message", store.PushLogQuery{MsgID: 99, Limit: 100}, nil},
		{"no filter: the whole log", store.PushLogQuery{Limit: 100}, []string{"e6", "e5", "e3", "e2", "e7", "e1", "e4"}},
		{"no filter, limit", store.PushLogQuery{Limit: 3}, []string{"e6", "e5", "e3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reasons(f.pushLog(t, tt.q)); !slices.Equal(got, tt.want) && len(got)+len(tt.want) > 0 {
				t.Errorf("PushLog(%+v) = %q, want %q", tt.q, got, tt.want)
			}
		})
	}
	for _, q := range []store.PushLogQuery{
		{Limit: 0},
		{User: "alice", Limit: 0},
		{PushID: "pd_1", Limit: -1},
	} {
		t.Run(fmt.Sprintf("invalid %+v", q), func(t *testing.T) {
			_, err := f.s.PushLog(context.Background(), q)
			wantCode(t, fmt.Sprintf("PushLog(%+v)", q), err, herald.CodeInvalidArgument)
		})
	}
}

func testPushLogFields(t *testing.T, f *fixture) {
	in := []herald.PushAttempt{{
		At:       time.Date(2031, 12, 31, 23, 59, 59, 999_000_000, time.FixedZone("X", 3*3600)),
		PushID:   "pd_fields",
		User:     "ünï",
		MsgID:    1<<53 + 1,
		Conv:     herald.PeerConversationKey("alice", "ünï"),
		Provider: herald.ProviderAPNsVoIP,
		App:      testApp + ".voip",
		Env:      herald.EnvDevelopment,
		Attempt:  3,
		Outcome:  herald.PushDropped,
		Status:   410,
		Reason:   "Unregistered",
		Body:     "{\"reason\":\"Unregistered\"}\x00\xff\xfe cut mid-rune \xe2\x82", // a provider's bytes, truncated
		NotifID:  "4b2c1b9e-5a1c-4f0e-9f7e-2d1c0b9a8f7e",
		Latency:  1234567891 * time.Nanosecond,
	}, {
		At:     time.UnixMilli(-1).UTC(),
		PushID: "pd_fields",
	}}
	f.finish(t, nil, nil, in, nil)
	got := f.pushLog(t, store.PushLogQuery{PushID: "pd_fields", Limit: 10})
	if len(got) != len(in) {
		t.Fatalf("PushLog returned %d entries, want %d", len(got), len(in))
	}
	for i := range in {
		if g, w := attemptString(got[i]), attemptString(in[i]); g != w {
			t.Errorf("entry %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

func testPruneLog(t *testing.T, f *fixture) {
	at := baseTime
	var log []herald.PushAttempt
	for i, when := range []time.Time{at.Add(-3 * time.Second), at.Add(-2 * time.Second), at.Add(-time.Second), at, at.Add(time.Millisecond)} {
		log = append(log, herald.PushAttempt{At: when, User: "alice", PushID: "pd_1", MsgID: int64(100 + i), Reason: fmt.Sprint("e", i)})
	}
	f.finish(t, nil, nil, log, nil)
	tests := []struct {
		name   string
		before time.Time
		want   int
		left   []string
	}{
		{"the oldest", at.Add(-2 * time.Second), 1, []string{"e4", "e3", "e2", "e1"}},
		{"nothing older", at.Add(-2 * time.Second), 0, []string{"e4", "e3", "e2", "e1"}},
		{"before inside a millisecond", at.Add(500 * time.Microsecond), 3, []string{"e4"}},
		{"everything", at.Add(time.Hour), 1, nil},
		{"an empty log", at.Add(time.Hour), 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := f.s.PrunePushLog(context.Background(), tt.before)
			if err != nil {
				t.Fatalf("PrunePushLog: %v", err)
			}
			if n != tt.want {
				t.Errorf("PrunePushLog(%v) = %d, want %d", tt.before, n, tt.want)
			}
			// Every index must have lost the entries.
			for _, q := range []store.PushLogQuery{{User: "alice", Limit: 10}, {PushID: "pd_1", Limit: 10}} {
				if got := reasons(f.pushLog(t, q)); !slices.Equal(got, tt.left) && len(got)+len(tt.left) > 0 {
					t.Errorf("PushLog(%+v) = %q, want %q", q, got, tt.left)
				}
			}
			for i, a := range log {
				want := slices.Contains(tt.left, a.Reason)
				if got := len(f.pushLog(t, store.PushLogQuery{MsgID: a.MsgID, Limit: 10})) == 1; got != want {
					t.Errorf("entry %d found by its message: %v, want %v", i, got, want)
				}
			}
		})
	}
	// A log pruned empty may start its IDs again: what comes after is
	// found like any entry, by user and by push ID.
	t.Run("entries after the log was pruned empty", func(t *testing.T) {
		var after []herald.PushAttempt
		for i := range 3 {
			after = append(after, herald.PushAttempt{At: at.Add(2*time.Hour + time.Duration(i)*time.Second), User: "alice", PushID: "pd_1",
				MsgID: int64(200 + i), Reason: fmt.Sprint("n", i)})
		}
		f.finish(t, nil, nil, after, nil)
		for _, q := range []store.PushLogQuery{{User: "alice", Limit: 10}, {PushID: "pd_1", Limit: 10}} {
			if got := reasons(f.pushLog(t, q)); !slices.Equal(got, []string{"n2", "n1", "n0"}) {
				t.Errorf("PushLog(%+v) = %q, want [n2 n1 n0]", q, got)
			}
		}
		if _, err := f.s.PrunePushLog(context.Background(), at.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
	})
	// Backends may prune in several transactions: more entries than one
	// takes must all go.
	t.Run("a large backlog", func(t *testing.T) {
		const n = 3000
		bulk := make([]herald.PushAttempt, n)
		for i := range bulk {
			bulk[i] = herald.PushAttempt{At: at.Add(-time.Duration(n-i) * time.Millisecond), User: "bulk", PushID: "pd_bulk", MsgID: int64(i + 1)}
		}
		f.finish(t, nil, nil, bulk, nil)
		f.finish(t, nil, nil, []herald.PushAttempt{{At: at, User: "bulk", PushID: "pd_bulk", Reason: "kept"}}, nil)
		got, err := f.s.PrunePushLog(context.Background(), at)
		if err != nil || got != n {
			t.Errorf("PrunePushLog = %d, %v; want %d", got, err, n)
		}
		if left := reasons(f.pushLog(t, store.PushLogQuery{PushID: "pd_bulk", Limit: 10})); !slices.Equal(left, []string{"kept"}) {
			t.Errorf("left after pruning = %q, want [kept]", left)
		}
	})
}

var pushIDPattern = regexp.MustCompile(`^pd_[a-z2-7]{26}$`)

func testRegister(t *testing.T, f *fixture) {
	voip := func(d herald.PushDevice) herald.PushDevice { d.Provider = herald.ProviderAPNsVoIP; return d }
	otherApp := func(d herald.PushDevice) herald.PushDevice { d.App = testApp + ".beta"; return d }
	dev := func(d herald.PushDevice) herald.PushDevice { d.Env = herald.EnvDevelopment; return d }
	steps := []struct {
		name   string
		in     herald.PushDevice
		sameAs string   // the step whose push ID it keeps; "" for a new one
		gone   []string // steps whose devices are removed
		badge  int      // the badge it must have kept
	}{
		{name: "new device", in: pushDevice("alice", "phone", "aa01")},
		{name: "same token again", in: dev(pushDevice("alice", "phone", "aa01")), sameAs: "new device", badge: 4},
		{name: "new token from the same device", in: pushDevice("alice", "phone", "aa02"), sameAs: "new device", badge: 4},
		{name: "the old token from another device", in: pushDevice("alice", "tablet", "aa01")},
		{name: "another app on the same device", in: otherApp(pushDevice("alice", "phone", "aa02"))},
		{name: "VoIP token of the same device", in: voip(pushDevice("alice", "phone", "aa03"))},
		{name: "same token from another user", in: pushDevice("bob", "phone", "aa02"), sameAs: "new device", badge: 4},
		{name: "a new token where the moved one was", in: pushDevice("alice", "phone", "aa04")},
		{name: "a known token on a device with its own record", in: pushDevice("alice", "phone", "aa01"),
			sameAs: "the old token from another device", gone: []string{"a new token where the moved one was"}},
	}
	ids := map[string]string{}             // step -> push ID
	want := map[string]herald.PushDevice{} // push ID -> device
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := time.Now()
			got := f.register(t, st.in)
			after := time.Now()
			ids[st.name] = got.PushID
			if st.sameAs != "" {
				if got.PushID != ids[st.sameAs] {
					t.Errorf("PushID = %q, want %q, the ID of %q", got.PushID, ids[st.sameAs], st.sameAs)
				}
			} else {
				if !pushIDPattern.MatchString(got.PushID) {
					t.Errorf("new PushID %q does not match %s", got.PushID, pushIDPattern)
				}
				for other, id := range ids {
					if other != st.name && id == got.PushID {
						t.Errorf("new PushID %q is the ID of %q", got.PushID, other)
					}
				}
			}
			wantDev := st.in
			wantDev.PushID, wantDev.Badge, wantDev.RegisteredAt = got.PushID, st.badge, got.RegisteredAt
			if st.badge > 0 {
				wantDev.BadgeKind = herald.BadgeTotal // kept with the count
			}
			if g, w := deviceString(got), deviceString(wantDev); g != w {
				t.Errorf("RegisterPushDevice returned\n\t%s\nwant\n\t%s", g, w)
			}
			at := got.RegisteredAt
			if !at.Equal(at.Truncate(time.Millisecond)) || at.Before(before.Truncate(time.Millisecond)) || at.After(after) {
				t.Errorf("RegisteredAt = %v, want whole milliseconds between %v and %v", at, before, after)
			}
			for _, g := range st.gone {
				delete(want, ids[g])
			}
			want[got.PushID] = got
			if i == 0 {
				f.finish(t, nil, nil, nil, map[string]store.Badge{got.PushID: {Count: 4, Kind: herald.BadgeTotal}})
				d := want[got.PushID]
				d.Badge, d.BadgeKind = 4, herald.BadgeTotal
				want[got.PushID] = d
			}
			var wantAll []herald.PushDevice
			for _, d := range want {
				wantAll = append(wantAll, d)
			}
			slices.SortFunc(wantAll, func(a, b herald.PushDevice) int { return cmp.Compare(a.PushID, b.PushID) })
			if g, w := deviceStrings(f.devices(t)), deviceStrings(wantAll); g != w {
				t.Errorf("PushDevices:\ngot%s\nwant%s", g, w)
			}
		})
	}
}

// testRegisterTokenTaken: a token bound to one user moves to another only
// from a session on the same device ID, or after the holder's logout;
// otherwise the registration is CodeConflict and changes nothing.
func testRegisterTokenTaken(t *testing.T, f *fixture) {
	ctx := context.Background()
	alice := f.register(t, pushDevice("alice", "phone", "bb01"))
	mallory := f.register(t, pushDevice("mallory", "laptop", "bb02")) // her own record for the app
	before := deviceStrings(f.devices(t))
	steps := []struct {
		name string
		in   herald.PushDevice
		code herald.Code // "" for accepted
	}{
		{name: "another user on another device", in: pushDevice("mallory", "laptop", "bb01"), code: herald.CodeConflict},
		{name: "another user with no record of her own", in: pushDevice("mallory", "desk", "bb01"), code: herald.CodeConflict},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			_, err := f.s.RegisterPushDevice(ctx, st.in)
			wantCode(t, "RegisterPushDevice", err, st.code)
			if got := deviceStrings(f.devices(t)); got != before {
				t.Errorf("a refused registration changed the devices:\ngot%s\nwant%s", got, before)
			}
		})
	}
	t.Run("the same user on another device", func(t *testing.T) {
		got := f.register(t, pushDevice("alice", "tablet", "bb01"))
		if got.PushID != alice.PushID || got.User != "alice" || got.Device != "tablet" {
			t.Errorf("got %s; want alice's device %s moved to her tablet", deviceString(got), alice.PushID)
		}
	})
	t.Run("another user on the holder's device", func(t *testing.T) {
		got := f.register(t, pushDevice("bob", "tablet", "bb01")) // a user switch on the tablet
		if got.PushID != alice.PushID || got.User != "bob" {
			t.Errorf("got %s; want the device %s bound to bob", deviceString(got), alice.PushID)
		}
	})
	t.Run("after the holder's logout", func(t *testing.T) {
		if _, err := f.s.UnbindPushDevices(ctx, "bob", "tablet"); err != nil {
			t.Fatal(err)
		}
		got := f.register(t, pushDevice("mallory", "laptop", "bb01"))
		if got.PushID != alice.PushID || got.User != "mallory" {
			t.Errorf("got %s; want the unbound device %s bound to mallory", deviceString(got), alice.PushID)
		}
		if _, ok := f.device(t, mallory.PushID); ok {
			t.Errorf("mallory's own record %s for the app stayed beside the token she took over", mallory.PushID)
		}
	})
}

func testRegisterInvalid(t *testing.T, f *fixture) {
	tests := []struct {
		name   string
		break_ func(d *herald.PushDevice)
	}{
		{"empty user", func(d *herald.PushDevice) { d.User = "" }},
		{"empty device", func(d *herald.PushDevice) { d.Device = "" }},
		{"empty token", func(d *herald.PushDevice) { d.Token = "" }},
		{"empty app", func(d *herald.PushDevice) { d.App = "" }},
		{"empty provider", func(d *herald.PushDevice) { d.Provider = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := pushDevice("alice", "phone", "aa01")
			tt.break_(&d)
			_, err := f.s.RegisterPushDevice(context.Background(), d)
			wantCode(t, "RegisterPushDevice", err, herald.CodeInvalidArgument)
			if ds := f.devices(t); len(ds) != 0 {
				t.Errorf("a rejected registration stored %s", deviceStrings(ds))
			}
		})
	}
}

func testUnregister(t *testing.T, f *fixture) {
	ctx := context.Background()
	alice := f.register(t, pushDevice("alice", "phone", "aa01"))
	bob := f.register(t, pushDevice("bob", "phone", "bb01"))
	tests := []struct {
		name       string
		setup      func(t *testing.T)
		user, id   string
		wantCode   herald.Code // "" for success
		wantStored []string    // push IDs stored afterwards
	}{
		{name: "another user's device", user: "bob", id: alice.PushID, wantCode: herald.CodeNotFound,
			wantStored: []string{alice.PushID, bob.PushID}},
		{name: "unknown push ID", user: "alice", id: "pd_unknown", wantCode: herald.CodeNotFound,
			wantStored: []string{alice.PushID, bob.PushID}},
		{name: "empty user", user: "", id: alice.PushID, wantCode: herald.CodeInvalidArgument,
			wantStored: []string{alice.PushID, bob.PushID}},
		{name: "own device", user: "alice", id: alice.PushID, wantStored: []string{bob.PushID}},
		{name: "own device again", user: "alice", id: alice.PushID, wantCode: herald.CodeNotFound,
			wantStored: []string{bob.PushID}},
		{name: "own device after logout", user: "bob", id: bob.PushID, wantCode: herald.CodeNotFound,
			wantStored: []string{bob.PushID}, setup: func(t *testing.T) {
				if _, err := f.s.UnbindPushDevices(ctx, "bob", "phone"); err != nil {
					t.Fatalf("UnbindPushDevices: %v", err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t)
			}
			err := f.s.UnregisterPushDevice(ctx, tt.user, tt.id)
			if tt.wantCode == "" && err != nil {
				t.Errorf("UnregisterPushDevice(%q, %q): %v", tt.user, tt.id, err)
			}
			if tt.wantCode != "" {
				wantCode(t, fmt.Sprintf("UnregisterPushDevice(%q, %q)", tt.user, tt.id), err, tt.wantCode)
			}
			var got []string
			for _, d := range f.devices(t) {
				got = append(got, d.PushID)
			}
			want := slices.Sorted(slices.Values(tt.wantStored))
			if !slices.Equal(got, want) {
				t.Errorf("stored devices = %q, want %q", got, want)
			}
		})
	}
}

func testUnbind(t *testing.T, f *fixture) {
	ctx := context.Background()
	voip := pushDevice("alice", "phone", "aa02")
	voip.Provider = herald.ProviderAPNsVoIP
	a1 := f.register(t, pushDevice("alice", "phone", "aa01"))
	a2 := f.register(t, voip)
	a3 := f.register(t, pushDevice("alice", "tablet", "aa03"))
	b1 := f.register(t, pushDevice("bob", "phone", "bb01"))
	bound := map[string]string{a1.PushID: "alice", a2.PushID: "alice", a3.PushID: "alice", b1.PushID: "bob"}

	tests := []struct {
		name         string
		user, device string
		want         []string
		unbound      []string
	}{
		{"both tokens of a device", "alice", "phone", []string{a1.PushID, a2.PushID}, []string{a1.PushID, a2.PushID}},
		{"again", "alice", "phone", nil, nil},
		{"a user without devices", "carol", "phone", nil, nil},
		{"another user's device of the same name", "carol", "tablet", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.s.UnbindPushDevices(ctx, tt.user, tt.device)
			if err != nil {
				t.Fatalf("UnbindPushDevices(%q, %q): %v", tt.user, tt.device, err)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) && len(got)+len(want) > 0 {
				t.Errorf("UnbindPushDevices(%q, %q) = %q, want %q", tt.user, tt.device, got, want)
			}
			for _, id := range tt.unbound {
				bound[id] = ""
			}
			for _, d := range f.devices(t) {
				if d.User != bound[d.PushID] {
					t.Errorf("device %s is bound to %q, want %q", d.PushID, d.User, bound[d.PushID])
				}
				if d.PushID == a1.PushID && d.Device != "phone" {
					t.Errorf("an unbound device lost its device ID: %q", d.Device)
				}
			}
		})
	}
	t.Run("registered again after logout", func(t *testing.T) {
		got := f.register(t, pushDevice("alice", "phone", "aa01"))
		if got.PushID != a1.PushID || got.User != "alice" {
			t.Errorf("re-registration = %s, want %s bound to alice", deviceString(got), a1.PushID)
		}
		b := voip
		b.User = "bob"
		got = f.register(t, b)
		if got.PushID != a2.PushID || got.User != "bob" {
			t.Errorf("bob registering the unbound VoIP token = %s, want %s bound to bob", deviceString(got), a2.PushID)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		_, err := f.s.UnbindPushDevices(ctx, "alice", "")
		wantCode(t, "UnbindPushDevices(alice, \"\")", err, herald.CodeInvalidArgument)
	})
}

func testDrop(t *testing.T, f *fixture) {
	ctx := context.Background()
	d := f.register(t, pushDevice("bob", "phone", "b0b0"))
	m := f.text("alice", "bob")
	f.appendJobs(t, []*herald.Message{m}, []store.PushJob{job(d.PushID, 0, m, baseTime)})
	reg := d.RegisteredAt
	tests := []struct {
		name    string
		id      string
		at      time.Time
		want    bool
		present bool
	}{
		{"token gone before the registration", d.PushID, reg.Add(-time.Millisecond), false, true},
		{"a nanosecond before the registration", d.PushID, reg.Add(-time.Nanosecond), false, true},
		{"at the registration", d.PushID, reg, true, false},
		{"already dropped", d.PushID, reg.Add(time.Second), false, false},
		{"unknown device", "pd_unknown", reg, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.s.DropPushDevice(ctx, tt.id, tt.at)
			if err != nil {
				t.Fatalf("DropPushDevice: %v", err)
			}
			if got != tt.want {
				t.Errorf("DropPushDevice(%s, registered %+v) = %v, want %v", tt.id, tt.at.Sub(reg), got, tt.want)
			}
			if _, ok := f.device(t, d.PushID); ok != tt.present {
				t.Errorf("device stored = %v, want %v", ok, tt.present)
			}
		})
	}
	t.Run("after a later registration", func(t *testing.T) {
		d2 := f.register(t, pushDevice("bob", "phone", "b0b0"))
		got, err := f.s.DropPushDevice(ctx, d2.PushID, d2.RegisteredAt.Add(500*time.Microsecond))
		if err != nil || !got {
			t.Errorf("DropPushDevice(half a millisecond after registration) = %v, %v; want true", got, err)
		}
	})
	t.Run("pending jobs stay", func(t *testing.T) {
		// The dispatcher skips jobs of devices that are gone.
		if jobs := f.pending(t); len(jobs) != 1 || jobs[0].PushID != d.PushID {
			t.Errorf("outbox after dropping the device:%s\nwant its one job", jobStrings(jobs))
		}
	})
}

func testPushDevices(t *testing.T, f *fixture) {
	if got := f.devices(t); len(got) != 0 {
		t.Fatalf("PushDevices of an empty store:%s", deviceStrings(got))
	}
	voip := pushDevice("carol", "desk", "cc01")
	voip.Provider, voip.Env = herald.ProviderAPNsVoIP, herald.EnvDevelopment
	var want []herald.PushDevice
	for _, d := range []herald.PushDevice{pushDevice("alice", "phone", "aa01"), pushDevice("bob", "phone", "bb01"), voip} {
		want = append(want, f.register(t, d))
	}
	if _, err := f.s.UnbindPushDevices(context.Background(), "bob", "phone"); err != nil {
		t.Fatal(err)
	}
	want[1].User = ""
	slices.SortFunc(want, func(a, b herald.PushDevice) int { return cmp.Compare(a.PushID, b.PushID) })
	got := f.devices(t)
	if g, w := deviceStrings(got), deviceStrings(want); g != w {
		t.Errorf("PushDevices:\ngot%s\nwant%s", g, w)
	}
	for i := range got {
		if i < len(want) && !got[i].RegisteredAt.Equal(want[i].RegisteredAt) {
			t.Errorf("device %d: RegisteredAt = %v, want %v", i, got[i].RegisteredAt, want[i].RegisteredAt)
		}
	}
}

// testUserPushDevices: the devices bound to one user, whatever other
// users' IDs share a prefix with it, with their badges as last written.
func testUserPushDevices(t *testing.T, f *fixture) {
	if got := f.userDevices(t, "alice"); len(got) != 0 {
		t.Fatalf("UserPushDevices of an empty store:%s", deviceStrings(got))
	}
	tablet := pushDevice("alice", "tablet", "aa02")
	tablet.Provider = herald.ProviderFCM
	var want []herald.PushDevice
	for _, d := range []herald.PushDevice{pushDevice("alice", "phone", "aa01"), tablet} {
		want = append(want, f.register(t, d))
	}
	for _, d := range []herald.PushDevice{pushDevice("al", "phone", "a101"), pushDevice("alicea", "phone", "a201"), pushDevice("alice", "old", "aa03")} {
		f.register(t, d)
	}
	if _, err := f.s.UnbindPushDevices(context.Background(), "alice", "old"); err != nil {
		t.Fatal(err)
	}
	f.finish(t, nil, nil, nil, map[string]store.Badge{want[0].PushID: {Count: 5, Kind: herald.BadgeTotal}, want[1].PushID: {Count: 2, Kind: herald.BadgeCounted}})
	want[0].Badge, want[0].BadgeKind = 5, herald.BadgeTotal
	want[1].Badge, want[1].BadgeKind = 2, herald.BadgeCounted
	slices.SortFunc(want, func(a, b herald.PushDevice) int { return cmp.Compare(a.PushID, b.PushID) })
	if g, w := deviceStrings(f.userDevices(t, "alice")), deviceStrings(want); g != w {
		t.Errorf("UserPushDevices(alice):\ngot%s\nwant%s", g, w)
	}
	if got := f.userDevices(t, "nobody"); len(got) != 0 {
		t.Errorf("UserPushDevices(nobody):%s", deviceStrings(got))
	}
	_, err := f.s.UserPushDevices(context.Background(), "")
	wantCode(t, "UserPushDevices(\"\")", err, herald.CodeInvalidArgument)
}

// testPruneUnbound takes its cutoffs from the registration times the store
// returned: the backends stamp RegisteredAt with their own clock.
func testPruneUnbound(t *testing.T, f *fixture) {
	ctx := context.Background()
	prune := func(t *testing.T, before time.Time) int {
		t.Helper()
		n, err := f.s.PruneUnboundPushDevices(ctx, before)
		if err != nil {
			t.Fatalf("PruneUnboundPushDevices(%v): %v", before, err)
		}
		return n
	}
	unbind := func(user, device string) {
		t.Helper()
		if _, err := f.s.UnbindPushDevices(ctx, user, device); err != nil {
			t.Fatalf("UnbindPushDevices(%q, %q): %v", user, device, err)
		}
	}
	t.Run("an empty store", func(t *testing.T) {
		if n := prune(t, baseTime.Add(24*time.Hour)); n != 0 {
			t.Errorf("PruneUnboundPushDevices = %d, want 0", n)
		}
	})

	// alice logs out and in again: bound, and the oldest registration.
	f.register(t, pushDevice("alice", "phone", "aa01"))
	unbind("alice", "phone")
	alice := f.register(t, pushDevice("alice", "phone", "aa01"))
	old := f.register(t, pushDevice("bob", "phone", "bb01"))
	unbind("bob", "phone")
	old.User = ""
	// The next registrations must fall in a later millisecond than old's,
	// for a cutoff to tell them apart.
	for time.Now().UnixMilli() <= old.RegisteredAt.UnixMilli() {
		runtime.Gosched()
	}
	new1 := f.register(t, pushDevice("carol", "phone", "cc01"))
	new2 := f.register(t, pushDevice("carol", "tablet", "cc02"))
	unbind("carol", "phone")
	unbind("carol", "tablet")
	new1.User, new2.User = "", ""
	dave := f.register(t, pushDevice("dave", "phone", "dd01")) // bound, the newest
	if !new1.RegisteredAt.After(old.RegisteredAt) {
		t.Fatalf("registered at %v after a registration at %v: the store's clock must be the wall clock",
			new1.RegisteredAt, old.RegisteredAt)
	}

	all := []herald.PushDevice{alice, old, new1, new2, dave}
	newer := []herald.PushDevice{alice, new1, new2, dave}
	bound := []herald.PushDevice{alice, dave}
	latest := dave.RegisteredAt
	tests := []struct {
		name   string
		before time.Time
		want   int
		left   []herald.PushDevice
	}{
		{"before every registration", alice.RegisteredAt.Add(-time.Hour), 0, all},
		{"at the older unbound registration", old.RegisteredAt, 0, all},
		{"inside the millisecond after it", old.RegisteredAt.Add(500 * time.Microsecond), 1, newer},
		{"again", old.RegisteredAt.Add(500 * time.Microsecond), 0, newer},
		{"after every registration", latest.Add(24 * time.Hour), 2, bound},
		{"nothing left unbound", latest.Add(24 * time.Hour), 0, bound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := prune(t, tt.before); n != tt.want {
				t.Errorf("PruneUnboundPushDevices(%+v after the older unbound registration) = %d, want %d",
					tt.before.Sub(old.RegisteredAt), n, tt.want)
			}
			want := slices.Clone(tt.left)
			slices.SortFunc(want, func(a, b herald.PushDevice) int { return cmp.Compare(a.PushID, b.PushID) })
			if g, w := deviceStrings(f.devices(t)), deviceStrings(want); g != w {
				t.Errorf("PushDevices:\ngot%s\nwant%s", g, w)
			}
		})
	}
	t.Run("tokens registered again", func(t *testing.T) {
		for _, gone := range []herald.PushDevice{old, new1} {
			// A device of its own each: one record per device and app.
			got := f.register(t, pushDevice("erin", "device-"+gone.Token, gone.Token))
			if got.PushID == gone.PushID || !pushIDPattern.MatchString(got.PushID) {
				t.Errorf("token %s registered again: PushID = %q, want a new one (not %q)", gone.Token, got.PushID, gone.PushID)
			}
			if d, ok := f.device(t, got.PushID); !ok || d.User != "erin" || d.Token != gone.Token {
				t.Errorf("token %s registered again: stored %s (found %v), want it bound to erin", gone.Token, deviceString(d), ok)
			}
		}
		if got := len(f.devices(t)); got != len(bound)+2 {
			t.Errorf("%d devices stored, want %d", got, len(bound)+2)
		}
	})
}

// testPushConcurrent runs appenders with jobs, a dispatcher draining the
// outbox and a device registrar at once: every job is dispatched once.
func testPushConcurrent(t *testing.T, f *fixture) {
	const appenders, batches, perBatch = 4, 8, 8
	work := make([][][]*herald.Message, appenders)
	for a := range work {
		for range batches {
			work[a] = append(work[a], f.texts(perBatch, fmt.Sprint("s", a), fmt.Sprint("r", a)))
		}
	}
	ctx := context.Background()
	var (
		wg       sync.WaitGroup
		appended atomic.Bool
		errs     = make(chan error, appenders+2)
	)
	for a := range appenders {
		wg.Go(func() {
			for _, msgs := range work[a] {
				var jobs []store.PushJob
				for i, m := range msgs {
					jobs = append(jobs, job("pd_"+m.To, i, m, baseTime))
				}
				if _, err := f.s.AppendMessages(ctx, msgs, jobs); err != nil {
					errs <- fmt.Errorf("AppendMessages: %w", err)
					return
				}
			}
		})
	}
	stopRegistrar := make(chan struct{})
	var registrar sync.WaitGroup
	registrar.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopRegistrar:
				return
			default:
			}
			if _, err := f.s.RegisterPushDevice(ctx, pushDevice("r0", fmt.Sprint("d", i%3), fmt.Sprintf("%04x", i))); err != nil {
				errs <- fmt.Errorf("RegisterPushDevice: %w", err)
				return
			}
			if _, err := f.s.UnbindPushDevices(ctx, "r0", fmt.Sprint("d", (i+1)%3)); err != nil {
				errs <- fmt.Errorf("UnbindPushDevices: %w", err)
				return
			}
		}
	})
	seen := map[store.PushKey]int{}
	var dispatcher sync.WaitGroup
	dispatcher.Go(func() {
		for {
			last := appended.Load() // read before PendingPush: empty then means drained
			jobs, err := f.s.PendingPush(ctx, store.PushKey{}, 16)
			if err != nil {
				errs <- fmt.Errorf("PendingPush: %w", err)
				return
			}
			if len(jobs) == 0 {
				if last {
					return
				}
				runtime.Gosched()
				continue
			}
			var done []store.PushKey
			var log []herald.PushAttempt
			for _, j := range jobs {
				k := j.Key()
				k.Due = time.Time{}
				seen[k]++
				done = append(done, j.Key())
				log = append(log, herald.PushAttempt{At: baseTime, PushID: j.PushID, User: j.User, MsgID: j.MsgID, Outcome: herald.PushSent})
			}
			if err := f.s.FinishPush(ctx, done, nil, log, map[string]store.Badge{jobs[0].PushID: {Count: len(jobs), Kind: herald.BadgeCounted}}); err != nil {
				errs <- fmt.Errorf("FinishPush: %w", err)
				return
			}
		}
	})
	wg.Wait()
	appended.Store(true)
	dispatcher.Wait()
	close(stopRegistrar)
	registrar.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, want := len(seen), appenders*batches*perBatch; got != want {
		t.Errorf("%d jobs dispatched, want %d", got, want)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("job %s dispatched %d times", keyString(k), n)
		}
	}
	sameJobs(t, "outbox at the end", f.pending(t), nil)
	if got := len(f.pushLog(t, store.PushLogQuery{PushID: "pd_r0", Limit: 1000})); got != batches*perBatch {
		t.Errorf("pd_r0 has %d log entries, want %d", got, batches*perBatch)
	}
}

// pushSnapshot is what RunReopen compares before and after reopening.
type pushSnapshot struct {
	devices, outbox, log string
}

func takePushSnapshot(t *testing.T, f *fixture, logUser string) pushSnapshot {
	t.Helper()
	var log bytes.Buffer
	for _, a := range f.pushLog(t, store.PushLogQuery{User: logUser, Limit: 100}) {
		log.WriteString("\n\t" + attemptString(a))
	}
	return pushSnapshot{devices: deviceStrings(f.devices(t)), outbox: jobStrings(f.pending(t)), log: log.String()}
}

func keyOf(j store.PushJob) store.PushKey { return j.Key() }
