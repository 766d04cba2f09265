package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/herald-im/herald/client"
)

// A notification service extension showing a content-free push: it has
// the push's herald block and the fetch token the app stored (from
// Client.FetchToken, through an app group or the keychain), and no
// session.
func ExampleFetchPushedMessage() {
	heraldBlock := []byte(`{"conv":"p:alice:bob","msg_id":17,"seq":4,"from":"alice","content_free":true}`)
	fetchToken := "h1.…" // stored by the app

	keys, err := client.ParsePushKeys(heraldBlock)
	if err != nil || !keys.ContentFree {
		return // not content-free: the push shows its own text
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // iOS gives the extension about 30 s
	defer cancel()
	m, err := client.FetchPushedMessage(ctx, nil, "https://chat.example.com", fetchToken, keys)
	switch {
	case errors.Is(err, client.ErrTokenExpired):
		log.Print("the app must ask for a new fetch token; the generic text stays")
	case err != nil:
		log.Print(err)
	default:
		fmt.Println(m.From + ": " + m.Text) // replace the notification's text with this
	}
}
