package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/api"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/push"
	"github.com/herald-im/herald/token"
)

const pushUsage = `Usage:
  herald push test --push-id ID [--title T] [--content C] [--payload P] [--resources-id R] [--badge N] [--json]
  herald push log  (--user ID | --push-id ID | --msg-id N) [--limit 50] [--json]
  herald push status [--json]   counters, and apps suspended because the vendor refused their credentials

test sends a push to one registered device now, through its vendor (APNs,
FCM, Huawei Push Kit or Web Push), and shows each stage and the vendor's
answer; log shows the delivery log (each attempt's status, reason, latency
and notification ID: apns-id for APNs); status shows the counters.

They call the running server with an admin token minted from its secret.
The server is found through its data folder (--data, or HERALD_DATA; default
herald-data), where herald serve records its address; --addr (HERALD_ADDR)
names it instead. "herald push COMMAND --help" lists a command's flags.
`

// pushCmd runs the push debugging commands against a running server.
func pushCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, pushUsage)
		return errors.New("push: name a command: test, log or status")
	}
	sub := args[0]
	switch sub {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, pushUsage)
		return nil
	}
	fs := flag.NewFlagSet("herald push "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, pushUsage)
	asJSON := fs.Bool("json", false, "print the server's answer as JSON")
	pushID := fs.String("push-id", "", "the device's push ID")
	var cfgPush herald.PushConfig
	var user string
	var msgID int64
	var limit int
	switch sub {
	case "test":
		fs.StringVar(&cfgPush.Title, "title", "Herald test push", "notification title")
		fs.StringVar(&cfgPush.Content, "content", "If you can read this, push works.", "notification text")
		fs.StringVar(&cfgPush.Payload, "payload", "", "payload passed through to the app")
		fs.StringVar(&cfgPush.ResourcesID, "resources-id", "", "push strategy configured on the server")
		fs.StringVar(&cfgPush.ThreadID, "thread-id", "", "APNs only: the thread-id grouping notifications (other vendors ignore it)")
		fs.BoolVar(&cfgPush.ContentFree, "content-free", false, "send it content-free: only IDs and the generic text reach the vendor (docs/push.md)")
		fs.Func("badge", "carry a badge: add N (0-99) to the device's count (Huawei: only when the app has a badge_class)", func(v string) error {
			n, err := strconv.Atoi(v)
			cfgPush.EnableBadge, cfgPush.BadgeIncrement = true, n
			return err
		})
	case "status":
	case "log":
		fs.StringVar(&user, "user", "", "entries for this user")
		fs.Int64Var(&msgID, "msg-id", 0, "entries for this message")
		fs.IntVar(&limit, "limit", 50, "most entries to show (1-1000)")
	default:
		fmt.Fprint(stderr, pushUsage)
		return fmt.Errorf("push: unknown command %q", sub)
	}
	cfg, err := config.Load(fs, args[1:], os.Getenv, "addr", "data", "secret")
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("push %s: unexpected argument %q", sub, fs.Arg(0))
	}
	warnUnknownEnv(stderr)
	secret, _, err := cfg.ResolveSecret(false)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	tok, err := token.MintAdmin(secret, time.Now(), 5*time.Minute)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	addr, from := serverAddr(&cfg)
	base := "http://" + addr
	call := func(method, u, tok string, body []byte, out any) ([]byte, error) {
		raw, err := callAPI(method, u, tok, body, out)
		var down *serverDownError
		if errors.As(err, &down) {
			return nil, fmt.Errorf("push: is the server running at %s (address from %s)? %w", addr, from, down.err)
		}
		return raw, err
	}
	switch sub {
	case "status":
		var st api.Status
		raw, err := call(http.MethodGet, base+api.PathPushStatus, tok, nil, &st)
		if err != nil {
			return err
		}
		if *asJSON {
			_, err := stdout.Write(raw)
			return err
		}
		s := st.Stats
		fmt.Fprintf(stdout, "planned %d  sent %d  retried %d  dropped %d  failed %d  expired %d  skipped %d  pending %d  muted %d\n",
			s.Planned, s.Sent, s.Retried, s.Dropped, s.Failed, s.Expired, s.Skipped, s.Pending, s.MutedSkips)
		if len(st.Suspended) == 0 {
			fmt.Fprintln(stdout, "no app suspended")
		}
		for _, a := range st.Suspended {
			fmt.Fprintf(stdout, "SUSPENDED %s %s (%s): %s; its pushes wait, and one a minute tries the credentials again: fix them (an APNs key_file is read again when it changes; other credentials at a restart)\n", a.Provider, a.App, a.Env, a.Reason)
		}
		return nil
	case "test":
		if *pushID == "" {
			return errors.New("push test: --push-id is required")
		}
		body, _ := json.Marshal(api.TestRequest{PushID: *pushID, PushConfig: cfgPush})
		var rep push.TestReport
		raw, err := call(http.MethodPost, base+api.PathPushTest, tok, body, &rep)
		if err != nil {
			return err
		}
		if *asJSON {
			_, err := stdout.Write(raw)
			return err
		}
		printTestReport(stdout, &rep)
		if !rep.OK() {
			return errors.New("push test: the push did not go through (see the failed stage)")
		}
		return nil
	default:
		if user == "" && *pushID == "" && msgID == 0 {
			return errors.New("push log: give --user, --push-id or --msg-id")
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if user != "" {
			q.Set("user_id", user)
		}
		if *pushID != "" {
			q.Set("push_id", *pushID)
		}
		if msgID != 0 {
			q.Set("msg_id", strconv.FormatInt(msgID, 10))
		}
		var out struct{ Entries []herald.PushAttempt }
		raw, err := call(http.MethodGet, base+api.PathPushLog+"?"+q.Encode(), tok, nil, &out)
		if err != nil {
			return err
		}
		if *asJSON {
			_, err := stdout.Write(raw)
			return err
		}
		if len(out.Entries) == 0 {
			fmt.Fprintln(stdout, "no delivery-log entries")
		}
		for _, e := range out.Entries {
			fmt.Fprintf(stdout, "%s  %-8s msg %-8d %s user %s  %s  attempt %d  %d %s  %.1f ms  %s %s\n",
				e.At.Local().Format("2006-01-02 15:04:05.000"), e.Outcome, e.MsgID, e.PushID, e.User, providerName(e.Provider), e.Attempt, e.Status, e.Reason,
				float64(e.Latency.Microseconds())/1000, notifIDLabel(e.Provider), e.NotifID)
			if e.Body != "" {
				fmt.Fprintf(stdout, "    answer: %s\n", e.Body)
			}
		}
		return nil
	}
}

