package bench

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/internal/emulator"
)

// The app every bench device registers for, and the credentials the
// emulators accept for it.
const (
	benchApp        = "com.herald.bench"
	benchKeyID      = "BENCHKEY01"
	benchTeamID     = "BENCHTEAM1"
	benchFCMProject = "herald-bench"
	benchHMSAppID   = "100000042"
)

// Providers are the push vendors the bench can push through.
var Providers = []string{"apns", "fcm", "hms", "webpush"}

// vendor is what the bench uses of one vendor's emulator.
type vendor interface {
	SetDelay(d time.Duration)
	OnAccept(fn func(*emulator.Notification))
	Stats() emulator.Stats
}

// Emulator is one push vendor's emulator, standing in for the vendor, and
// a push configuration file (HERALD_PUSH_CONFIG) that points a server at
// it with that vendor's credentials, as a real deployment points at the
// vendor. Every vendor is served on the APNs emulator's listener (Mount),
// which is started even when another vendor is chosen. It runs in the
// bench process (StartEmulator: tests) or in a child process of its own
// (StartEmulatorProcess: `herald bench`, so that its CPU is measured apart
// from the load generator's); either way it is not in the server, which
// pays for its HTTP/2 client only, as it would in production, and each
// push's arrival is timed on the emulator's clock, which is the machine's.
type Emulator struct {
	Provider   string         // apns, fcm, hms or webpush
	APNs       *emulator.APNs // the listener; the vendor when Provider is apns. Nil in a child process
	FCM        *emulator.FCM
	HMS        *emulator.HMS
	WebPush    *emulator.WebPush
	ConfigFile string // the server's HERALD_PUSH_CONFIG
	PID        int    // the child process (StartEmulatorProcess); 0 in this process

	vendor   vendor
	vapidPub []byte // webpush: the server's VAPID public key, uncompressed
	dir      string
	child    *emulatorChild
}

