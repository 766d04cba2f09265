package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "herald.conf")
	os.WriteFile(file, []byte("# comment\nHERALD_ADDR=file:1\nHERALD_MAX_DEVICES=3\nHERALD_LOG_LEVEL=debug\n"), 0o600)
	env := map[string]string{"HERALD_CONFIG": file, "HERALD_MAX_DEVICES": "4", "HERALD_HEARTBEAT_TIMEOUT": "45s"}
	c, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--max-devices", "5"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "file:1" || c.LogLevel != "debug" {
		t.Errorf("file values: addr %q level %q, want file:1 and debug", c.Addr, c.LogLevel)
	}
	if c.HeartbeatTimeout != 45*time.Second {
		t.Errorf("env value: heartbeat timeout %s, want 45s", c.HeartbeatTimeout)
	}
	if c.MaxDevices != 5 {
		t.Errorf("flag over env over file: max devices %d, want 5", c.MaxDevices)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad duration", map[string]string{"HERALD_HEARTBEAT_TIMEOUT": "soon"}, nil, "HERALD_HEARTBEAT_TIMEOUT"},
		{"bad int flag", nil, []string{"--max-devices", "many"}, "max-devices"},
		{"timeout below interval", map[string]string{"HERALD_HEARTBEAT_TIMEOUT": "5s"}, nil, "HERALD_HEARTBEAT_TIMEOUT"},
		{"multi login", map[string]string{"HERALD_MULTI_LOGIN": "some"}, nil, "HERALD_MULTI_LOGIN"},
		{"media placeholder of an unknown type", map[string]string{"HERALD_MEDIA_PLACEHOLDERS": "image=[Photo],sticker=[S]"}, nil, "HERALD_MEDIA_PLACEHOLDERS"},
		{"media placeholder without a word", map[string]string{"HERALD_MEDIA_PLACEHOLDERS": "file="}, nil, "HERALD_MEDIA_PLACEHOLDERS"},
		{"media quota zero", map[string]string{"HERALD_MEDIA_DAILY_QUOTA": "0"}, nil, "HERALD_MEDIA_DAILY_QUOTA"},
		{"media grace zero", map[string]string{"HERALD_MEDIA_GRACE": "0s"}, nil, "HERALD_MEDIA_GRACE"},
		{"media grace under 2m", map[string]string{"HERALD_MEDIA_GRACE": "90s"}, nil, "HERALD_MEDIA_GRACE"},
		{"short secret", map[string]string{"HERALD_SECRET": "short"}, nil, "HERALD_SECRET"},
		{"negative", map[string]string{"HERALD_MAX_BATCH": "-1"}, nil, "HERALD_MAX_BATCH"},
		{"no free-space margin", map[string]string{"HERALD_STORE": "pebble", "HERALD_PEBBLE_MIN_FREE_BYTES": "0"}, nil, "HERALD_PEBBLE_MIN_FREE_BYTES"},
		{"store url without database", map[string]string{"HERALD_STORE": "postgres://herald@db:5432"}, nil, "HERALD_STORE"},
		{"store unknown", map[string]string{"HERALD_STORE": "mysql://herald@db/herald"}, nil, "HERALD_STORE"},
		{"postgres pool too large", map[string]string{"HERALD_STORE": "postgres://db/herald", "HERALD_POSTGRES_MAX_CONNS": "5000"}, nil, "HERALD_POSTGRES_MAX_CONNS"},
		{"postgres pool empty", map[string]string{"HERALD_POSTGRES_MAX_CONNS": "0"}, nil, "HERALD_POSTGRES_MAX_CONNS"},
		{"frame too small", map[string]string{"HERALD_MAX_FRAME_BYTES": "1000"}, nil, "HERALD_MAX_FRAME_BYTES"},
		// A command of max_command_bytes must fit in a frame too (protocol.md §14).
		{"frame too small for commands", map[string]string{"HERALD_MAX_COMMAND_BYTES": "65536"}, nil, "HERALD_MAX_COMMAND_BYTES"},
		{"text over 32 KiB", map[string]string{"HERALD_MAX_TEXT_BYTES": "40000"}, nil, "HERALD_MAX_TEXT_BYTES"},
		{"apns timeout zero", map[string]string{"HERALD_APNS_TIMEOUT": "0s"}, nil, "HERALD_APNS_TIMEOUT"},
		{"apns timeout over 5m", map[string]string{"HERALD_APNS_TIMEOUT": "6m"}, nil, "HERALD_APNS_TIMEOUT"},
		{"unknown file key", map[string]string{"HERALD_CONFIG": "testdata-bad"}, nil, "HERALD_NOPE"},
		{"webhook url scheme", map[string]string{"HERALD_WEBHOOK_URL": "ftp://example.com/hook"}, nil, "HERALD_WEBHOOK_URL"},
		{"webhook url no host", map[string]string{"HERALD_WEBHOOK_BEFORE_SEND_URL": "http:///check"}, nil, "HERALD_WEBHOOK_BEFORE_SEND_URL"},
		{"bus scheme", map[string]string{"HERALD_BUS": "http://u:pw@nats:4222"}, nil, "HERALD_BUS"},
		{"bus prefix wildcard", map[string]string{"HERALD_BUS_PREFIX": "herald.>"}, nil, "HERALD_BUS_PREFIX"},
		{"bus prefix empty token", map[string]string{"HERALD_BUS_PREFIX": "a..b"}, nil, "HERALD_BUS_PREFIX"},
		{"node id character", map[string]string{"HERALD_NODE_ID": "node 1"}, nil, "HERALD_NODE_ID"},
		{"node id length", map[string]string{"HERALD_NODE_ID": strings.Repeat("n", 65)}, nil, "HERALD_NODE_ID"},
		{"webhook queue", map[string]string{"HERALD_WEBHOOK_QUEUE": "0"}, nil, "HERALD_WEBHOOK_QUEUE"},
		{"push lease too short", map[string]string{"HERALD_PUSH_LEASE": "500ms"}, nil, "HERALD_PUSH_LEASE"},
		{"before_send timeout", map[string]string{"HERALD_WEBHOOK_BEFORE_SEND_URL": "http://backend/check", "HERALD_WEBHOOK_BEFORE_SEND_TIMEOUT": "25s"}, nil, "HERALD_WEBHOOK_BEFORE_SEND_TIMEOUT"},
		{"before_send fallback", map[string]string{"HERALD_WEBHOOK_BEFORE_SEND_FALLBACK": "maybe"}, nil, "HERALD_WEBHOOK_BEFORE_SEND_FALLBACK"},
	}
	bad := filepath.Join(t.TempDir(), "bad.conf")
	os.WriteFile(bad, []byte("HERALD_NOPE=1\n"), 0o600)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env["HERALD_CONFIG"] != "" {
				tt.env["HERALD_CONFIG"] = bad
			}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(new(strings.Builder))
			_, err := Load(fs, tt.args, func(k string) string { return tt.env[k] })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// A callback URL's path or query may hold a credential: an invalid one is
