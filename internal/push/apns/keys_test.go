package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/push"
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadP8(t *testing.T) {
	key := newKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	got, err := LoadP8(writeFile(t, "AuthKey_KEY1234567.p8", p8))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) {
		t.Error("LoadP8 returned a different key")
	}

	sec1, _ := x509.MarshalECPrivateKey(key)
	if got, err := LoadP8(writeFile(t, "sec1.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))); err != nil || !got.Equal(key) {
		t.Errorf("SEC1 key: %v", err)
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384der, _ := x509.MarshalPKCS8PrivateKey(p384)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDer, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	for _, tt := range []struct {
		name, data, want string
	}{
		{"not PEM", "hello", "no PEM block"},
		{"certificate", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), `PEM block is "CERTIFICATE"`},
		{"garbage", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")})), "does not parse"},
		{"P-384", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384der})), "not a P-256 key"},
		{"RSA", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDer})), "APNs keys are ECDSA P-256"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadP8(writeFile(t, "k.p8", []byte(tt.data)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := LoadP8(filepath.Join(t.TempDir(), "missing.p8")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestLoadP12(t *testing.T) {
	cert, leaf, key := selfSigned(t, "Apple Push Services: com.example.chat")
	_, ca, _ := selfSigned(t, "Apple Worldwide Developer Relations")
	for _, tt := range []struct {
		name string
		enc  *pkcs12.Encoder
	}{
		{"modern", pkcs12.Modern},
		{"legacy RC2", pkcs12.LegacyRC2},
		{"legacy 3DES", pkcs12.LegacyDES},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, err := tt.enc.Encode(key, leaf, []*x509.Certificate{ca}, "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			path := writeFile(t, "apns.p12", data)
			got, err := LoadP12(path, "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Certificate) != 2 || string(got.Certificate[0]) != string(cert.Certificate[0]) || string(got.Certificate[1]) != string(ca.Raw) {
				t.Error("certificate chain differs")
			}
			if k, ok := got.PrivateKey.(*ecdsa.PrivateKey); !ok || !k.Equal(key) {
				t.Error("private key differs")
			}
			if got.Leaf == nil || got.Leaf.Subject.CommonName != leaf.Subject.CommonName {
				t.Error("Leaf not set")
			}
			if _, err := LoadP12(path, "wrong"); err == nil {
				t.Error("wrong password: no error")
			}
		})
	}
	t.Run("leaf not first", func(t *testing.T) {
		data, err := pkcs12.Modern.Encode(key, ca, []*x509.Certificate{leaf}, "pw")
		if err != nil {
			t.Fatal(err)
		}
		got, err := LoadP12(writeFile(t, "apns.p12", data), "pw")
		if err != nil {
			t.Fatal(err)
		}
		if got.Leaf.Subject.CommonName != leaf.Subject.CommonName || string(got.Certificate[0]) != string(leaf.Raw) {
			t.Errorf("leaf = %q, want the certificate matching the key", got.Leaf.Subject.CommonName)
		}
	})
	t.Run("no certificate matches the key", func(t *testing.T) {
		other := newKey(t)
		data, err := pkcs12.Modern.Encode(other, leaf, nil, "pw")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := LoadP12(writeFile(t, "apns.p12", data), "pw"); err == nil || !strings.Contains(err.Error(), "no certificate matches") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestCertificateAuth: the server requires a client certificate; each
// environment presents its own; no authorization header is sent; a
// certificate the server refuses is a Credentials verdict.
func TestCertificateAuth(t *testing.T) {
	prodCert, prodLeaf, prodKey := selfSigned(t, "Apple Push Services: com.example.chat")
	devCert, devLeaf, _ := selfSigned(t, "Apple Development IOS Push Services: com.example.chat")
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(prodLeaf)
	clientCAs.AddCert(devLeaf)
	srv := newServer(t, func(s *httptest.Server) {
		s.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs}
	})

	// The production certificate goes through a .p12 round trip.
	data, err := pkcs12.Modern.Encode(prodKey, prodLeaf, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadP12(writeFile(t, "prod.p12", data), "pw")
	if err != nil {
		t.Fatal(err)
	}
	if string(loaded.Certificate[0]) != string(prodCert.Certificate[0]) {
		t.Fatal("p12 round trip changed the certificate")
	}
	p := newProvider(t, Config{Apps: []AppConfig{{
		BundleID: bundle, Certificate: loaded, DevelopmentCertificate: devCert,
		ProductionURL: srv.srv.URL, DevelopmentURL: srv.srv.URL, RootCAs: srv.roots(),
	}}})
	for _, tt := range []struct {
		env    herald.PushEnvironment
		wantCN string
	}{
		{herald.EnvProduction, prodLeaf.Subject.CommonName},
		{herald.EnvDevelopment, devLeaf.Subject.CommonName},
	} {
		res := p.Send(context.Background(), note(bundle, tt.env, tokenHex(1)))
		if res.Verdict != push.Delivered {
			t.Fatalf("%s: Send = %+v", tt.env, res)
		}
		reqs := srv.received()
		if got := reqs[len(reqs)-1]; got.ClientCN != tt.wantCN || got.Auth != "" {
			t.Errorf("%s: server saw client %q, authorization %q; want %q and none", tt.env, got.ClientCN, got.Auth, tt.wantCN)
		}
	}

	t.Run("refused certificate", func(t *testing.T) {
		stranger, _, _ := selfSigned(t, "Someone Else")
		p := newProvider(t, Config{Apps: []AppConfig{{
			BundleID: bundle, Certificate: stranger, ProductionURL: srv.srv.URL, RootCAs: srv.roots(),
		}}, Connections: 1})
		res := p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1)))
		if res.Verdict != push.Credentials || !strings.Contains(res.Reason, "refused the TLS client certificate") {
			t.Errorf("Send = %v %q, want credentials", res.Verdict, res.Reason)
		}
	})
}

// TestRefusedKeyFileReplaced: APNs refuses the key (the file held the
// wrong one); the operator replaces the file; the next push, the one that
// checks the suspended credentials, signs with the new key, without a
// restart. Until the file changes, no new JWT is signed.
func TestRefusedKeyFileReplaced(t *testing.T) {
	p8 := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	srv := newServer(t, nil)
	srv.t = nil // refused JWTs are the point
	wrong, right := newKey(t), newKey(t)
	app := tokenApp(bundle, srv, right) // APNs knows the right key
	path := writeFile(t, "AuthKey_KEY1234567.p8", p8(wrong))
	app.Key, app.KeyFile = wrong, path
	clk := newClock()
	p := newProvider(t, Config{Apps: []AppConfig{app}, Now: clk.Now})
	send := func() push.Result {
		return p.Send(context.Background(), note(bundle, herald.EnvProduction, tokenHex(1)))
	}
	for i := range 2 {
		if res := send(); res.Verdict != push.Credentials {
			t.Fatalf("Send %d with the wrong key = %+v, want credentials", i, res)
		}
	}
	if n := p.Stats().TokensSigned; n != 1 {
		t.Errorf("TokensSigned = %d before the file changed, want 1", n)
	}
	if err := os.WriteFile(path, p8(right), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute) // a new modification time, whatever the file system's resolution
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if res := send(); res.Verdict != push.Delivered {
		t.Fatalf("Send after the key file was replaced = %+v, want delivered", res)
	}
	if n := p.Stats().TokensSigned; n != 2 {
		t.Errorf("TokensSigned = %d, want 2", n)
	}
}
