package push

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herald-im/herald"
)

func TestJobDataRoundTrip(t *testing.T) {
	for _, d := range []jobData{
		{},
		{From: "alice", Live: true, Config: herald.PushConfig{Title: "Hi", Content: "there ✓", Payload: `{"a":1}`}},
		{From: "bob", Config: herald.PushConfig{ResourcesID: "call", ThreadID: "t", EnableBadge: true, BadgeIncrement: 99,
			VoIP: &herald.VoIPConfig{HandleType: herald.HandlePhoneNumber, Handle: "+331234", HasVideo: true}}},
		{From: "c", Config: herald.PushConfig{Payload: strings.Repeat("p", herald.MaxPushPayloadBytes), VoIP: &herald.VoIPConfig{}}},
		{From: "g", Mentions: []string{"u1", "u2"}, Mentioned: true},
		{From: "caller", CallID: "call-1", CallCancel: true, Config: herald.PushConfig{Title: "Missed call"}},
		{From: "d", Config: herald.PushConfig{Title: "secret", ContentFree: true}},
		{BadgeOnly: true},
		{From: "e", BadgeOnly: true, Live: true, Config: herald.PushConfig{Title: "secret", ContentFree: true, EnableBadge: true}},
		{From: "g", Mentions: []string{"u1"}, After: "u0042", Config: herald.PushConfig{Title: "Group", ContentFree: true}},
		{From: "h", Live: true, At: time.UnixMilli(1_767_261_601_123)},
		{From: "g", After: "u7", At: time.UnixMilli(1_767_261_601_000), Config: herald.PushConfig{ContentFree: true}},
		{From: "g", AfterPush: "pd_x", At: time.UnixMilli(1_767_261_601_000)},
		{From: "g", Mentions: []string{"u1"}, After: "u7", AfterPush: "pd_y"},
	} {
		var got jobData
		if err := got.unmarshal(d.marshal()); err != nil {
			t.Fatalf("unmarshal(marshal(%+v)): %v", d, err)
		}
		if !reflect.DeepEqual(got, d) {
			t.Errorf("round trip = %+v, want %+v", got, d)
		}
	}
}

// A content-free job is written as v3, so that a build that does not know
// the flag refuses it rather than pushing the text.
func TestJobDataContentFreeIsV3(t *testing.T) {
	if b := (&jobData{Config: herald.PushConfig{ContentFree: true}}).marshal(); b[0] != jobDataV3 {
		t.Errorf("content-free job data version %d, want %d", b[0], jobDataV3)
	}
	if b := (&jobData{BadgeOnly: true}).marshal(); b[0] != jobDataV3 {
		t.Errorf("badge-only job data version %d, want %d", b[0], jobDataV3)
	}
	if b := (&jobData{BadgeOnly: true, Config: herald.PushConfig{ContentFree: true}}).marshal(); b[0] != jobDataV3 || b[1]&(flagBadgeOnly|flagContentFree) != flagBadgeOnly|flagContentFree {
		t.Errorf("badge-only content-free job data version %d flags %08b, want %d with both flags", b[0], b[1], jobDataV3)
	}
	// The flags mean nothing in an older layout: a v2 job with their bits
	// set is a plain message job.
	v2 := (&jobData{BadgeOnly: true, Config: herald.PushConfig{ContentFree: true}}).marshal()
	v2[0] = jobDataV2
	var old jobData
	if err := old.unmarshal(v2); err != nil || old.BadgeOnly || old.Config.ContentFree {
		t.Errorf("v2 with the v3 flags = %+v (%v), want neither flag", old, err)
	}
	if b := (&jobData{}).marshal(); b[0] != jobDataV2 {
		t.Errorf("job data version %d, want %d", b[0], jobDataV2)
	}
}