// named by its key, never echoed.
func TestWebhookURLErrorHidesTheValue(t *testing.T) {
	for _, v := range []string{
		"ftp://hooks.example.com/h/PATHSECRET?key=QUERYSECRET",
		"http:///h/PATHSECRET?key=QUERYSECRET",
		"http://hooks.example.com/%zz/PATHSECRET?key=QUERYSECRET", // does not parse
		"hooks.example.com/h/PATHSECRET?key=QUERYSECRET",
	} {
		for _, key := range []string{"HERALD_WEBHOOK_URL", "HERALD_WEBHOOK_BEFORE_SEND_URL"} {
			env := map[string]string{key: v}
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(new(strings.Builder))
			_, err := Load(fs, nil, func(k string) string { return env[k] })
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("%s=%s: error %v, want one naming %s", key, v, err, key)
				continue
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("%s=%s: error echoes the URL's path or query: %v", key, v, err)
			}
		}
	}
}

func TestResolveSecret(t *testing.T) {
	c := Default()
	c.DataDir = t.TempDir()
	if _, _, err := c.ResolveSecret(false); err == nil {
		t.Fatal("ResolveSecret(false) with no secret: want an error")
	}
	s1, gen, err := c.ResolveSecret(true)
	if err != nil || !gen || len(s1) < 16 {
		t.Fatalf("first ResolveSecret(true) = %q, %v, %v; want a generated secret", s1, gen, err)
	}
	if fi, _ := os.Stat(c.SecretPath()); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	s2, gen, _ := c.ResolveSecret(false)
	if gen || string(s2) != string(s1) {
		t.Errorf("second ResolveSecret = %q (generated %v), want the stored %q", s2, gen, s1)
	}
	c.Secret = "explicit-secret-0123"
	if s3, _, _ := c.ResolveSecret(true); string(s3) != c.Secret {
		t.Errorf("HERALD_SECRET set: got %q, want it", s3)
	}
}

