package push

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzStrategy: whatever JSON the server API or the console is given as a
// strategy, decoding and ValidateStrategy do not panic, and a strategy
// they accept keeps every text field within MaxStrategyText and survives
// the store's JSON round trip unchanged (what one node stores is what
// every node serves). Seeds are in testdata/fuzz/FuzzStrategy.
func FuzzStrategy(f *testing.F) {
	f.Add("chat", []byte(`{"sound":"ping.caf","channel_id":"messages","importance":"high","collapse_key":"c","ttl_seconds":600}`))
	f.Add("silent", []byte(`{"type":"background","priority":5}`))
	f.Add("x", []byte(`{"android_category":"IM","interruption_level":"time-sensitive","mutable_content":true}`))
	f.Fuzz(func(t *testing.T, id string, body []byte) {
		var st Strategy
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&st) != nil {
			return
		}
		if ValidateStrategy(id, &st) != nil {
			return
		}
		for _, s := range []string{st.Sound, st.Category, st.ChannelID, st.CollapseKey, st.AndroidCategory} {
			if len(s) > MaxStrategyText {
				t.Fatalf("accepted a %d-byte field", len(s))
			}
		}
		b, err := json.Marshal(map[string]Strategy{id: st})
		if err != nil {
			t.Fatal(err)
		}
		var back map[string]Strategy
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back[id], st) {
			t.Fatalf("round trip %+v, want %+v", back[id], st)
		}
	})
}
