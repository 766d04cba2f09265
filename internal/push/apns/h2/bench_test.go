package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// The benchmarks compare this package with x/net's http2 Transport (as
// internal/push/apns uses it: one ClientConn per TLS connection, requests
// built like apns.Send's) on one connection to an x/net HTTP/2 server that
// answers like APNs (200, apns-id echoed). The server runs in a child
// process (this test binary, re-run with benchServerEnv set), so the
// benchmark process's CPU time is the client's alone:
//
//	cpu-ns/op         the client's CPU (user+system) per request
//	server-cpu-ns/op  the server process's CPU per request
//	writes/op         writes to the TLS connection per request
//
//	go test -run '^$' -bench 'Client' -benchtime 20000x -count 5 -cpu 1,2 ./internal/push/apns/h2/
const benchServerEnv = "HERALD_H2_BENCH_SERVER"

// TestMain serves as the benchmark's server when benchServerEnv is set:
// it prints its address and certificate and serves until stdin closes.
func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) != "" {
		runBenchServer()
		return
	}
	os.Exit(m.Run())
}

func runBenchServer() {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("apns-id", r.Header.Get("apns-id"))
		w.WriteHeader(200)
	}))
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	fmt.Printf("%s %d\n", srv.Listener.Addr(), os.Getpid())
	_ = pem.Encode(os.Stdout, &pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

type benchServer struct {
	addr  string
	pid   int
	roots *x509.CertPool
}

func startBenchServer(b *testing.B) *benchServer {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=1", "GOMAXPROCS=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	if err != nil {
		b.Fatalf("bench server: %v", err)
	}
	s := &benchServer{}
	if _, err := fmt.Sscan(line, &s.addr, &s.pid); err != nil {
		b.Fatalf("bench server said %q", line)
	}
	var pemText []byte
	for !bytes.HasPrefix([]byte(line), []byte("-----END")) {
		if line, err = rd.ReadString('\n'); err != nil {
			b.Fatalf("bench server: %v", err)
		}
		pemText = append(pemText, line...)
	}
	blk, _ := pem.Decode(pemText)
	if blk == nil {
		b.Fatal("bench server: no certificate")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		b.Fatal(err)
	}
	s.roots = x509.NewCertPool()
	s.roots.AddCert(cert)
	return s
}

func (s *benchServer) dial(b *testing.B) *tls.Conn {
	tc, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: s.roots, NextProtos: []string{"h2"}})
	if err != nil {
		b.Fatal(err)
	}
	return tc
}

// cpuTime is the CPU time, user and system, of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPUTime is the CPU time of process pid, from /proc/pid/stat.
func procCPUTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

var benchBody = []byte(`{"aps":{"alert":{"title":"Alice","body":"See you at eight, and bring the book you promised last week"},"badge":3,"sound":"default","thread-id":"c1"},"herald":{"conv":"c1","msg_id":"01JD0000000000000000000000","seq":42,"from":"alice"}}`)

const benchToken = "6f1e4c2a9b3d5e7f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"

var benchBearer = "bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ.eyJpc3MiOiJERUYxMjNHSElKIiwiaWF0IjoxNzcyMzY2NDAwfQ." + strings.Repeat("s", 86)

// countingConn counts the writes to a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// runBench runs b.N requests from callers goroutines through do and
// reports CPU and writes to the connection per request.
func runBench(b *testing.B, s *benchServer, nc *countingConn, callers int, do func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	// Warm up: the connection's windows and tables, the goroutines' stacks.
	for i := range callers {
		if err := do(i); err != nil {
			b.Fatal(err)
		}
	}
	srv0, cpu0, w0 := procCPUTime(s.pid), cpuTime(), nc.writes.Load()
	b.ResetTimer()
	for range callers {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= b.N; i = int(next.Add(1)) {
				if err := do(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu, srv := cpuTime()-cpu0, procCPUTime(s.pid)-srv0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(srv.Nanoseconds())/float64(b.N), "server-cpu-ns/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(nc.writes.Load()-w0)/float64(b.N), "writes/op")
}

const benchCallers = 500

// BenchmarkClientH2: this package.
func BenchmarkClientH2(b *testing.B) {
	s := startBenchServer(b)
	nc := &countingConn{Conn: s.dial(b)}
	c, err := NewConn(context.Background(), nc, Options{Authority: s.addr})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	runBench(b, s, nc, benchCallers, func(i int) error {
		req := Request{
			Path: "/3/device/" + benchToken,
			Header: []Field{
				{Name: "authorization", Value: benchBearer, Index: true},
				{Name: "apns-topic", Value: "com.example.app", Index: true},
				{Name: "apns-push-type", Value: "alert", Index: true},
				{Name: "apns-priority", Value: "10", Index: true},
				{Name: "apns-expiration", Value: "0", Index: true},
				{Name: "apns-id", Value: "0f6c3a5e-8d1b-4f2a-9c7e-3b5d7f9a1c2e"},
			},
			Body: benchBody,
		}
		resp, err := c.Do(context.Background(), &req)
		if err == nil && resp.Status != 200 {
			err = fmt.Errorf("status %d", resp.Status)
		}
		return err
	})
}

// BenchmarkClientXNet: x/net's Transport, configured and called as
// internal/push/apns does.
func BenchmarkClientXNet(b *testing.B) {
	s := startBenchServer(b)
	tr := &http2.Transport{
		StrictMaxConcurrentStreams: true,
		DisableCompression:         true,
		ReadIdleTimeout:            30 * time.Second,
		PingTimeout:                15 * time.Second,
		WriteByteTimeout:           10 * time.Second,
	}
	nc := &countingConn{Conn: s.dial(b)}
	cc, err := tr.NewClientConn(nc)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	runBench(b, s, nc, benchCallers, func(i int) error {
		h := make(http.Header, 7)
		h["Apns-Topic"] = []string{"com.example.app"}
		h["Apns-Push-Type"] = []string{"alert"}
		h["Apns-Priority"] = []string{"10"}
		h["Apns-Expiration"] = []string{"0"}
		h["Apns-Id"] = []string{"0f6c3a5e-8d1b-4f2a-9c7e-3b5d7f9a1c2e"}
		h["Authorization"] = []string{benchBearer}
		r := (&http.Request{
			Method: http.MethodPost, URL: &url.URL{Scheme: "https", Host: s.addr, Path: "/3/device/" + benchToken},
			Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, Host: s.addr,
			Body: io.NopCloser(bytes.NewReader(benchBody)), ContentLength: int64(len(benchBody)),
		}).WithContext(context.Background())
		resp, err := cc.RoundTrip(r)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}