// TestDocsListEveryKey keeps docs/configuration.md in step with the code.
// HERALD_STORE takes a PostgreSQL URL beside the embedded engines; its
// password never shows in StoreRedacted (what the server logs) nor in a
// validation error.
func TestStorePostgresURL(t *testing.T) {
	for _, tt := range []struct {
		store, redacted string
		ok              bool
	}{
		{"postgres://herald:PWSECRET@db:5432/herald?sslmode=require", "postgres://herald:xxxxx@db:5432/herald?sslmode=require", true},
		{"postgresql://herald@db/herald?password=PWSECRET", "postgresql://herald@db/herald?password=xxxxx", true},
		{"postgres://herald:PWSECRET@db", "postgres://herald:xxxxx@db", false},
		{"postgres://herald:PW%zzSECRET@db/herald", "(a URL that does not parse)", false},
		{"sqlite", "sqlite", true},
	} {
		env := map[string]string{"HERALD_STORE": tt.store}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(new(strings.Builder))
		c, err := Load(fs, nil, func(k string) string { return env[k] })
		if (err == nil) != tt.ok {
			t.Errorf("HERALD_STORE=%s: Load error %v, want ok %v", tt.store, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("HERALD_STORE=%s: error shows the password: %v", tt.store, err)
		}
		c.Store = tt.store
		if got := c.StoreRedacted(); got != tt.redacted {
			t.Errorf("StoreRedacted(%s) = %s, want %s", tt.store, got, tt.redacted)
		}
		if got, want := c.StoreIsPostgres(), strings.HasPrefix(tt.store, "postgres") && !strings.Contains(tt.store, "%zz"); got != want {
			t.Errorf("StoreIsPostgres(%s) = %v, want %v", tt.store, got, want)
		}
	}
}

// TestStoreMaxBatch: HERALD_MAX_BATCH when set; else 256 on the embedded
// stores and 1024 on PostgreSQL, whose writer must be able to catch up
// with transactions of more than 256 when a round trip is slow.
func TestStoreMaxBatch(t *testing.T) {
	for _, tt := range []struct {
		store, batch string
		want         int
	}{
		{"sqlite", "", 256},
		{"pebble", "", 256},
		{"postgres://herald@db/herald", "", 1024},
		{"postgresql://herald@db/herald", "0", 1024},
		{"postgres://herald@db/herald", "256", 256},
		{"sqlite", "2000", 2000},
	} {
		env := map[string]string{"HERALD_STORE": tt.store, "HERALD_MAX_BATCH": tt.batch}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(new(strings.Builder))
		c, err := Load(fs, nil, func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("HERALD_STORE=%s HERALD_MAX_BATCH=%q: %v", tt.store, tt.batch, err)
		}
		if got := c.StoreMaxBatch(); got != tt.want {
			t.Errorf("HERALD_STORE=%s HERALD_MAX_BATCH=%q: StoreMaxBatch %d, want %d", tt.store, tt.batch, got, tt.want)
		}
	}
}

// TestPostgresBatchFitsOneStatement: on PostgreSQL a transaction's
// messages go in with one statement, whose parameters PostgreSQL caps at
// 1 GB: a max-batch of messages at the largest custom size that would not
// fit is refused at start, naming the batch that would.
func TestPostgresBatchFitsOneStatement(t *testing.T) {
	load := func(env map[string]string) error {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(new(strings.Builder))
		_, err := Load(fs, nil, func(k string) string { return env[k] })
		return err
	}
	big := map[string]string{"HERALD_STORE": "postgres://herald@db/herald", "HERALD_MAX_CUSTOM_BYTES": "4194304", "HERALD_MAX_FRAME_BYTES": "8388608", "HERALD_SEND_QUEUE_BYTES": "16777216"}
	if err := load(big); err == nil || !strings.Contains(err.Error(), "HERALD_MAX_BATCH (1024)") || !strings.Contains(err.Error(), "at most 127") {
		t.Errorf("1,024 messages of 4 MiB on PostgreSQL: %v, want refused naming the batch and the largest that fits", err)
	}
	big["HERALD_MAX_BATCH"] = "127"
	if err := load(big); err != nil {
		t.Errorf("127 messages of 4 MiB on PostgreSQL: %v", err)
	}
	big["HERALD_STORE"], big["HERALD_MAX_BATCH"] = "sqlite", ""
	if err := load(big); err != nil {
		t.Errorf("4 MiB messages on SQLite: %v (the bound is PostgreSQL's)", err)
	}
	if err := load(map[string]string{"HERALD_STORE": "postgres://herald@db/herald"}); err != nil {
		t.Errorf("the defaults on PostgreSQL: %v", err)
	}
}

func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		row := "| `" + k[1] + "` | `" + k[0] + "` | `" + k[2] + "` |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/configuration.md lacks the row %s", row)
		}
	}
}

