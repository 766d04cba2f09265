package emulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// testCA issues client certificates like Apple's push certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Push CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue makes a client certificate for bundle (subject UID), with Apple's
// environment extensions when dev or prod is set.
func (ca *testCA) issue(t *testing.T, bundle string, dev, prod bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "Apple Push Services: " + bundle, ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: oidUID, Value: bundle},
		}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	null, _ := asn1.Marshal(asn1.NullRawValue)
	if dev {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidAppleDevelopment, Value: null})
	}
	if prod {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidAppleProduction, Value: null})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func certClient(t *testing.T, a *APNs, cert *tls.Certificate) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: a.CertPool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http2.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestCertificateAuth(t *testing.T) {
	ca := newTestCA(t)
	f := start(t, Config{ClientCAs: ca.pool()})
	universal := ca.issue(t, testTopic, false, false)
	devOnly := ca.issue(t, testTopic, true, false)
	prodOnly := ca.issue(t, testTopic, false, true)
	voip := map[string]string{"apns-push-type": "voip", "apns-topic": testTopic + ".voip"}
	tests := []struct {
		name string
		cert *tls.Certificate
		req  req
		want string
	}{
		{"certificate, topic", &universal, req{auth: "-"}, "200"},
		{"certificate, no topic", &universal, req{auth: "-", headers: map[string]string{"apns-topic": ""}}, "200"},
		{"certificate, voip topic", &universal, req{auth: "-", headers: voip}, "200"},
		{"certificate, other topic", &universal, req{auth: "-", headers: map[string]string{"apns-topic": "com.example.other"}}, "400 TopicDisallowed"},
		{"development certificate in sandbox", &devOnly, req{auth: "-", sandbox: true}, "200"},
		{"development certificate in production", &devOnly, req{auth: "-"}, "403 BadCertificateEnvironment"},
		{"production certificate in sandbox", &prodOnly, req{auth: "-", sandbox: true}, "403 BadCertificateEnvironment"},
		{"no certificate, no token", nil, req{auth: "-"}, "403 MissingProviderToken"},
		{"no certificate, a token", nil, req{}, "200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := doWith(t, certClient(t, f.a, tt.cert), f, tt.req); got.String() != tt.want {
				t.Errorf("answer = %s, want %s", got, tt.want)
			}
		})
	}
	t.Run("recorded", func(t *testing.T) {
		in := f.a.Inbox(testToken)
		if len(in) == 0 || in[0].Certificate != testTopic || in[0].KeyID != "" {
			t.Fatalf("first notification %+v, want certificate %q and no key ID", in, testTopic)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		stranger := newTestCA(t).issue(t, testTopic, false, false)
		if got := doWith(t, certClient(t, f.a, &stranger), f, req{auth: "-"}); got.err == nil {
			t.Errorf("answer = %s, want a TLS failure", got)
		}
	})
}