// StartEmulator starts provider's emulator on a free loopback port that
// holds every answer back by delay (the emulated round trip to the
// vendor), and writes the credentials, the emulator's TLS certificate and
// the push configuration into a temporary folder. maxStreams is the APNs
// listener's SETTINGS_MAX_CONCURRENT_STREAMS (zero: the emulator's
// default, 1000); it bounds every vendor's requests per connection. Close
// removes the folder.
func StartEmulator(provider string, delay time.Duration, maxStreams uint32) (*Emulator, error) {
	apnsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	apns := emulator.New(emulator.Config{
		Keys:                 map[string]emulator.Key{benchKeyID: {TeamID: benchTeamID, Public: &apnsKey.PublicKey}},
		MaxConcurrentStreams: maxStreams,
		InboxLimit:           -1, // the bench sees pushes through OnAccept only
	})
	e := &Emulator{Provider: provider, APNs: apns}
	switch provider {
	case "apns":
		e.vendor = apns
	case "fcm":
		e.FCM = emulator.NewFCM(emulator.FCMConfig{InboxLimit: -1})
		e.vendor = e.FCM
	case "hms":
		e.HMS = emulator.NewHMS(emulator.HMSConfig{InboxLimit: -1})
		e.vendor = e.HMS
	case "webpush":
		e.WebPush = emulator.NewWebPush(emulator.WebPushConfig{InboxLimit: -1})
		e.vendor = e.WebPush
	default:
		return nil, fmt.Errorf("provider %q: want one of %v", provider, Providers)
	}
	e.vendor.SetDelay(delay)
	if err := apns.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	if err := e.configure(apnsKey); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// configure mounts the chosen vendor on the listener and writes its
// credentials and the push configuration file.
func (e *Emulator) configure(apnsKey *ecdsa.PrivateKey) error {
	var err error
	if e.dir, err = os.MkdirTemp("", "herald-bench-"+e.Provider+"-"); err != nil {
		return err
	}
	files := map[string][]byte{"ca.pem": e.APNs.CACertPEM()}
	var conf map[string]any
	switch e.Provider {
	case "apns":
		der, err := x509.MarshalPKCS8PrivateKey(apnsKey)
		if err != nil {
			return err
		}
		files["AuthKey_"+benchKeyID+".p8"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		conf = map[string]any{"apns": []map[string]string{{
			"bundle_id": benchApp, "team_id": benchTeamID, "key_id": benchKeyID,
			"key_file": "AuthKey_" + benchKeyID + ".p8", "ca_file": "ca.pem",
			"production_url": e.APNs.URL(), "development_url": e.APNs.URL(),
		}}}
	case "fcm":
		e.FCM.Mount(e.APNs)
		sa, err := e.FCM.ServiceAccount(benchFCMProject)
		if err != nil {
			return err
		}
		files["service-account.json"] = sa
		conf = map[string]any{"fcm": []map[string]any{{
			"service_account_file": "service-account.json", "apps": []string{benchApp},
			"url": e.FCM.URL(), "ca_file": "ca.pem",
		}}}
	case "hms":
		e.HMS.Mount(e.APNs)
		var b [24]byte
		rand.Read(b[:])
		secret := hex.EncodeToString(b[:])
		e.HMS.AddApp(benchHMSAppID, secret)
		files["hms.secret"] = []byte(secret + "\n")
		conf = map[string]any{"hms": []map[string]any{{
			"app_id": benchHMSAppID, "app_secret_file": "hms.secret", "packages": []string{benchApp},
			"token_url": e.HMS.URL() + "/oauth2/v3/token", "push_url": e.HMS.URL(), "ca_file": "ca.pem",
		}}}
	case "webpush":
		e.WebPush.Mount(e.APNs)
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		pub, err := key.PublicKey.ECDH()
		if err != nil {
			return err
		}
		e.vapidPub = pub.Bytes()
		files["vapid.pem"] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
		// The subscriptions' endpoints are on loopback: a push service on
		// the operator's network, as far as the server can tell.
		conf = map[string]any{"webpush": map[string]any{
			"subject": "mailto:bench@herald.invalid", "vapid_key_file": "vapid.pem",
			"allow_private_endpoints": true, "apps": []string{benchApp}, "ca_file": "ca.pem",
		}}
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	files["push.json"] = b
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(e.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	e.ConfigFile = filepath.Join(e.dir, "push.json")
	return nil
}

// SetDelay sets the chosen vendor's answer delay: the round trip to it.
func (e *Emulator) SetDelay(d time.Duration) {
	if e.child != nil {
		e.child.call("delay", strconv.FormatInt(int64(d), 10), nil)
		return
	}
	e.vendor.SetDelay(d)
}

// onReceipt sets the function told of each push the chosen vendor
// accepts: its notification ID (notifKey; ok false when it is not one)
// and when it arrived (Unix ns). Nil removes it.
func (e *Emulator) onReceipt(fn func(id [16]byte, ok bool, at int64)) {
	if e.child != nil {
		e.child.receipt.Store(&fn)
		return
	}
	if fn == nil {
		e.vendor.OnAccept(nil)
		return
	}
	e.vendor.OnAccept(func(n *emulator.Notification) {
		id, ok := notifKey(n.ID)
		fn(id, ok, n.ReceivedAt.UnixNano())
	})
}

// CPU is the child process's CPU time so far (user plus system), 0 for an
// emulator in this process.
func (e *Emulator) CPU() time.Duration {
	if e.PID == 0 {
		return 0
	}
	return procCPU(e.PID)
}

// Stats are the chosen vendor's counters; Connections are the listener's,
// which every vendor shares.
func (e *Emulator) Stats() emulator.Stats {
	if e.child != nil {
		var s emulator.Stats
		if err := e.child.call("stats", "", &s); err != nil {
			s.Rejected = map[string]int64{}
		}
		return s
	}
	s := e.vendor.Stats()
	if e.Provider != "apns" {
		s.Connections = e.APNs.Stats().Connections
	}
	return s
}

// device is what user's device registers: a token of the chosen vendor,
// distinct per user (Web Push: a new subscription made with the server's
// VAPID key, its JSON the token), the bench app and an environment.
func (e *Emulator) device(user string) (token, env string, err error) {
	sum := sha256.Sum256([]byte(user))
	switch e.Provider {
	case "apns":
		return hex.EncodeToString(sum[:]), "production", nil
	case "fcm", "hms":
		// Letters, digits and a colon, as an FCM registration token.
		return "bench:" + hex.EncodeToString(sum[:]), "", nil
	default:
		if e.child != nil {
			err := e.child.call("subscribe", "", &token)
			return token, "", err
		}
		sub, err := e.WebPush.Subscribe(e.vapidPub)
		if err != nil {
			return "", "", err
		}
		return sub.Token(), "", nil
	}
}

// Close stops the emulators and removes their files.
func (e *Emulator) Close() error {
	if e.child != nil {
		return e.child.close()
	}
	err := e.APNs.Close()
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
	return err
}

// notifKey is the form in which receipts and expected pushes are matched:
// the 16 bytes of a notification ID, whichever form the vendor carried it
// in (emulator.NotificationKey).
func notifKey(id string) ([16]byte, bool) { return emulator.NotificationKey(id) }

// The emulator in a child process: `herald emulator --bench-child`
// (RunEmulatorChild) runs StartEmulator and talks to the bench over its
// standard input and output. The bench sends one request a line ("stats",
// "delay <ns>", "subscribe"), one at a time; the child sends messages of a
// type byte, a 4-byte big-endian length and a payload: 'S' once at start
// (JSON: the push configuration file), 'A' the JSON answer to a request,
// and 'R' a batch of receipts, childReceiptSize bytes each (the
// notification ID's 16 bytes, 1 if it is one, the arrival in Unix ns).
// Receipts are gathered for a millisecond before they are sent, so the
// pipe costs the child a write per batch, not per push.

const childReceiptSize = 16 + 1 + 8

type emulatorChild struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	mu      sync.Mutex // one request at a time
	answers chan []byte
	done    chan struct{} // closed when the child's output ends
	receipt atomic.Pointer[func(id [16]byte, ok bool, at int64)]
}

// StartEmulatorProcess is StartEmulator in a child process: exe (this
// binary) run as `herald emulator --bench-child`. Its log lines and, with
// cpuProfile, a CPU profile of it go to logs and that file.
func StartEmulatorProcess(ctx context.Context, exe, provider string, delay time.Duration, maxStreams uint32, cpuProfile string, logs io.Writer) (*Emulator, error) {
	args := []string{"emulator", "--bench-child", "--provider", provider, "--delay", delay.String(),
		"--max-streams", strconv.FormatUint(uint64(maxStreams), 10)}
	if cpuProfile != "" {
		args = append(args, "--cpuprofile", cpuProfile)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = logs
	cmd.SysProcAttr = childProcAttr()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the emulator process: %w", err)
	}
	c := &emulatorChild{cmd: cmd, in: in, answers: make(chan []byte, 1), done: make(chan struct{})}
	started := make(chan []byte, 1)
	go c.read(bufio.NewReaderSize(out, 64<<10), started)
	e := &Emulator{Provider: provider, PID: cmd.Process.Pid, child: c}
	select {
	case b := <-started:
		var info struct {
			ConfigFile string `json:"config_file"`
		}
		if err := json.Unmarshal(b, &info); err != nil || info.ConfigFile == "" {
			c.close()
			return nil, fmt.Errorf("the emulator process started with %q", b)
		}
		e.ConfigFile = info.ConfigFile
		return e, nil
	case <-c.done:
		c.close()
		return nil, errors.New("the emulator process ended before it was ready (its log is above)")
	case <-time.After(30 * time.Second):
		c.close()
		return nil, errors.New("the emulator process did not become ready in 30s")
	}
}

// read dispatches the child's messages until its output ends.
func (c *emulatorChild) read(r *bufio.Reader, started chan<- []byte) {
	defer close(c.done)
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		b := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		switch hdr[0] {
		case 'S':
			started <- b
		case 'A':
			c.answers <- b
		case 'R':
			fn := c.receipt.Load()
			for ; len(b) >= childReceiptSize; b = b[childReceiptSize:] {
				if fn != nil && *fn != nil {
					(*fn)([16]byte(b[:16]), b[16] == 1, int64(binary.BigEndian.Uint64(b[17:25])))
				}
			}
		}
	}
}

// call sends a request and decodes its answer into out (when not nil).
func (c *emulatorChild) call(op, arg string, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := fmt.Fprintf(c.in, "%s %s\n", op, arg); err != nil {
		return fmt.Errorf("emulator process: %w", err)
	}
	select {
	case b := <-c.answers:
		var a struct {
			Error string          `json:"error"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return fmt.Errorf("emulator process: %s: %w", op, err)
		}
		if a.Error != "" {
			return fmt.Errorf("emulator process: %s: %s", op, a.Error)
		}
		if out != nil {
			return json.Unmarshal(a.Data, out)
		}
		return nil
	case <-c.done:
		return fmt.Errorf("emulator process: %s: it has ended", op)
	}
}

// close ends the child (its input closes: it stops its emulator, removes
// its files and exits) and waits for it.
func (c *emulatorChild) close() error {
	c.in.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
	}
	return c.cmd.Wait()
}

// RunEmulatorChild is `herald emulator --bench-child [--provider P]
// [--delay D] [--max-streams N] [--cpuprofile FILE]`: the emulator side
// of StartEmulatorProcess, serving until in ends.
func RunEmulatorChild(args []string, in io.Reader, out, logs io.Writer) error {
	fs := flag.NewFlagSet("herald emulator --bench-child", flag.ContinueOnError)
	fs.SetOutput(logs)
	provider := fs.String("provider", "apns", "apns, fcm, hms or webpush")
	delay := fs.Duration("delay", 0, "answer delay")
	streams := fs.Uint("max-streams", 0, "SETTINGS_MAX_CONCURRENT_STREAMS (0: the emulator's default)")
	profile := fs.String("cpuprofile", "", "write a CPU profile of this process to this file")
	// One core answers ~30,000 pushes/s, more than a server on the same
	// machine sends; a second lets the Go scheduler spin for work, which
	// on a shared two-core machine costs the emulator a fifth more CPU per
	// push, taken from the server being measured.
	procs := fs.Int("gomaxprocs", 1, "GOMAXPROCS of the emulator process")
	if err := fs.Parse(args); err != nil {
		return err
	}
	runtime.GOMAXPROCS(max(*procs, 1))
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	e, err := StartEmulator(*provider, *delay, uint32(*streams))
	if err != nil {
		return err
	}
	defer e.Close()

	var wmu sync.Mutex
	w := bufio.NewWriterSize(out, 64<<10)
	send := func(t byte, b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		var hdr [5]byte
		hdr[0] = t
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(b)))
		w.Write(hdr[:])
		w.Write(b)
		return w.Flush()
	}

	// Receipts: the accept hook appends, a sender writes what gathered.
	var rmu sync.Mutex
	var rbuf []byte
	wake := make(chan struct{}, 1)
	e.vendor.OnAccept(func(n *emulator.Notification) {
		id, ok := notifKey(n.ID)
		var rec [childReceiptSize]byte
		copy(rec[:16], id[:])
		if ok {
			rec[16] = 1
		}
		binary.BigEndian.PutUint64(rec[17:], uint64(n.ReceivedAt.UnixNano()))
		rmu.Lock()
		rbuf = append(rbuf, rec[:]...)
		first := len(rbuf) == childReceiptSize
		rmu.Unlock()
		if first {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	})
	stopSender := make(chan struct{})
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		var spare []byte
		for {
			select {
			case <-wake:
			case <-stopSender:
			}
			select {
			case <-stopSender:
			case <-time.After(time.Millisecond):
			}
			rmu.Lock()
			b := rbuf
			rbuf = spare[:0]
			rmu.Unlock()
			if len(b) > 0 {
				send('R', b)
			}
			spare = b
			select {
			case <-stopSender:
				return
			default:
			}
		}
	}()
	defer func() {
		close(stopSender)
		<-senderDone
	}()

	info, _ := json.Marshal(map[string]string{"config_file": e.ConfigFile})
	if err := send('S', info); err != nil {
		return err
	}
	answer := func(v any, err error) {
		var a struct {
			Error string `json:"error,omitempty"`
			Data  any    `json:"data,omitempty"`
		}
		if err != nil {
			a.Error = err.Error()
		} else {
			a.Data = v
		}
		b, _ := json.Marshal(a)
		send('A', b)
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		op, arg, _ := strings.Cut(sc.Text(), " ")
		switch op {
		case "stats":
			answer(e.Stats(), nil)
		case "delay":
			d, err := strconv.ParseInt(arg, 10, 64)
			if err == nil {
				e.SetDelay(time.Duration(d))
			}
			answer(nil, err)
		case "subscribe":
			token, _, err := e.device("")
			answer(token, err)
		default:
			answer(nil, fmt.Errorf("unknown request %q", op))
		}
	}
	return nil
}
