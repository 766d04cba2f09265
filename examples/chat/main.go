// Command chat is a terminal chat client built on Herald's Go SDK: it logs in,
// prints what it missed and what arrives, and sends each line you type.
//
//	go run ./examples/chat --user bob --token "$(herald gentoken --user bob)"
//	go run ./examples/chat --user alice --to bob --token "$(herald gentoken --user alice)"
//
// It finds the server as the herald commands do: HERALD_ADDR when set,
// else the address `herald serve` recorded in its data folder (HERALD_DATA,
// default herald-data: the file server.json), else 127.0.0.1:7400. --url
// names the endpoint instead.
//
// With --push-token the client registers a device token for the user (an
// APNs token, as an iPhone app would; with --push-provider fcm, hms or
// webpush an Android, Huawei or browser one, a browser's being its
// subscription JSON) and quits without logging out, like a phone going
// offline: messages sent with --push then reach that token as pushes (the
// built-in emulators show them when no vendor credentials are set).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
)

func main() {
	url := flag.String("url", "", "server WebSocket endpoint (default: HERALD_ADDR, else the one recorded in $HERALD_DATA/server.json, else ws://127.0.0.1:7400/ws)")
	user := flag.String("user", "", "your user ID")
	tok := flag.String("token", "", "login token (herald gentoken --user ID)")
	to := flag.String("to", "", "send typed lines to this user")
	device := flag.String("device", "", "device ID; keep it the same across runs to resume where you left off")
	pushToken := flag.String("push-token", "", "register this device token (APNs: hex; webpush: the subscription JSON) for the user; quit without logging out")
	provider := flag.String("push-provider", "apns", "the push token's vendor: apns, fcm, hms or webpush")
	app := flag.String("app", "com.example.chat", "bundle ID or package name the push token belongs to")
	withPush := flag.Bool("push", false, "send each line with an offline push (title: your user ID)")
	flag.Parse()
	if *user == "" || *tok == "" {
		log.Fatal("--user and --token are required")
	}
	if *url == "" {
		*url = serverURL()
	}
	if *device == "" {
		*device = "terminal-" + *user
	}
	c := client.New(*url, client.Options{
		DeviceID: *device,
		Handlers: client.Handlers{
			MessageReceived: func(msgs []*herald.Message, info client.ReceiveInfo) {
				for _, m := range msgs {
					tag := ""
					if info.Offline {
						tag = " (while you were away)"
					}
					fmt.Printf("[%s #%d] %s: %s%s\n", m.CreatedAt.Format(time.TimeOnly), m.Seq, m.From, m.Text, tag)
				}
			},
			ConnectionStateChanged: func(s client.ConnectionState, ev client.ConnectionEvent, err error) {
				fmt.Printf("-- %s (%s)", s, ev)
				if err != nil {
					fmt.Printf(": %v", err)
				}
				fmt.Println()
			},
		},
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	err := c.Login(ctx, *user, *tok)
	cancel()
	if err != nil {
		log.Fatalf("login: %v", err)
	}
	if *pushToken != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		reg := client.PushRegistration{Provider: herald.PushProvider(*provider), Token: *pushToken, App: *app}
		if reg.Provider == herald.ProviderAPNs {
			reg.Environment = herald.EnvDevelopment
		}
		id, err := c.RegisterPush(ctx, reg)
		cancel()
		if err != nil {
			log.Fatalf("register push: %v", err)
		}
		fmt.Printf("-- push ID %s: quit (Ctrl-D) to go offline and get pushes\n", id)
	}
	if *to == "" {
		fmt.Println("-- listening; Ctrl-D to quit")
	} else {
		fmt.Printf("-- type a line to send it to %s; Ctrl-D to quit\n", *to)
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || *to == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		msg := client.TextMessage(line)
		if *withPush {
			msg.Push = &herald.PushConfig{Title: *user, Content: line}
		}
		m, err := c.SendPeerMessage(ctx, *to, msg)
		cancel()
		if err != nil {
			fmt.Println("-- not sent:", err)
			continue
		}
		fmt.Printf("-- stored as #%d\n", m.Seq)
	}
	if *pushToken != "" {
		return // offline but still bound: the phone gets pushes
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Logout(ctx)
}

// serverURL finds the server's WebSocket endpoint as the herald commands
// do (docs/operations.md, "Finding a running server").
func serverURL() string {
	// Port 0 tells a server to pick a port: server.json then has the one it picked.
	if addr := os.Getenv("HERALD_ADDR"); addr != "" && !strings.HasSuffix(addr, ":0") {
		// A wildcard listen address (":7400", "0.0.0.0:7400") is reached on loopback.
		addr = strings.TrimPrefix(addr, "0.0.0.0")
		if strings.HasPrefix(addr, ":") {
			addr = "127.0.0.1" + addr
		}
		return "ws://" + addr + "/ws"
	}
	data := os.Getenv("HERALD_DATA")
	if data == "" {
		data = "herald-data"
	}
	var st struct {
		URL string `json:"url"`
	}
	if b, err := os.ReadFile(filepath.Join(data, "server.json")); err == nil && json.Unmarshal(b, &st) == nil && st.URL != "" {
		return st.URL
	}
	return "ws://127.0.0.1:7400/ws"
}