// serverDownError is a request that got no answer.
type serverDownError struct{ err error }

func (e *serverDownError) Error() string { return e.err.Error() }

// callAPI does one API request and decodes a success into out; an API error
// becomes an error naming the code and message.
func callAPI(method, u, tok string, body []byte, out any) ([]byte, error) {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, &serverDownError{err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(raw, &e) == nil && e.Code != "" {
			return nil, fmt.Errorf("push: server answered %d %s: %s", resp.StatusCode, e.Code, e.Message)
		}
		return nil, fmt.Errorf("push: server answered %d: %s", resp.StatusCode, raw)
	}
	return raw, json.Unmarshal(raw, out)
}

func printTestReport(w io.Writer, r *push.TestReport) {
	fmt.Fprintf(w, "test push to %s\n", r.PushID)
	for _, s := range r.Stages {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %-11s %s\n", mark, s.Name, s.Detail)
	}
	if r.Payload != "" {
		fmt.Fprintf(w, "  payload: %s\n", r.Payload)
	}
	if a := r.Attempt; a.Status != 0 || a.Reason != "" {
		fmt.Fprintf(w, "  vendor answer: status %d, reason %q, %s %s, body %q\n", a.Status, a.Reason, notifIDLabel(a.Provider), a.NotifID, a.Body)
	}
}

// notifIDLabel names a push attempt's notification ID as its vendor does:
// APNs' apns-id header; the others carry it in the message (FCM and
// Huawei as the notification tag, Web Push as the Topic header, without
// dashes).
func notifIDLabel(p herald.PushProvider) string {
	if p == herald.ProviderAPNs || p == herald.ProviderAPNsVoIP {
		return "apns-id"
	}
	return "notification id"
}

// providerName is p, or "-" for an entry that names none.
func providerName(p herald.PushProvider) string {
	if p == "" {
		return "-"
	}
	return string(p)
}