func TestMetricsOnAddr(t *testing.T) {
	for _, tc := range []struct {
		public, addr string
		want         bool
		localOnly    bool // refuses proxied requests
	}{
		{"auto", "127.0.0.1:7400", true, true},
		{"auto", "[::1]:7400", true, true},
		{"auto", "localhost:7400", true, true},
		{"auto", "0.0.0.0:7400", false, false},
		{"auto", ":7400", false, false},
		{"auto", "10.0.0.5:7400", false, false},
		{"true", "0.0.0.0:7400", true, false},
		{"true", "127.0.0.1:7400", true, false},
		{"false", "127.0.0.1:7400", false, false},
	} {
		c := Default()
		c.MetricsPublic, c.Addr = tc.public, tc.addr
		if got := c.MetricsOnAddr(); got != tc.want {
			t.Errorf("metrics-public %s, addr %s: on addr = %v, want %v", tc.public, tc.addr, got, tc.want)
		}
		if got := c.MetricsLocalOnly(); got != tc.localOnly {
			t.Errorf("metrics-public %s, addr %s: local only = %v, want %v", tc.public, tc.addr, got, tc.localOnly)
		}
	}
	c := Default()
	c.MetricsPublic = "yes"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "HERALD_METRICS_PUBLIC") {
		t.Errorf("Validate with metrics-public yes = %v, want an error naming HERALD_METRICS_PUBLIC", err)
	}
}

func TestRequireRegistration(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  string
		args []string
		want bool
	}{
		{"default", "", nil, false},
		{"env", "true", nil, true},
		{"flag alone", "", []string{"--require-registration"}, true},
		{"flag over env", "1", []string{"--require-registration=false"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"HERALD_REQUIRE_REGISTRATION": tt.env}
			c, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), tt.args, func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if got := c.RequireRegistration; got != tt.want {
				t.Errorf("RequireRegistration = %v, want %v", got, tt.want)
			}
		})
	}
	env := map[string]string{"HERALD_REQUIRE_REGISTRATION": "maybe"}
	_, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), nil, func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "HERALD_REQUIRE_REGISTRATION") {
		t.Errorf("HERALD_REQUIRE_REGISTRATION=maybe: %v, want an error naming the key", err)
	}
}

// TestPushLeaseWarning: a push lease below PushLeaseSafe is accepted (from
// 1s) but warned about, with several nodes only.
func TestPushLeaseWarning(t *testing.T) {
	tests := []struct {
		name  string
		bus   string
		lease time.Duration
		warn  bool
	}{
		{"default", "nats://127.0.0.1:4222", 40 * time.Second, false},
		{"at the safe minimum", "nats://127.0.0.1:4222", PushLeaseSafe, false},
		{"short, several nodes", "nats://127.0.0.1:4222", 4 * time.Second, true},
		{"short, one node", "", 4 * time.Second, false},
		{"under twice the APNs timeout (20s)", "nats://127.0.0.1:4222", 30 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Bus, c.PushLease = tt.bus, tt.lease
			if tt.lease == 30*time.Second {
				c.APNsTimeout = 20 * time.Second
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			got := strings.Join(c.Warnings(), "\n")
			if warned := strings.Contains(got, "HERALD_PUSH_LEASE"); warned != tt.warn {
				t.Errorf("Warnings() = %q; want a HERALD_PUSH_LEASE warning: %v", got, tt.warn)
			}
		})
	}
}

