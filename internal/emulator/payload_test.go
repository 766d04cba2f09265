package emulator

import (
	"bytes"
	"encoding/json"
	"testing"
)

var payloadSeeds = []string{
	`{"aps":{}}`,
	` {"aps" : {"alert":"hi"}} `,
	`{"a":[1,{"aps":2}],"aps":{"x":"}\\""}}`,
	`{"aps":{},"aps":1}`,
	`{"aps":1,"aps":{}}`,
	`{"\u0061ps":{}}`,
	`{"ap\"s":{}}`,
	`{"aps":[]}`,
	`{"aps":null}`,
	`{}`,
	`[]`,
	`"aps"`,
	`{"aps":{}`,
	`{"x":"\\","aps":{}}`,
	`{"x":-1.5e3,"y":true,"z":null,"aps":{}}`,
}

func TestValidPayload(t *testing.T) {
	for _, s := range payloadSeeds {
		if got, want := validPayload([]byte(s)), referencePayload([]byte(s)); got != want {
			t.Errorf("validPayload(%s) = %v, want %v", s, got, want)
		}
	}
}

// referencePayload is validPayload the slow way.
func referencePayload(b []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil || m == nil {
		return false
	}
	aps, ok := m["aps"]
	aps = bytes.TrimLeft(aps, " \t\r\n")
	return ok && len(aps) > 0 && aps[0] == '{'
}

func FuzzValidPayload(f *testing.F) {
	for _, s := range payloadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validPayload(b), referencePayload(b); got != want {
			t.Fatalf("validPayload(%q) = %v, reference says %v", b, got, want)
		}
	})
}