// Jobs written before v2 (no mentions, no call ID) still decode.
func TestJobDataV1(t *testing.T) {
	v1 := []byte{jobDataV1, flagLive, 3}
	for _, s := range []string{"alice", "Hi", "", "", "", "", "", ""} {
		v1 = append(v1, byte(len(s)))
		v1 = append(v1, s...)
	}
	var got jobData
	if err := got.unmarshal(v1); err != nil {
		t.Fatal(err)
	}
	want := jobData{From: "alice", Live: true, Config: herald.PushConfig{Title: "Hi", BadgeIncrement: 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("v1 = %+v, want %+v", got, want)
	}
}

func TestJobDataRejectsDamage(t *testing.T) {
	b := (&jobData{From: "alice", Config: herald.PushConfig{Title: "Hi"}}).marshal()
	for name, in := range map[string][]byte{
		"empty":           nil,
		"unknown version": append([]byte{9}, b[1:]...),
		"truncated":       b[:len(b)-1],
		"json":            []byte(`{"c":{"title":"Hi"}}`),
	} {
		var d jobData
		if err := d.unmarshal(in); err == nil {
			t.Errorf("%s: unmarshal accepted %q", name, in)
		}
	}
}

func FuzzJobData(f *testing.F) {
	f.Add((&jobData{From: "a", Live: true, Config: herald.PushConfig{Title: "t"}}).marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		var d jobData
		if d.unmarshal(b) != nil {
			return
		}
		var again jobData
		if err := again.unmarshal(d.marshal()); err != nil || !reflect.DeepEqual(again, d) {
			t.Fatalf("decoded %+v does not survive a round trip: %v", d, err)
		}
	})
}

// The message's time follows the strings, in the same version: a build
// that does not know it reads the job as without it, and a job written
// without it decodes with a zero time (its message's time unknown).
func TestJobDataAtKeepsTheLayout(t *testing.T) {
	for _, d := range []jobData{
		{From: "alice", Live: true, Config: herald.PushConfig{Title: "Hi"}},
		{From: "g", After: "bob"},
		{From: "g", AfterPush: "pd_x"},
		{From: "d", Config: herald.PushConfig{ContentFree: true}},
	} {
		without := d.marshal()
		d.At = time.UnixMilli(1_767_261_601_123)
		with := d.marshal()
		if len(with) <= len(without) || string(with[:len(without)]) != string(without) {
			t.Errorf("%+v: with the time % x, without % x: want the same bytes and the time after them", d, with, without)
		}
		var got jobData
		if err := got.unmarshal(without); err != nil || !got.At.IsZero() {
			t.Errorf("%+v written without a time decodes with At %v (%v), want zero", d, got.At, err)
		}
	}
}

// Only a partly expanded fan-out job is written as v4: a build that does
// not know it refuses the job rather than expanding it from the start.
func TestJobDataAfterIsV4(t *testing.T) {
	if b := (&jobData{From: "g", After: "bob"}).marshal(); b[0] != jobDataV4 {
		t.Errorf("fan-out progress written as version %d, want %d", b[0], jobDataV4)
	}
	if b := (&jobData{From: "g"}).marshal(); b[0] != jobDataV2 {
		t.Errorf("a job without progress written as version %d, want %d", b[0], jobDataV2)
	}
}

// Progress by push ID is written as v5, refused by builds that know only
// v4 (which would expand the job again from its first member), and a v4
// job still decodes, with no push ID progress.
func TestJobDataAfterPushIsV5(t *testing.T) {
	b := (&jobData{From: "g", AfterPush: "pd_x"}).marshal()
	if b[0] != jobDataV5 {
		t.Errorf("fan-out progress by push ID written as version %d, want %d", b[0], jobDataV5)
	}
	v4 := (&jobData{From: "g", After: "bob"}).marshal()
	var got jobData
	if err := got.unmarshal(v4); err != nil || got.After != "bob" || got.AfterPush != "" {
		t.Errorf("v4 job = %+v (%v), want After bob and no AfterPush", got, err)
	}
}
