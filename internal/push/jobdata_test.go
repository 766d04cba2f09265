package push

import (
	"reflect"
	"strings"
	"testing"

	"github.com/herald-im/herald"
)

func TestJobDataRoundTrip(t *testing.T) {
	for _, d := range []jobData{
		{},
		{From: "alice", Live: true, Config: herald.PushConfig{Title: "Hi", Content: "there ✓", Payload: `{"a":1}`}},
		{From: "bob", Config: herald.PushConfig{ResourcesID: "call", ThreadID: "t", EnableBadge: true, BadgeIncrement: 99,
			VoIP: &herald.VoIPConfig{HandleType: herald.HandlePhoneNumber, Handle: "+331234", HasVideo: true}}},
		{From: "c", Config: herald.PushConfig{Payload: strings.Repeat("p", herald.MaxPushPayloadBytes), VoIP: &herald.VoIPConfig{}}},
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
