// Package s3test gives tests a place of their own in an S3-compatible
// store: the real server HERALD_TEST_S3 names
// (http://KEY:SECRET@host:port/bucket; .ci/run starts one), under a prefix
// of the test's own, its bucket created when the server lacks it; or, for
// unit tests, a bucket in an in-process fake (which checks no signature).
package s3test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Place returns HERALD_TEST_S3 with a prefix of its own named after name,
// or skips t when HERALD_TEST_S3 is not set.
func Place(t testing.TB, name string) string {
	t.Helper()
	u := os.Getenv("HERALD_TEST_S3")
	if u == "" {
		t.Skip("HERALD_TEST_S3 is not set: no S3-compatible server to run against")
	}
	EnsureBucket(t, u)
	return fmt.Sprintf("%s/%s-%d", strings.TrimSuffix(u, "/"), name, time.Now().UnixNano())
}

// Fake starts an in-process S3 fake for t and returns the URL of an empty
// bucket in it (http://key:secret@host:port/media).
func Fake(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	u := "http://key:secret@" + srv.Listener.Addr().String() + "/media"
	EnsureBucket(t, u)
	return u
}

// EnsureBucket creates the bucket rawURL names when the server lacks it.
func EnsureBucket(t testing.TB, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		t.Fatalf("S3 URL: want http://KEY:SECRET@host:port/bucket[/prefix]")
	}
	secret, _ := u.User.Password()
	c, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(u.User.Username(), secret, ""), Secure: u.Scheme == "https"})
	if err != nil {
		t.Fatal(err)
	}
	bucket, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		t.Fatalf("S3 server at %s: %v", u.Host, err)
	}
	if !ok {
		if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
			t.Fatalf("create bucket %s at %s: %v", bucket, u.Host, err)
		}
	}
}