func TestUnknownEnv(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want []string
	}{
		{"keys and non-Herald variables", []string{"HERALD_ADDR=x", "HERALD_PUSH_CONFIG=p", "PATH=/bin", "HERALDRY=1"}, nil},
		{"read on purpose", []string{"HERALD_CONFIG=f", "HERALD_TEST_POSTGRES=x", "HERALD_E2E_KILLS=2", "HERALD_PEBBLE_KILL_DIR=d"}, nil},
		{"typo", []string{"HERALD_PUSH_CONFG=p"}, []string{"HERALD_PUSH_CONFG is not a Herald setting and is ignored (did you mean HERALD_PUSH_CONFIG?)"}},
		{"no key near", []string{"HERALD_COLOUR=blue"}, []string{"HERALD_COLOUR is not a Herald setting and is ignored"}},
		{"empty value too", []string{"HERALD_SECERT="}, []string{"HERALD_SECERT is not a Herald setting and is ignored (did you mean HERALD_SECRET?)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := UnknownEnv(tt.env)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("UnknownEnv(%q) = %q, want %q", tt.env, got, tt.want)
			}
		})
	}
}

func TestFileTypoNamesTheKeyMeant(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herald.conf")
	os.WriteFile(path, []byte("HERALD_MULTI_LOGINN=single\n"), 0o600)
	_, err := Load(flag.NewFlagSet("t", flag.ContinueOnError), []string{"--config", path}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "did you mean HERALD_MULTI_LOGIN?") {
		t.Errorf("typo in the file: %v, want an error naming HERALD_MULTI_LOGIN", err)
	}
}

func TestPushEmulatorSandbox(t *testing.T) {
	tests := []struct {
		addr, sandbox string
		want          string // "" for an error
	}{
		{"127.0.0.1:7402", "", "127.0.0.1:7403"},
		{"127.0.0.1:0", "", "127.0.0.1:0"},
		{"127.0.0.1:7402", "127.0.0.1:9000", "127.0.0.1:9000"},
		{"[::1]:8000", "", "[::1]:8001"},
		{"127.0.0.1:65535", "", ""},
		{"127.0.0.1:7402", "nonsense", ""},
	}
	for _, tt := range tests {
		c := Default()
		c.PushEmulatorAddr, c.PushEmulatorSandboxAddr = tt.addr, tt.sandbox
		got, err := c.PushEmulatorSandbox()
		if tt.want == "" {
			if err == nil || !strings.Contains(err.Error(), "HERALD_PUSH_EMULATOR") {
				t.Errorf("%q, %q: %q, %v; want an error naming the key", tt.addr, tt.sandbox, got, err)
			}
			if c.Validate() == nil {
				t.Errorf("%q, %q: Validate passes", tt.addr, tt.sandbox)
			}
			continue
		}
		if got != tt.want || err != nil {
			t.Errorf("%q, %q: %q, %v; want %q", tt.addr, tt.sandbox, got, err, tt.want)
		}
	}
}

// Load with named flags registers those only; the other keys still come
// from the environment, and IsSet tells a key given from a default.
func TestLoadNamedFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	env := map[string]string{"HERALD_STORE": "pebble"}
	c, err := Load(fs, []string{"--data", "d"}, func(k string) string { return env[k] }, "data", "secret")
	if err != nil {
		t.Fatal(err)
	}
	if fs.Lookup("store") != nil || fs.Lookup("data") == nil || fs.Lookup("config") == nil {
		t.Errorf("flags: store %v, data %v, config %v; want data and config only", fs.Lookup("store"), fs.Lookup("data"), fs.Lookup("config"))
	}
	if c.Store != "pebble" || c.DataDir != "d" {
		t.Errorf("Store %q, DataDir %q; want pebble from the environment, d from the flag", c.Store, c.DataDir)
	}
	for key, want := range map[string]bool{"HERALD_DATA": true, "HERALD_STORE": true, "HERALD_ADDR": false} {
		if got := c.IsSet(key); got != want {
			t.Errorf("IsSet(%s) = %v, want %v", key, got, want)
		}
	}
}

// TestBusURLNeverInErrors: a HERALD_BUS that is refused is not quoted,
// since it may carry a password.
func TestBusURLNeverInErrors(t *testing.T) {
	for _, v := range []string{"http://alice:hunter2@nats:4222", "nats://alice:hunter2@", "nats://a:4222,ftp://alice:hunter2@b"} {
		c := Default()
		c.Bus = v
		err := c.Validate()
		if err == nil {
			t.Errorf("HERALD_BUS=%q accepted", v)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "alice") {
			t.Errorf("HERALD_BUS=%q: the error shows the credential: %v", v, err)
		}
	}
}

