package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/herald-im/herald/apiclient"
	"github.com/herald-im/herald/internal/store/postgres"
	"github.com/herald-im/herald/internal/store/postgres/pgtest"
)

// benchSigned serves b.N signed GETs of the push status through h, each
// with a new nonce: the cost of authentication and the nonce record.
func benchSigned(b *testing.B, cfg Config) {
	cfg.Secret, cfg.Rate, cfg.Burst, cfg.Push = testSecret, 1<<30, 1<<30, &fakePush{}
	h := New(cfg)
	now := time.Now().Unix()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nonce := "bench-nonce-" + strconv.Itoa(i)
		req := httptest.NewRequest(http.MethodGet, apiclient.PathPushStatus, nil)
		req.Header.Set(apiclient.HeaderApp, apiclient.DefaultAppID)
		req.Header.Set(apiclient.HeaderTimestamp, strconv.FormatInt(now, 10))
		req.Header.Set(apiclient.HeaderNonce, nonce)
		req.Header.Set(apiclient.HeaderSignature, apiclient.Sign(testSecret, apiclient.DefaultAppID, now, nonce, http.MethodGet, apiclient.PathPushStatus, nil))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("request %d: %d %s", i, w.Code, w.Body)
		}
	}
}

// BenchmarkSignedRequest: one node, nonces in the fsynced journal.
func BenchmarkSignedRequest(b *testing.B) {
	dir := b.TempDir()
	j, err := OpenNonceJournal(filepath.Join(dir, "api-nonces"), 0, time.Now(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	benchSigned(b, Config{Nonces: j})
}

// BenchmarkSignedRequestShared: several nodes, nonces in PostgreSQL's
// shared table (HERALD_TEST_POSTGRES).
func BenchmarkSignedRequestShared(b *testing.B) {
	if os.Getenv("HERALD_TEST_POSTGRES") == "" {
		b.Skip("HERALD_TEST_POSTGRES is not set")
	}
	dsn := pgtest.Schema(b, pgtest.Database(b, "to benchmark the shared nonce record"))
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchSigned(b, Config{Shared: st})
}
