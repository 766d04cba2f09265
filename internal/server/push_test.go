package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadPushFileRefusesTrailingData: a push file holds one JSON object;
// anything after it is refused, naming the file, rather than ignored.
func TestLoadPushFileRefusesTrailingData(t *testing.T) {
	dir := t.TempDir()
	good := `{"webpush": {"subject": "mailto:a@b.c"}}`
	for name, content := range map[string]string{
		"second object": good + "\n" + `{"webpush": {"subject": "mailto:other@b.c"}}`,
		"stray brace":   good + "}",
		"garbage":       good + " x",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadPushFile(path)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "after the JSON object") {
				t.Fatalf("LoadPushFile = %v, want an error naming %s and the data after the object", err, path)
			}
		})
	}
	path := filepath.Join(dir, "good.json")
	if err := os.WriteFile(path, []byte(good+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPushFile(path); err != nil {
		t.Fatalf("a file with one object and trailing white space: %v", err)
	}
}

// TestLoadPushFileNamesTheBadStrategy: a file strategy refused at start
// (as builds before the checks took it) is named, with its field.
func TestLoadPushFileNamesTheBadStrategy(t *testing.T) {
	dir := t.TempDir()
	for name, tt := range map[string]struct{ strategies, want string }{
		"a space in the ID": {`{"new message": {}}`, `"new message"`},
		"a long sound":      {`{"ok": {}, "chat": {"sound": "` + strings.Repeat("s", 65) + `"}}`, `"chat": sound`},
		"background at 10":  {`{"silent": {"type": "background", "priority": 10}}`, `"silent": priority 10`},
		"non-ASCII ID":      {`{"nachricht-ü": {}}`, `"nachricht-ü"`},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
			content := `{"webpush": {"subject": "mailto:a@b.c"}, "strategies": ` + tt.strategies + `}`
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadPushFile(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `"strategies"`) {
				t.Fatalf("LoadPushFile = %v; want an error naming the strategies and %s", err, tt.want)
			}
		})
	}
}