// TestNodeIDStable: without HERALD_NODE_ID, a node with a bus generates an
// ID into its data folder and keeps it across restarts; one without a bus
// writes nothing; HERALD_NODE_ID wins.
func TestNodeIDStable(t *testing.T) {
	c := Default()
	c.DataDir = t.TempDir()
	id, err := c.ResolveNodeID(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateNodeID(id); err != nil {
		t.Errorf("ID without a bus %q: %v", id, err)
	}
	if _, err := os.Stat(c.NodeIDPath()); !os.IsNotExist(err) {
		t.Errorf("ResolveNodeID(false) wrote %s (err %v)", c.NodeIDPath(), err)
	}
	first, err := c.ResolveNodeID(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateNodeID(first); err != nil {
		t.Errorf("generated ID %q: %v", first, err)
	}
	again, _ := c.ResolveNodeID(true)
	if again != first {
		t.Errorf("after a restart: got %q, want %q", again, first)
	}
	c.NodeID = "node-7"
	if got, _ := c.ResolveNodeID(true); got != "node-7" {
		t.Errorf("HERALD_NODE_ID set: got %q, want node-7", got)
	}
}

// TestCallMaxParticipantsDefault: a configuration that raises only
// HERALD_CALL_MAX_INVITEES (up to its 100) still starts: the participant
// cap not set follows it (max(50, invitees+1)); one set explicitly is
// checked against it.
func TestCallMaxParticipantsDefault(t *testing.T) {
	tests := []struct {
		env     map[string]string
		want    int
		wantErr string
	}{
		{map[string]string{}, 50, ""},
		{map[string]string{"HERALD_CALL_MAX_INVITEES": "20"}, 50, ""},
		{map[string]string{"HERALD_CALL_MAX_INVITEES": "50"}, 51, ""},
		{map[string]string{"HERALD_CALL_MAX_INVITEES": "100"}, 101, ""},
		{map[string]string{"HERALD_CALL_MAX_INVITEES": "100", "HERALD_CALL_MAX_PARTICIPANTS": "200"}, 200, ""},
		{map[string]string{"HERALD_CALL_MAX_INVITEES": "60", "HERALD_CALL_MAX_PARTICIPANTS": "50"}, 0, "HERALD_CALL_MAX_PARTICIPANTS"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.env), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(new(strings.Builder))
			c, err := Load(fs, nil, func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Load error = %v, want one naming %s", err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("Load: %v", err)
			case c.CallMaxParticipants != tt.want:
				t.Errorf("CallMaxParticipants = %d, want %d", c.CallMaxParticipants, tt.want)
			}
		})
	}
}

func TestParseOrigins(t *testing.T) {
	got, err := ParseOrigins(" https://app.example.com, http://localhost:8080 ,")
	if err != nil || len(got) != 2 || got[0] != "https://app.example.com" || got[1] != "http://localhost:8080" {
		t.Errorf("ParseOrigins = %q, %v; want the two origins", got, err)
	}
	for _, bad := range []string{"app.example.com", "https://app.example.com/", "https://app.example.com/sw.js", "ftp://x.example", "*", "https://user@x.example"} {
		if _, err := ParseOrigins(bad); err == nil {
			t.Errorf("ParseOrigins(%q) accepted; want an error", bad)
		}
	}
}

// MediaPlace: HERALD_MEDIA_S3 wins, else HERALD_MEDIA_DIR, else the data
// folder's media folder (herald serve and herald migrate both use it).
func TestMediaPlace(t *testing.T) {
	c := Default()
	c.DataDir = "/srv/herald"
	if s3, dir := c.MediaPlace(); s3 != "" || dir != filepath.Join("/srv/herald", "media") {
		t.Errorf("MediaPlace with neither set = %q, %q; want the data folder's media folder", s3, dir)
	}
	c.MediaDir = "/mnt/files"
	if s3, dir := c.MediaPlace(); s3 != "" || dir != "/mnt/files" {
		t.Errorf("MediaPlace with HERALD_MEDIA_DIR = %q, %q; want that folder", s3, dir)
	}
	c.MediaS3 = "https://k:s@s3.example/bucket"
	if s3, dir := c.MediaPlace(); s3 != c.MediaS3 || dir != "" {
		t.Errorf("MediaPlace with HERALD_MEDIA_S3 too = %q, %q; want the S3 URL and no folder", s3, dir)
	}
}
