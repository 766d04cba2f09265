package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/client"
)

// A receiving app: handlers first, then Login, which returns once the
// messages missed while offline have been handed to MessageReceived.
func Example() {
	c := client.New("ws://localhost:7400/ws", client.Options{
		DeviceID: "phone-7f3a", // stable per installation
		Platform: "android",
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Handlers: client.Handlers{
			MessageReceived: func(msgs []*herald.Message, info client.ReceiveInfo) {
				for _, m := range msgs {
					fmt.Printf("%s/%s #%d from %s: %s (offline %v)\n",
						info.ConvType, info.ConvID, m.Seq, m.From, m.Text, info.Offline)
				}
			},
			ConnectionStateChanged: func(state client.ConnectionState, event client.ConnectionEvent, err error) {
				fmt.Println("state:", state, event, err)
				if event == client.EventKickedOut || event == client.EventTokenExpired {
					// The SDK does not log in again by itself: the app decides.
					fmt.Println("signed out by the server; ask the user to sign in again")
				}
			},
		},
	})
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Login(ctx, "alice", "h1.token-from-your-backend"); err != nil {
		log.Fatal(err)
	}
	// Live messages now arrive through MessageReceived until Logout.
}

func ExampleClient_SendPeerMessage() {
	c := client.New("ws://localhost:7400/ws", client.Options{})
	defer c.Close()
	ctx := context.Background()
	if err := c.Login(ctx, "alice", "h1.token-from-your-backend"); err != nil {
		log.Fatal(err)
	}

	msg := client.TextMessage("hello, bob")
	msg.Extended = `{"mood":"cheerful"}`
	sent, err := c.SendPeerMessage(ctx, "bob", msg)
	switch {
	case errors.Is(err, client.ErrTooLarge):
		var herr *herald.Error
		errors.As(err, &herr)
		fmt.Println("message refused:", herr.Message)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("stored as seq", sent.Seq, "at", sent.CreatedAt)
	}

	// A custom message with an app-defined sub-type, and a signalling
	// command that is delivered live only.
	_, _ = c.SendPeerMessage(ctx, "bob", client.CustomMessage([]byte(`{"lat":1,"lng":2}`), 3))
	_, _ = c.SendPeerMessage(ctx, "bob", client.CommandMessage([]byte("typing")))
}

func ExampleClient_QueryHistoryMessage() {
	c := client.New("ws://localhost:7400/ws", client.Options{})
	defer c.Close()
	ctx := context.Background()
	if err := c.Login(ctx, "alice", "h1.token-from-your-backend"); err != nil {
		log.Fatal(err)
	}

	// Page backward from the newest message, 20 at a time.
	q := client.HistoryQuery{Limit: 20}
	for {
		msgs, more, err := c.QueryHistoryMessage(ctx, client.ConvPeer, "bob", q)
		if err != nil {
			log.Fatal(err)
		}
		for _, m := range msgs {
			fmt.Println(m.Seq, m.From, m.Text)
		}
		if !more || len(msgs) == 0 {
			break
		}
		q.FromSeq = msgs[len(msgs)-1].Seq
	}
}

func ExampleClient_QueryConversationList() {
	c := client.New("ws://localhost:7400/ws", client.Options{})
	defer c.Close()
	ctx := context.Background()
	if err := c.Login(ctx, "alice", "h1.token-from-your-backend"); err != nil {
		log.Fatal(err)
	}
	convs, err := c.QueryConversationList(ctx, 50)
	if err != nil {
		log.Fatal(err)
	}
	for _, cv := range convs {
		fmt.Println(cv.Type, cv.ID, cv.Unread, "unread")
		if cv.LastMessage != nil && cv.Unread > 0 {
			// The user opened the conversation: clear its unread count.
			_ = c.MarkConversationRead(ctx, cv.Type, cv.ID, cv.LastMessage.Seq)
		}
	}
}

// Renew the token when the server warns that it is about to expire.
func ExampleHandlers_tokenWillExpire() {
	var c *client.Client
	fetchToken := func() string { return "h1.fresh-token-from-your-backend" }
	c = client.New("ws://localhost:7400/ws", client.Options{
		Handlers: client.Handlers{
			TokenWillExpire: func(remaining time.Duration) {
				// Handlers run one at a time: do slow work elsewhere.
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), remaining)
					defer cancel()
					if _, err := c.RenewToken(ctx, fetchToken()); err != nil {
						log.Println("renew token:", err)
					}
				}()
			},
		},
	})
	defer c.Close()
}
