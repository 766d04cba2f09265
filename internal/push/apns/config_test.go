package apns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestNewValidation(t *testing.T) {
	key, other := newKey(t), newKey(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	cert, _, _ := selfSigned(t, "Apple Push Services: com.example.chat")
	tok := func(bundle string) AppConfig {
		return AppConfig{BundleID: bundle, TeamID: "TEAM123456", KeyID: "KEY1234567", Key: key}
	}
	with := func(a AppConfig, edit func(*AppConfig)) AppConfig { edit(&a); return a }
	one := func(a AppConfig) Config { return Config{Apps: []AppConfig{a}} }

	tests := []struct {
		name string
		cfg  Config
		want string // "" means valid
	}{
		{"token app", one(tok("com.a")), ""},
		{"certificate app", one(AppConfig{BundleID: "com.a", Certificate: cert}), ""},
		{"two apps share a key", Config{Apps: []AppConfig{tok("com.a"), tok("com.b")}}, ""},
		{"refresh 20m", Config{Apps: []AppConfig{tok("com.a")}, TokenRefresh: 20 * time.Minute}, ""},
		{"refresh 59m", Config{Apps: []AppConfig{tok("com.a")}, TokenRefresh: 59 * time.Minute}, ""},
		{"emulator URLs", one(with(tok("com.a"), func(a *AppConfig) {
			a.ProductionURL, a.DevelopmentURL = "https://127.0.0.1:8443", "https://localhost:2197/"
		})), ""},

		{"no apps", Config{}, "apns: no apps configured"},
		{"empty bundle", one(tok("")), `apps[0] "": BundleID is empty`},
		{"bad bundle", one(tok("com a")), `apps[0] "com a": BundleID has character ' '`},
		{"voip bundle", one(tok("com.a.voip")), `apps[0] "com.a.voip": BundleID ends in .voip`},
		{"duplicate bundle", Config{Apps: []AppConfig{tok("com.a"), tok("com.a")}}, `apps[1] "com.a": BundleID is configured twice`},
		{"both auth kinds", one(with(tok("com.a"), func(a *AppConfig) { a.Certificate = cert })), `apps[0] "com.a": both token auth`},
		{"no auth", one(AppConfig{BundleID: "com.a"}), `apps[0] "com.a": no credential`},
		{"no team", one(with(tok("com.a"), func(a *AppConfig) { a.TeamID = "" })), `apps[0] "com.a": TeamID is empty`},
		{"bad key id", one(with(tok("com.a"), func(a *AppConfig) { a.KeyID = "KEY-1" })), `apps[0] "com.a": KeyID has character '-'`},
		{"no key", one(with(tok("com.a"), func(a *AppConfig) { a.Key = nil })), `apps[0] "com.a": Key is not set`},
		{"P-384 key", one(with(tok("com.a"), func(a *AppConfig) { a.Key = p384 })), `apps[0] "com.a": Key is not a P-256 key`},
		{"one key ID, two keys", Config{Apps: []AppConfig{tok("com.a"), with(tok("com.b"), func(a *AppConfig) { a.Key = other })}}, `apps[1] "com.b": Key differs`},
		{"development certificate only", one(AppConfig{BundleID: "com.a", DevelopmentCertificate: cert}), `apps[0] "com.a": Certificate is not set`},
		{"certificate without key", one(AppConfig{BundleID: "com.a", Certificate: &tls.Certificate{Certificate: cert.Certificate}}), `apps[0] "com.a": Certificate has no private key`},
		{"empty certificate", one(AppConfig{BundleID: "com.a", Certificate: &tls.Certificate{}}), `apps[0] "com.a": Certificate has no certificate`},
		{"bad development certificate", one(AppConfig{BundleID: "com.a", Certificate: cert, DevelopmentCertificate: &tls.Certificate{Certificate: [][]byte{[]byte("x")}, PrivateKey: key}}), `apps[0] "com.a": DevelopmentCertificate does not parse`},
		{"http URL", one(with(tok("com.a"), func(a *AppConfig) { a.ProductionURL = "http://api.push.apple.com" })), `apps[0] "com.a": ProductionURL "http://api.push.apple.com" is not an https URL`},
		{"no host", one(with(tok("com.a"), func(a *AppConfig) { a.DevelopmentURL = "https://" })), `apps[0] "com.a": DevelopmentURL "https://" has no host`},
		{"URL with a path", one(with(tok("com.a"), func(a *AppConfig) { a.ProductionURL = "https://h/3/device" })), `ProductionURL "https://h/3/device" must be scheme, host and port only`},
		{"URL unparsable", one(with(tok("com.a"), func(a *AppConfig) { a.ProductionURL = "https://[::1" })), `apps[0] "com.a": ProductionURL does not parse`},
		{"negative connections", Config{Apps: []AppConfig{tok("com.a")}, Connections: -1}, "Connections -1 is negative"},
		{"too many connections", Config{Apps: []AppConfig{tok("com.a")}, Connections: 65}, "Connections 65 is over the limit of 64"},
		{"negative timeout", Config{Apps: []AppConfig{tok("com.a")}, Timeout: -time.Second}, "Timeout -1s is negative"},
		{"refresh too often", Config{Apps: []AppConfig{tok("com.a")}, TokenRefresh: 19 * time.Minute}, "TokenRefresh 19m0s is out of range"},
		{"refresh too late", Config{Apps: []AppConfig{tok("com.a")}, TokenRefresh: time.Hour}, "TokenRefresh 1h0m0s is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				p.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestPoolsPerCredentialAndEnvironment(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	cert, _, _ := selfSigned(t, "c")
	p, err := New(Config{Apps: []AppConfig{
		{BundleID: "com.a", TeamID: "T1", KeyID: "K1", Key: k1},
		{BundleID: "com.b", TeamID: "T1", KeyID: "K1", Key: k1}, // shares a's pools and JWT
		{BundleID: "com.c", TeamID: "T1", KeyID: "K2", Key: k2},
		{BundleID: "com.d", Certificate: cert},
		{BundleID: "com.e", Certificate: cert}, // shares d's pools
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := len(p.pools); got != 6 {
		t.Errorf("%d pools, want 6: three credentials by two environments", got)
	}
	a, b, c := p.apps["com.a"], p.apps["com.b"], p.apps["com.c"]
	if a.prod != b.prod || a.dev != b.dev || a.signer != b.signer {
		t.Error("apps with one key do not share pools and JWT")
	}
	if a.prod == a.dev || a.prod == c.prod || a.signer == c.signer {
		t.Error("pools or signers shared across keys or environments")
	}
	if p.apps["com.d"].prod != p.apps["com.e"].prod {
		t.Error("apps with one certificate do not share pools")
	}
}

// TestPoolsShareRootsByContent: apps with one key that each name a
// ca_file get a root pool each (the server loads every file on its own);
// the same certificates in them mean the same pools, other ones do not.
func TestPoolsShareRootsByContent(t *testing.T) {
	key := newKey(t)
	_, ca, _ := selfSigned(t, "ca")
	_, other, _ := selfSigned(t, "other ca")
	roots := func(c *x509.Certificate) *x509.CertPool {
		p := x509.NewCertPool()
		p.AddCert(c)
		return p
	}
	app := func(id string, r *x509.CertPool) AppConfig {
		return AppConfig{BundleID: id, TeamID: "T1", KeyID: "K1", Key: key, ProductionURL: "https://apns.example:443", RootCAs: r}
	}
	p, err := New(Config{Apps: []AppConfig{
		app("com.a", roots(ca)), app("com.b", roots(ca)), // one ca_file's contents, loaded twice
		app("com.c", roots(other)),
		app("com.d", nil), // the system roots
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if a, b := p.apps["com.a"], p.apps["com.b"]; a.prod != b.prod || a.dev != b.dev {
		t.Error("apps with one key and the same roots do not share pools")
	}
	if a, c, d := p.apps["com.a"], p.apps["com.c"], p.apps["com.d"]; a.prod == c.prod || a.prod == d.prod || c.prod == d.prod {
		t.Error("apps trusting different roots share a pool")
	}
	if got := len(p.pools); got != 6 {
		t.Errorf("%d pools, want 6: three sets of roots by two environments", got)
	}
}

func TestWildcardAppServesEveryBundleID(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Apps: []AppConfig{
		{BundleID: Wildcard, TeamID: "TEAM123456", KeyID: "KEY1234567", Key: key},
		{BundleID: "com.listed", TeamID: "TEAM123456", KeyID: "KEY7654321", Key: key},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		app  string
		want bool
		key  string
	}{
		{"com.listed", true, "KEY7654321"},
		{"com.other.app", true, "KEY1234567"},
		{"bad app!", false, ""},
		{"", false, ""},
	} {
		if got := p.HasApp(tc.app); got != tc.want {
			t.Errorf("HasApp(%q) = %v, want %v", tc.app, got, tc.want)
		}
		if a := p.app(tc.app); tc.want && a.signer.keyID != tc.key {
			t.Errorf("app(%q) signs with key %s, want %s", tc.app, a.signer.keyID, tc.key)
		}
	}
}
