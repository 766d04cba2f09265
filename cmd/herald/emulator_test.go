package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-im/herald/internal/emulator"
	"golang.org/x/net/http2"
)

// startEmulatorCmd runs `herald emulator` until the test ends and returns
// the emulator and what it printed.
func startEmulatorCmd(t *testing.T, args ...string) (*emulator.APNs, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	ready := make(chan *emulator.APNs, 1)
	done := make(chan error, 1)
	go func() { done <- runEmulator(ctx, args, &out, &errOut, func(a *emulator.APNs) { ready <- a }) }()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("emulator stopped with %v", err)
			}
		})
		return a, out.String()
	case err := <-done:
		cancel()
		t.Fatalf("emulator: %v (%s)", err, errOut.String())
	}
	return nil, ""
}

func TestEmulatorCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "emu")
	em, out := startEmulatorCmd(t, "--addr", "127.0.0.1:0", "--sandbox-addr", "127.0.0.1:0", "--dir", dir)
	for _, want := range []string{em.URL(), em.SandboxURL(), "HERALDTEAM", "ca.pem", "AuthKey_"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "AuthKey_*.p8"))
	if len(keys) != 1 {
		t.Fatalf("key files: %v, want one AuthKey_*.p8", keys)
	}
	keyID := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(keys[0]), "AuthKey_"), ".p8")
	if len(keyID) != 10 {
		t.Errorf("key ID %q, want 10 characters like Apple's", keyID)
	}
	if fi, err := os.Stat(keys[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", fi.Mode(), err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// What a Herald server does with the printed files.
	push := func(t *testing.T, url string) int {
		t.Helper()
		return pushWithFiles(t, url, keys[0], keyID, caPEM)
	}
	if got := push(t, em.URL()); got != 200 {
		t.Errorf("push to production: %d, want 200", got)
	}
	if got := push(t, em.SandboxURL()); got != 200 {
		t.Errorf("push to sandbox: %d, want 200", got)
	}

	t.Run("restart reuses key and certificate", func(t *testing.T) {
		em2, out2 := startEmulatorCmd(t, "--addr", "127.0.0.1:0", "--dir", dir)
		if !strings.Contains(out2, keyID) {
			t.Errorf("restart printed another key ID:\n%s", out2)
		}
		if !bytes.Equal(em2.CACertPEM(), caPEM) {
			t.Errorf("restart serves another TLS certificate")
		}
		if got := push(t, em2.URL()); got != 200 {
			t.Errorf("push after restart: %d, want 200", got)
		}
	})
}

func TestEmulatorCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"help", []string{"--help"}, flag.ErrHelp.Error()},
		{"bad delay", []string{"--delay", "soon"}, "invalid value"},
		{"negative delay", []string{"--delay", "-1s"}, "negative"},
		{"extra argument", []string{"now"}, "unexpected argument"},
		{"busy address", []string{"--addr", "256.0.0.1:1"}, "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"--dir", t.TempDir()}, tt.args...)
			err := runEmulator(context.Background(), args, &out, &errOut, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
			if tt.name == "help" && !strings.Contains(errOut.String(), "--sandbox-addr") {
				t.Errorf("--help printed %q, want the flags", errOut.String())
			}
		})
	}
	t.Run("two keys", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "AuthKey_AAAAAAAAAA.p8"), nil, 0o600)
		os.WriteFile(filepath.Join(dir, "AuthKey_BBBBBBBBBB.p8"), nil, 0o600)
		err := runEmulator(context.Background(), []string{"--dir", dir}, &bytes.Buffer{}, &bytes.Buffer{}, nil)
		if err == nil || !strings.Contains(err.Error(), "keep one") {
			t.Errorf("error = %v, want one about several keys", err)
		}
	})
}

// pushWithFiles sends one push the way a provider configured with the
// emulator's files would: JWT signed with the .p8, TLS trusting ca.pem.
func pushWithFiles(t *testing.T, url, keyPath, keyID string, caPEM []byte) int {
	t.Helper()
	b, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(fmt.Sprintf(`{"alg":"ES256","kid":%q}`, keyID))) + "." +
		enc.EncodeToString([]byte(fmt.Sprintf(`{"iss":"HERALDTEAM","iat":%d}`, time.Now().Unix())))
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, url+"/3/device/"+strings.Repeat("ab", 32), strings.NewReader(`{"aps":{"alert":"hi"}}`))
	req.Header.Set("authorization", "bearer "+input+"."+enc.EncodeToString(sig))
	req.Header.Set("apns-topic", "com.example.app")
	req.Header.Set("apns-push-type", "alert")
	res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
